"""Labels: THE ONLY MODULE THAT LOOKS FORWARD. Everything else (features, models, engine) reads bars <= t.

- forward returns over 5 and 10 bars: close[t+k] / close[t] - 1, known at the close of bar t+k;
- the barrier label of a trade idea issued at the close of bar t, exited exactly as `core.lifecycle.track`
  exits a signal: filled at the open of the first bar opening at or after the issue (the next bar's open);
  on each bar from the fill on, the stop first (a bar that spans both levels is a stop), then the target, a bar
  that opens beyond a level exits at that open; otherwise at the close of the first bar closing at or after
  the expiry (`core.signals.levels.expiry`). Net return = side x (exit / fill - 1) - 2 x costs.

Each label carries `end_ns`, the close time of the last bar it may read (the expiry bar): a model trained for
a decision at time t may use a label only if its end_ns is before t (minus an embargo), see core.models.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.domain import AssetClass, Timeframe
from core.signals.levels import HORIZON_BARS

TARGET, STOP, EXPIRED, UNRESOLVED = 1, -1, 0, -9
FORWARD_HORIZONS = (5, 10)


@dataclass(frozen=True, slots=True)
class BarrierLabels:
    status: np.ndarray  # int8: TARGET, STOP, EXPIRED, or UNRESOLVED when the data ends inside the horizon
    net_return: np.ndarray  # after costs; NaN when unresolved
    exit_pos: np.ndarray  # position of the exit bar (-1 when unresolved)
    end_ns: np.ndarray  # close time of the expiry bar (the latest bar the label may read; int64), or the
    # expiry time itself when the data ends before that bar

    @property
    def resolved(self) -> np.ndarray:
        return self.status != UNRESOLVED

    @property
    def hit(self) -> np.ndarray:
        """1.0 when the trade made money after costs (what the report's hit rate counts), NaN when unresolved."""
        return np.where(self.resolved, (self.net_return > 0).astype(np.float64), np.nan)


def expiry_ns(issued_ns: np.ndarray, timeframe: Timeframe, asset_class: AssetClass) -> np.ndarray:
    """`core.signals.levels.expiry` of many issue times (int64 UTC ns)."""
    issued_ns = np.asarray(issued_ns, dtype=np.int64)
    bars = HORIZON_BARS[timeframe]
    if timeframe is Timeframe.D1 and asset_class is not AssetClass.CRYPTO:
        idx = pd.DatetimeIndex(issued_ns.view("datetime64[ns]"), dtype="datetime64[ns]").tz_localize("UTC")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
            return np.asarray((idx + pd.offsets.BDay(bars)).as_unit("ns").asi8, dtype=np.int64)
    return issued_ns + int(timeframe.duration.total_seconds()) * 10**9 * bars


def barrier_labels(open_ns: np.ndarray, block: np.ndarray, timeframe: Timeframe, asset_class: AssetClass,
                   positions: np.ndarray, side: np.ndarray, target: np.ndarray, stop: np.ndarray,
                   costs_bps: float) -> BarrierLabels:
    """Barrier labels of ideas issued at the close of bars `positions` of one series (open times `open_ns`,
    a (5, n) open/high/low/close/volume block), on `side` (+1 long, -1 short) with these levels."""
    open_ns = np.asarray(open_ns, dtype=np.int64)
    positions = np.asarray(positions, dtype=np.int64)
    side, target, stop = (np.asarray(x, dtype=np.float64) for x in (side, target, stop))
    n, m = len(open_ns), len(positions)
    step = int(timeframe.duration.total_seconds()) * 10**9
    close_ns = open_ns + step
    issued = close_ns[positions] if m else np.empty(0, dtype=np.int64)
    first = np.searchsorted(open_ns, issued, side="left")
    expires = expiry_ns(issued, timeframe, asset_class)
    last = np.searchsorted(close_ns, expires, side="left")
    status: np.ndarray = np.full(m, UNRESOLVED, dtype=np.int8)
    exit_px: np.ndarray = np.full(m, np.nan)
    exit_pos: np.ndarray = np.full(m, -1, dtype=np.int64)
    o, h, lo, c = block[0], block[1], block[2], block[3]
    complete = last < n
    fill = o[np.minimum(first, n - 1)] if n else np.full(m, np.nan)
    longs = side > 0
    span = int((last - first).max()) + 1 if m else 0
    for k in range(span):
        j = first + k
        active = (status == UNRESOLVED) & (j <= last) & (j < n)
        if not active.any():
            continue
        jj = np.minimum(j, n - 1)
        oj, hj, lj, cj = o[jj], h[jj], lo[jj], c[jj]
        stop_hit = np.where(longs, lj <= stop, hj >= stop) & active
        target_hit = np.where(longs, hj >= target, lj <= target) & active & ~stop_hit
        expired = active & ~stop_hit & ~target_hit & (j == last)
        exit_px = np.where(stop_hit, np.where(longs, np.minimum(oj, stop), np.maximum(oj, stop)), exit_px)
        exit_px = np.where(target_hit, np.where(longs, np.maximum(oj, target), np.minimum(oj, target)), exit_px)
        exit_px = np.where(expired, cj, exit_px)
        status = np.where(stop_hit, STOP, np.where(target_hit, TARGET, np.where(expired, EXPIRED, status))).astype(np.int8)
        exit_pos = np.where(stop_hit | target_hit | expired, j, exit_pos)
    # an idea whose expiry bar is past the data is resolved only if it exited before the data ends
    status = np.where(~complete & (status == EXPIRED), UNRESOLVED, status).astype(np.int8)
    resolved = status != UNRESOLVED
    with np.errstate(invalid="ignore", divide="ignore"):
        net = np.where(resolved, side * (exit_px / fill - 1.0) - 2 * costs_bps / 10_000, np.nan)
    # past the data, the expiry bar's close is not known yet: its expiry time is a lower bound of it
    end = np.where(complete, close_ns[np.minimum(last, n - 1)] if n else expires, expires)
    return BarrierLabels(status, net, np.where(resolved, exit_pos, -1), end.astype(np.int64))


def forward_returns(close: np.ndarray, open_ns: np.ndarray, timeframe: Timeframe,
                    horizons: tuple[int, ...] = FORWARD_HORIZONS) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{k: (close[t+k] / close[t] - 1, the close time of bar t+k)} for every bar t; NaN / int64 max where the
    data ends first."""
    close = np.asarray(close, dtype=np.float64)
    n = len(close)
    close_ns = np.asarray(open_ns, dtype=np.int64) + int(timeframe.duration.total_seconds()) * 10**9
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for k in horizons:
        ret = np.full(n, np.nan)
        end = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        if k < n:
            ret[: n - k] = close[k:] / close[: n - k] - 1.0
            end[: n - k] = close_ns[k:]
        out[k] = (ret, end)
    return out


@dataclass(frozen=True, slots=True)
class RuleTrades:
    """The trades of a held-position rule (core.books) on one series, one for every bar on which its entry
    condition turns on (set on that bar, not on the one before): entered at the next bar's open, left at the open
    after a bar whose exit flag is set, or at the stop (intrabar, a gap exits at the open), or at the close of the
    expiry bar. Each trade is followed on its own, so a trade depends only on the bars around it, not on where
    the history starts. `end_ns`: when its outcome is in the data: the close of its exit bar (a reader of closed
    bars sees a rule exit's open price only then)."""

    entry_pos: np.ndarray  # the signal bar (the fill is the next bar's open)
    net_return: np.ndarray
    end_ns: np.ndarray


def rule_trades(open_ns: np.ndarray, close_ns: np.ndarray, block: np.ndarray, entry: np.ndarray,
                exit_: np.ndarray, side: int, stop: np.ndarray, expiry_bars: int, costs_bps: float) -> RuleTrades:
    """`entry` / `exit_`: boolean flags per bar, known at its close; `stop`: the stop level a trade entered on that
    bar's signal carries. Trades the data ends inside are left out (unresolved)."""
    o, h, lo, c = block[0], block[1], block[2], block[3]
    n = len(open_ns)
    cost = 2 * costs_bps / 10_000
    entry = np.asarray(entry, dtype=bool)
    fresh = np.flatnonzero(entry & ~np.r_[False, entry[:-1]]) if n else np.empty(0, np.int64)
    pos_out, ret_out, end_out = [], [], []
    for i in fresh.tolist():
        f = i + 1
        if f >= n:
            continue
        fill, level = o[f], stop[i]
        done = None
        for j in range(f, min(n, f + expiry_bars)):
            if j > f and exit_[j - 1]:  # the rule said so at the close of j-1: out at j's open
                done = (o[j], int(close_ns[j]))  # counted once bar j is in the data (its close)
                break
            if (side > 0 and lo[j] <= level) or (side < 0 and h[j] >= level):
                done = (min(o[j], level) if side > 0 else max(o[j], level), int(close_ns[j]))
                break
            if j == f + expiry_bars - 1:
                done = (c[j], int(close_ns[j]))
        if done is None:
            continue
        pos_out.append(i)
        ret_out.append(side * (done[0] / fill - 1.0) - cost)
        end_out.append(done[1])
    return RuleTrades(np.asarray(pos_out, dtype=np.int64), np.asarray(ret_out, dtype=np.float64),
                      np.asarray(end_out, dtype=np.int64))


@dataclass(frozen=True, slots=True)
class RankingLabels:
    """Forward returns of every (day, stock) of a panel, as the ranking book trades them: bought at the next
    day's open, valued at the close `horizon` days later. `raw`: that return; `residual`: less the day's
    cross-sectional mean (the equal-weight universe) times the stock's beta as known on the day (1 where no beta
    is given or known: the plain excess over the universe); `label`: the residual ranked across the day's stocks
    to -0.5..0.5 (what the model learns); `end_ns`: the close time of the day the return is known (row-wise)."""

    raw: np.ndarray  # (days, stocks)
    residual: np.ndarray
    label: np.ndarray
    end_ns: np.ndarray  # (days,), int64 max where the data ends first


def ranking_labels(open_: np.ndarray, close: np.ndarray, close_ns: np.ndarray, horizon: int,
                   beta: np.ndarray | None = None) -> RankingLabels:
    """`beta` (days x stocks, from data up to each day): the label becomes the beta-hedged residual, the return
    the stock made beyond what its market exposure earned, which is what the book's alpha is judged by; without
    it a high-beta stock ranks first in every rising market for its beta alone."""
    t, n = close.shape
    raw = np.full((t, n), np.nan)
    end = np.full(t, np.iinfo(np.int64).max, dtype=np.int64)
    if t > horizon:
        with np.errstate(invalid="ignore", divide="ignore"):
            raw[: t - horizon] = close[horizon:] / open_[1: t - horizon + 1] - 1.0
        end[: t - horizon] = close_ns[horizon:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # days without any return
        market = np.nanmean(raw, axis=1, keepdims=True)
    b = 1.0 if beta is None else np.where(np.isfinite(beta), beta, 1.0)
    residual = raw - b * market
    label = pd.DataFrame(residual).rank(axis=1, pct=True).to_numpy() - 0.5
    return RankingLabels(raw, residual, label, end)
