"""Pictures a person would rather see than read: the one module that imports mplfinance and matplotlib.

`signal_chart` draws candles with entry, target and stop, SMA20/50 and Bollinger bands (20, 2) over the price,
volume beneath, and RSI(14) in its own panel. `equity_chart` draws an equity curve (and a benchmark, both
rebased to 1) above its drawdown. Both return PNG bytes rendered in memory with the Agg backend.

Rendering is CPU work (about 0.12 s of CPU for a signal chart; a chart drawn from the same inputs again comes
from a small cache): call `render_signal_chart` / `render_equity_chart` from async code,
they run the drawing in a worker thread. pyplot keeps global state and is not thread-safe, and signal charts are
drawn into one reused figure, so drawings are serialised by a lock (two charts at once take twice as long;
neither blocks the event loop).
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported anywhere: no display, no GUI event loop

import matplotlib.pyplot as plt  # noqa: E402
import mplfinance as mpf  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

OHLCV = ("open", "high", "low", "close", "volume")
SHOWN_BARS = 120  # candles drawn; earlier bars only warm up the indicators
DPI = 100
SIGNAL_SIZE = (10.0, 6.5)  # inches: 1000 x 650 pixels
EQUITY_SIZE = (10.0, 6.0)

LEVEL_COLOURS = {"entry": "#1f77b4", "target": "#2ca02c", "stop": "#d62728"}
_STYLE = mpf.make_mpf_style(base_mpf_style="yahoo", gridstyle=":", rc={"font.size": 9})
_LOCK = threading.Lock()
# The same chart is asked for again and again: everyone who presses "Details" under one signal, a popular symbol
# until its next bar closes. The most recent ones are kept (about 120 KiB each), keyed by their exact inputs.
CACHED_CHARTS = 64
_CACHE: OrderedDict[bytes, bytes] = OrderedDict()
_FIGURES: dict[bool, tuple[Any, tuple[Any, Any | None, Any]]] = {}  # with / without a volume panel (under _LOCK)


class ChartError(ValueError):
    """The data cannot be drawn (missing columns, too few rows, no finite prices)."""


# -- public API ---------------------------------------------------------------------------------------
def signal_chart(bars: pd.DataFrame, symbol: str, timeframe: str, entry: float | None = None,
                 target: float | None = None, stop: float | None = None, *, shown: int = SHOWN_BARS) -> bytes:
    """PNG of the last `shown` bars of `bars` (columns open/high/low/close[/volume], a DatetimeIndex in time
    order) with the levels that are given. Indicators are computed over all of `bars`, so pass ~50 bars more
    than `shown` for SMA50 to be drawn from the first candle."""
    frame = _clean_bars(bars)
    if shown < 2:
        raise ChartError("a chart needs at least 2 bars to show")
    levels = {name: float(v) for name, v in (("entry", entry), ("target", target), ("stop", stop))
              if v is not None and np.isfinite(v)}
    key = _chart_key(frame, symbol, timeframe, shown, levels)
    with _LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            _CACHE.move_to_end(key)
            return cached
    ind = indicators(frame["close"]).iloc[-shown:]
    frame = frame.iloc[-shown:]
    has_volume = bool((frame["volume"].fillna(0) > 0).any())
    with _LOCK:
        # external-axes mode: three plain axes (mplfinance's own panels add a twin axis to each), volume drawn
        # as one PolyCollection (mplfinance draws it with Axes.bar, a patch per bar), and one figure reused for
        # every chart (a new figure's axes and ticks cost a third of a render): 0.12 s of CPU instead of 0.29
        fig, (price_ax, volume_ax, rsi_ax) = _signal_figure(has_volume)
        try:
            adds = [a for a in (
                _line(ind["sma20"], "#ff7f0e", 1.0, price_ax, label="SMA20"),
                _line(ind["sma50"], "#9467bd", 1.0, price_ax, label="SMA50"),
                _line(ind["bb_upper"], "#7f7f7f", 0.7, price_ax, linestyle="--", label="Bollinger(20, 2)"),
                _line(ind["bb_lower"], "#7f7f7f", 0.7, price_ax, linestyle="--"),
                _line(ind["rsi"], "#8c564b", 1.0, rsi_ax, ylim=(0, 100)),
            ) if a is not None]
            plot_kwargs: dict[str, Any] = dict(
                type="candle", ax=price_ax, addplot=adds, xrotation=0, warn_too_much_data=10_000,
                datetime_format=_date_format(pd.DatetimeIndex(frame.index)))
            if levels:
                plot_kwargs["hlines"] = dict(hlines=list(levels.values()),
                                             colors=[LEVEL_COLOURS[k] for k in levels], linestyle="-.",
                                             linewidths=1.1)
            mpf.plot(_mpf_frame(frame), **plot_kwargs)
            price_ax.set_title(f"{symbol} {timeframe}", loc="left", fontsize=11, fontweight="bold")
            price_ax.set_ylabel("")
            _label_levels(price_ax, levels, len(frame))
            _legend(price_ax)
            if volume_ax is not None:
                _volume(volume_ax, frame)
            rsi_ax.set_ylim(0, 100)
            rsi_ax.set_yticks([30, 50, 70])
            rsi_ax.set_ylabel("RSI(14)")
            for level in (30, 70):
                rsi_ax.axhline(level, color="#bbbbbb", linewidth=0.7, linestyle=":")
            for ax in (price_ax, volume_ax):
                if ax is not None:
                    ax.tick_params(labelbottom=False)
            png = _png(fig)
        except BaseException:
            _FIGURES.pop(has_volume, None)  # whatever the failure left behind is not drawn into the next chart
            plt.close(fig)
            raise
        _CACHE[key] = png
        while len(_CACHE) > CACHED_CHARTS:
            _CACHE.popitem(last=False)
    return png


def equity_chart(curve: pd.Series, benchmark: pd.Series | None = None, *, title: str = "Equity") -> bytes:
    """PNG of an equity curve (values > 0, e.g. 1.0 = the starting capital) rebased to 1, the benchmark rebased
    to 1 at the curve's first date when given, and the curve's drawdown beneath."""
    equity = _clean_series(curve, "curve")
    rebased = equity / equity.iloc[0]
    drawdown = rebased / rebased.cummax() - 1.0
    fig = Figure(figsize=EQUITY_SIZE, dpi=DPI)  # no pyplot: a Figure of our own is thread-safe
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1)})
    top.plot(rebased.index, rebased.to_numpy(), color="#1f77b4", linewidth=1.4,
             label=f"strategy {_fmt_return(rebased.iloc[-1] - 1)}")
    if benchmark is not None:
        bench = _clean_series(benchmark, "benchmark")
        bench = bench[bench.index >= equity.index[0]]
        if len(bench) >= 2:
            bench_rebased = bench / bench.iloc[0]
            top.plot(bench_rebased.index, bench_rebased.to_numpy(), color="#7f7f7f", linewidth=1.0,
                     label=f"benchmark {_fmt_return(bench_rebased.iloc[-1] - 1)}")
    top.axhline(1.0, color="#cccccc", linewidth=0.7)
    top.set_title(title, loc="left", fontsize=11, fontweight="bold")
    top.set_ylabel("growth of 1")
    top.grid(True, linestyle=":", linewidth=0.5)
    top.legend(loc="upper left", fontsize=8, frameon=False)
    bottom.fill_between(drawdown.index, drawdown.to_numpy() * 100, 0.0, color="#d62728", alpha=0.35, linewidth=0)
    bottom.set_ylabel("drawdown %")
    bottom.grid(True, linestyle=":", linewidth=0.5)
    fig.subplots_adjust(left=0.08, right=0.98, top=0.93, bottom=0.08, hspace=0.08)  # tight_layout draws twice
    return _png(fig)


async def render_signal_chart(bars: pd.DataFrame, symbol: str, timeframe: str, entry: float | None = None,
                              target: float | None = None, stop: float | None = None) -> bytes:
    """`signal_chart` off the event loop."""
    return await asyncio.to_thread(signal_chart, bars, symbol, timeframe, entry, target, stop)


async def render_equity_chart(curve: pd.Series, benchmark: pd.Series | None = None, *,
                              title: str = "Equity") -> bytes:
    """`equity_chart` off the event loop."""
    return await asyncio.to_thread(equity_chart, curve, benchmark, title=title)


def clear_chart_cache() -> None:
    """Forget the cached charts (benchmarks measure drawing, not the cache)."""
    with _LOCK:
        _CACHE.clear()


def indicators(close: pd.Series) -> pd.DataFrame:
    """The overlays drawn: SMA20, SMA50, Bollinger bands (SMA20 +- 2 population std), Wilder's RSI(14)."""
    sma20 = close.rolling(20, min_periods=20).mean()
    std20 = close.rolling(20, min_periods=20).std(ddof=0)
    delta = close.diff()
    gain = delta.clip(lower=0).ewm(alpha=1 / 14, adjust=False, min_periods=14).mean()
    loss = (-delta.clip(upper=0)).ewm(alpha=1 / 14, adjust=False, min_periods=14).mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        rsi = 100 - 100 / (1 + gain / loss)
    rsi = rsi.where(loss != 0, 100.0).where(gain.notna())
    return pd.DataFrame({"sma20": sma20, "sma50": close.rolling(50, min_periods=50).mean(),
                         "bb_upper": sma20 + 2 * std20, "bb_lower": sma20 - 2 * std20, "rsi": rsi})


