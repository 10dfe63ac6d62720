"""OHLCV resampling from a lower to a higher timeframe, and the bar-frame helpers both providers share.

Completeness rule (one rule for every source): target bins are fixed UTC intervals
``[label, label + target)`` on a lattice anchored at ``00:00 UTC + session_anchor``, labelled by their
start. A bin is emitted only when its whole interval has elapsed, ``label + target <= end``; with no
``end`` given, ``end`` is the close time of the last source bar. A bin with missing source bars inside
(an exchange outage) is still emitted once it has elapsed, built from the bars it has, as an exchange
does; a bin that is still running is never emitted. Zero-volume placeholder bars inside a traded bin add no
prices (the exchange's candle opens at its first trade). Consequences: a crypto 4h bin labelled 08:00 exists
from 12:00; an equity daily bin of date D (labelled D 00:00 UTC) exists from D+1 00:00 UTC.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from core.domain import BAR_COLUMNS, AssetClass, Timeframe

EQUITY_SESSION_OPEN = timedelta(hours=14, minutes=30)
"""US regular session open in UTC in winter (EST). The simulated market keeps its sessions here all year."""


@dataclass(frozen=True, slots=True)
class SessionAnchor:
    """Bins anchored at a wall-clock time of an exchange's zone, so they follow daylight saving: US equity 4h
    bins start at 09:30 New York time, which is 14:30 UTC in winter and 13:30 UTC in summer."""

    offset: timedelta  # wall-clock time of day the lattice is anchored at
    tz: str  # IANA zone of the exchange


NYSE_OPEN = SessionAnchor(timedelta(hours=9, minutes=30), "America/New_York")
Anchor = timedelta | SessionAnchor

_NS_PER_DAY = 86_400 * 10**9


@dataclass(frozen=True, slots=True)
class BarArrays:
    """A run of bars as numpy arrays, for readers that want no DataFrame: open times as int64 UTC ns and a
    (5, n) float64 block of open, high, low, close, volume rows (each row contiguous, as TA-Lib wants).
    Views of the provider's cache: do not write to them."""

    times: np.ndarray
    block: np.ndarray

    def __len__(self) -> int:
        return len(self.times)

    def __getitem__(self, rows: slice) -> BarArrays:
        return BarArrays(self.times[rows], self.block[:, rows])

    @classmethod
    def of(cls, bars: pd.DataFrame) -> BarArrays:
        """The arrays of a conventional bar frame (a copy)."""
        frame = bars if tuple(bars.columns.tolist()) == BAR_COLUMNS else bars[list(BAR_COLUMNS)]
        return cls(index_ns(bars), np.ascontiguousarray(frame.to_numpy(dtype=np.float64).T))


def empty_bars() -> pd.DataFrame:
    """A bar frame with no rows but the right index and dtypes."""
    index = pd.DatetimeIndex([], dtype="datetime64[ns, UTC]", name="time")
    return pd.DataFrame({c: np.empty(0, dtype=np.float64) for c in BAR_COLUMNS}, index=index)


