"""The portfolio a person following every issued signal would have held.

Each signal is entered at its fill (the lifecycle's next-bar open) with `position_size` x equity at that moment
(the risk manager's medium-risk suggestion), long or short, and left at its exit. Capital constraint: the market
value of the open positions plus the new one may not exceed `max_gross` (100 %) of equity; a signal that finds
no room is skipped and counted. Costs: bps per side of the entry value, on entry and on exit, so every position
earns exactly its signal's `net_return`. Equity is marked to market at every daily close (UTC midnight after a
day on which any instrument of the universe had a bar), with each position at its own timeframe's last close.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd

from core.backtest.candidates import Series
from core.backtest.walk import BacktestResult, Trade
from core.domain import Timeframe
from core.market_data.resample import to_utc_ns

_DAY_NS = 86_400 * 10**9


@dataclass(frozen=True, slots=True)
class PortfolioConfig:
    initial_equity: float = 1.0
    max_gross: float = 1.0  # open positions' market value, as a fraction of equity, at most


@dataclass(frozen=True, slots=True)
class PortfolioResult:
    times: list[datetime]  # the start, then every daily mark
    dates: list[date]  # the day each point closes (the start: the day before it)
    equity: np.ndarray
    gross: np.ndarray  # open positions' market value / equity at each point
    entered: list[str] = field(default_factory=list)  # signal ids taken
    skipped: list[str] = field(default_factory=list)  # signal ids that found no room
    traded: float = 0.0  # market value bought and sold, entries and exits both counted
    costs: float = 0.0  # costs paid, in units of equity

    @property
    def exposure(self) -> float:
        """Average share of equity invested over the daily marks."""
        return float(np.mean(self.gross[1:])) if len(self.gross) > 1 else 0.0


@dataclass(slots=True)
class _Position:
    trade: Trade
    qty: float  # signed: negative for a short
    value_at_entry: float
    fill_ns: int
    closes: np.ndarray
    close_ns: np.ndarray

    def price(self, t_ns: int) -> float:
        """The last close at or before t of a bar that closed after the fill; the fill price before that."""
        i = int(np.searchsorted(self.close_ns, t_ns, side="right")) - 1
        if i < 0 or self.close_ns[i] <= self.fill_ns:
            assert self.trade.fill is not None
            return self.trade.fill.price
        return float(self.closes[i])


def mark_times(series: dict[tuple[str, Timeframe], Series], start_ns: int, end_ns: int) -> np.ndarray:
    """UTC midnights in (start, end] that end a day on which some bar of the universe closed."""
    days = [(-(-s.close_ns // _DAY_NS)) * _DAY_NS for s in series.values()]  # each close rounded up to midnight
    if not days:
        return np.empty(0, dtype=np.int64)
    all_days = np.unique(np.concatenate(days))
    return all_days[(all_days > start_ns) & (all_days <= end_ns)]


def simulate(result: BacktestResult, config: PortfolioConfig | None = None) -> PortfolioResult:
    cfg = config or PortfolioConfig()
    start_ns, end_ns = to_utc_ns(result.start), to_utc_ns(result.end)
    cost = result.costs_bps / 10_000
    events: list[tuple[int, int, int, int, str]] = []  # (time, kind, tie-break..., id); exits 0, marks 1, entries 2
    by_id: dict[str, Trade] = {}
    for t in result.trades:
        if t.fill is None:
            continue
        by_id[t.signal.id] = t
        s = t.signal
        events.append((to_utc_ns(t.fill.time), 2, to_utc_ns(s.issued_at), -s.confidence, s.id))
    marks = mark_times(result.series, start_ns, end_ns)
    events.extend((int(m), 1, 0, 0, "") for m in marks)
    heapq.heapify(events)

    cash = cfg.initial_equity
    positions: dict[str, _Position] = {}
    times, equity, gross = [result.start], [cash], [0.0]
    entered: list[str] = []
    skipped: list[str] = []
    traded = paid = 0.0

    def value(t_ns: int) -> tuple[float, float]:
        held = [(p.qty * p.price(t_ns)) for p in positions.values()]
        return cash + sum(held), sum(abs(v) for v in held)

    while events:
        t_ns, kind, _, _, sid = heapq.heappop(events)
        if kind == 0:
            p = positions.pop(sid)
            assert p.trade.outcome is not None
            cash += p.qty * p.trade.outcome.exit_price - cost * p.value_at_entry
            traded += abs(p.qty * p.trade.outcome.exit_price)
            paid += cost * p.value_at_entry
        elif kind == 1:
            eq, g = value(t_ns)
            times.append(_dt(t_ns))
            equity.append(eq)
            gross.append(g / eq if eq > 0 else 0.0)
        else:
            trade = by_id[sid]
            assert trade.fill is not None
            eq, g = value(t_ns)
            size = trade.signal.position_size * eq
            if eq <= 0 or size <= 0 or g + size > cfg.max_gross * eq * (1 + 1e-12):
                skipped.append(sid)
                continue
            series = result.series[(trade.signal.symbol, trade.signal.timeframe)]
            qty = trade.signal.direction.sign * size / trade.fill.price
            positions[sid] = _Position(trade, qty, size, t_ns, series.bars["close"].to_numpy(), series.close_ns)
            cash -= qty * trade.fill.price + cost * size
            traded += size
            paid += cost * size
            entered.append(sid)
            if trade.outcome is not None:
                heapq.heappush(events, (to_utc_ns(trade.outcome.exit_time), 0, 0, 0, sid))
    dates = [(t - timedelta(microseconds=1)).date() for t in times]
    return PortfolioResult(times, dates, np.asarray(equity), np.asarray(gross), entered, skipped, traded, paid)


def _dt(ns: int) -> datetime:
    return pd.Timestamp(ns, unit="ns", tz="UTC").to_pydatetime()