# -- helpers ------------------------------------------------------------------------------------------
def _clean_bars(bars: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(bars, pd.DataFrame):
        raise ChartError(f"bars must be a DataFrame, not {type(bars).__name__}")
    cols = {str(c).lower(): c for c in bars.columns}
    missing = [c for c in OHLCV[:4] if c not in cols]
    if missing:
        raise ChartError(f"bars lack the column(s) {', '.join(missing)}")
    if not isinstance(bars.index, pd.DatetimeIndex):
        raise ChartError("bars need a DatetimeIndex (the bar times)")
    index = pd.DatetimeIndex(bars.index)
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    frame = pd.DataFrame({c: pd.to_numeric(bars[cols[c]], errors="coerce").to_numpy(dtype=float) if c in cols
                          else np.zeros(len(bars)) for c in OHLCV}, index=index)
    finite = np.isfinite(frame[list(OHLCV[:4])].to_numpy()).all(axis=1)
    frame = frame.loc[finite]
    if not frame.index.is_monotonic_increasing:
        frame = frame.sort_index()
    frame = frame[~frame.index.duplicated(keep="last")]
    if len(frame) < 2:
        raise ChartError("a chart needs at least 2 bars with finite prices")
    return frame


def _clean_series(series: pd.Series, what: str) -> pd.Series:
    if not isinstance(series, pd.Series):
        raise ChartError(f"{what} must be a pandas Series, not {type(series).__name__}")
    values = pd.to_numeric(series, errors="coerce")
    values = values[np.isfinite(values)]
    if isinstance(values.index, pd.DatetimeIndex) and values.index.tz is not None:
        values.index = values.index.tz_convert("UTC").tz_localize(None)
    values = values.sort_index()
    if len(values) < 2:
        raise ChartError(f"{what} needs at least 2 finite points")
    if (values <= 0).any():
        raise ChartError(f"{what} must be positive (equity values, not returns)")
    return values.astype(float)


def _chart_key(frame: pd.DataFrame, symbol: str, timeframe: str, shown: int, levels: Mapping[str, float]) -> bytes:
    digest = hashlib.blake2b(digest_size=20)
    digest.update(repr((symbol, timeframe, shown, sorted(levels.items()))).encode())
    digest.update(pd.DatetimeIndex(frame.index).asi8.tobytes())
    digest.update(np.ascontiguousarray(frame.to_numpy(dtype=float)).tobytes())
    return digest.digest()


def _mpf_frame(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.rename(columns={c: c.capitalize() for c in OHLCV})
    out.index.name = "Date"
    return out


def _signal_figure(has_volume: bool) -> tuple[Any, tuple[Any, Any | None, Any]]:
    """The figure and axes signal charts are drawn into (one per layout, kept), emptied of the last chart."""
    found = _FIGURES.get(has_volume)
    if found is None:
        fig = mpf.figure(style=_STYLE, figsize=SIGNAL_SIZE)
        found = _FIGURES[has_volume] = (fig, _signal_axes(fig, has_volume))
    fig, axes = found
    for ax in axes:
        if ax is None:
            continue
        for artist in [*ax.lines, *ax.collections, *ax.patches, *ax.texts, *ax.images]:
            artist.remove()
        if ax.get_legend() is not None:
            ax.get_legend().remove()
        for loc in ("left", "center", "right"):
            ax.set_title("", loc=loc)
        ax.relim()
        ax.autoscale()
    return found


def _signal_axes(fig: Any, has_volume: bool) -> tuple[Any, Any | None, Any]:
    left, width = 0.06, 0.86
    if has_volume:
        price_ax = fig.add_axes((left, 0.36, width, 0.58))
        volume_ax = fig.add_axes((left, 0.23, width, 0.12), sharex=price_ax)
    else:
        price_ax = fig.add_axes((left, 0.27, width, 0.67))
        volume_ax = None
    rsi_ax = fig.add_axes((left, 0.06, width, 0.16), sharex=price_ax)
    for ax in (price_ax, volume_ax, rsi_ax):
        if ax is not None:
            ax.yaxis.tick_right()
            ax.yaxis.set_label_position("right")
    return price_ax, volume_ax, rsi_ax


def _line(values: pd.Series, colour: str, width: float, ax: Any, **kwargs: Any) -> Mapping[str, Any] | None:
    if values.notna().sum() < 2:  # too few bars for this indicator: leave it out rather than draw nothing
        return None
    plot: Mapping[str, Any] = mpf.make_addplot(values, color=colour, width=width, ax=ax, **kwargs)
    return plot


def _volume(ax: Any, frame: pd.DataFrame) -> None:
    """Volume bars at mplfinance's x positions (0..n-1, one per bar), coloured like the candles."""
    volume = frame["volume"].fillna(0).to_numpy(dtype=float)
    rising = frame["close"].to_numpy() >= frame["open"].to_numpy()
    x = np.arange(len(volume), dtype=float)
    half = 0.35
    verts = np.stack([np.column_stack([x - half, np.zeros_like(x)]), np.column_stack([x - half, volume]),
                      np.column_stack([x + half, volume]), np.column_stack([x + half, np.zeros_like(x)])], axis=1)
    colours = np.where(rising, "#26a69a", "#ef5350")
    ax.add_collection(PolyCollection(list(verts), facecolors=list(colours), linewidths=0))
    ax.set_ylim(0, volume.max() * 1.1)
    ax.set_ylabel("volume")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 3))


def _label_levels(ax: Any, levels: Mapping[str, float], bars: int) -> None:
    for name, value in levels.items():
        at_right = name == "entry"  # entry on the right, target and stop on the left: close levels stay legible
        ax.annotate(f"{name} {value:,.6g}", xy=(bars - 1 if at_right else 0, value), xytext=(0, 2),
                    textcoords="offset points", color=LEVEL_COLOURS[name], fontsize=8, fontweight="bold",
                    va="bottom", ha="right" if at_right else "left")


def _legend(ax: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", fontsize=8, frameon=False)


def _date_format(index: pd.DatetimeIndex) -> str:
    spacing = (index[-1] - index[0]) / max(len(index) - 1, 1)
    return "%b %d" if spacing >= pd.Timedelta(hours=12) else "%d %H:%M"


def _fmt_return(r: float) -> str:
    return f"{r * 100:+.1f}%"


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    # zlib level 1: a third of the encoding time of the default (6) for a ~25% larger file
    fig.savefig(buffer, format="png", dpi=DPI, pil_kwargs={"compress_level": 1})
    return buffer.getvalue()


__all__ = ["ChartError", "clear_chart_cache", "equity_chart", "indicators", "render_equity_chart",
           "render_signal_chart", "signal_chart"]
