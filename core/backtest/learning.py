"""Walk-forward models for a backtest: the models a live service retraining every `every` would have had.

For each scope (asset class and timeframe) of the backtest's scan targets, a model is trained at the start of
the period and again every `every` after, each from the labels known (plus the embargo) at its training time,
from the bars that had closed by the end of the backtest. The engine's voter (`WalkForwardVoter`) answers a
setup at time t with the newest model whose training labels were all known by t: no decision reads a label that
ended after it. Its similarity features read the backtest's own training rows as the table of past setups, each
row only from the time its outcome was known (core.features.similarity)."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from core.domain import Instrument, Timeframe
from core.features.dataset import setup_history
from core.features.news import NewsFeatureSource
from core.features.sets import DEFAULT_MODEL_FEATURE_SET, NEWS_COLUMNS, require_news
from core.indicators import IndicatorEngine
from core.models.lgbm import TreeParams
from core.models.training import (
    RETRAIN_EVERY,
    build_datasets,
    context_from,
    embargo_ns,
    load_series,
    retrain_times,
    scope_timeframe,
    sector_context_from,
    train_schedule,
)
from core.models.voter import WalkForwardVoter
from core.ports import MarketData

Progress = Callable[[float, str], None]


def _quiet(_fraction: float, _stage: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class LearningConfig:
    every: timedelta = RETRAIN_EVERY
    params: TreeParams = field(default_factory=TreeParams)
    feature_set: str = DEFAULT_MODEL_FEATURE_SET  # the columns the models read (core.features.sets)


@dataclass(frozen=True, slots=True)
class WalkForwardModels:
    voter: WalkForwardVoter
    summary: dict[str, Any]  # for the report


async def walk_forward_models(market: MarketData, targets: Sequence[tuple[Instrument, Timeframe]], start: datetime,
                              end: datetime, indicators: IndicatorEngine, costs_bps: float,
                              context_market: MarketData | None = None, config: LearningConfig = LearningConfig(),
                              progress: Progress = _quiet, news: NewsFeatureSource | None = None) -> WalkForwardModels:
    """`news`: the analysed news the rows' news features read (training and decisions alike; None: NaN)."""
    require_news(config.feature_set, news)
    began = time.perf_counter()
    series = await load_series(market, targets, end)
    context = await context_from(context_market or market, series, end)
    sectors = await sector_context_from(market, series, end, context_market)
    datasets = build_datasets(series, indicators, context, costs_bps, lambda f, s: progress(0.3 * f, s), sectors,
                              news=news)
    built = time.perf_counter()
    times = retrain_times(start, end, config.every)
    schedule = train_schedule(datasets, times, config.params, lambda f, s: progress(0.3 + 0.7 * f, s),
                              config.feature_set)
    summary = {
        "kind": "walk-forward LightGBM reversion probability (calibrated), voting beside the rules",
        "retrain_every_days": config.every.days,
        "feature_set": config.feature_set,
        "features_seconds": round(built - began, 2), "train_seconds": round(time.perf_counter() - built, 2),
        "context": {"regime_rows": int(len(context.close_ns)), "sector_groups": len(sectors.groups)},
        "scopes": {scope: {
            "rows": len(data), "embargo_hours": embargo_ns(scope_timeframe(scope)) / 3.6e12,
            "rows_with_news": int(np.sum(~np.isnan(data.features[:, NEWS_COLUMNS][:, 0]))),
            "models": [{"usable_from": datetime.fromtimestamp(m.trained_until_ns / 1e9, UTC).isoformat(),
                        **{k: round(v, 4) for k, v in m.metrics.items()}} for m in schedule.get(scope, [])],
        } for scope, data in datasets.items()},
    }
    history = {scope: setup_history(data) for scope, data in datasets.items()}
    return WalkForwardModels(WalkForwardVoter(schedule, context, sectors, history, news), summary)
