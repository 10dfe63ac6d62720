"""The signal engine: bars of one instrument -> indicators -> setups -> ensemble -> levels -> candidate.
Pure and synchronous (the async service runs it off the event loop). Reads only the bars it is given."""
from __future__ import annotations

import functools
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from core.domain import BAR_COLUMNS, Direction, Instrument, Signal, Timeframe
from core.errors import NotEnoughDataError
from core.features.bars import BAR_WINDOW
from core.indicators import IndicatorEngine
from core.market_data.resample import BarArrays, bars_from_block
from core.risk import position_size
from core.setups import PULLBACK, SetupResult
from core.setups.oversold import CORE_CRITERIA, OversoldDetector
from core.setups.pullback import PullbackDetector
from core.setups.trend import TrendReading, trend_reading
from core.signals.ensemble import (
    EnsembleConfig,
    EnsembleResult,
    ModelOpinion,
    ModelRequest,
    NewsOpinion,
    NewsOpinions,
    ProbabilityModel,
    Vote,
    break_even,
    combine,
    model_confidence,
    model_vote_score,
)
from core.signals.levels import LevelParams, PullbackLevelParams, compute_levels, expiry, pullback_levels
from core.signals.analysis import Analysis
from core.signals.reasoning import compose_reasoning

log = logging.getLogger(__name__)

MIN_BARS = 60
ENGINE_VERSION = "rules-v1"

Bars = pd.DataFrame | BarArrays
"""What the engine reads: a bar frame, or the same bars as arrays (a scan reads those, for less work)."""


@runtime_checkable
class BlockIndicators(Protocol):
    """An indicator engine that also computes from a (5, n) bar block (``TalibEngine``): the engine then
    passes its bars as arrays and no frame is built."""

    def compute_block(self, block: np.ndarray, full: bool = False, rows: int | None = None) -> np.ndarray: ...

    def columns(self, full: bool = False) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class EngineConfig:
    detector: OversoldDetector = field(default_factory=OversoldDetector)
    pullback: PullbackDetector | None = field(default_factory=PullbackDetector)  # None: the oversold setups alone
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    levels: LevelParams = field(default_factory=LevelParams)
    pullback_levels: PullbackLevelParams = field(default_factory=PullbackLevelParams)
    lookback: int = 400  # bars read per evaluation (EMA200 needs room to settle after its 200-bar seed)


NEWS_EFFECTS = ("vetoed", "added", "confidence", "none")
"""What a news vote did to a triggered setup's decision: took away the signal the other voters gave, gave one
they did not, moved its confidence, or nothing."""


