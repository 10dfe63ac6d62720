"""A signal's candlestick chart as a Doc image: the bars up to a moment, with entry, target and stop.

Two users: /signal (bot.commands.handlers: the analysis' chart) and the delivery workers (a delivered signal's
chart for the tiers that include charts; `SignalCharts` is their provider). Reading the bars is I/O and drawing
is CPU run in a worker thread (bot.views.charts); either can fail (ChartError, core.errors.SignalBotError), and
both users then answer with the text alone.
"""
from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict
from datetime import datetime

from bot.views.charts import render_signal_chart
from bot.views.doc import Image
from core.domain import Signal, Timeframe
from core.ports import MarketData

CHART_BARS = 170  # 120 candles shown + 50 for the SMA50 to be drawn from the first one


async def signal_chart_image(market: MarketData, symbol: str, timeframe: Timeframe, end: datetime,
                             levels: tuple[float, float, float] | None = None) -> Image:
    """The chart of `symbol` at `timeframe` over the bars closed by `end`, with (entry, target, stop) when given.
    Raises bot.views.charts.ChartError (too few bars) or core.errors.SignalBotError (the provider failed)."""
    bars = await market.get_bars(symbol, timeframe, end=end, limit=CHART_BARS)
    png = await render_signal_chart(bars, symbol, str(timeframe), *(levels or ()))
    caption = f"{symbol} {timeframe}"
    if levels is not None:
        entry, target, stop = levels
        caption += f": entry {entry:.6g}, target {target:.6g}, stop {stop:.6g}"
    return Image(png, f"{symbol.replace('/', '-')}-{timeframe}.png", caption)


async def chart_of_signal(market: MarketData, signal: Signal) -> Image:
    """A signal's chart: the bars it was issued on (closed by `issued_at`) and its levels."""
    return await signal_chart_image(market, signal.symbol, signal.timeframe, signal.issued_at,
                                    (signal.entry, signal.target, signal.stop))


class SignalCharts:
    """The delivery workers' chart provider: `await charts(signal) -> Image`.

    Every chat worker asks for the same signal at about the same time; one drawing serves them all (a request
    while it is being drawn waits for it) and the last `capacity` charts are kept (about 120 KiB each). A failure
    is not kept: it propagates to each caller, and the next request tries again."""

    def __init__(self, market: MarketData, capacity: int = 32) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.market = market
        self.capacity = capacity
        self._done: OrderedDict[str, Image] = OrderedDict()
        self._drawing: dict[str, asyncio.Future[Image]] = {}
        self.drawn = 0  # charts drawn (not served from the cache): for tests and logs

    async def __call__(self, signal: Signal) -> Image:
        cached = self._done.get(signal.id)
        if cached is not None:
            self._done.move_to_end(signal.id)
            return cached
        pending = self._drawing.get(signal.id)
        if pending is None:
            pending = self._drawing[signal.id] = asyncio.ensure_future(self._draw(signal))
            pending.add_done_callback(functools.partial(self._finished, signal.id))
        return await asyncio.shield(pending)  # one caller cancelled does not cancel the others' drawing

    async def _draw(self, signal: Signal) -> Image:
        image = await chart_of_signal(self.market, signal)
        self.drawn += 1
        return image

    def _finished(self, signal_id: str, future: asyncio.Future[Image]) -> None:
        self._drawing.pop(signal_id, None)
        if future.cancelled() or future.exception() is not None:
            return  # the exception reaches the callers awaiting it; nothing is kept
        self._done[signal_id] = future.result()
        while len(self._done) > self.capacity:
            self._done.popitem(last=False)
