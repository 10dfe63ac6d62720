"""The walk-forward backtester: the live signal path, replayed bar close by bar close.

At every bar close time t of the merged timeline (every scan target of the universe), in this order, as a
live service that runs the tracker and then the scan at t would:
1. signals whose exit bar has closed by t are closed (`core.lifecycle.track` on the bars since issue);
2. the candidates of the bars closing at t are those `SignalService.scan` would propose: the real engine
   over the live trailing window of each bar (`candidates.decide`), only bars <= t;
3. they are reviewed by the real `RiskManager`, ordered as the live scan orders them (issued_at, then
   confidence, then id), against the signals open at t and the last signal of the same symbol and timeframe.
An approved signal's outcome is `core.lifecycle.track` on its bars (fill at the first bar opening at or after
its issue, i.e. the next bar's open; stop first when a bar spans both levels; gaps; expiry; costs per side),
computed from the bars closing by the end of the backtest and used only once its exit bar has closed.

Two shortcuts keep it fast without changing a decision (tests compare against the live service):
- the screen (`candidates.screen`) skips bars that cannot hold a setup;
- laziness: a bar is not analysed when the risk manager would reject ANY candidate from it at t (its symbol and
  timeframe still open, cooldown, exposure caps). This is checked with the real `RiskManager` on a probe
  candidate of the best quality and the smallest size in each possible direction; it relies on the review being
  monotone (a worse candidate, or more open signals, is never approved where the probe is rejected), which
  holds for `core.risk`. A risk manager that rejects the probe in an empty book disables it.
"""
from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd

from core.backtest.candidates import Series, live_window, screen
from core.books.base import Book, BookBars
from core.breaker import SERVICE_LIMITS, BreakerEvent, BreakerLimits, StrategyBreaker, scope_of
from core.domain import BAR_COLUMNS, AssetClass, Direction, Instrument, Signal, SignalOutcome, Timeframe
from core.errors import MarketDataError, NotEnoughDataError
from core.lifecycle import track
from core.market_data.resample import to_utc_ns
from core.ports import MarketData
from core.risk import RiskManager
from core.signals.engine import SignalEngine
from core.signals.service import DEFAULT_TIMEFRAMES

log = logging.getLogger(__name__)

WARM_UP = timedelta(days=400)
"""Default history before the first scored signal: the replay's default start (bot.app), over a year of bars."""

Progress = Callable[[float, str], None]
"""progress(fraction done 0..1, stage) — called from the worker thread that runs the walk."""


