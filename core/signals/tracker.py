"""LifecycleTracker: follows every open signal to target, stop, expiry or its book's exit (stored by the scan, taken
at the next bar's open) and publishes its close."""
from __future__ import annotations

import logging
from datetime import datetime

import pandas as pd

from core.clock import Clock
from core.domain import Signal, SignalOutcome
from core.errors import MarketDataError
from core.events import EventBus, SignalClosed
from core.lifecycle import HORIZON_SLACK, track
from core.ports import MarketData, SignalRepository
from core.signals.levels import HORIZON_BARS

log = logging.getLogger(__name__)


class LifecycleTracker:
    def __init__(self, market: MarketData, signals: SignalRepository, bus: EventBus, clock: Clock, costs_bps: float) -> None:
        self.market = market
        self.signals = signals
        self.bus = bus
        self.clock = clock
        self.costs_bps = costs_bps

    async def update(self) -> list[SignalOutcome]:
        """Close what the bars since issue say is closed; returns the new outcomes."""
        now = self.clock.now()
        closed = []
        signals = await self.signals.open_signals()
        exits = await self.signals.exit_requests([s.id for s in signals]) if signals else {}
        for signal in signals:
            try:
                bars = await self._bars_since_issue(signal, now)
            except MarketDataError as exc:
                log.warning("cannot track %s: %s", signal.id, exc)
                continue
            decided = exits.get(signal.id)
            outcome = track(signal, bars, self.costs_bps, exit_at=decided[0] if decided else None)
            if outcome is None:
                continue
            await self.signals.record_outcome(outcome, fan_out=True)  # the exit's fan-out pending until queued
            closed.append(outcome)
            log.info("closed %s: %s %.2f%%", signal.id, outcome.status, outcome.net_return * 100)
            await self.bus.publish(SignalClosed(signal, outcome))
        return closed

    async def _bars_since_issue(self, signal: Signal, now: datetime) -> pd.DataFrame:
        """Bars reaching back to the signal's own bar; reads further back if the tracker was down long."""
        limit = HORIZON_BARS[signal.timeframe] * HORIZON_SLACK
        while True:
            bars = await self.market.get_bars(signal.symbol, signal.timeframe, end=now, limit=limit)
            if bars.empty or bars.index[0] < signal.issued_at or len(bars) < limit:
                return bars
            limit *= 4
