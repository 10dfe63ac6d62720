"""ThesisWatch: reads the evidence behind every open signal on its newest closed bar and tells subscribers, once,
when it turned against the signal (core.thesis): stored with its fan-out pending (SignalRepository.record_update)
and published as SignalUpdated, which the notifier turns into replies to the signal's messages.

Both theses are read the same way from closed bars: the one at issue from the bars up to the signal's own bar
(kept in memory per open signal; a restart reads it again, with the same result), the one now from the bars up
to the watch's clock. News is the engine's news voter at each moment (items published up to it only). A signal
with no bar closed since its issue, a shadow signal (never delivered) and one already told are not read.
"""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from core.books.trend import LEADERS
from core.clock import Clock
from core.domain import Instrument, Signal, SignalUpdate, Timeframe
from core.errors import MarketDataError, NotEnoughDataError, UnknownSymbolError
from core.events import EventBus, SignalUpdated
from core.ports import MarketData, SignalRepository
from core.setups.trend import TrendReading
from core.signals.analysis import Analysis
from core.signals.engine import Bars, SignalEngine
from core.thesis import Thesis, thesis_change

log = logging.getLogger(__name__)


class ThesisWatch:
    def __init__(self, market: MarketData, engine: SignalEngine, signals: SignalRepository, bus: EventBus,
                 clock: Clock) -> None:
        self.market = market
        self.engine = engine
        self.signals = signals
        self.bus = bus
        self.clock = clock
        self._at_issue: dict[str, Thesis] = {}  # open signal id -> its thesis at issue

    async def check(self) -> list[SignalUpdate]:
        """Read every open signal not told yet; returns the updates stored and published by this call."""
        now = self.clock.now()
        open_signals = [s for s in await self.signals.open_signals() if not s.shadow]
        ids = {s.id for s in open_signals}
        self._at_issue = {k: v for k, v in self._at_issue.items() if k in ids}
        if not open_signals:
            return []
        told = await self.signals.updates(ids)
        instruments = {i.symbol: i for i in self.market.instruments()}
        regimes: dict[tuple[str, Timeframe, datetime], TrendReading | None] = {}
        out: list[SignalUpdate] = []
        for signal in open_signals:
            inst = instruments.get(signal.symbol)
            if signal.id in told or inst is None:
                continue
            try:
                changes = await self._changes(signal, inst, now, regimes)
            except (MarketDataError, NotEnoughDataError, UnknownSymbolError) as exc:
                log.warning("thesis of %s not read: %s", signal.id, exc)
                continue
            if not changes:
                continue
            update = SignalUpdate(signal.id, now, changes)
            if await self.signals.record_update(update, fan_out=True):
                log.info("thesis of %s changed: %s", signal.id, update.text)
                out.append(update)
                await self.bus.publish(SignalUpdated(signal, update))
        return out

    async def _changes(self, signal: Signal, inst: Instrument, now: datetime,
                       regimes: dict[tuple[str, Timeframe, datetime], TrendReading | None]) -> tuple[str, ...]:
        bars = await self.market.get_bars(signal.symbol, signal.timeframe, end=now, limit=self.engine.config.lookback)
        if bars.empty or bars.index[-1] + signal.timeframe.duration <= signal.issued_at:
            return ()  # no bar has closed since the signal's own
        at_issue = self._at_issue.get(signal.id)
        if at_issue is None:
            at_issue = self._at_issue[signal.id] = await self._thesis(inst, signal.timeframe, signal.issued_at, None,
                                                                      regimes)
        return thesis_change(signal.direction, at_issue, await self._thesis(inst, signal.timeframe, now, bars, regimes))

    async def _thesis(self, inst: Instrument, tf: Timeframe, end: datetime, bars: Bars | None,
                      regimes: dict[tuple[str, Timeframe, datetime], TrendReading | None]) -> Thesis:
        analysis = await self._analysis(inst, tf, end, bars)
        news = None
        if self.engine.news is not None:
            try:
                news = self.engine.news.opinions([(inst.symbol, analysis.as_of)])[0]
            except Exception:  # broken news must not stop the watch: the trend is read without it
                log.exception("news voter failed on %s; thesis read without news", inst.symbol)
        leader = LEADERS.get(inst.asset_class)
        regime = None
        if leader is not None and leader != inst.symbol:
            key = (leader, tf, end)
            if key not in regimes:
                try:
                    regimes[key] = (await self._analysis(self._leader(leader), tf, end, None)).trend
                except (MarketDataError, NotEnoughDataError, UnknownSymbolError):
                    regimes[key] = None  # the leader is not served here: the regime is not read
            regime = regimes[key]
        return Thesis(analysis.trend, news, regime, leader or "")

    def _leader(self, symbol: str) -> Instrument:
        for inst in self.market.instruments():
            if inst.symbol == symbol:
                return inst
        raise UnknownSymbolError(symbol)

    async def _analysis(self, inst: Instrument, tf: Timeframe, end: datetime, bars: Bars | None) -> Analysis:
        if bars is None:
            bars = await self.market.get_bars(inst.symbol, tf, end=end, limit=self.engine.config.lookback)
        return await asyncio.to_thread(self.engine.analyse, inst, tf, bars)
