"""A local Binance spot REST API on 127.0.0.1, the part ccxt uses for public candles.

    GET /api/v3/exchangeInfo -> {"timezone": "UTC", "serverTime": ..., "rateLimits": [...],
                                 "symbols": [{"symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC",
                                              "quoteAsset": "USDT", "filters": [...], ...}]}
    GET /api/v3/klines?symbol=BTCUSDT&interval=1h&startTime=..&endTime=..&limit=..
        -> [[openTime, "open", "high", "low", "close", "volume", closeTime, "quoteVolume", trades,
             "takerBuyBase", "takerBuyQuote", "0"], ...]   (at most `limit`, 500 by default, 1,000 max)

Candles exist for every interval step (24/7) except inside `outages` (epoch-ms ranges) and after
`now_ms` (when set; the candle that is still open at `now_ms` is returned, as Binance does). Errors as
Binance writes them: ``{"code": -1121, "msg": "Invalid symbol."}`` (HTTP 400), 429 with Retry-After.
"""
from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from tests.fakes.market_faults import FakeServer, Fault, bar_at

INTERVAL_MS = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000, "1h": 3_600_000,
               "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000, "8h": 28_800_000, "12h": 43_200_000,
               "1d": 86_400_000, "3d": 259_200_000, "1w": 604_800_000}
DEFAULT_BASES = ("BTC", "ETH", "SOL", "ADA", "XRP", "DOGE")


class FakeBinance(FakeServer):
    def __init__(self, bases: tuple[str, ...] = DEFAULT_BASES, quote: str = "USDT", now_ms: int | None = None) -> None:
        super().__init__()
        self.markets = {f"{b}{quote}": (b, quote) for b in bases}
        self.outages: list[tuple[int, int]] = []
        self.now_ms = now_ms

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v3/exchangeInfo", self._exchange_info)
        app.router.add_get("/api/v3/klines", self._klines)

    async def _exchange_info(self, request: web.Request) -> web.Response:
        fault = self.note(request)
        if fault is not None:
            response = await self._fault(fault)
            if response is not None:
                return response
        return web.json_response({
            "timezone": "UTC", "serverTime": int(time.time() * 1000),
            "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000}],
            "exchangeFilters": [],
            "symbols": [_market(sym, base, quote) for sym, (base, quote) in self.markets.items()],
        })

    async def _klines(self, request: web.Request) -> web.Response:
        fault = self.note(request)
        if fault is not None:
            response = await self._fault(fault)
            if response is not None:
                return response
        q = request.query
        symbol, interval = q.get("symbol", ""), q.get("interval", "")
        if symbol not in self.markets:
            return _error(400, -1121, "Invalid symbol.")
        if interval not in INTERVAL_MS:
            return _error(400, -1120, "Invalid interval.")
        step = INTERVAL_MS[interval]
        limit = min(int(q.get("limit", 500)), 1000)
        end = int(q.get("endTime", self.now_ms or int(time.time() * 1000)))
        if self.now_ms is not None:
            end = min(end, self.now_ms)
        start = int(q.get("startTime", end - step * limit))
        rows: list[list[Any]] = []
        t = -(-start // step) * step
        while t <= end and len(rows) < limit:
            if not any(a <= t < b for a, b in self.outages):
                o, h, lo, c, v = bar_at(symbol, t // 1000, step // 1000)
                rows.append([t, f"{o:.8f}", f"{h:.8f}", f"{lo:.8f}", f"{c:.8f}", f"{v:.8f}", t + step - 1,
                             f"{v * c:.8f}", 100, f"{v / 2:.8f}", f"{v * c / 2:.8f}", "0"])
            t += step
        return web.json_response(rows)

    async def _fault(self, fault: Fault) -> web.Response | None:
        if fault.kind == "timeout":
            await self.pause(fault.delay)
            return None
        if fault.kind == "status":
            return _error(fault.status, -1000, "An unknown error occurred while processing the request.")
        if fault.kind == "rate_limit":
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            return web.Response(status=429, content_type="application/json", headers=headers,
                                text=json.dumps({"code": -1003, "msg": "Too many requests; current limit exceeded."}))
        if fault.kind == "malformed":
            return web.Response(text='[[1717200000000, "67000.1", "67100.0"', content_type="application/json")
        if fault.kind == "wrong_shape":
            return web.json_response([{"openTime": 1717200000000, "open": "1.0"}])
        raise ValueError(f"unknown fault {fault.kind}")


def _market(symbol: str, base: str, quote: str) -> dict[str, Any]:
    return {
        "symbol": symbol, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8, "quoteAsset": quote,
        "quotePrecision": 8, "quoteAssetPrecision": 8, "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"], "icebergAllowed": True, "ocoAllowed": True,
        "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": False, "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0.01000000", "maxPrice": "1000000.00000000", "tickSize": "0.01000000"},
            {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000", "stepSize": "0.00001000"},
            {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
             "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
        ],
        "permissions": [], "permissionSets": [["SPOT"]], "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def _error(status: int, code: int, msg: str) -> web.Response:
    return web.Response(status=status, content_type="application/json", text=json.dumps({"code": code, "msg": msg}))
