"""Multi-timeframe features without look-ahead: higher-timeframe columns beside lower-timeframe bars.

Bars are labelled by their open time. A higher bar labelled T (timeframe H) is known from its close,
T + H; a lower bar labelled t (timeframe L) is decided at its close, t + L. Row t of `align_higher` holds
the newest higher bar whose close is <= the lower bar's close, and NaN until the first one has closed.
So the hourly bar 23:00-24:00 sees that day's daily bar (both close at 24:00) and the 22:00 bar sees the
day before: the daily trend beside the hourly RSI never uses a daily close that had not happened.

    daily = engine.compute(daily_bars)[["ema_50", "ema_200"]]
    hourly = hourly_bars.join(align_higher(hourly_bars.index, daily, Timeframe.D1, Timeframe.H1, prefix="d1_"))
"""
from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from core.domain import Timeframe


def align_higher(lower_index: pd.Index, higher_frame: pd.DataFrame, higher_tf: Timeframe,
                 lower_tf: Timeframe | None = None, *, prefix: str = "", source_column: str | None = None) -> pd.DataFrame:
    """`higher_frame`'s columns (prefixed with `prefix`) on `lower_index`, each row from the newest higher
    bar closed by the lower bar's close.

    `lower_index` holds bar open times of timeframe `lower_tf`; without `lower_tf` its values are taken as
    the moments of decision themselves (close times, or ticks). `higher_frame` is indexed by the open times
    of its `higher_tf` bars. With `source_column`, the open time of the higher bar used is added under that
    name (NaT where none had closed). Times must be tz-aware."""
    cut = _ns(lower_index, "lower_index") + (_duration_ns(lower_tf) if lower_tf is not None else 0)
    higher = _sorted_unique(higher_frame)
    closes = _ns(higher.index, "higher_frame's index") + _duration_ns(higher_tf)
    pos = np.searchsorted(closes, cut, side="right") - 1  # -1: nothing closed yet
    out = higher.reset_index(drop=True).reindex(pos)  # a missing label (-1) gives a row of NaN
    out.index = lower_index
    out.columns = [f"{prefix}{c}" for c in higher.columns]
    if source_column is not None:
        opened = pd.Series(higher.index, dtype=higher.index.dtype).reindex(pos)
        out[source_column] = opened.to_numpy()
    return out


def closed_by(higher_frame: pd.DataFrame, higher_tf: Timeframe, when: datetime | pd.Timestamp) -> pd.DataFrame:
    """The rows of `higher_frame` whose bars had closed by `when` (what a decision at `when` may read)."""
    closes = _ns(higher_frame.index, "higher_frame's index") + _duration_ns(higher_tf)
    return higher_frame[closes <= _ns(pd.DatetimeIndex([pd.Timestamp(when)]), "when")[0]]


def _sorted_unique(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.index.has_duplicates:
        raise ValueError("higher_frame has duplicate bar times")
    return frame if frame.index.is_monotonic_increasing else frame.sort_index()


def _ns(index: pd.Index, what: str) -> np.ndarray:
    times = pd.DatetimeIndex(index)
    if times.tz is None and len(times):
        raise ValueError(f"{what} must be tz-aware (UTC)")
    if times.tz is None:
        times = times.tz_localize("UTC")
    if times.hasnans:
        raise ValueError(f"{what} has missing times")
    return np.asarray(times.tz_convert("UTC").as_unit("ns").asi8)


def _duration_ns(tf: Timeframe) -> int:
    return int(pd.Timedelta(Timeframe(tf).duration).value)
