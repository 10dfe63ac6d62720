"""Indicators through TA-Lib, called per instrument on numpy arrays. The only module that imports talib.

`TalibEngine` computes the catalogue (``core.indicators.catalogue``): CORE_COLUMNS by default, every
indicator with ``full=True``. The core columns equal ``PandasTaEngine``'s (pandas-ta calls the same TA-Lib
functions for them; the columns TA-Lib has no function for are numpy versions of
``core.indicators.derived_columns``, held equal to it by the tests). Rows are causal: row t reads bars <= t.

Where ``PandasTaEngine`` differs, we follow the definition: ``bb_pctb`` is NaN for a band of zero width,
where pandas-ta adds machine epsilon to the width (and so returns 0); with 18 or 19 bars ``stoch_k`` and
``stoch_d`` have values from bar 18, where pandas-ta returns no stochastic at all below 20 bars (so its
row 17 depends on whether a 20th bar exists: not causal). ``zscore_20`` uses a two-pass standard deviation
per window, exact to 1e-15, where pandas' online rolling variance drifts (1e-8 relative after thousands
of bars). Catalogue entries whose pandas-ta definition differs say so in ``PandasTaRef.differs``.

Incremental use: ``start(bars)`` keeps an instrument's last `window` bars; ``update_last(state, bar)``
appends one bar and recomputes the window with TA-Lib (about 0.2 ms for 300 bars; an O(1) update of the
recursive indicators would not be bit-identical to a recompute). The row it returns is bit-identical to
``compute`` over the same window, which is what the signal engine reads (``EngineConfig.lookback`` bars);
with ``window=None`` the whole history is kept and the row equals ``compute`` over all bars.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import talib

from core.domain import BAR_COLUMNS
from core.indicators.catalogue import CATALOGUE, Indicator, ParamValue, output_columns
from core.market_data.resample import index_ns

Arrays = dict[str, np.ndarray]
Kernel = Callable[[Arrays, Mapping[str, ParamValue], int], tuple[np.ndarray, ...]]

DEFAULT_WINDOW = 300
"""Bars kept by an incremental state: the signal engine's default lookback (EngineConfig.lookback)."""


