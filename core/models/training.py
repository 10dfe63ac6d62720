"""From a market to models: the series of every scan target, the market context, the training rows per scope,
and the walk-forward schedule of models (one retrained every `every`, each from the labels known by then)."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from core.domain import AssetClass, Instrument, Timeframe
from core.errors import MarketDataError
from core.features.dataset import Dataset, scope_of, series_rows
from core.features.regime import MarketContext
from core.indicators import IndicatorEngine
from core.market_data.resample import to_utc_ns
from core.models.lgbm import TreeParams
from core.models.reversion import MIN_ROWS, ReversionModel, train_reversion
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


def build_datasets(series: Sequence[SeriesBars], indicators: IndicatorEngine, context: MarketContext,
                   costs_bps: float, progress: Progress = _quiet) -> dict[str, Dataset]:
    parts: dict[str, list[Dataset]] = {}
    for k, s in enumerate(series):
        scope = scope_of(s.instrument.asset_class, s.timeframe)
        try:
            parts.setdefault(scope, []).append(series_rows(s.instrument, s.timeframe, s.bars, indicators, context, costs_bps))
        except Exception:  # one bad series must not stop training
            log.exception("training rows of %s %s failed", s.instrument.symbol, s.timeframe)
        progress((k + 1) / max(1, len(series)), "features")
    return {scope: Dataset.concat(p, scope) for scope, p in parts.items()}


def retrain_times(start: datetime, end: datetime, every: timedelta = RETRAIN_EVERY) -> list[datetime]:
    out, t = [], start
    while t < end:
        out.append(t)
        t += every
    return out


def train_schedule(datasets: dict[str, Dataset], times: Sequence[datetime], params: TreeParams = TreeParams(),
                   progress: Progress = _quiet) -> dict[str, list[ReversionModel]]:
    """For each scope and each retrain time t, a model from the labels known (plus the embargo) by t. Times too
    early to have MIN_ROWS labels get no model (the rules decide alone until the first one exists)."""
    out: dict[str, list[ReversionModel]] = {}
    jobs = [(scope, t) for scope in sorted(datasets) for t in times]
    for k, (scope, t) in enumerate(jobs):
        data = datasets[scope]
        try:
            model = train_reversion(data, to_utc_ns(t), embargo_ns(scope_timeframe(scope)), params)
        except ValueError as exc:
            log.info("no model for %s at %s: %s", scope, t.date(), exc)
        else:
            if not out.get(scope) or out[scope][-1].trained_until_ns < model.trained_until_ns:
                out.setdefault(scope, []).append(model)
        progress((k + 1) / max(1, len(jobs)), "train")
    return out


def rows_known(data: Dataset, t_ns: int) -> int:
    return int(np.sum(data.end_ns <= t_ns - embargo_ns(scope_timeframe(data.scope))))
