"""A panel: the daily bars of many instruments aligned on one calendar, as (days x symbols) arrays.

Days are the union of the instruments' bar open times; an instrument without a bar on a day has NaN there.
Each row is usable from its close on (`close_ns`): a day's row closes when its daily bar does.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.books.base import BookBars


@dataclass(frozen=True, slots=True)
class Panel:
    symbols: tuple[str, ...]
    open_ns: np.ndarray  # (T,) int64
    close_ns: np.ndarray  # (T,) int64
    open: np.ndarray  # (T, N) float64, NaN where the symbol has no bar
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    @classmethod
    def of(cls, bars: Sequence[BookBars]) -> Panel:
        if not bars:
            empty = np.empty((0, 0))
            return cls((), np.empty(0, np.int64), np.empty(0, np.int64), empty, empty, empty, empty, empty)
        days = np.unique(np.concatenate([b.open_ns for b in bars]))
        step = int(np.median([int(b.close_ns[0] - b.open_ns[0]) for b in bars if len(b.open_ns)]))
        cols = [np.full((len(days), len(bars)), np.nan) for _ in range(5)]
        for j, b in enumerate(bars):
            rows = np.searchsorted(days, b.open_ns)
            for k in range(5):
                cols[k][rows, j] = b.block[k]
        return cls(tuple(b.symbol for b in bars), days, days + step, *cols)

    def last_closed(self, t_ns: int) -> int:
        """Row of the last day closed at or before t (-1 if none)."""
        return int(np.searchsorted(self.close_ns, t_ns, side="right")) - 1

    def __len__(self) -> int:
        return len(self.open_ns)