class TalibEngine:
    name = "talib"

    def __init__(self, catalogue: Sequence[Indicator] = CATALOGUE) -> None:
        self._plans = {full: _plan(catalogue, full) for full in (False, True)}
        self._columns = {full: output_columns(full) for full in (False, True)}
        self._index = {full: pd.Index(list(self._columns[full])) for full in (False, True)}

    def columns(self, full: bool = False) -> tuple[str, ...]:
        return self._columns[full]

    def compute(self, bars: pd.DataFrame, full: bool = False) -> pd.DataFrame:
        """Indicator columns aligned on `bars`' index: CORE_COLUMNS, or with `full` the whole catalogue."""
        values = self.compute_block(bar_block(bars), full)
        return pd.DataFrame(values.T, index=bars.index, columns=self._index[full], copy=False)

    def compute_last(self, bars: pd.DataFrame, n: int = 1, full: bool = False) -> pd.DataFrame:
        """The last `n` rows of `compute(bars, full)`, bit for bit, for less work: TA-Lib still runs over
        all of `bars` (recursive indicators need the history) but the numpy columns only for these rows."""
        _, values = self.last_rows(bars, n, full)
        return pd.DataFrame(values, index=bars.index[len(bars) - len(values):], columns=self._index[full], copy=False)

    def last_rows(self, bars: pd.DataFrame, n: int = 1, full: bool = False) -> tuple[tuple[str, ...], np.ndarray]:
        """`compute_last` as (column names, an (n, columns) float array): what the signal engine reads,
        without the cost of building a frame (a third of the time for one row of 300 bars)."""
        return self._columns[full], self.compute_block(bar_block(bars), full, rows=n).T

    def compute_block(self, block: np.ndarray, full: bool = False, rows: int | None = None) -> np.ndarray:
        """The bare computation: a (5, n) float64 block of open, high, low, close, volume rows in, a
        (columns, rows) block out (the last `rows` bars, all by default), rows in `columns(full)` order."""
        n = block.shape[1]
        rows = n if rows is None else max(0, min(rows, n))
        columns = self._columns[full]
        if rows == 0:
            return np.empty((len(columns), 0))
        arrays: Arrays = dict(zip(BAR_COLUMNS, block, strict=True))
        for step in self._plans[full]:
            step.run(arrays, n - rows)
        if rows == 1:  # the signal path's case: gather scalars rather than stack one-element views
            return np.array([arrays[c][-1] for c in columns]).reshape(len(columns), 1)
        return np.stack([arrays[c][-rows:] for c in columns])

    def run_talib(self, block: np.ndarray, full: bool = False) -> Arrays:
        """The TA-Lib calls of `compute_block` alone (its floor; for benchmarks)."""
        arrays: Arrays = dict(zip(BAR_COLUMNS, block, strict=True))
        for step in self._plans[full]:
            if not step.kernel:
                step.run(arrays, 0)
        return arrays

    def talib_calls(self, full: bool = False) -> int:
        return sum(not step.kernel for step in self._plans[full])

    def compute_universe(self, frames: Mapping[str, pd.DataFrame], full: bool = False) -> dict[str, pd.DataFrame]:
        """Indicators of many instruments (TA-Lib per instrument: faster than one 2-D numpy pass, whose
        temporaries overflow the cache)."""
        return {symbol: self.compute(bars, full) for symbol, bars in frames.items()}

    # -- incremental -----------------------------------------------------------------------------

    def start(self, bars: pd.DataFrame, window: int | None = DEFAULT_WINDOW, full: bool = False) -> IncrementalState:
        """State for `update_last` from an instrument's bars so far (its last `window` of them)."""
        if window is not None and window < 1:
            raise ValueError("window must be >= 1 (or None for the whole history)")
        block = bar_block(bars)
        times = index_ns(bars)
        if window is not None:
            block, times = block[:, -window:], times[-window:]
        state = IncrementalState(window, full)
        state._reserve(len(times))
        state._block[:, : len(times)] = block
        state._times[: len(times)] = times
        state.size = len(times)
        state.last = self._last_row(state) if len(times) else None
        return state

    def update_last(self, state: IncrementalState, new_bar: pd.Series | pd.DataFrame) -> pd.Series:
        """Bring one instrument's indicators up to date with one new closed bar, and return its row.

        `new_bar` is a bar row named by its open time (``bars.iloc[-1]``) or a one-row bar frame. A bar
        with the same time as the last one replaces it (a correction); an older one is an error."""
        when, values = _one_bar(new_bar)
        if state.size and when < state._times[state.size - 1]:
            raise ValueError(f"bar at {pd.Timestamp(when, tz='UTC')} is older than the last one in the state")
        if not (state.size and when == state._times[state.size - 1]):
            state._append()
        state._times[state.size - 1] = when
        state._block[:, state.size - 1] = values
        state.last = self._last_row(state)
        return state.last

    def _last_row(self, state: IncrementalState) -> pd.Series:
        block = state._block[:, : state.size]
        start = 0 if state.window is None else max(0, state.size - state.window)
        row = self.compute_block(np.ascontiguousarray(block[:, start:]), state.full, rows=1)[:, -1]
        name = pd.Timestamp(int(state._times[state.size - 1]), tz="UTC")
        return pd.Series(row, index=self._index[state.full], name=name)


