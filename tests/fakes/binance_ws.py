"""A local Binance spot exchange with its market streams on 127.0.0.1: the REST API of binance_rest.FakeBinance
plus the WebSocket endpoint that ccxt.pro's `watch_ohlcv` / `watch_ohlcv_for_symbols` connect to.

    GET /ws/{n}   (WebSocket)
        client -> {"method": "SUBSCRIBE", "params": ["btcusdt@kline_1h", ...], "id": 1}
        server -> {"result": null, "id": 1}
        server -> {"e": "kline", "E": 1717203600001, "s": "BTCUSDT",
                   "k": {"t": 1717200000000, "T": 1717203599999, "s": "BTCUSDT", "i": "1h", "f": 1, "L": 100,
                         "o": "67000.1", "c": "67010.0", "h": "67100.0", "l": "66900.0", "v": "12.5", "n": 100,
                         "x": true, "q": "...", "V": "...", "Q": "...", "B": "0"}}

The test drives the stream: `kline(symbol, interval, open_ms, closed=...)` sends one update of that candle (its
values those of the REST candles, `bar_at`) to every subscriber; `drop()` closes every connection (a disconnect);
sending nothing is a stall. Out-of-order and duplicate messages are the test sending them so.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.binance_rest import INTERVAL_MS, FakeBinance
from tests.fakes.market_faults import bar_at


class FakeBinanceStreams(FakeBinance):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sockets: list[tuple[web.WebSocketResponse, set[str]]] = []
        self.subscribed = asyncio.Event()
        self.connections = 0
        self.sent: list[tuple[float, str, str, int, bool]] = []  # (wall time, symbol, interval, open ms, closed)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def routes(self, app: web.Application) -> None:
        super().routes(app)
        app.router.add_get("/ws/{stream}", self._socket)

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        self.connections += 1
        streams: set[str] = set()
        entry = (ws, streams)
        self.sockets.append(entry)
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                body = json.loads(msg.data)
                if body.get("method") == "SUBSCRIBE":
                    streams.update(body.get("params", []))
                    await ws.send_str(json.dumps({"result": None, "id": body.get("id")}))
                    self.subscribed.set()
                elif body.get("method") == "UNSUBSCRIBE":
                    streams.difference_update(body.get("params", []))
                    await ws.send_str(json.dumps({"result": None, "id": body.get("id")}))
        finally:
            if entry in self.sockets:
                self.sockets.remove(entry)
        return ws

    async def wait_subscribed(self, streams: int, timeout: float = 10.0) -> None:
        """Until one open connection holds at least `streams` subscriptions."""
        async with asyncio.timeout(timeout):
            while not any(len(s) >= streams and not ws.closed for ws, s in self.sockets):
                await asyncio.sleep(0.01)

    async def kline(self, symbol: str, interval: str, open_ms: int, *, closed: bool,
                    values: tuple[float, float, float, float, float] | None = None) -> int:
        """Send one update of a candle to its subscribers; returns how many got it."""
        step = INTERVAL_MS[interval]
        o, h, lo, c, v = values or bar_at(symbol, open_ms // 1000, step // 1000)
        message = json.dumps({
            "e": "kline", "E": open_ms + step if closed else open_ms + step // 2, "s": symbol,
            "k": {"t": open_ms, "T": open_ms + step - 1, "s": symbol, "i": interval, "f": 1, "L": 100,
                  "o": f"{o:.8f}", "c": f"{c:.8f}", "h": f"{h:.8f}", "l": f"{lo:.8f}", "v": f"{v:.8f}", "n": 100,
                  "x": closed, "q": f"{v * c:.8f}", "V": f"{v / 2:.8f}", "Q": f"{v * c / 2:.8f}", "B": "0"}})
        name = f"{symbol.lower()}@kline_{interval}"
        count = 0
        for ws, streams in list(self.sockets):
            if name in streams and not ws.closed:
                await ws.send_str(message)
                count += 1
        self.sent.append((time.monotonic(), symbol, interval, open_ms, closed))
        return count

    async def drop(self) -> None:
        """Close every stream connection (the exchange's side of a disconnect)."""
        for ws, _ in list(self.sockets):
            await ws.close()
        self.sockets.clear()
