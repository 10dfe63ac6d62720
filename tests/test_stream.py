"""Streaming bars: the real ccxt.pro client against a local Binance (REST + market streams on 127.0.0.1). Closed
candles are handed on once and in order, whatever the stream repeats or reorders; holes, disconnects and stalls
are back-filled from REST; a malformed candle is replaced by the exchange's REST candle."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pandas as pd
import pytest

from core.clock import FixedClock
from core.domain import Timeframe
from core.market_data.crypto_exchange import CcxtMarketData
from core.market_data.stream import BarStream
from tests.conftest import utc
from tests.fakes.binance_ws import FakeBinanceStreams
from tests.fakes.market_faults import bar_at

H = 3_600_000
T0 = 1717200000000  # 2024-06-01 00:00 UTC
BTC, ETH = ("BTC-USDT", Timeframe.H1), ("ETH-USDT", Timeframe.H1)


class Received:
    def __init__(self) -> None:
        self.bars: dict[tuple[str, Timeframe], list[pd.DataFrame]] = {}
        self.event = asyncio.Event()

    async def __call__(self, symbol: str, tf: Timeframe, bars: pd.DataFrame) -> None:
        self.bars.setdefault((symbol, tf), []).append(bars)
        self.event.set()

    def opens(self, key: tuple[str, Timeframe]) -> list[int]:
        return [int(t.value // 1_000_000) for f in self.bars.get(key, []) for t in f.index]

    async def until(self, key: tuple[str, Timeframe], count: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.opens(key)) < count:
                self.event.clear()
                await self.event.wait()


@pytest.fixture
async def exchange() -> AsyncIterator[FakeBinanceStreams]:
    async with FakeBinanceStreams() as fake:
        yield fake  # type: ignore[misc]


async def started(fake: FakeBinanceStreams, received: Received, **kwargs: object) -> tuple[BarStream, asyncio.Task[None]]:
    rest = CcxtMarketData(base_url=fake.base_url)
    stream = BarStream(rest, [BTC, ETH], received, ws_url=fake.ws_url, backoff=(0.05,),
                       clock=kwargs.pop("clock", FixedClock(utc(2024, 6, 1, 1))), **kwargs)  # type: ignore[arg-type]
    task = asyncio.create_task(stream.run())
    await fake.wait_subscribed(2)
    return stream, task


async def stopped(stream: BarStream, task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await stream.rest.close()


async def test_a_candle_is_handed_on_once_when_it_closes_whatever_the_stream_repeats(exchange):
    received = Received()
    stream, task = await started(exchange, received)
    try:
        await exchange.kline("BTCUSDT", "1h", T0, closed=False)
        await exchange.kline("BTCUSDT", "1h", T0, closed=True)
        await received.until(BTC, 1)
        (bars,) = received.bars[BTC]
        o, h, lo, c, v = bar_at("BTCUSDT", T0 // 1000, 3600)
        assert list(bars.iloc[0]) == pytest.approx([o, h, lo, c, v])  # the closing update's values
        await exchange.kline("BTCUSDT", "1h", T0, closed=True)  # a duplicate
        await exchange.kline("BTCUSDT", "1h", T0 + H, closed=False)
        await exchange.kline("BTCUSDT", "1h", T0, closed=False)  # out of order: an old update, late
        await exchange.kline("ETHUSDT", "1h", T0, closed=False)
        await exchange.kline("ETHUSDT", "1h", T0 + H, closed=False)  # never flagged: the newer candle closes it
        await received.until(ETH, 1)
        await exchange.kline("BTCUSDT", "1h", T0 + H, closed=True)
        await received.until(BTC, 2)
        await asyncio.sleep(0.2)
        assert received.opens(BTC) == [T0, T0 + H] and received.opens(ETH) == [T0]
        assert stream.backfilled == 0 and stream.reconnects == 0
    finally:
        await stopped(stream, task)


async def test_a_hole_in_the_stream_is_back_filled_from_rest_before_the_next_candle(exchange):
    received = Received()
    stream, task = await started(exchange, received)
    try:
        await exchange.kline("BTCUSDT", "1h", T0, closed=True)
        await exchange.kline("BTCUSDT", "1h", T0 + 4 * H, closed=True)  # 1h..3h were never sent
        await received.until(BTC, 5)
        assert received.opens(BTC) == [T0 + k * H for k in range(5)] and stream.backfilled == 3
        filled = received.bars[BTC][1]
        assert list(filled["close"]) == pytest.approx([bar_at("BTCUSDT", (T0 + k * H) // 1000, 3600)[3]
                                                        for k in (1, 2, 3)])
        assert exchange.count("/api/v3/klines") == 1
    finally:
        await stopped(stream, task)


async def test_a_disconnect_reconnects_and_catches_up_what_closed_meanwhile(exchange):
    received = Received()
    clock = FixedClock(utc(2024, 6, 1, 1))
    stream, task = await started(exchange, received, clock=clock)
    try:
        await exchange.kline("BTCUSDT", "1h", T0, closed=True)
        await exchange.kline("ETHUSDT", "1h", T0, closed=True)
        await received.until(BTC, 1)
        await received.until(ETH, 1)
        clock.advance(timedelta(hours=3, minutes=10))  # down for three hours
        await exchange.drop()
        await received.until(BTC, 4)
        await received.until(ETH, 4)
        assert received.opens(BTC) == [T0 + k * H for k in range(4)] and stream.reconnects >= 1
        await exchange.wait_subscribed(2)  # the stream is back: live candles flow again, nothing doubled
        await exchange.kline("BTCUSDT", "1h", T0 + 3 * H, closed=True)  # already back-filled
        await exchange.kline("BTCUSDT", "1h", T0 + 4 * H, closed=True)
        await received.until(BTC, 5)
        assert received.opens(BTC) == [T0 + k * H for k in range(5)] and exchange.connections >= 2
    finally:
        await stopped(stream, task)


async def test_a_stream_that_stalls_is_opened_again(exchange):
    received = Received()
    stream, task = await started(exchange, received, stall_seconds=0.5)
    try:
        await exchange.kline("BTCUSDT", "1h", T0, closed=True)
        await received.until(BTC, 1)
        async with asyncio.timeout(10):  # the stream says nothing: after 0.5 s it is dropped and opened again
            while exchange.connections < 2:
                await asyncio.sleep(0.05)
        await exchange.wait_subscribed(2)
        await exchange.kline("BTCUSDT", "1h", T0 + H, closed=True)
        await received.until(BTC, 2)
        assert received.opens(BTC) == [T0, T0 + H] and stream.reconnects >= 1
    finally:
        await stopped(stream, task)


async def test_a_malformed_candle_is_replaced_by_the_exchanges_rest_candle(exchange):
    received = Received()
    stream, task = await started(exchange, received)
    try:
        await exchange.kline("BTCUSDT", "1h", T0, closed=True)
        await exchange.kline("BTCUSDT", "1h", T0 + H, closed=True, values=(100.0, 90.0, 95.0, 99.0, 10.0))  # high < low
        await exchange.kline("BTCUSDT", "1h", T0 + 2 * H, closed=True)
        await received.until(BTC, 3)
        assert received.opens(BTC) == [T0, T0 + H, T0 + 2 * H] and stream.backfilled == 1
        assert received.bars[BTC][1]["close"].iloc[0] == pytest.approx(bar_at("BTCUSDT", (T0 + H) // 1000, 3600)[3])
    finally:
        await stopped(stream, task)