class IncrementalState:
    """One instrument's recent bars for `TalibEngine.update_last` (a growing buffer, trimmed to `window`)."""

    def __init__(self, window: int | None, full: bool) -> None:
        self.window = window
        self.full = full
        self.size = 0
        self.last: pd.Series | None = None  # the indicator row of the newest bar
        self._block = np.empty((len(BAR_COLUMNS), 0))
        self._times = np.empty(0, dtype=np.int64)

    def bars(self) -> pd.DataFrame:
        """The bars the next update computes over (the last `window` held), as a bar frame."""
        start = 0 if self.window is None else max(0, self.size - self.window)
        index = pd.DatetimeIndex(self._times[start: self.size].view("datetime64[ns]"), dtype="datetime64[ns, UTC]",
                                 name="time")
        return pd.DataFrame(self._block[:, start: self.size].T.copy(), index=index, columns=list(BAR_COLUMNS))

    def _reserve(self, n: int) -> None:
        capacity = max(n, 2 * (self.window or n), 64)
        if self._block.shape[1] < n:
            block = np.empty((len(BAR_COLUMNS), capacity))
            times = np.empty(capacity, dtype=np.int64)
            block[:, : self.size] = self._block[:, : self.size]
            times[: self.size] = self._times[: self.size]
            self._block, self._times = block, times

    def _append(self) -> None:
        """Make room for one bar at the end: drop bars beyond the window (amortised), grow if needed."""
        if self.window is not None and self.size >= self._block.shape[1]:
            keep = self.window - 1
            self._block[:, :keep] = self._block[:, self.size - keep: self.size]
            self._times[:keep] = self._times[self.size - keep: self.size]
            self.size = keep
        self._reserve(self.size + 1)
        self.size += 1


def bar_block(bars: pd.DataFrame) -> np.ndarray:
    """A bar frame's open, high, low, close, volume as one (5, n) C-ordered float64 block (rows contiguous,
    as TA-Lib wants them)."""
    if tuple(bars.columns.tolist()) == BAR_COLUMNS:  # tolist: iterating a str Index is slow
        values = bars.to_numpy(dtype=np.float64)
    else:
        values = bars[list(BAR_COLUMNS)].to_numpy(dtype=np.float64)
    return np.ascontiguousarray(values.T)


def _one_bar(bar: pd.Series | pd.DataFrame) -> tuple[int, np.ndarray]:
    if isinstance(bar, pd.DataFrame):
        if len(bar) != 1:
            raise ValueError(f"update_last takes one bar, got {len(bar)}")
        when: Any = bar.index[0]
        values = bar[list(BAR_COLUMNS)].to_numpy(dtype=np.float64)[0]
    else:
        when = bar.name
        values = np.array([float(bar[c]) for c in BAR_COLUMNS])
    if not isinstance(when, (pd.Timestamp, datetime)):
        raise ValueError("the new bar must be named by its open time")
    ts = pd.Timestamp(when)
    if ts.tzinfo is None:
        raise ValueError(f"bar time must be tz-aware (UTC), got {when!r}")
    return int(ts.as_unit("ns").value), values


# -- the plan: TA-Lib calls first, then numpy kernels, in catalogue order ---------------------------


@dataclass(frozen=True, slots=True)
class _Step:
    fn: Callable[..., Any]
    inputs: tuple[str, ...]
    kwargs: Mapping[str, ParamValue]
    outputs: tuple[str, ...]
    kernel: bool

    def run(self, arrays: Arrays, start: int) -> None:
        """TA-Lib steps fill whole columns; kernels fill rows start.. (their callers read no earlier row)."""
        if self.kernel:
            result = self.fn(arrays, self.kwargs, start)
        else:
            result = self.fn(*[arrays[c] for c in self.inputs], **self.kwargs)
            if len(self.outputs) == 1:  # candlestick patterns come as int32
                arrays[self.outputs[0]] = result if result.dtype == np.float64 else result.astype(np.float64)
                return
        for name, values in zip(self.outputs, result, strict=True):
            arrays[name] = values


def _plan(catalogue: Sequence[Indicator], full: bool) -> tuple[_Step, ...]:
    chosen = [i for i in catalogue if full or i.core]
    steps = []
    for ind in chosen:
        if ind.talib is not None:
            call = ind.talib
            steps.append(_Step(_raw(call.function), call.inputs, dict(call.kwargs), call.outputs, False))
    for ind in chosen:
        if ind.kernel is not None:
            steps.append(_Step(KERNELS[ind.kernel], (), dict(ind.params), ind.outputs, True))
    return tuple(steps)