class SignalEngine:
    """`model`: an optional probability voter (core.models.voter). Without it the engine is the rules alone;
    with it, every triggered setup of one call (one scan) is sent to the model in one batch, the model's vote
    joins the ensemble and the confidence is its calibrated probability.

    `news`: an optional news voter (core.news.voter.VerdictIndex). Every triggered setup of one call is sent to
    it in one batch as (symbol, bar close time); its opinion, formed from news published at or before that
    time, joins the ensemble with the weight ("news", w) of the EnsembleConfig times its skill. Like the model's,
    it can strengthen, weaken or veto the rule detector's direction, never propose one. `news_effects` counts
    what it did (NEWS_EFFECTS)."""

    def __init__(self, indicators: IndicatorEngine, config: EngineConfig | None = None,
                 model: ProbabilityModel | None = None, news: NewsOpinions | None = None) -> None:
        self.indicators = indicators
        self.config = config or EngineConfig()
        self.model = model
        self.news = news
        self.news_effects: Counter[str] = Counter()
        self._block_engine = indicators if isinstance(indicators, BlockIndicators) else None

    @property
    def version(self) -> str:
        version = ENGINE_VERSION if self.model is None else f"{ENGINE_VERSION}+{self.model.name}"
        return version if self.news is None else f"{version}+{self.news.name}"

    def analyse(self, instrument: Instrument, timeframe: Timeframe, bars: Bars) -> Analysis:
        """Analysis of the last bar in `bars` (which must all have closed)."""
        return self.analyse_recent(instrument, timeframe, bars, 1)[-1]

    def analyse_recent(self, instrument: Instrument, timeframe: Timeframe, bars: Bars, n: int) -> list[Analysis]:
        """Analyses of each of the last `n` bars, oldest first. Indicators are computed once over the
        window; they are causal, so the analysis of bar i reads bars <= i only."""
        window, first, names, values = self._indicators(instrument, timeframe, bars, n)
        return self._model_pass([(self._analyses(instrument, timeframe, window, first, names, values), window, first)])

    def analyse_many(self, items: Iterable[tuple[Instrument, Timeframe, Bars, int]],
                     on_error: Callable[[Instrument, Timeframe, Exception], None]) -> list[Analysis]:
        """`analyse_recent` of many (instrument, timeframe, bars, n) targets: the indicators of all of them
        first, then the analyses (two tight loops run faster than one mixed loop; the results are the same).
        A target that fails is reported to `on_error` and skipped: one bad instrument must not stop a scan."""
        ready = []
        for inst, tf, bars, n in items:
            try:
                ready.append((inst, tf, *self._indicators(inst, tf, bars, n)))
            except Exception as exc:
                on_error(inst, tf, exc)
        done: list[tuple[list[Analysis], BarArrays, int]] = []
        for inst, tf, window, first, names, values in ready:
            try:
                done.append((self._analyses(inst, tf, window, first, names, values), window, first))
            except Exception as exc:
                on_error(inst, tf, exc)
        return self._model_pass(done)

    def _model_pass(self, groups: list[tuple[list[Analysis], BarArrays, int]]) -> list[Analysis]:
        """The analyses of each group (analyses of bars first, first+1, ... of one window), flattened; with a
        model, every triggered setup among them is revoted with the model's probability (one batch); then, with
        a news voter, with the news opinion (one batch)."""
        if self.model is None and self.news is None:
            return [a for analyses, _, _ in groups for a in analyses]
        flat = [(a, window, first + i) for analyses, window, first in groups for i, a in enumerate(analyses)]
        out = [a for a, _, _ in flat]
        triggered = [k for k, (a, _, _) in enumerate(flat) if a.setup.direction is not None]
        if not triggered:
            return out
        if self.model is not None:  # each family's setups go to its own models (core.features.dataset.scope_of)
            self._model_votes(out, [(k, _request(*flat[k])) for k in triggered])
        if self.news is not None:
            self._news_votes(out, triggered)
        return out

    def _model_votes(self, out: list[Analysis], asks: list[tuple[int, ModelRequest]]) -> None:
        assert self.model is not None
        try:
            probabilities = self.model.probabilities([r for _, r in asks])
        except Exception:  # a broken model must not stop the scan: the rules decide alone
            log.exception("model %s failed on %d setups; the rules decide alone", self.model.name, len(asks))
            return
        for (k, _), p in zip(asks, probabilities, strict=True):
            if p is not None:
                out[k] = self._with_opinion(out[k], p if isinstance(p, ModelOpinion) else ModelOpinion(float(p)))

    def _news_votes(self, out: list[Analysis], triggered: list[int]) -> None:
        assert self.news is not None
        try:
            opinions = self.news.opinions([(out[k].instrument.symbol, out[k].as_of) for k in triggered])
        except Exception:  # broken news must not stop the scan: the others decide alone
            log.exception("news voter %s failed on %d setups; deciding without news", self.news.name, len(triggered))
            return
        for k, opinion in zip(triggered, opinions, strict=True):
            if opinion is not None:
                out[k] = self._with_news(out[k], opinion)

    def _with_opinion(self, a: Analysis, opinion: ModelOpinion) -> Analysis:
        """The model's vote joins the ensemble, weighted by its skill (out-of-sample AUC); the confidence is its
        calibrated probability shrunk towards the base rate as far as its out-of-sample calls have not borne it out
        (`ModelOpinion.honest_probability`, by its reliability), also when it has no skill to vote with."""
        side = a.setup.direction
        assert side is not None
        cfg = self.config.ensemble
        assert self.model is not None
        weight = cfg.weight(self.model.name) * max(0.0, min(1.0, opinion.skill))
        p = opinion.honest_probability  # what the confidence shows and the risk manager's expectation reads
        even = break_even(opinion.payoff, a.levels.risk_reward if a.levels is not None else None)
        vote = Vote(self.model.name, model_vote_score(p, side, cfg.model_span, even), weight,
                    f"model: {p:.0%} chance that the {side.verb} idea wins after costs, break-even {even:.0%} "
                    "(calibrated"
                    + ("" if opinion.base_rate is None else f", skill {opinion.skill:.2f}") + ")")
        result = combine([*a.ensemble.votes, vote], side, cfg)
        return replace(a, ensemble=replace(result, confidence=model_confidence(p)), probability=p,
                       reliability=opinion.effective_reliability, payoff=opinion.payoff)

    def _with_news(self, a: Analysis, opinion: NewsOpinion) -> Analysis:
        """The news vote joins the ensemble, weighted by its skill. With a model the confidence stays the model's
        calibrated probability (news moves only the decision); without, it follows the new agreement."""
        side = a.setup.direction
        assert side is not None and self.news is not None
        cfg = self.config.ensemble
        weight = cfg.weight(self.news.name) * max(0.0, min(1.0, opinion.skill))
        score = max(-1.0, min(1.0, opinion.score))
        vote = Vote(self.news.name, score, weight, opinion.text)
        result = combine([*a.ensemble.votes, vote], side, cfg)
        if a.probability is not None:
            result = replace(result, confidence=model_confidence(a.probability))
        effect = news_effect(a.ensemble, result)
        self.news_effects[effect] += 1
        return replace(a, ensemble=result, news=opinion, news_effect=effect)

    def _indicators(self, instrument: Instrument, timeframe: Timeframe, bars: Bars,
                    n: int) -> tuple[BarArrays, int, Sequence[str], np.ndarray]:
        """The window read for the last `n` bars (as arrays), the position of the first of them, and their
        indicator rows (column names, values)."""
        window = self.config.lookback + n - 1
        if len(bars) > window:
            bars = bars.iloc[-window:] if isinstance(bars, pd.DataFrame) else bars[-window:]
        if len(bars) < MIN_BARS:
            raise NotEnoughDataError(f"{instrument.symbol} {timeframe}: {len(bars)} bars, need at least {MIN_BARS}")
        arrays = BarArrays.of(bars) if isinstance(bars, pd.DataFrame) else bars
        first = max(len(arrays) - n, MIN_BARS - 1)
        rows = len(arrays) - first
        names: Sequence[str]
        if self._block_engine is not None:  # the same rows as last_rows, without a frame
            names, values = self._block_engine.columns(), self._block_engine.compute_block(arrays.block, rows=rows).T
        else:
            names, values = self.indicators.last_rows(bars_from_block(arrays.times, arrays.block.T), rows)
        return arrays, first, names, values

    def _analyses(self, instrument: Instrument, timeframe: Timeframe, bars: BarArrays, first: int,
                  names: Sequence[str], values: np.ndarray) -> list[Analysis]:
        times, prices = bars.times[first:].tolist(), bars.block[:, first:].T.tolist()
        keys = (*BAR_COLUMNS, *names)
        rows = zip(times, prices, values.tolist(), strict=True)
        return [self._analysis_at(instrument, timeframe, bar_time(t), dict(zip(keys, p + v, strict=True))) for t, p, v in rows]

    def _analysis_at(self, instrument: Instrument, timeframe: Timeframe, bar_time: datetime,
                     snapshot: dict[str, float]) -> Analysis:
        cfg = self.config
        setup = _setup(cfg, snapshot, instrument)
        trend = trend_reading(snapshot)
        votes = _votes(setup, trend, cfg.ensemble)
        result = combine(votes, setup.direction, cfg.ensemble)
        leaning = result.direction or setup.direction or _leaning(snapshot, instrument)
        if setup.name == PULLBACK and setup.direction is not None:
            levels = pullback_levels(leaning, snapshot["close"], snapshot["atr_14"], snapshot["sma_5"],
                                     cfg.pullback_levels)
        else:
            levels = compute_levels(leaning, snapshot["close"], snapshot["atr_14"], snapshot["sma_20"], cfg.levels)
        return Analysis(instrument, timeframe, bar_time, bar_time + timeframe.duration, snapshot, setup, trend, result, levels, leaning)

    def candidate(self, analysis: Analysis) -> Signal | None:
        """The signal this analysis would issue before the risk manager's review, if any."""
        direction = analysis.verdict
        levels = analysis.levels
        if direction is None or levels is None:
            return None
        inst, tf = analysis.instrument, analysis.timeframe
        sid = signal_id(inst.symbol, tf, analysis.as_of, direction)
        return Signal(
            id=sid, symbol=inst.symbol, asset_class=inst.asset_class, timeframe=tf, direction=direction,
            entry=levels.entry, target=levels.target, stop=levels.stop, confidence=analysis.ensemble.confidence,
            position_size=position_size(levels.entry, levels.stop), issued_at=analysis.as_of,
            expires_at=expiry(analysis.as_of, tf, inst.asset_class), reasoning=compose_reasoning(analysis),
            strategy=analysis.setup.name, evidence=evidence_record(analysis),
        )


