"""SignalService: scans the universe for new closed bars, decides, reviews risk, persists, publishes."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Protocol, runtime_checkable

from core.books.base import Book, BookBars, BookDecision, Exit
from core.breaker import BreakerLimits, BreakerState, StrategyBreaker, scope_of
from core.clock import Clock
from core.domain import AssetClass, Instrument, Signal, Timeframe
from core.errors import MarketDataError, NotEnoughDataError, UnknownSymbolError
from core.events import EventBus, SignalIssued, StrategyPaused
from core.market_data.resample import BarArrays, to_utc_ns
from core.ports import MarketData, SignalRepository
from core.risk import RiskManager
from core.signals.engine import Analysis, SignalEngine, bar_time
from core.signals.narrative import Narrator

log = logging.getLogger(__name__)

DEFAULT_TIMEFRAMES: dict[AssetClass, tuple[Timeframe, ...]] = {
    AssetClass.EQUITY: (Timeframe.D1, Timeframe.H1),
    AssetClass.CRYPTO: (Timeframe.H1, Timeframe.H4, Timeframe.D1),
    AssetClass.FX: (Timeframe.H1, Timeframe.H4, Timeframe.D1),
    AssetClass.INDEX: (),
}
MAX_CATCH_UP = 500  # new bars evaluated per target and scan, at most


@runtime_checkable
class ArrayMarketData(Protocol):
    """A provider that also serves bars as arrays (``CsvMarketData``): a scan then reads no frames."""

    async def get_bar_arrays(self, symbol: str, timeframe: Timeframe, *, end: datetime,
                             limit: int | None = None) -> BarArrays: ...


BarReader = Callable[..., Awaitable[BarArrays]]


@dataclass
class ScanReport:
    evaluated: int = 0
    issued: list[Signal] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (candidate id, reason)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (symbol, error)
    exits: list[Exit] = field(default_factory=list)  # books' decisions to close their signals at the next open
    shadowed: list[Signal] = field(default_factory=list)  # approved while their scope's breaker was tripped
    unread: list[tuple[str, str]] = field(default_factory=list)  # ("SYMBOL tf", why): targets with no bar by now


class SignalService:
    def __init__(self, market: MarketData, engine: SignalEngine, signals: SignalRepository, bus: EventBus,
                 risk: RiskManager, clock: Clock,
                 timeframes: dict[AssetClass, tuple[Timeframe, ...]] | None = None,
                 on_demand: MarketData | None = None, narrator: Narrator | None = None,
                 books: Sequence[Book] = (), setups: bool = True, breaker: BreakerLimits | None = None) -> None:
        self.market = market
        self.on_demand = on_demand or market  # /signal may read a provider directly (live: the router)
        self.engine = engine
        self.signals = signals
        self.bus = bus
        self.risk = risk
        self.clock = clock
        self.timeframes = timeframes or DEFAULT_TIMEFRAMES
        self.narrator = narrator  # reasoning written by an LLM (None: the engine's template text)
        self.books = tuple(books)  # strategy families that hold positions (core.books)
        self.setups = setups  # whether the engine's per-bar setups issue signals (/signal analyses either way)
        self._book_seen: dict[str, int] = {}  # book -> the last bar close it decided at
        self.breaker_limits = breaker  # the strategy breaker's limits (None: off), as the backtest's walk applies them
        self.breaker: StrategyBreaker | None = None  # rebuilt from the stored closes before each review
        self._told: set[tuple[str, datetime, str]] | None = None  # breaker events already announced
        self._breaker_closes = -1  # the stored closes the breaker was replayed from
        self._last_seen: dict[tuple[str, Timeframe], datetime] = {}
        self._lock = asyncio.Lock()
        self.last_scan_at: datetime | None = None  # service clock time of the last completed scan

    def instrument(self, symbol: str) -> Instrument:
        wanted = symbol.strip().upper()
        known = {i.symbol.upper(): i for i in self.on_demand.instruments()}
        if wanted in known:
            return known[wanted]
        import difflib

        raise UnknownSymbolError(symbol, difflib.get_close_matches(wanted, list(known), n=3, cutoff=0.6))

    def scan_targets(self) -> list[tuple[Instrument, Timeframe]]:
        out: list[tuple[Instrument, Timeframe]] = []
        for inst in self.market.instruments():
            available = set(self.market.timeframes(inst.symbol))
            out.extend((inst, tf) for tf in self.timeframes.get(inst.asset_class, ()) if tf in available)
        return out

    async def analyse(self, symbol: str, timeframe: Timeframe | None = None) -> Analysis:
        """On-demand analysis of the last closed bar (for /signal)."""
        inst = self.instrument(symbol)
        available = list(self.on_demand.timeframes(inst.symbol))
        tf = timeframe or (Timeframe.D1 if Timeframe.D1 in available else available[-1])
        if tf not in available:
            raise MarketDataError(f"{inst.symbol} has no {tf} bars here (available: {', '.join(map(str, available))})")
        bars = await self.on_demand.get_bars(inst.symbol, tf, end=self.clock.now(), limit=self.engine.config.lookback)
        return await asyncio.to_thread(self.engine.analyse, inst, tf, bars)

    async def scan(self) -> ScanReport:
        """Evaluate every (instrument, timeframe) whose newest closed bar has not been evaluated yet."""
        async with self._lock:
            now = self.clock.now()
            report = ScanReport()
            batch = await self._fresh_bars(now, report) if self.setups else []
            candidates: list[Signal] = []
            if batch:
                analyses = await asyncio.to_thread(self._analyse_batch, batch, report)
                report.evaluated = len(analyses)
                candidates = [c for c in (self.engine.candidate(a) for a in analyses) if c is not None]
            for book in self.books:
                candidates.extend(await self._book_step(book, now, report))
            if not candidates:
                await self.refresh_breaker()  # announces a trip or resume without waiting for a candidate
            await self._review_and_issue(candidates, report)
            self.last_scan_at = now
            return report

    async def issue(self, candidates: Sequence[Signal]) -> ScanReport:
        """Risk review, persistence and publication of candidates made outside a scan (/admin generate),
        serialised with the scans so the risk manager sees one consistent book."""
        async with self._lock:
            report = ScanReport()
            await self._review_and_issue(candidates, report)
            return report

    async def _fresh_bars(self, now: datetime, report: ScanReport) -> list[tuple[Instrument, Timeframe, BarArrays, int]]:
        """Per target, the bars to analyse and how many of the newest ones have not been seen yet
        (every new bar is evaluated, also when the clock ran past several since the last scan)."""
        batch = []
        lookback = self.engine.config.lookback
        read = self._bar_reader()
        for inst, tf in self.scan_targets():
            seen = self._last_seen.get((inst.symbol, tf))
            behind = 1 if seen is None else int((now - seen) / tf.duration) + 1  # an upper bound on new bars
            try:
                bars = await read(inst.symbol, tf, end=now, limit=lookback + min(behind, MAX_CATCH_UP) - 1)
            except MarketDataError as exc:
                report.errors.append((inst.symbol, str(exc)))
                continue
            if not len(bars):
                report.unread.append((f"{inst.symbol} {tf}", f"no {tf} bar closed by {now.isoformat()}"))
                continue
            new = len(bars) if seen is None else int((bars.times > to_utc_ns(seen)).sum())
            if new == 0:
                continue
            self._last_seen[(inst.symbol, tf)] = bar_time(int(bars.times[-1]))
            batch.append((inst, tf, bars, 1 if seen is None else min(new, MAX_CATCH_UP)))
        return batch

    def book_targets(self, book: Book) -> list[tuple[Instrument, Timeframe]]:
        out: list[tuple[Instrument, Timeframe]] = []
        for inst in self.market.instruments():
            available = set(self.market.timeframes(inst.symbol))
            out.extend((inst, tf) for tf in book.timeframes.get(inst.asset_class, ()) if tf in available)
        return out

    async def book_bars(self, book: Book, now: datetime,
                        report: ScanReport | None = None) -> dict[tuple[str, Timeframe], BookBars]:
        """The last `book.lookback` bars closed by `now` of every target the book trades."""
        read = self._bar_reader()
        out: dict[tuple[str, Timeframe], BookBars] = {}
        for inst, tf in self.book_targets(book):
            try:
                bars = await read(inst.symbol, tf, end=now, limit=book.lookback)
            except MarketDataError as exc:
                if report is not None:
                    report.errors.append((inst.symbol, str(exc)))
                continue
            if not len(bars):
                if report is not None:
                    report.unread.append((f"{inst.symbol} {tf}", f"no {tf} bar closed by {now.isoformat()}"))
            else:
                step = int(tf.duration.total_seconds()) * 10**9
                out[(inst.symbol, tf)] = BookBars(inst.symbol, inst.asset_class, tf, bars.times, bars.times + step,
                                                  bars.block)
        return out

    async def _book_step(self, book: Book, now: datetime, report: ScanReport) -> list[Signal]:
        """The book's decision at the newest bar close among its targets, once per close: its exits are stored
        (the tracker takes them at the next open) and its entries returned for the risk review."""
        seen = self._book_seen.get(book.name)
        if seen is not None and await self._newest_close(book, now) <= seen:
            return []  # nothing closed since its last decision: the book's long windows are not read again
        bars = await self.book_bars(book, now, report)
        if not bars:
            return []
        t = max(int(b.close_ns[-1]) for b in bars.values())
        if t <= self._book_seen.get(book.name, 0):
            return []
        due = [k for k, b in bars.items() if int(b.close_ns[-1]) == t]
        held = [s for s in await self.signals.open_signals() if s.strategy == book.name]

        def decide() -> BookDecision:
            book.prepare(bars)
            return book.decide(t, due, held)

        try:
            decision = await asyncio.to_thread(decide)
        except Exception as exc:  # noqa: BLE001 - one failing book must not stop the scan
            log.exception("book %s failed at %s", book.name, bar_time(t))
            report.errors.append((book.name, f"{type(exc).__name__}: {exc}"))
            return []
        self._book_seen[book.name] = t
        report.evaluated += len(due)  # the targets whose bar closed at t, decided on
        if decision.exits:
            await self.signals.request_exits([(e.signal_id, bar_time(t), e.reason) for e in decision.exits])
            report.exits.extend(decision.exits)
            for e in decision.exits:
                log.info("exit %s at the next open: %s", e.signal_id, e.reason)
        return decision.entries

    async def _newest_close(self, book: Book, now: datetime) -> int:
        """The newest bar close (ns) among the book's targets by `now`, from the last bar of each only."""
        read = self._bar_reader()
        newest = 0
        for inst, tf in self.book_targets(book):
            try:
                last = await read(inst.symbol, tf, end=now, limit=1)
            except MarketDataError:
                continue  # the full read reports it
            if len(last):
                newest = max(newest, int(last.times[-1]) + int(tf.duration.total_seconds()) * 10**9)
        return newest

    def _bar_reader(self) -> BarReader:
        """How to read the provider's bars as arrays: directly when it serves them, else from its frames."""
        if isinstance(self.market, ArrayMarketData):
            return self.market.get_bar_arrays
        market = self.market

        async def from_frame(symbol: str, timeframe: Timeframe, *, end: datetime, limit: int | None = None) -> BarArrays:
            return BarArrays.of(await market.get_bars(symbol, timeframe, end=end, limit=limit))

        return from_frame

    def _analyse_batch(self, batch: Iterable[tuple[Instrument, Timeframe, BarArrays, int]], report: ScanReport) -> list[Analysis]:
        def failed(inst: Instrument, tf: Timeframe, exc: Exception) -> None:
            if isinstance(exc, NotEnoughDataError):
                return
            log.error("analysis of %s %s failed", inst.symbol, tf, exc_info=exc)
            report.errors.append((inst.symbol, f"{type(exc).__name__}: {exc}"))

        return self.engine.analyse_many(batch, failed)

    async def _review_and_issue(self, candidates: Sequence[Signal], report: ScanReport) -> None:
        """Risk review in time order, against what is open and the last signal per symbol and timeframe
        (both kept up to date as candidates are approved); the approved ones stored in one transaction,
        then published. The store is read once per scan, not once per candidate."""
        if not candidates:
            return
        breaker = await self.refresh_breaker()
        open_now = list(await self.signals.open_signals())
        known = await self.signals.existing_signal_ids([c.id for c in candidates])
        latest = await self.signals.latest_signals_for({(c.symbol, c.timeframe) for c in candidates})
        approved: list[Signal] = []
        now = self.clock.now()
        for cand in sorted(candidates, key=lambda s: (s.issued_at, -s.confidence, s.id)):
            if cand.id in known:
                continue  # this bar was decided before (a restart re-scans it)
            if cand.expires_at <= now:  # a first scan after a weekend or a long stop finds old bars' setups
                report.rejected.append((cand.id, f"expired at {cand.expires_at:%Y-%m-%d %H:%M} UTC, before it "
                                                 "could be issued"))
                continue
            key = (cand.symbol, cand.timeframe)
            decision = self.risk.review(cand, open_now, latest.get(key))
            if not decision.approved:
                report.rejected.append((cand.id, decision.reason))
                continue
            scope = scope_of(cand.strategy, cand.asset_class)
            if breaker is not None and not breaker.allows(scope):  # the replay holds stored closes only
                state = breaker.state(scope)
                cand = replace(cand, evidence={**cand.evidence, "shadow": {
                    "scope": scope, "since": state.since.isoformat() if state.since else None, "reason": state.reason}})
                report.shadowed.append(cand)
            else:
                approved.append(cand)
            known.add(cand.id)
            open_now.append(cand)
            last = latest.get(key)
            if last is None or (cand.issued_at, cand.id) > (last.issued_at, last.id):
                latest[key] = cand
        approved = await self._narrate(approved)
        # shadows are stored and tracked, never published; the approved ones' fan-out is recorded with them, so a
        # crash before the notifier queues them leaves them pending for the next start (never lost)
        await self.signals.add_signals(approved + report.shadowed, fan_out=[c.id for c in approved])
        for cand in report.shadowed:
            log.info("shadow %s (%s paused)", cand.id, cand.evidence["shadow"]["scope"])
        for cand in approved:
            report.issued.append(cand)
            log.info("issued %s %s conf %d", cand.id, cand.direction.verb, cand.confidence)
            await self.bus.publish(SignalIssued(cand))

    async def refresh_breaker(self) -> StrategyBreaker | None:
        """The strategy breaker as of now: every stored close replayed in time order (live and shadow signals
        alike, as the backtest's walk records them), so a restart loses no trip. Breaker events that are new since
        the last refresh are published (StrategyPaused), those found at the first refresh only remembered."""
        if self.breaker_limits is None:
            return None
        count = await self.signals.outcome_count()
        if self.breaker is not None and count == self._breaker_closes:
            return self.breaker  # nothing closed since the last replay
        closed = sorted(await self.signals.outcomes_since(datetime(1970, 1, 1, tzinfo=timezone.utc)),
                        key=lambda p: (p[1].exit_time, p[0].id))
        breaker = StrategyBreaker(self.breaker_limits)
        for sig, out in closed:
            breaker.record(scope_of(sig.strategy, sig.asset_class), out.exit_time, out.net_return,
                           sig.position_size, shadow=sig.shadow)
        self.breaker, self._breaker_closes = breaker, count
        events = breaker.history()
        first = self._told is None
        told = self._told if self._told is not None else set()
        for ev in events:
            key = (ev.scope, ev.at, ev.kind)
            if key in told:
                continue
            told.add(key)
            if not first:
                log.warning("strategy breaker: %s %s: %s", ev.scope, ev.kind, ev.reason)
                await self.bus.publish(StrategyPaused(ev.scope, ev.scope.split("/")[-1], ev.kind, ev.reason, ev.at))
        self._told = told
        return breaker

    def paused(self) -> list[BreakerState]:
        """The scopes whose breaker is tripped at the last refresh."""
        if self.breaker is None:
            return []
        return [st for st in (self.breaker.state(sc) for sc in self.breaker.scopes()) if st.tripped]

    async def _narrate(self, approved: list[Signal]) -> list[Signal]:
        """The approved signals with their reasoning written by the narrator's LLMs when it has any (within
        its time budget; whatever fails keeps the template text). Never loses a signal."""
        if self.narrator is None or not approved:
            return approved
        try:
            written = await self.narrator.narrate(approved)
        except Exception:  # noqa: BLE001 - the narrator must never cost a signal
            log.exception("reasoning writers failed; the template text stays")
            return approved
        if len(written) != len(approved) or any(w.id != a.id for w, a in zip(written, approved)):
            log.error("reasoning writers returned other signals; the template text stays")
            return approved
        return written

    async def close(self) -> None:
        """Close the narrator's HTTP clients (if any)."""
        if self.narrator is not None:
            await self.narrator.close()