def _raw(function: str) -> Callable[..., Any]:
    """TA-Lib's compiled function without the Python wrapper that converts pandas/polars Series (about
    7 us per call, more than the computation over a few hundred bars); we pass numpy arrays."""
    return inspect.unwrap(getattr(talib, function))


# -- kernels: the columns TA-Lib has no function for ---------------------------------------------
# A kernel returns its columns for rows start..n-1 (rows before `start` are not computed), and each
# row is computed the same way whatever `start` is, so a tail equals the same rows of a full pass.


def windows(x: np.ndarray, length: int, start: int) -> np.ndarray:
    """The trailing `length` values at each row start..n-1, as an (n - start, length) view (do not write
    to it); NaN where a window reaches before the first value."""
    n = len(x)
    if start >= length - 1:
        if start == n - 1:  # the common case of one row: a plain slice
            return x[n - length:].reshape(1, length)
        seg = x[start - length + 1:]
    else:
        seg = np.concatenate([np.full(length - 1 - start, np.nan), x])
    seg = np.ascontiguousarray(seg)
    step = seg.strides[0]
    return np.ndarray((max(0, len(seg) - length + 1), length), dtype=np.float64, buffer=seg, strides=(step, step))


def rolling_std(x: np.ndarray, length: int, start: int = 0) -> np.ndarray:
    """Population standard deviation over the trailing `length` values (two-pass per window, like
    pandas' ``rolling(length).std(ddof=0)``); exactly 0 for a constant window; NaN for a short one."""
    w = windows(x, length, start)
    mean = np.add.reduce(w, axis=1) / length  # what w.mean(axis=1) computes, without its Python layer
    dev = w - mean[:, None]
    std = np.sqrt(np.add.reduce(dev * dev, axis=1) / length)
    tiny = std <= 1e-9 * np.abs(mean)  # a constant window leaves rounding noise of the mean: find it exactly
    if tiny.any():
        std[tiny & (w.max(axis=1) == w.min(axis=1))] = 0.0
    return std


def rolling_rank_pct(x: np.ndarray, length: int, min_periods: int, start: int = 0) -> np.ndarray:
    """Percentile rank of each value among the trailing `length` values (itself included), ties
    averaged, as pandas' ``rolling(length, min_periods).rank(pct=True)``."""
    w = windows(x, length, start)
    cur = x[start:, None]
    rank = np.add.reduce(w < cur, axis=1) + (np.add.reduce(w == cur, axis=1) + 1) / 2.0
    if start >= length - 1 and not np.isnan(x[start - length + 1:]).any():
        return rank / length  # full windows without gaps: the common case
    count = length - np.add.reduce(np.isnan(w), axis=1)
    pct = rank / np.maximum(count, 1)
    pct[(count < min_periods) | np.isnan(x[start:])] = np.nan
    return pct


def rolling_sum(x: np.ndarray, length: int, start: int = 0) -> np.ndarray:
    return windows(x, length, start).sum(axis=1)


def shifted(x: np.ndarray, periods: int, start: int) -> np.ndarray:
    """x[t - periods] for rows start..n-1 (NaN before the first value)."""
    lo = start - periods
    if lo >= 0:
        return x[lo: len(x) - periods]
    return np.concatenate([np.full(min(-lo, len(x) - start), np.nan), x[: max(0, len(x) - periods)]])


def _positive(x: np.ndarray) -> np.ndarray:
    """x where x > 0, else NaN (a divisor that must not be zero)."""
    return np.where(x > 0, x, np.nan)


def _bb_pctb(a: Arrays, p: Mapping[str, ParamValue], s: int) -> tuple[np.ndarray, ...]:
    lower = a["bb_lower"][s:]
    return ((a["close"][s:] - lower) / _positive(a["bb_upper"][s:] - lower),)