def _request(a: Analysis, window: BarArrays, pos: int) -> ModelRequest:
    """What the model reads about the triggered setup of analysis `a` on bar `pos` of `window`."""
    side = a.setup.direction
    assert side is not None
    snap = a.snapshot
    names = PULLBACK_CORE if a.setup.name == PULLBACK else CORE_CRITERIA
    core = max((e.strength for e in a.setup.evidence if e.name in names), default=0.0)
    setup = (a.setup.score, core, a.trend.score, float(snap.get("adx_14", math.nan)), float(snap.get("volume_pct_50", math.nan)))
    as_of_ns = int(window.times[pos]) + int(a.timeframe.duration.total_seconds()) * 10**9
    return ModelRequest(a.instrument.asset_class, a.timeframe, as_of_ns, side, setup,
                        window.block[:, max(0, pos + 1 - BAR_WINDOW): pos + 1], a.instrument.symbol, a.setup.name)


def news_effect(before: EnsembleResult, after: EnsembleResult) -> str:
    """One of NEWS_EFFECTS: how the decision after the news vote differs from the one before it."""
    if before.direction is not None and after.direction is None:
        return "vetoed"
    if before.direction is None and after.direction is not None:
        return "added"
    if after.direction is not None and after.confidence != before.confidence:
        return "confidence"
    return "none"


