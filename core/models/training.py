"""From a market to models: the series of every scan target, the market context, the training rows per scope,
and the walk-forward schedule of models (one retrained every `every`, each from the labels known by then)."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from core.domain import AssetClass, Instrument, Timeframe
from core.errors import MarketDataError
from core.features.dataset import MIN_POSITION, Dataset, series_rows, with_news, with_similarity
from core.features.news import NewsFeatureSource
from core.features.regime import MarketContext
from core.features.sectors import SectorContext, benchmark_symbol, sector_group
from core.features.sets import DEFAULT_MODEL_FEATURE_SET
from core.indicators import IndicatorEngine
from core.market_data.resample import default_anchor, resample_bars, to_utc_ns
from core.models.lgbm import TreeParams
from core.models.reversion import ReversionModel, is_record, train_model
from core.models.validation import auc, calibration_slope, known_by, slope_lower_bound
from core.setups import FAMILIES
from core.ports import MarketData
from core.signals.levels import HORIZON_BARS

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
RETRAIN_EVERY = timedelta(days=91)


def _quiet(_fraction: float, _stage: str) -> None:
    return None


def embargo_ns(timeframe: Timeframe) -> int:
    """One more label horizon after a training label ends before its model may be used."""
    return int((timeframe.duration * HORIZON_BARS[timeframe]).total_seconds()) * 10**9


def scope_timeframe(scope: str) -> Timeframe:
    return Timeframe(scope.rsplit("-", 1)[1])


@dataclass(frozen=True, slots=True)
class SeriesBars:
    instrument: Instrument
    timeframe: Timeframe
    bars: pd.DataFrame


async def load_series(market: MarketData, targets: Iterable[tuple[Instrument, Timeframe]], end: datetime,
                      limit: int | None = None) -> list[SeriesBars]:
    out = []
    for inst, tf in targets:
        try:
            bars = await market.get_bars(inst.symbol, tf, end=end, limit=limit)
        except MarketDataError as exc:
            log.warning("training: no bars for %s %s: %s", inst.symbol, tf, exc)
            continue
        if not bars.empty:
            out.append(SeriesBars(inst, tf, bars))
    return out


async def context_from(market: MarketData | None, series: Sequence[SeriesBars], end: datetime) -> MarketContext:
    """SPX and VIX from `market` (when it holds them) and the breadth of the daily equity series."""
    frames: dict[str, pd.DataFrame | None] = {"SPX": None, "VIX": None}
    if market is not None:
        known = {i.symbol for i in market.instruments()}
        for sym in frames:
            if sym in known:
                try:
                    frames[sym] = await market.get_bars(sym, Timeframe.D1, end=end)
                except MarketDataError as exc:
                    log.warning("market context: no %s: %s", sym, exc)
    closes = {s.instrument.symbol: s.bars["close"] for s in series
              if s.instrument.asset_class is AssetClass.EQUITY and s.timeframe is Timeframe.D1}
    return MarketContext.build(frames["SPX"], frames["VIX"], closes or None)


async def sector_context_from(market: MarketData | None, series: Sequence[SeriesBars], end: datetime,
                              context_market: MarketData | None = None, limit: int | None = None) -> SectorContext:
    """Sector strength of the instruments of `series` (core.features.sectors), from their daily closes: the daily
    series among `series`, else the market's daily bars, else their bars resampled to days. Benchmarks: SPX from
    `context_market` (or `market`) for equity sectors, the BTC pair for crypto."""
    instruments = {s.instrument.symbol: s.instrument for s in series}
    closes: dict[str, pd.Series] = {s.instrument.symbol: s.bars["close"] for s in series if s.timeframe is Timeframe.D1}
    for sym, inst in instruments.items():
        if sym in closes:
            continue
        daily = None
        if market is not None and Timeframe.D1 in set(market.timeframes(sym)):
            try:
                daily = await market.get_bars(sym, Timeframe.D1, end=end, limit=limit)
            except MarketDataError as exc:
                log.warning("sector context: no daily bars for %s: %s", sym, exc)
        if daily is None or daily.empty:
            finest = min((s for s in series if s.instrument.symbol == sym), key=lambda s: s.timeframe.duration)
            daily = resample_bars(finest.bars, finest.timeframe, Timeframe.D1,
                                  default_anchor(inst.asset_class, Timeframe.D1), end=end)
        if not daily.empty:
            closes[sym] = daily["close"]
    groups = {sym: sector_group(sym, inst.asset_class, inst.sector) for sym, inst in instruments.items()}
    benchmarks: dict[str, pd.Series] = {}
    spx: pd.Series | None = None
    for group in set(groups.values()):
        bench = benchmark_symbol(group, [*closes, "SPX"])
        if bench == "SPX":
            if spx is None:
                spx = await _index_closes(context_market or market, "SPX", end, limit)
            if spx is not None:
                benchmarks[group] = spx
        elif bench is not None:
            benchmarks[group] = closes[bench]
    return SectorContext.build(closes, groups, benchmarks)


async def _index_closes(market: MarketData | None, symbol: str, end: datetime, limit: int | None) -> pd.Series | None:
    if market is None or symbol not in {i.symbol for i in market.instruments()}:
        return None
    try:
        bars = await market.get_bars(symbol, Timeframe.D1, end=end, limit=limit)
    except MarketDataError as exc:
        log.warning("sector context: no %s: %s", symbol, exc)
        return None
    return bars["close"] if not bars.empty else None


def build_datasets(series: Sequence[SeriesBars], indicators: IndicatorEngine, context: MarketContext,
                   costs_bps: float, progress: Progress = _quiet, sectors: SectorContext | None = None,
                   similarity: bool = True, news: NewsFeatureSource | None = None,
                   families: Sequence[str] = FAMILIES) -> dict[str, Dataset]:
    """The rows of every scope (asset class, timeframe and setup family: core.features.dataset.scope_of), with
    their similarity features (each row reading the rows of its scope whose
    outcome was known by its decision; left NaN when `similarity` is False, for a table of past setups) and their
    news features from `news` (NaN without)."""
    parts: dict[str, list[Dataset]] = {}
    for k, s in enumerate(series):
        try:
            computed = indicators.compute(s.bars) if len(s.bars) > MIN_POSITION + 1 else None
            for family in families:
                rows = series_rows(s.instrument, s.timeframe, s.bars, indicators, context, costs_bps,
                                   sectors=sectors, family=family, computed=computed)
                parts.setdefault(rows.scope, []).append(rows)
        except Exception:  # one bad series must not stop training
            log.exception("training rows of %s %s failed", s.instrument.symbol, s.timeframe)
        progress((k + 1) / max(1, len(series)), "features")
    out = {scope: Dataset.concat(p, scope) for scope, p in parts.items()}
    if news is not None:
        out = {scope: with_news(data, news) for scope, data in out.items()}
    return {scope: with_similarity(data) for scope, data in out.items()} if similarity else out


def retrain_times(start: datetime, end: datetime, every: timedelta = RETRAIN_EVERY) -> list[datetime]:
    out, t = [], start
    while t < end:
        out.append(t)
        t += every
    return out


def train_schedule(datasets: dict[str, Dataset], times: Sequence[datetime], params: TreeParams = TreeParams(),
                   progress: Progress = _quiet,
                   feature_set: str = DEFAULT_MODEL_FEATURE_SET) -> dict[str, list[ReversionModel]]:
    """For each scope and each retrain time t, a model from the labels known (plus the embargo) by t: trees from
    MIN_ROWS labels, the scope's record from MIN_RECORD_ROWS (core.models.reversion.train_model). Times too early
    for either get no model (the rules decide alone until the first one exists)."""
    out: dict[str, list[ReversionModel]] = {}
    jobs = [(scope, t) for scope in sorted(datasets) for t in times]
    for k, (scope, t) in enumerate(jobs):
        data = datasets[scope]
        try:
            model = train_model(data, to_utc_ns(t), embargo_ns(scope_timeframe(scope)), params,
                                feature_set=feature_set)
        except ValueError as exc:
            log.info("no model for %s at %s: %s", scope, t.date(), exc)
        else:
            if not out.get(scope) or out[scope][-1].trained_until_ns < model.trained_until_ns:
                earlier = out.setdefault(scope, [])
                earlier.append(with_tracked_skill(model, earlier, data))
        progress((k + 1) / max(1, len(jobs)), "train")
    return out


MIN_TRACKED_ROWS = 200
MIN_BLOCK_ROWS = 30  # an earlier model's stint with fewer calls adds no slope of its own
SLOPE_STANDARD_ERRORS = 2.0
"""The reliability of a model's probabilities is its out-of-sample calibration slope less this many standard
errors, within each earlier model's stint and across stints (core.models.validation.slope_lower_bound): one
quarter of 2015 on the shared equities showed a slope of 3.2 (bound 2.4), and the next model's 60-70 % calls won
39 % of the time."""


def with_tracked_skill(model: ReversionModel, earlier: Sequence[ReversionModel], data: Dataset) -> ReversionModel:
    """`model` with the record of the models before it in the schedule: the AUC and the calibration slope (with its
    lower bound over the earlier models' stints) of their calibrated probabilities on the rows each of them would
    have answered (decided from its start until the next one's), counting the rows whose outcome was known (plus
    the embargo) by the time `model` is used. These are real out-of-sample calls, so
    the model's skill and reliability (core.models.voter) rest on them rather than on its own holdout, which on the
    shared equities said AUC 0.64 for a model whose later calls were no better than chance. Fewer than
    MIN_TRACKED_ROWS such rows: the holdout alone."""
    if not earlier or is_record(model):
        return model
    known = known_by(data.end_ns, model.trained_until_ns, embargo_ns(scope_timeframe(data.scope)))
    scores, outcomes = [], []
    bounds = [m.trained_until_ns for m in earlier] + [model.trained_until_ns]
    for m, start, stop in zip(earlier, bounds[:-1], bounds[1:], strict=True):
        rows = known & (data.decision_ns >= start) & (data.decision_ns < stop)
        if rows.any() and not is_record(m):  # a record says one number for every setup: no calls to score
            scores.append(m.probability(data.features[rows]))
            outcomes.append(data.hit[rows])
    n = int(sum(len(o) for o in outcomes))
    if n < MIN_TRACKED_ROWS:
        return model
    score, outcome = np.concatenate(scores), np.concatenate(outcomes)
    blocks = [(calibration_slope(p, y), calibration_slope(p, y, SLOPE_STANDARD_ERRORS))
              for p, y in zip(scores, outcomes, strict=True) if len(y) >= MIN_BLOCK_ROWS]
    metrics = {**model.metrics, "tracked_rows": float(n), "tracked_models": float(len(scores)),
               "tracked_auc": auc(score, outcome), "tracked_slope": calibration_slope(score, outcome)}
    low = slope_lower_bound([s for s, _ in blocks], [low for _, low in blocks])
    if low == low:  # two stints or more
        metrics["tracked_slope_low"] = low
    return replace(model, metrics=metrics)


def rows_known(data: Dataset, t_ns: int) -> int:
    return int(np.sum(data.end_ns <= t_ns - embargo_ns(scope_timeframe(data.scope))))