def bars_from_arrays(times_ns: np.ndarray, columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """Build a conventional bar frame from int64 UTC nanoseconds and the five float arrays."""
    return bars_from_block(times_ns, np.column_stack([np.asarray(columns[c], dtype=np.float64) for c in BAR_COLUMNS]))


def bars_from_block(times_ns: np.ndarray, values: np.ndarray) -> pd.DataFrame:
    """Build a conventional bar frame from int64 UTC nanoseconds and an (n, 5) float array in BAR_COLUMNS order."""
    index = pd.DatetimeIndex(np.asarray(times_ns, dtype=np.int64).view("datetime64[ns]"),
                             dtype="datetime64[ns, UTC]", name="time")
    return pd.DataFrame(np.asarray(values, dtype=np.float64), index=index, columns=list(BAR_COLUMNS), copy=False)


def to_utc_ns(when: datetime | pd.Timestamp) -> int:
    """Nanoseconds since the epoch of a tz-aware time. Naive times are a programming error."""
    ts = pd.Timestamp(when)
    if ts.tzinfo is None:
        raise ValueError(f"time must be tz-aware (UTC), got naive {when!r}")
    return int(ts.as_unit("ns").value)


def index_ns(bars: pd.DataFrame) -> np.ndarray:
    """The bar frame's open times as int64 UTC nanoseconds."""
    return pd.DatetimeIndex(bars.index).as_unit("ns").asi8


def default_anchor(asset_class: AssetClass, target: Timeframe) -> Anchor:
    """Bin anchor: midnight UTC (Binance-like) except intraday equity/index bins, anchored at the New York open
    (daylight saving included). Daily equity bins stay labelled by the UTC date (the session lies within it)."""
    if asset_class in (AssetClass.EQUITY, AssetClass.INDEX) and target.duration < timedelta(days=1):
        return NYSE_OPEN
    return timedelta(0)


def resample_bars(
    bars: pd.DataFrame,
    source: Timeframe,
    target: Timeframe,
    session_anchor: Anchor = timedelta(0),
    *,
    end: datetime | None = None,
) -> pd.DataFrame:
    """Aggregate `bars` (ascending, of timeframe `source`) into `target` bars: first/max/min/last/sum.

    Only bins that have fully elapsed by `end` are returned (see the module docstring)."""
    values = bars[list(BAR_COLUMNS)].to_numpy(np.float64)
    end_ns = to_utc_ns(end) if end is not None else None
    times, out = resample_arrays(index_ns(bars), values, source, target, session_anchor, end_ns)
    return bars_from_block(times, out)


def resample_arrays(times: np.ndarray, values: np.ndarray, source: Timeframe, target: Timeframe,
                    session_anchor: Anchor = timedelta(0), end_ns: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`resample_bars` on int64 UTC ns open times and an (n, 5) array in BAR_COLUMNS order."""
    src_ns, tgt_ns = _durations_ns(source, target)
    if len(times) == 0:
        return np.empty(0, dtype=np.int64), np.empty((0, len(BAR_COLUMNS)))
    if isinstance(session_anchor, SessionAnchor):
        # The lattice lives on the exchange's wall clock; each label goes back to UTC with its bar's offset.
        shift = _utc_offsets_ns(times, session_anchor.tz)
        anchor = _ns(session_anchor.offset) % tgt_ns
        labels = (times + shift - anchor) // tgt_ns * tgt_ns + anchor - shift
    else:
        anchor = _ns(session_anchor) % tgt_ns
        labels = (times - anchor) // tgt_ns * tgt_ns + anchor
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    # A zero-volume bar inside a bin that has trades is an exchange's "no trade" placeholder (its prices are the
    # previous close carried forward): it adds no prices, as on the exchange, whose candle opens at the first trade.
    # A bin without any volume (FX and indices carry none) aggregates all of its bars.
    traded = values[:, 4] > 0
    bin_of = np.cumsum(np.r_[True, labels[1:] != labels[:-1]]) - 1
    counts = np.add.reduceat(traded.astype(np.int64), starts)
    priced = traded | (counts == 0)[bin_of]
    position = np.arange(len(times))
    first = np.minimum.reduceat(np.where(priced, position, len(times)), starts)
    last = np.maximum.reduceat(np.where(priced, position, -1), starts)
    out = np.column_stack([
        values[first, 0],
        np.maximum.reduceat(np.where(priced, values[:, 1], -np.inf), starts),
        np.minimum.reduceat(np.where(priced, values[:, 2], np.inf), starts),
        values[last, 3],
        np.add.reduceat(values[:, 4], starts),
    ])
    limit = end_ns if end_ns is not None else int(times[-1]) + src_ns
    keep = labels[starts] + tgt_ns <= limit
    return labels[starts][keep], out[keep]


def _utc_offsets_ns(times: np.ndarray, tz: str) -> np.ndarray:
    """Per time, the zone's UTC offset in ns (local wall clock = UTC + offset)."""
    utc = pd.DatetimeIndex(np.asarray(times, dtype=np.int64).view("datetime64[ns]"), dtype="datetime64[ns, UTC]")
    return np.asarray(utc.tz_convert(tz).tz_localize(None).asi8 - utc.asi8, dtype=np.int64)


def _ns(delta: timedelta) -> int:
    return (delta // timedelta(microseconds=1)) * 1000


def _durations_ns(source: Timeframe, target: Timeframe) -> tuple[int, int]:
    src_ns, tgt_ns = _ns(source.duration), _ns(target.duration)
    if tgt_ns < src_ns or tgt_ns % src_ns:
        raise ValueError(f"cannot resample {source.value} bars to {target.value}")
    if _NS_PER_DAY % tgt_ns and tgt_ns % _NS_PER_DAY:
        raise ValueError(f"target {target.value} does not tile a day")
    return src_ns, tgt_ns


def tail_until(bars: pd.DataFrame, times_ns: np.ndarray, timeframe: Timeframe, end_ns: int,
               limit: int | None) -> pd.DataFrame:
    """The last `limit` bars of a cached frame whose close (open + timeframe) is <= end_ns."""
    if limit is not None and limit < 0:
        raise ValueError("limit must be >= 0")
    stop = int(np.searchsorted(times_ns, end_ns - _ns(timeframe.duration), side="right"))
    start = 0 if limit is None else max(0, stop - limit)
    return bars.iloc[start:stop]