def signal_id(symbol: str, timeframe: Timeframe, as_of: datetime, direction: Direction) -> str:
    """Deterministic and readable: re-scanning the same bar yields the same id (idempotent storage)."""
    stamp = as_of.strftime("%Y%m%d") if timeframe is Timeframe.D1 else as_of.strftime("%Y%m%d%H%M")
    return f"{symbol}-{timeframe}-{stamp}-{direction.value[0].upper()}"


def _leaning(snapshot: dict[str, float], instrument: Instrument) -> Direction:
    if snapshot["rsi_14"] <= 50 or not instrument.allows_short:
        return Direction.LONG
    return Direction.SHORT


def bar_time(ns: int) -> datetime:
    """A bar time in int64 UTC nanoseconds as a UTC datetime (what ``Timestamp.to_pydatetime`` gives)."""
    seconds, rest = divmod(ns, 1_000_000_000)
    when = datetime.fromtimestamp(seconds, UTC)
    return when + timedelta(microseconds=rest // 1000) if rest else when


PULLBACK_CORE = ("rsi2",)  # the pullback's graded criterion: what `core` is for it (core.setups.vectorised)


def _setup(cfg: EngineConfig, snapshot: dict[str, float], instrument: Instrument) -> SetupResult:
    """The setup of a bar: a pullback inside the long-term trend when there is one (the family whose record
    earned it, see core.setups.pullback), else the oversold detector's reading (triggered or not)."""
    if cfg.pullback is not None:
        pullback = cfg.pullback.evaluate(snapshot, instrument.asset_class, instrument.allows_short)
        if pullback.direction is not None:
            return pullback
    return cfg.detector.evaluate(snapshot, instrument.asset_class, instrument.allows_short)


def _votes(setup: SetupResult, trend: TrendReading, cfg: EnsembleConfig) -> list[Vote]:
    if setup.direction is not None:
        mr = setup.direction.sign * setup.score
        mr_text = f"{setup.direction.verb} setup ({setup.name.replace('_', ' ')}), evidence score {setup.score:.2f}"
    else:
        mr, mr_text = 0.0, f"no setup (best evidence score {setup.score:.2f})"
    mr_weight, trend_weight = _vote_weights(cfg, setup.name)
    return [Vote(setup.name, mr, mr_weight, mr_text), Vote("trend", trend.score, trend_weight, trend.text)]


@functools.lru_cache(maxsize=16)
def _vote_weights(cfg: EnsembleConfig, setup: str) -> tuple[float, float]:
    return cfg.weight(setup), cfg.weight("trend")


def evidence_record(a: Analysis) -> dict[str, Any]:
    """Everything that produced the signal, JSON-ready, stored with it."""
    record: dict[str, Any] = {
        "engine": (ENGINE_VERSION if a.probability is None else f"{ENGINE_VERSION}+model")
                  + ("" if a.news is None else "+news"),
        "bar_time": a.bar_time.isoformat(),
        "indicators": {k: None if v != v else round(v, 6) for k, v in a.snapshot.items()},  # _clean, inline
        "setup": {"name": a.setup.name, "score": round(a.setup.score, 4), "criteria": [
            {"name": e.name, "value": _clean(e.value), "full_at": e.threshold, "strength": round(e.strength, 3), "weight": e.weight}
            for e in a.setup.evidence]},
        "votes": [{"voter": v.voter, "score": round(v.score, 4), "weight": v.weight, "text": v.text} for v in a.ensemble.votes],
        "ensemble_score": round(a.ensemble.score, 4),
    }
    if a.probability is not None:
        record["model_probability"] = round(a.probability, 4)
        if a.reliability is not None:
            record["model_reliability"] = round(a.reliability, 4)
        if a.payoff is not None:
            record["model_payoff"] = round(a.payoff, 4)
    if a.news is not None:
        record["news"] = {"score": round(a.news.score, 4), "items": a.news.items, "skill": round(a.news.skill, 4),
                          "effect": a.news_effect, "text": a.news.text}
    return record


def _clean(v: float) -> float | None:
    return None if math.isnan(v) else round(v, 6)
