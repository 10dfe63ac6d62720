"""Market regime by day: VIX level and percentile, SPX trend, breadth of the equity universe.

A `MarketContext` is a table of daily rows, each usable from the close of its day on (the daily bar of day D
closes at D+1 00:00 UTC, as every daily bar of this project). `at(t)` returns the last row that had closed by
t, so a decision at t reads no later day. Missing inputs give NaN features (the models handle NaN)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

REGIME_FEATURES: tuple[str, ...] = (
    "vix",  # VIX close
    "vix_pct_252",  # its percentile over the last 252 days
    "spx_ret_20",  # SPX 20-day return
    "spx_dist_sma200",  # SPX close / SMA200 - 1
    "breadth_sma50",  # share of the universe closing above its SMA50
)
DAY_NS = 86_400 * 10**9
MAX_AGE_NS = 7 * DAY_NS
"""A row older than this at the time asked is stale (the source ended: VIX and SPX files stop in 2018 while crypto
goes on), and the features are NaN rather than frozen at their last value."""


@dataclass(frozen=True, slots=True)
class MarketContext:
    close_ns: np.ndarray  # int64, the close time of each day's row (its open + one day), ascending
    values: np.ndarray  # (days, len(REGIME_FEATURES))

    @classmethod
    def empty(cls) -> MarketContext:
        return cls(np.empty(0, dtype=np.int64), np.empty((0, len(REGIME_FEATURES))))

    @classmethod
    def build(cls, spx: pd.DataFrame | None = None, vix: pd.DataFrame | None = None,
              universe_closes: Mapping[str, pd.Series] | None = None) -> MarketContext:
        """From daily bar frames (UTC day index): SPX, VIX, and the daily closes of the equity universe."""
        parts: dict[str, pd.Series] = {}
        if vix is not None and not vix.empty:
            close = vix["close"].astype(float)
            parts["vix"] = close
            parts["vix_pct_252"] = close.rolling(252, min_periods=60).rank(pct=True)
        if spx is not None and not spx.empty:
            close = spx["close"].astype(float)
            parts["spx_ret_20"] = close.pct_change(20, fill_method=None)
            parts["spx_dist_sma200"] = close / close.rolling(200, min_periods=200).mean() - 1.0
        if universe_closes:
            panel = pd.DataFrame(dict(universe_closes)).sort_index()
            above = (panel > panel.rolling(50, min_periods=50).mean()).where(panel.notna())
            counted = panel.rolling(50, min_periods=50).count() >= 50
            parts["breadth_sma50"] = above.where(counted).mean(axis=1)
        if not parts:
            return cls.empty()
        frame = pd.DataFrame(parts).sort_index()
        frame = frame.reindex(columns=list(REGIME_FEATURES))
        days = pd.DatetimeIndex(frame.index)
        days = days.tz_localize("UTC") if days.tz is None else days.tz_convert("UTC")
        opens = days.as_unit("ns").asi8
        return cls(opens + DAY_NS, frame.to_numpy(dtype=np.float64))

    def at_ns(self, times_ns: np.ndarray) -> np.ndarray:
        """(len(times), features): for each time, the last row closed at or before it (NaN before the first, and
        where that row is older than MAX_AGE_NS)."""
        times_ns = np.asarray(times_ns, dtype=np.int64)
        out = np.full((len(times_ns), len(REGIME_FEATURES)), np.nan)
        if len(self.close_ns) == 0:
            return out
        pos = np.searchsorted(self.close_ns, times_ns, side="right") - 1
        ok = pos >= 0
        ok[ok] = times_ns[ok] - self.close_ns[pos[ok]] <= MAX_AGE_NS
        out[ok] = self.values[pos[ok]]
        return out

    def cut(self, end_ns: int) -> MarketContext:
        """The context as it was at `end_ns` (rows closing after it dropped): for look-ahead tests."""
        keep = self.close_ns <= end_ns
        return MarketContext(self.close_ns[keep], self.values[keep])
