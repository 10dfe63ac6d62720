"""Charts (bot/views/charts.py): PNGs rendered in memory, levels drawn where they belong, clear errors on bad
input, and rendering off the event loop."""
from __future__ import annotations

import asyncio
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import bot.views.charts as charts
from bot.views.charts import (
    LEVEL_COLOURS, ChartError, clear_chart_cache, equity_chart, indicators, render_equity_chart, render_signal_chart,
    signal_chart,
)
from tests.conftest import make_bars

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def random_bars(n: int = 170, seed: int = 1, freq: str = "1D", volume: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    return make_bars(closes, freq=freq, volume=rng.uniform(1e5, 1e6, n) if volume else 0.0)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def rows_of(png: bytes, colour: str) -> np.ndarray:
    """Image rows holding pixels of `colour` (hex)."""
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    mask = np.abs(pixels(png) - rgb).sum(axis=2) < 30
    return np.flatnonzero(mask.sum(axis=1) > 100)  # a level line spans the plot's width


def test_signal_chart_is_a_png_with_the_levels_where_they_belong():
    bars = random_bars()
    last = float(bars["close"].iloc[-1])
    png = signal_chart(bars, "AAPL", "1d", entry=last, target=last * 1.05, stop=last * 0.97)
    assert png.startswith(PNG_MAGIC)
    assert Image.open(io.BytesIO(png)).size == (1000, 650)
    target, entry, stop = (rows_of(png, LEVEL_COLOURS[k]) for k in ("target", "entry", "stop"))
    assert target.size and entry.size and stop.size
    assert target.mean() < entry.mean() < stop.mean()  # higher prices are higher up the image
    plain = signal_chart(bars, "AAPL", "1d")
    assert all(rows_of(plain, LEVEL_COLOURS[k]).size == 0 for k in LEVEL_COLOURS)


def test_a_short_levels_on_the_other_side():
    bars = random_bars(seed=2)
    last = float(bars["close"].iloc[-1])
    png = signal_chart(bars, "EURUSD", "1h", entry=last, target=last * 0.98, stop=last * 1.01)
    assert rows_of(png, LEVEL_COLOURS["target"]).mean() > rows_of(png, LEVEL_COLOURS["stop"]).mean()


def test_bars_without_volume_short_history_timezones_and_order():
    fx = random_bars(60, seed=3, freq="1h", volume=False)  # FX: no volume, too short for SMA50 over 120 bars
    assert signal_chart(fx, "EURUSD", "1h").startswith(PNG_MAGIC)
    shuffled = random_bars(80, seed=4).sample(frac=1.0, random_state=1)
    shuffled.index = shuffled.index.tz_convert("America/New_York")
    shuffled.iloc[5, shuffled.columns.get_loc("close")] = np.nan  # a bad row is left out
    assert signal_chart(shuffled, "AAPL", "1d", entry=100.0).startswith(PNG_MAGIC)
    upper = random_bars(40, seed=5).rename(columns=str.capitalize)  # "Open", "High", ... work too
    assert signal_chart(upper, "AAPL", "1d").startswith(PNG_MAGIC)


@pytest.mark.parametrize(("bars", "words"), [
    (random_bars(50).drop(columns=["close"]), "close"),
    (random_bars(50).reset_index(drop=True), "DatetimeIndex"),
    (random_bars(1), "at least 2 bars"),
    ([1, 2, 3], "DataFrame"),
])
def test_bad_bars_get_a_clear_error(bars, words):
    with pytest.raises(ChartError, match=words):
        signal_chart(bars, "AAPL", "1d")


def test_indicators_match_their_definitions():
    close = random_bars(200, seed=6)["close"]
    ind = indicators(close)
    np.testing.assert_allclose(ind["sma20"].iloc[-1], close.iloc[-20:].mean())
    np.testing.assert_allclose(ind["sma50"].iloc[-1], close.iloc[-50:].mean())
    std = close.iloc[-20:].std(ddof=0)
    np.testing.assert_allclose(ind["bb_upper"].iloc[-1] - ind["sma20"].iloc[-1], 2 * std)
    np.testing.assert_allclose(ind["sma20"].iloc[-1] - ind["bb_lower"].iloc[-1], 2 * std)
    assert ind["sma50"].iloc[:49].isna().all() and ind["sma50"].iloc[49:].notna().all()
    rising = indicators(pd.Series(np.arange(1.0, 40.0), index=pd.date_range("2024-01-01", periods=39)))
    assert rising["rsi"].dropna().eq(100).all()
    talib = pytest.importorskip("talib")
    reference = talib.RSI(close.to_numpy(), timeperiod=14)
    np.testing.assert_allclose(ind["rsi"].to_numpy()[-50:], reference[-50:], atol=0.05)  # Wilder's smoothing


def test_equity_chart_with_and_without_a_benchmark():
    idx = pd.date_range("2022-01-03", periods=300, freq="B", tz="UTC")
    rng = np.random.default_rng(7)
    curve = pd.Series(10_000 * np.exp(np.cumsum(rng.normal(0.0005, 0.01, 300))), index=idx)
    bench = pd.Series(4_000 * np.exp(np.cumsum(rng.normal(0.0003, 0.01, 400))),
                      index=pd.date_range("2021-08-01", periods=400, freq="B", tz="UTC"))
    with_bench = equity_chart(curve, bench, title="Track record")
    alone = equity_chart(curve)
    assert with_bench.startswith(PNG_MAGIC) and alone.startswith(PNG_MAGIC)
    assert Image.open(io.BytesIO(with_bench)).size == (1000, 600)
    grey = np.abs(pixels(with_bench) - np.array([127, 127, 127])).sum(axis=2) < 20  # the benchmark's line
    grey_alone = np.abs(pixels(alone) - np.array([127, 127, 127])).sum(axis=2) < 20
    assert grey.sum() > grey_alone.sum() + 500
    with pytest.raises(ChartError, match="positive"):
        equity_chart(pd.Series([0.01, -0.02, 0.03], index=idx[:3]))
    with pytest.raises(ChartError, match="at least 2"):
        equity_chart(pd.Series([1.0], index=idx[:1]))


def test_the_same_chart_is_drawn_once_and_the_cache_is_bounded(monkeypatch):
    clear_chart_cache()
    bars = random_bars(seed=8)
    first = signal_chart(bars, "AAPL", "1d", entry=100.0)
    drawn = []
    monkeypatch.setattr(charts, "_png", lambda fig: drawn.append(fig) or b"drawn")
    assert signal_chart(bars.copy(), "AAPL", "1d", entry=100.0) == first and not drawn  # same inputs: cached
    assert signal_chart(bars, "AAPL", "1d", entry=101.0) == b"drawn"  # other levels: drawn
    changed = bars.copy()
    changed.iloc[-1, changed.columns.get_loc("close")] *= 1.01
    assert signal_chart(changed, "AAPL", "1d", entry=100.0) == b"drawn"  # a new price: drawn
    assert signal_chart(bars, "MSFT", "1d", entry=100.0) == b"drawn"
    monkeypatch.setattr(charts, "CACHED_CHARTS", 2)
    signal_chart(bars, "AAPL", "1h")
    assert len(charts._CACHE) == 2
    clear_chart_cache()


async def test_rendering_runs_off_the_event_loop():
    clear_chart_cache()
    bars = random_bars()
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            await asyncio.sleep(0.005)
            ticks += 1
    task = asyncio.create_task(ticker())
    loop = asyncio.get_running_loop()
    begin = loop.time()
    signal_png, equity_png = await asyncio.gather(
        render_signal_chart(bars, "AAPL", "1d", 100.0, 105.0, 97.0),
        render_equity_chart(pd.Series(np.linspace(1, 2, 100), index=pd.date_range("2024-01-01", periods=100))))
    elapsed = loop.time() - begin
    stop.set()
    await task
    assert signal_png.startswith(PNG_MAGIC) and equity_png.startswith(PNG_MAGIC)
    assert ticks >= elapsed / 0.005 * 0.2  # the loop kept running while both charts were drawn
