"""The models of the running service: the champion of every scope in models_store, as one voter for the engine,
and the market context it reads, refreshed from the market (call `refresh_context` once a day, e.g. after the
daily bars close; a stale context only turns the regime features into NaN, see MarketContext.MAX_AGE_NS)."""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from pathlib import Path

from core.clock import Clock
from core.domain import AssetClass, Timeframe
from core.features.sets import FEATURE_SET_VERSION
from core.models.retrain import train_new_versions
from core.models.store import champion, load_model, versions
from core.models.training import context_from, load_series
from core.models.voter import ModelVoter
from core.ports import MarketData
from core.signals.engine import SignalEngine
from core.signals.service import DEFAULT_TIMEFRAMES

log = logging.getLogger(__name__)
CONTEXT_BARS = 120  # daily bars per equity read for the breadth (its SMA50 needs 50)


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
        log.info("model %s votes on %s (feature set %s)", folder.name, model.scope, FEATURE_SET_VERSION)
    return ModelVoter(models) if models else None


async def refresh_context(voter: ModelVoter, market: MarketData, now: datetime) -> None:
    """Rebuild the voter's market context from `market` as of `now`: SPX and VIX when the market has them, and
    the breadth of its daily equities."""
    targets = [(i, Timeframe.D1) for i in market.instruments()
               if i.asset_class is AssetClass.EQUITY and Timeframe.D1 in set(market.timeframes(i.symbol))]
    series = await load_series(market, targets, now, limit=CONTEXT_BARS)
    voter.context = await context_from(market, series, now)


class ModelUpkeep:
    """The service's model chores, for the composition root: load the champions into the engine, refresh their
    market context, retrain on a schedule (new versions shadow the champion; a better challenger is promoted,
    and the engine then votes with it)."""

    def __init__(self, models_dir: Path, market: MarketData, clock: Clock, engine: SignalEngine,
                 timeframes: dict[AssetClass, tuple[Timeframe, ...]] | None = None, costs_bps: float = 10.0) -> None:
        self.models_dir, self.market, self.clock, self.engine = Path(models_dir), market, clock, engine
        self.timeframes = timeframes or DEFAULT_TIMEFRAMES
        self.costs_bps = costs_bps

    async def load(self) -> ModelVoter | None:
        """Champions -> engine.model (None: the rules alone), with a fresh context."""
        voter = await asyncio.to_thread(champion_voter, self.models_dir)
        if voter is not None:
            await refresh_context(voter, self.market, self.clock.now())
        self.engine.model = voter
        return voter

    async def refresh_context(self) -> None:
        if isinstance(self.engine.model, ModelVoter):
            await refresh_context(self.engine.model, self.market, self.clock.now())

    async def retrain(self) -> dict[str, Path]:
        targets = [(i, tf) for i in self.market.instruments() for tf in self.timeframes.get(i.asset_class, ())
                   if tf in set(self.market.timeframes(i.symbol))]
        out = await train_new_versions(self.market, targets, self.models_dir, self.clock.now(), self.engine.indicators,
                                       costs_bps=self.costs_bps, training_data=f"market {self.market.name}")
        await self.load()
        return out
