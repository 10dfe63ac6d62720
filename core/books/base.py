"""Books: strategy families that hold positions across the universe, beside the per-bar setups.

A setup (core.setups) reads one bar of one instrument and proposes an idea whose life ends at its target, stop
or expiry. A book reads the whole universe it trades at a bar close and keeps a set of positions: it proposes
entries (ordinary `Signal`s, reviewed by the risk manager like any other) and exits of the signals it holds
(closed at the next bar's open, `core.lifecycle.track(exit_at=...)`). The backtester and the live service call
the same two methods, so research and live share one code path:

- `prepare(series)`: the bars of every target the book trades, closed by "now" (a backtest gives them all at
  once and the book may precompute causal features over them; the live service gives the recent history);
- `decide(t_ns, due, held)`: at bar close time t, the targets whose bar closed at t and the book's open signals:
  entries and exits decided from bars closed by t only (tests truncate the data at t and compare).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

import numpy as np

from core.domain import AssetClass, Signal, Timeframe

Key = tuple[str, Timeframe]


@dataclass(frozen=True, slots=True)
class Exit:
    """The book's decision to close one of its open signals at the next bar's open, and why (plain words)."""

    signal_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class BookDecision:
    entries: list[Signal] = field(default_factory=list)
    exits: list[Exit] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class BookBars:
    """The bars of one target as arrays: open times (int64 UTC ns), close times, and o/h/l/c/v rows."""

    symbol: str
    asset_class: AssetClass
    timeframe: Timeframe
    open_ns: np.ndarray
    close_ns: np.ndarray
    block: np.ndarray  # (5, n) open, high, low, close, volume

    @property
    def close(self) -> np.ndarray:
        return self.block[3]

    def last_closed(self, t_ns: int) -> int:
        """Position of the last bar closed at or before t (-1 if none)."""
        return int(np.searchsorted(self.close_ns, t_ns, side="right")) - 1


class Book(Protocol):
    name: str  # the signals' strategy

    @property
    def timeframes(self) -> Mapping[AssetClass, tuple[Timeframe, ...]]: ...

    @property
    def lookback(self) -> int: ...  # bars of history `decide` reads at most (the live service reads this many)

    def prepare(self, bars: Mapping[Key, BookBars]) -> None: ...

    def decide(self, t_ns: int, due: Sequence[Key], held: Sequence[Signal]) -> BookDecision: ...


@dataclass(frozen=True, slots=True)
class Record:
    """What past trades of a kind paid, after costs, counted from trades that had closed before the decision:
    the share that won (the confidence a signal of the kind shows), the mean (its expected return), and the
    5th percentile (its worst case, as a return one trade in twenty did worse than)."""

    trades: int
    win_rate: float
    mean: float
    worst: float
    scope: str  # what the trades were ("trend crypto 4h, since 2017-09-01")

    @classmethod
    def of(cls, returns: np.ndarray, scope: str) -> Record | None:
        r = np.asarray(returns, dtype=np.float64)
        r = r[np.isfinite(r)]
        if len(r) == 0:
            return None
        return cls(len(r), float(np.mean(r > 0)), float(np.mean(r)), float(np.quantile(r, 0.05)), scope)

    def evidence(self) -> dict[str, object]:
        return {"trades": self.trades, "win_rate": round(self.win_rate, 4), "mean": round(self.mean, 6),
                "worst": round(self.worst, 6), "scope": self.scope}


def time_of(ns: int) -> datetime:
    """A bar time in nanoseconds since the epoch as an aware UTC datetime."""
    return datetime.fromtimestamp(ns // 10**9, tz=timezone.utc).replace(microsecond=(ns // 1000) % 10**6)