def _zscore(a: Arrays, p: Mapping[str, ParamValue], s: int) -> tuple[np.ndarray, ...]:
    n = int(p["length"])
    return ((a["close"][s:] - a[f"sma_{n}"][s:]) / _positive(rolling_std(a["close"], n, s)),)


def _distance_atr(a: Arrays, p: Mapping[str, ParamValue], s: int) -> tuple[np.ndarray, ...]:
    return ((a["close"][s:] - a["sma_20"][s:]) / _positive(a["atr_14"][s:]),)


def _gap(a: Arrays, p: Mapping[str, ParamValue], s: int) -> tuple[np.ndarray, ...]:
    return (a["open"][s:] / shifted(a["close"], 1, s) - 1.0,)


def _ret(a: Arrays, p: Mapping[str, ParamValue], s: int) -> tuple[np.ndarray, ...]:
    close = a["close"]
    return (close[s:] / shifted(close, int(p["periods"]), s) - 1.0,)


def _volume_rank(a: Arrays, p: Mapping[str, ParamValue], s: int) -> tuple[np.ndarray, ...]:
    return (rolling_rank_pct(a["volume"], int(p["length"]), int(p["min_periods"]), s),)


def _donchian(a: Arrays, p: Mapping[str, ParamValue], s: int) -> tuple[np.ndarray, ...]:
    n = int(p["length"])
    lower, upper = talib.MIN(a["low"], timeperiod=n)[s:], talib.MAX(a["high"], timeperiod=n)[s:]
    return lower, 0.5 * (lower + upper), upper


def _keltner(a: Arrays, p: Mapping[str, ParamValue], s: int) -> tuple[np.ndarray, ...]:
    n, k = int(p["length"]), float(p["scalar"])
    basis = talib.EMA(a["close"], timeperiod=n)[s:]
    band = talib.EMA(talib.TRANGE(a["high"], a["low"], a["close"]), timeperiod=n)[s:]
    return basis - k * band, basis, basis + k * band


def _stochrsi(a: Arrays, p: Mapping[str, ParamValue], s: int) -> tuple[np.ndarray, ...]:
    """pandas-ta's stochastic RSI (a flat RSI range gives 0, as pandas-ta's epsilon does)."""
    length = int(p["rsi_length"])
    rsi = a[f"rsi_{length}"] if f"rsi_{length}" in a else talib.RSI(a["close"], timeperiod=length)
    n = int(p["length"])
    low, high = talib.MIN(rsi, timeperiod=n), talib.MAX(rsi, timeperiod=n)
    width = high - low
    flat = width == 0
    stoch = np.where(flat, 0.0, 100.0 * (rsi - low) / np.where(flat, 1.0, width))
    k = talib.SMA(stoch, timeperiod=int(p["k"]))
    return k[s:], talib.SMA(k, timeperiod=int(p["d"]))[s:]


def _cmf(a: Arrays, p: Mapping[str, ParamValue], s: int) -> tuple[np.ndarray, ...]:
    high, low, close, volume = a["high"], a["low"], a["close"], a["volume"]
    hl = high - low
    ranged = hl > 0
    flow = np.where(ranged, ((close - low) - (high - close)) * (volume / np.where(ranged, hl, 1.0)), 0.0)
    n = int(p["length"])
    return (rolling_sum(flow, n, s) / _positive(rolling_sum(volume, n, s)),)


def _vwma(a: Arrays, p: Mapping[str, ParamValue], s: int) -> tuple[np.ndarray, ...]:
    n = int(p["length"])
    return ((talib.SMA(a["close"] * a["volume"], timeperiod=n) / talib.SMA(a["volume"], timeperiod=n))[s:],)


KERNELS: dict[str, Kernel] = {
    "bb_pctb": _bb_pctb, "zscore": _zscore, "distance_atr": _distance_atr, "gap": _gap, "ret": _ret,
    "volume_rank": _volume_rank, "donchian": _donchian, "keltner": _keltner, "stochrsi": _stochrsi,
    "cmf": _cmf, "vwma": _vwma,
}
