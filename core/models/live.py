"""The models of the running service: the champion of every scope in models_store, as one voter for the engine,
and the context it reads, refreshed from the market (call `refresh_context` once a day, e.g. after the daily bars
close; a stale context only turns the regime and sector features into NaN, see MarketContext.MAX_AGE_NS): the
market regime, the sectors' strength, and the table of past setups of each scope the voter has a model for (the
setups of the last HISTORY_DAYS of the market's bars, with the outcomes known by then; core.features.similarity).
"""
from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path

from core.clock import Clock
from core.domain import AssetClass, Timeframe
from core.features.dataset import scope_of, setup_history
from core.features.news import NewsFeatureSource
from core.features.similarity import SIMILARITY_FEATURES, SetupHistory
from core.indicators import IndicatorEngine, default_engine
from core.models.retrain import train_new_versions
from core.models.store import champion, load_model, versions
from core.models.training import SeriesBars, build_datasets, context_from, load_series, sector_context_from
from core.models.voter import ModelVoter
from core.ports import MarketData
from core.setups import FAMILIES
from core.signals.engine import SignalEngine
from core.signals.service import DEFAULT_TIMEFRAMES

log = logging.getLogger(__name__)
CONTEXT_BARS = 120  # daily bars per equity read for the breadth (its SMA50 needs 50) and the sectors (61)
HISTORY_DAYS = 1461
"""The span of bars per scan target read for the table of past setups. Its pools hold the most recent setups
(core.features.similarity: 200 of a symbol, 1000 of a sector); on the shared data a stock has about 60 setups a
year, a crypto pair about 100 on 4h bars and 400 on 1h bars, so four years fill a symbol's pool and the live
features equal training's (with two years, a stock's pool held fewer than training's and its features differed)."""


def champion_voter(models_dir: Path) -> ModelVoter | None:
    """A voter over the champion of every reversion model name in `models_dir`, or None when there is none
    (the engine then runs on the rules alone). Champions of another feature set are skipped with a warning."""
    models = {}
    for name in sorted({str(m["name"]) for _, m in versions(models_dir)}):
        folder = champion(models_dir, name)
        if folder is None:
            continue
        try:
            model = load_model(folder)
        except (ValueError, OSError, KeyError) as exc:
            log.warning("model %s not loaded: %s", folder.name, exc)
            continue
        models[model.scope] = model
        log.info("model %s votes on %s (feature set %s)", folder.name, model.scope, model.feature_set)
    return ModelVoter(models) if models else None


def history_bars(timeframe: Timeframe) -> int:
    return max(CONTEXT_BARS, math.ceil(timedelta(days=HISTORY_DAYS) / timeframe.duration))


async def refresh_context(voter: ModelVoter, market: MarketData, now: datetime, indicators: IndicatorEngine | None = None,
                          timeframes: Mapping[AssetClass, tuple[Timeframe, ...]] | None = None,
                          costs_bps: float = 10.0) -> None:
    """Rebuild the voter's context from `market` as of `now`: the regime (SPX and VIX when the market has them,
    the breadth of its daily equities), the sectors' strength, and the past setups of every scan target (of
    `timeframes`, default the service's) whose scope the voter has a model for, with the bars up to `now`."""
    tfs = timeframes or DEFAULT_TIMEFRAMES
    targets = [(i, tf) for i in market.instruments() for tf in tfs.get(i.asset_class, ())
               if any(scope_of(i.asset_class, tf, f) in voter.models for f in FAMILIES)
               and tf in set(market.timeframes(i.symbol))]
    # years of bars for the past-setup table only where a model reads the similarity features (fs-2)
    similar = {scope for scope, m in voter.models.items() if set(m.features) & set(SIMILARITY_FEATURES)}
    history: list[SeriesBars] = []
    for tf in sorted({tf for _, tf in targets}, key=lambda t: t.duration):
        group = [t for t in targets if t[1] is tf]
        deep = any(scope_of(i.asset_class, tf, f) in similar for i, _ in group for f in FAMILIES)
        history += await load_series(market, group, now, limit=history_bars(tf) if deep else CONTEXT_BARS)
    have = {(s.instrument.symbol, s.timeframe) for s in history}
    daily = [(i, Timeframe.D1) for i in market.instruments()
             if i.asset_class is AssetClass.EQUITY and (i.symbol, Timeframe.D1) not in have
             and Timeframe.D1 in set(market.timeframes(i.symbol))]
    series = history + await load_series(market, daily, now, limit=CONTEXT_BARS)
    voter.context = await context_from(market, series, now)
    voter.sectors = await sector_context_from(market, series, now, limit=CONTEXT_BARS)
    engine = indicators or default_engine()

    deep_history = [s for s in history
                    if any(scope_of(s.instrument.asset_class, s.timeframe, f) in similar for f in FAMILIES)]

    def tables() -> dict[str, SetupHistory]:
        datasets = build_datasets(deep_history, engine, voter.context, costs_bps, sectors=voter.sectors,
                                  similarity=False)
        return {scope: setup_history(data) for scope, data in datasets.items()}

    voter.history = await asyncio.to_thread(tables) if deep_history else {}


class ModelUpkeep:
    """The service's model chores, for the composition root: load the champions into the engine, refresh their
    market context, retrain on a schedule (new versions shadow the champion; a better challenger is promoted,
    and the engine then votes with it)."""

    def __init__(self, models_dir: Path, market: MarketData, clock: Clock, engine: SignalEngine,
                 timeframes: dict[AssetClass, tuple[Timeframe, ...]] | None = None, costs_bps: float = 10.0) -> None:
        self.models_dir, self.market, self.clock, self.engine = Path(models_dir), market, clock, engine
        self.timeframes = timeframes or DEFAULT_TIMEFRAMES
        self.costs_bps = costs_bps
        self.news: NewsFeatureSource | None = None

    def use_news(self, source: NewsFeatureSource | None) -> None:
        """The analysed news the models' news features read (the news job's verdict index), now and after every
        reload."""
        self.news = source
        if isinstance(self.engine.model, ModelVoter):
            self.engine.model.news = source

    async def load(self) -> ModelVoter | None:
        """Champions -> engine.model (None: the rules alone), with a fresh context."""
        voter = await asyncio.to_thread(champion_voter, self.models_dir)
        if voter is not None:
            voter.news = self.news
            await refresh_context(voter, self.market, self.clock.now(), self.engine.indicators, self.timeframes,
                                  self.costs_bps)
        self.engine.model = voter
        return voter

    async def refresh_context(self) -> None:
        if isinstance(self.engine.model, ModelVoter):
            await refresh_context(self.engine.model, self.market, self.clock.now(), self.engine.indicators,
                                  self.timeframes, self.costs_bps)

    async def retrain(self) -> dict[str, Path]:
        targets = [(i, tf) for i in self.market.instruments() for tf in self.timeframes.get(i.asset_class, ())
                   if tf in set(self.market.timeframes(i.symbol))]
        out = await train_new_versions(self.market, targets, self.models_dir, self.clock.now(), self.engine.indicators,
                                       costs_bps=self.costs_bps, training_data=f"market {self.market.name}",
                                       news=self.news)
        await self.load()
        return out