def no_progress(_fraction: float, _stage: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class BacktestConfig:
    costs_bps: float = 10.0
    # what the per-bar setups (the engine) scan; books (core.books) scan their own timeframes
    timeframes: dict[AssetClass, tuple[Timeframe, ...]] = field(default_factory=lambda: dict(DEFAULT_TIMEFRAMES))
    screen: bool = True  # skip bars that cannot hold a setup (see candidates.screen)
    breaker: BreakerLimits | None = SERVICE_LIMITS  # None: no strategy breaker
    lazy: bool = True  # do not analyse bars whose every candidate the risk manager would reject


@dataclass(frozen=True, slots=True)
class Fill:
    time: datetime
    price: float


@dataclass(frozen=True, slots=True)
class Trade:
    """An issued signal, its fill (None when no bar opened after it before the end) and its outcome (None while open)."""

    signal: Signal
    fill: Fill | None
    outcome: SignalOutcome | None


@dataclass(frozen=True, slots=True)
class WalkStats:
    targets: int = 0
    bars: int = 0  # bars inside the window that could be analysed
    screened: int = 0  # of them, passed the screen
    analysed: int = 0  # analysed by the engine over the live window
    skipped_by_risk: int = 0  # not analysed: any candidate would have been rejected
    candidates: int = 0
    rejected: int = 0
    errors: int = 0


@dataclass(frozen=True, slots=True)
class BacktestResult:
    start: datetime  # exclusive: signals issued after it
    end: datetime  # inclusive
    universe: int  # instruments with at least one scan target
    trades: list[Trade]  # every issued signal, in issue (review) order
    series: dict[tuple[str, Timeframe], Series]
    stats: WalkStats
    costs_bps: float
    shadows: list[Trade] = field(default_factory=list)  # followed while their scope's breaker was tripped
    breaker_events: list[BreakerEvent] = field(default_factory=list)

    @property
    def signals(self) -> list[Signal]:
        return [t.signal for t in self.trades]

    @property
    def outcomes(self) -> list[SignalOutcome]:
        return [t.outcome for t in self.trades if t.outcome is not None]


class Backtester:
    def __init__(self, market: MarketData, engine: SignalEngine, risk: RiskManager,
                 config: BacktestConfig | None = None, books: Sequence[Book] = ()) -> None:
        self.market = market
        self.engine = engine
        self.risk = risk
        self.config = config or BacktestConfig()
        self.books = tuple(books)
        counted = risk.config.costs_bps  # 0: the risk manager counts no costs (the mechanics tests)
        if counted and counted != self.config.costs_bps:
            raise ValueError(f"the risk manager counts {counted:g} bps a side and the backtest takes "
                             f"{self.config.costs_bps:g}: give both the same costs")

    def scan_targets(self) -> list[tuple[Instrument, Timeframe]]:
        """The live `SignalService.scan_targets` with this backtest's timeframes."""
        return _targets(self.market, self.config.timeframes)

    def book_targets(self) -> list[tuple[Instrument, Timeframe]]:
        """What the books trade (each book's timeframes per asset class), less what the setups scan already."""
        seen = set(self.scan_targets())
        out: list[tuple[Instrument, Timeframe]] = []
        for book in self.books:
            out.extend(t for t in _targets(self.market, book.timeframes) if t not in seen and t not in out)
        return out

    async def load(self, end: datetime) -> list[Series]:
        """Every bar of every scan target that has closed by `end` (a target without bars is left out)."""
        out = []
        for inst, tf in self.scan_targets() + self.book_targets():
            try:
                bars = await self.market.get_bars(inst.symbol, tf, end=end)
            except MarketDataError as exc:
                log.warning("backtest: no bars for %s %s: %s", inst.symbol, tf, exc)
                continue
            if not bars.empty:
                out.append(Series.of(inst, tf, bars))
        return out

    async def run(self, start: datetime | None, end: datetime | None,
                  progress: Progress = no_progress) -> BacktestResult:
        """Signals issued in (start, end], decided and tracked with data closing by `end` only. Defaults: `end`
        the last bar's close, `start` WARM_UP after the first bar's open. The CPU-bound walk runs in a worker
        thread, so an event loop that awaits this stays responsive."""
        series = await self.load(end or datetime(2200, 1, 1, tzinfo=timezone.utc))
        if not series:
            raise NotEnoughDataError("no bars for any scan target")
        if end is None:
            end = _dt(max(int(s.close_ns[-1]) for s in series))
        if start is None:
            start = _dt(min(int(s.open_ns[0]) for s in series)) + WARM_UP
        if start >= end:
            raise ValueError(f"start {start.isoformat()} is not before end {end.isoformat()}")
        return await asyncio.to_thread(self.walk, series, start, end, progress)

    def walk(self, series: Sequence[Series], start: datetime, end: datetime,
             progress: Progress = no_progress) -> BacktestResult:
        start_ns, end_ns = to_utc_ns(start), to_utc_ns(end)
        setup_keys = {(i.symbol, tf) for i, tf in self.scan_targets()}
        keyed, bars_total = self._events([s for s in series if s.key in setup_keys], start_ns, end_ns, progress)
        index = {s.key: k for k, s in enumerate(series)}
        events = [(t, index[key], p) for t, key, p in keyed]
        walker = _Walker(self, series)
        book_due = self._prepare_books(series, start_ns, end_ns)
        groups = _merge_book_times(_group_by_time(events), book_due)
        for k, (t_ns, group) in enumerate(groups):
            walker.step(t_ns, group, book_due.get(t_ns, {}))
            if k % 64 == 0 or k == len(groups) - 1:
                progress(0.25 + 0.75 * (k + 1) / len(groups), "walk")
        progress(1.0, "walk")
        stats = WalkStats(targets=len(series), bars=bars_total, screened=len(events), analysed=walker.analysed,
                          skipped_by_risk=walker.skipped, candidates=walker.candidates, rejected=walker.rejected,
                          errors=walker.errors)
        universe = len({s.instrument.symbol for s in series})
        live = [t for t in walker.trades if t.signal.id not in walker.shadow_ids]
        shadows = [t for t in walker.trades if t.signal.id in walker.shadow_ids]
        history = walker.breaker.history() if walker.breaker is not None else []
        return BacktestResult(start, end, universe, live, {s.key: s for s in series}, stats,
                              self.config.costs_bps, shadows, history)

    def _prepare_books(self, series: Sequence[Series], start_ns: int,
                       end_ns: int) -> dict[int, dict[int, list[tuple[str, Timeframe]]]]:
        """Each book prepared on every bar (it reads only bars closed by each decision time), and the decision
        times: {close time: {book number: the targets of the book whose bar closed then}}."""
        due: dict[int, dict[int, list[tuple[str, Timeframe]]]] = {}
        if not self.books:
            return due
        bars = {s.key: book_bars(s) for s in series}
        for b, book in enumerate(self.books):
            book.prepare(bars)
            for s in series:
                if s.timeframe not in book.timeframes.get(s.instrument.asset_class, ()):
                    continue
                for t in s.close_ns[(s.close_ns > start_ns) & (s.close_ns <= end_ns)].tolist():
                    due.setdefault(int(t), {}).setdefault(b, []).append(s.key)
        return due

    def _events(self, series: Sequence[Series], start_ns: int, end_ns: int,
                progress: Progress) -> tuple[list[tuple[int, tuple[str, Timeframe], int]], int]:
        """(close time, series key, bar position) of every bar to consider, in time order."""
        events: list[tuple[int, tuple[str, Timeframe], int]] = []
        total = 0
        for k, s in enumerate(series):
            positions = s.decision_positions(start_ns, end_ns)
            total += len(positions)
            if self.config.screen:
                try:
                    positions = screen(self.engine, s, positions)
                except Exception:  # the screen is an optimisation: without it every bar is analysed
                    log.exception("screening %s %s failed; analysing every bar", s.instrument.symbol, s.timeframe)
            events.extend((int(s.close_ns[p]), s.key, int(p)) for p in positions)
            progress(0.25 * (k + 1) / max(1, len(series)), "screen")
        events.sort(key=lambda e: (e[0], e[1][0], str(e[1][1]), e[2]))
        return events, total


def _targets(market: MarketData, timeframes: Mapping[AssetClass, tuple[Timeframe, ...]]) -> list[tuple[Instrument, Timeframe]]:
    out: list[tuple[Instrument, Timeframe]] = []
    for inst in market.instruments():
        available = set(market.timeframes(inst.symbol))
        out.extend((inst, tf) for tf in timeframes.get(inst.asset_class, ()) if tf in available)
    return out


def book_bars(s: Series) -> BookBars:
    block = np.ascontiguousarray(s.bars[list(BAR_COLUMNS)].to_numpy(dtype=np.float64).T)
    return BookBars(s.instrument.symbol, s.instrument.asset_class, s.timeframe, s.open_ns, s.close_ns, block)


def _merge_book_times(groups: list[tuple[int, list[tuple[int, int]]]],
                      book_due: Mapping[int, object]) -> list[tuple[int, list[tuple[int, int]]]]:
    """The setups' groups of bars, with an empty group at every time only a book decides at."""
    have = {t for t, _ in groups}
    extra: list[tuple[int, list[tuple[int, int]]]] = [(t, []) for t in book_due if t not in have]
    return sorted(groups + extra, key=lambda g: g[0])


def _group_by_time(events: list[tuple[int, int, int]]) -> list[tuple[int, list[tuple[int, int]]]]:
    groups: list[tuple[int, list[tuple[int, int]]]] = []
    for t, k, p in events:
        if not groups or groups[-1][0] != t:
            groups.append((t, []))
        groups[-1][1].append((k, p))
    return groups


class _Walker:
    """The book at the current time of the walk: open signals, the last signal per symbol and timeframe."""

    def __init__(self, bt: Backtester, series: Sequence[Series]) -> None:
        self.engine, self.risk, self.costs = bt.engine, bt.risk, bt.config.costs_bps
        self.books = bt.books
        self.series = series
        self.index = {s.key: k for k, s in enumerate(series)}
        self.lazy = bt.config.lazy and _probe_passes_alone(bt.risk)
        self.open: dict[str, Signal] = {}
        self.closing: list[tuple[int, str]] = []  # (exit close time ns, signal id), a heap
        self.last: dict[tuple[str, Timeframe], Signal] = {}
        self.trades: list[Trade] = []
        self.position: dict[str, int] = {}  # signal id -> its place in trades
        self.exits = 0  # signals closed by their book's rule
        self.breaker = StrategyBreaker(bt.config.breaker) if bt.config.breaker is not None else None
        self.shadow_ids: set[str] = set()
        self.analysed = self.skipped = self.candidates = self.rejected = self.errors = 0

    def step(self, t_ns: int, group: list[tuple[int, int]],
             book_due: Mapping[int, list[tuple[str, Timeframe]]] | None = None) -> None:
        while self.closing and self.closing[0][0] <= t_ns:
            closed = self.open.pop(heapq.heappop(self.closing)[1], None)
            if closed is not None and self.breaker is not None:
                self._record(closed)
        candidates = self._book_candidates(t_ns, book_due or {}) + self._candidates(group)
        self.candidates += len(candidates)
        open_now = list(self.open.values())
        for cand in sorted(candidates, key=lambda s: (s.issued_at, -s.confidence, s.id)):
            decision = self.risk.review(cand, open_now, self.last.get((cand.symbol, cand.timeframe)))
            if not decision.approved:
                self.rejected += 1
                continue
            open_now.append(cand)
            if self.breaker is not None and not self.breaker.allows(scope_of(cand.strategy, cand.asset_class), _dt(t_ns)):
                self.shadow_ids.add(cand.id)  # followed in shadow: never in the trades, the portfolio or the report
            self._issue(cand)

    def _book_candidates(self, t_ns: int, due: Mapping[int, list[tuple[str, Timeframe]]]) -> list[Signal]:
        """Each due book's decision at t: its exits close its signals at the next bar's open, its entries are
        candidates like any other."""
        out: list[Signal] = []
        for b, keys in due.items():
            book = self.books[b]
            held = [s for s in self.open.values() if s.strategy == book.name]
            decision = book.decide(t_ns, keys, held)
            for ex in decision.exits:
                self._exit(ex.signal_id, t_ns)
            out.extend(decision.entries)
        return out

    def _record(self, s: Signal) -> None:
        """Tell the breaker that a signal closed (its outcome's exit has passed)."""
        assert self.breaker is not None
        outcome = self.trades[self.position[s.id]].outcome
        assert outcome is not None
        self.breaker.record(scope_of(s.strategy, s.asset_class), outcome.exit_time, outcome.net_return,
                            s.position_size, shadow=s.id in self.shadow_ids)

    def _exit(self, signal_id: str, t_ns: int) -> None:
        k = self.position[signal_id]
        trade = self.trades[k]
        s = self.series[self.index[(trade.signal.symbol, trade.signal.timeframe)]]
        fill, outcome = follow(trade.signal, s, self.costs, exit_at=_dt(t_ns))
        self.trades[k] = Trade(trade.signal, fill, outcome)
        self.exits += 1
        if outcome is not None:
            heapq.heappush(self.closing, (to_utc_ns(outcome.exit_time), signal_id))

    def _candidates(self, group: list[tuple[int, int]]) -> list[Signal]:
        """The candidates of the bars closing now, analysed in one `analyse_many` call as the live scan analyses
        its targets (one model batch per step; the analyses are those of `candidates.decide`, bar by bar)."""
        todo = []
        for k, pos in group:
            s = self.series[k]
            if self.lazy and self._any_rejected(s, pos):
                self.skipped += 1
                continue
            self.analysed += 1
            todo.append((s.instrument, s.timeframe, live_window(self.engine, s, pos), 1))

        def failed(inst: Instrument, tf: Timeframe, exc: Exception) -> None:
            if isinstance(exc, NotEnoughDataError):
                return
            # as the live scan: one bad instrument must not stop the run
            log.error("analysis of %s %s failed: %s", inst.symbol, tf, exc, exc_info=exc)
            self.errors += 1

        out = []
        for analysis in self.engine.analyse_many(todo, failed):
            try:
                candidate = self.engine.candidate(analysis)
            except Exception as exc:
                failed(analysis.instrument, analysis.timeframe, exc)
                continue
            if candidate is not None:
                out.append(candidate)
        return out

    def _any_rejected(self, s: Series, pos: int) -> bool:
        issued = _dt(int(s.close_ns[pos]))
        open_now = list(self.open.values())
        last = self.last.get(s.key)
        return not any(self.risk.review(_probe(s.instrument, s.timeframe, issued, d), open_now, last).approved
                       for d in _directions(s.instrument))

    def _issue(self, signal: Signal) -> None:
        s = self.series[self.index[(signal.symbol, signal.timeframe)]]
        fill, outcome = follow(signal, s, self.costs)
        self.open[signal.id] = signal
        self.last[(signal.symbol, signal.timeframe)] = signal
        self.position[signal.id] = len(self.trades)
        self.trades.append(Trade(signal, fill, outcome))
        if outcome is not None:
            heapq.heappush(self.closing, (to_utc_ns(outcome.exit_time), signal.id))


def follow(signal: Signal, s: Series, costs_bps: float,
           exit_at: datetime | None = None) -> tuple[Fill | None, SignalOutcome | None]:
    """The fill and outcome `core.lifecycle.track` gives on the bars from the signal's issue to its expiry bar
    (the last bar it can be open on), among the bars that closed by the end of the backtest; `exit_at`: when
    its book's rule closed it."""
    issued, expires = to_utc_ns(signal.issued_at), to_utc_ns(signal.expires_at)
    first = int(np.searchsorted(s.open_ns, issued, side="left"))
    if first >= len(s.open_ns):
        return None, None
    last = int(np.searchsorted(s.close_ns, expires, side="left"))  # first bar closing at or after expiry
    fill = Fill(_dt(int(s.open_ns[first])), float(s.bars["open"].iloc[first]))
    return fill, track(signal, s.bars.iloc[first: last + 1], costs_bps, exit_at)


def _dt(ns: int) -> datetime:
    return pd.Timestamp(ns, unit="ns", tz="UTC").to_pydatetime()


def _directions(inst: Instrument) -> tuple[Direction, ...]:
    return (Direction.LONG, Direction.SHORT) if inst.allows_short else (Direction.LONG,)


def _probe(inst: Instrument, tf: Timeframe, issued: datetime, d: Direction) -> Signal:
    """The most approvable candidate imaginable: high confidence, R:R 3, the smallest position."""
    entry = 100.0
    return Signal(id=f"probe-{inst.symbol}-{tf}", symbol=inst.symbol, asset_class=inst.asset_class, timeframe=tf,
                  direction=d, entry=entry, target=entry * (1 + 0.03 * d.sign), stop=entry * (1 - 0.01 * d.sign),
                  confidence=99, position_size=0.0001, issued_at=issued, expires_at=issued + timedelta(days=1),
                  reasoning="", strategy="probe")


def _probe_passes_alone(risk: RiskManager) -> bool:
    inst = Instrument("PROBE", AssetClass.EQUITY)
    t = datetime(2000, 1, 3, tzinfo=timezone.utc)
    return all(risk.review(_probe(inst, Timeframe.D1, t, d), [], None).approved for d in _directions(inst))
