"""The signal engine: bars of one instrument -> indicators -> setups -> ensemble -> levels -> candidate.
Pure and synchronous (the async service runs it off the event loop). Reads only the bars it is given."""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from core.domain import BAR_COLUMNS, Direction, Instrument, Signal, Timeframe
from core.errors import NotEnoughDataError
from core.indicators import IndicatorEngine
from core.market_data.resample import BarArrays, bars_from_block
from core.risk import position_size
from core.setups import SetupResult
from core.setups.oversold import OversoldDetector
from core.setups.trend import TrendReading, trend_reading
from core.signals.ensemble import EnsembleConfig, EnsembleResult, Vote, combine
from core.signals.levels import LevelParams, Levels, compute_levels, expiry
from core.signals.reasoning import compose_reasoning

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
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    levels: LevelParams = field(default_factory=LevelParams)
    lookback: int = 400  # bars read per evaluation (EMA200 needs room to settle after its 200-bar seed)


@dataclass(frozen=True, slots=True)
class Analysis:
    instrument: Instrument
    timeframe: Timeframe
    bar_time: datetime  # open time of the last closed bar
    as_of: datetime  # its close time: the moment the analysis became possible
    snapshot: dict[str, float]
    setup: SetupResult
    trend: TrendReading
    ensemble: EnsembleResult
    levels: Levels | None  # for the verdict, or for the leaning side when there is none
    leaning: Direction

    @property
    def verdict(self) -> Direction | None:
        return self.ensemble.direction


class SignalEngine:
    def __init__(self, indicators: IndicatorEngine, config: EngineConfig | None = None) -> None:
        self.indicators = indicators
        self.config = config or EngineConfig()
        self._block_engine = indicators if isinstance(indicators, BlockIndicators) else None

    def analyse(self, instrument: Instrument, timeframe: Timeframe, bars: Bars) -> Analysis:
        """Analysis of the last bar in `bars` (which must all have closed)."""
        return self.analyse_recent(instrument, timeframe, bars, 1)[-1]

    def analyse_recent(self, instrument: Instrument, timeframe: Timeframe, bars: Bars, n: int) -> list[Analysis]:
        """Analyses of each of the last `n` bars, oldest first. Indicators are computed once over the
        window; they are causal, so the analysis of bar i reads bars <= i only."""
        return self._analyses(instrument, timeframe, *self._indicators(instrument, timeframe, bars, n))

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
        out: list[Analysis] = []
        for inst, tf, window, first, names, values in ready:
            try:
                out.extend(self._analyses(inst, tf, window, first, names, values))
            except Exception as exc:
                on_error(inst, tf, exc)
        return out

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
        setup = self.config.detector.evaluate(snapshot, instrument.asset_class, instrument.allows_short)
        trend = trend_reading(snapshot)
        votes = _votes(setup, trend, self.config.ensemble)
        result = combine(votes, setup.direction, self.config.ensemble)
        leaning = result.direction or setup.direction or _leaning(snapshot, instrument)
        levels = compute_levels(leaning, snapshot["close"], snapshot["atr_14"], snapshot["sma_20"], self.config.levels)
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


def _votes(setup: SetupResult, trend: TrendReading, cfg: EnsembleConfig) -> list[Vote]:
    if setup.direction is not None:
        mr = setup.direction.sign * setup.score
        mr_text = f"{setup.direction.verb} setup, evidence score {setup.score:.2f}"
    else:
        mr, mr_text = 0.0, f"no setup (best evidence score {setup.score:.2f})"
    mr_weight, trend_weight = _vote_weights(cfg)
    return [Vote("mean_reversion", mr, mr_weight, mr_text), Vote("trend", trend.score, trend_weight, trend.text)]


@functools.lru_cache(maxsize=8)
def _vote_weights(cfg: EnsembleConfig) -> tuple[float, float]:
    return cfg.weight("mean_reversion"), cfg.weight("trend")


def evidence_record(a: Analysis) -> dict[str, Any]:
    """Everything that produced the signal, JSON-ready, stored with it."""
    return {
        "engine": ENGINE_VERSION,
        "bar_time": a.bar_time.isoformat(),
        "indicators": {k: None if v != v else round(v, 6) for k, v in a.snapshot.items()},  # _clean, inline
        "setup": {"name": a.setup.name, "score": round(a.setup.score, 4), "criteria": [
            {"name": e.name, "value": _clean(e.value), "full_at": e.threshold, "strength": round(e.strength, 3), "weight": e.weight}
            for e in a.setup.evidence]},
        "votes": [{"voter": v.voter, "score": round(v.score, 4), "weight": v.weight, "text": v.text} for v in a.ensemble.votes],
        "ensemble_score": round(a.ensemble.score, 4),
    }


def _clean(v: float) -> float | None:
    return None if math.isnan(v) else round(v, 6)
