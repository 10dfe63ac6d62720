"""A local Yahoo Finance on 127.0.0.1 speaking the chart API that yfinance reads.

    GET /v8/finance/chart/{symbol}?period1=..&period2=..&interval=1d|60m|15m|5m|1m  (or range=1d)
      -> {"chart": {"result": [{"meta": {...}, "timestamp": [...],
                                "indicators": {"quote": [{"open": [...], "high": [...], "low": [...],
                                                          "close": [...], "volume": [...]}],
                                               "adjclose": [{"adjclose": [...]}]}}],
                    "error": null}}
    GET /                  (yfinance's cookie fetch from fc.yahoo.com) -> 404, no cookie
    GET /v1/test/getcrumb  -> a crumb

Sessions as Yahoo has them: US equities and ``^`` indices trade the NYSE session (daily bars stamped
at the 09:30 open, intraday bars from the open, the last 1h bar starting 15:30), ``XXXYYY=X`` FX
trades 24/5 (daily bars stamped 00:00 London), ``XXX-USD`` crypto 24/7 (UTC). Prices come from
`price_at` (smooth, deterministic). `unadjusted_splits[symbol] = (epoch, ratio)` multiplies prices
before `epoch` by `ratio`, as an unadjusted split would look. Symbols in `unknown` answer 404.
"""
from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from core.instruments.calendars import FX_24_5, XNYS
from tests.fakes.market_faults import FakeServer, Fault, bar_at

UTC = timezone.utc
STEPS = {"1m": 60, "2m": 120, "5m": 300, "15m": 900, "30m": 1800, "60m": 3600, "1h": 3600, "1d": 86400}
_VALID_RANGES = ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"]


class FakeYahoo(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self.unknown: set[str] = set()
        self.unadjusted_splits: dict[str, tuple[int, float]] = {}

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._cookie)
        app.router.add_get("/v1/test/getcrumb", self._crumb)
        app.router.add_get("/v8/finance/chart/{symbol}", self._chart)

    async def _cookie(self, request: web.Request) -> web.Response:
        self.note(request)
        return web.Response(status=404, text="no cookie here")

    async def _crumb(self, request: web.Request) -> web.Response:
        self.note(request)
        return web.Response(text="fake-crumb")

    async def _chart(self, request: web.Request) -> web.Response:
        fault = self.note(request)
        symbol = request.match_info["symbol"]
        if fault is not None:
            response = await self._fault(fault, symbol)
            if response is not None:
                return response
        if symbol in self.unknown:
            return _error(404, "Not Found", "No data found, symbol may be delisted")
        q = request.query
        interval = q.get("interval", "1d")
        if interval not in STEPS:
            return _error(400, "Bad Request", f"Invalid input - interval={interval} is not supported.")
        if "period1" in q:
            p1, p2 = int(q["period1"]), int(q.get("period2", q["period1"]))
        else:  # range=1d: yfinance asking for the timezone
            p2 = int(datetime(2024, 6, 3, tzinfo=UTC).timestamp())
            p1 = p2 - 86400
        return web.json_response(self.payload(symbol, interval, p1, p2))

    async def _fault(self, fault: Fault, symbol: str) -> web.Response | None:
        if fault.kind == "timeout":
            await self.pause(fault.delay)
            return None
        if fault.kind == "status":
            return _error(fault.status, "Internal Server Error", "injected failure")
        if fault.kind == "rate_limit":
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            return web.Response(status=429, text="Too Many Requests", headers=headers)
        if fault.kind == "malformed":
            return web.Response(text='{"chart": {"result": [{"meta": {"currency": "USD", "timestamp": [17',
                                content_type="application/json")
        if fault.kind == "wrong_shape":
            body = {"chart": {"result": [{"meta": _meta(symbol, "1d", [], []), "timestamp": [1717425000, 1717511400],
                                          "indicators": {"quote": [{"open": [1.0], "close": "n/a"}]}}],
                              "error": None}}
            return web.json_response(body)
        raise ValueError(f"unknown fault {fault.kind}")

    # -- payload ---------------------------------------------------------------------------------

    def payload(self, symbol: str, interval: str, p1: int, p2: int) -> dict[str, Any]:
        step = STEPS[interval]
        times = [t for t in bar_times(symbol, interval, p1, p2)]
        split = self.unadjusted_splits.get(symbol)
        columns: dict[str, list[float]] = {k: [] for k in ("open", "high", "low", "close", "volume")}
        for t in times:
            o, h, lo, c, v = bar_at(symbol, t, step)
            factor = split[1] if split is not None and t < split[0] else 1.0
            for key, value in zip(columns, (o * factor, h * factor, lo * factor, c * factor, v), strict=True):
                columns[key].append(round(value, 6))
        periods = trading_periods(symbol, interval, p1, p2)
        item: dict[str, Any] = {"meta": _meta(symbol, interval, times, columns["close"], periods)}
        if times:
            item["timestamp"] = times
            item["indicators"] = {"quote": [columns]}
            if interval == "1d":
                item["indicators"]["adjclose"] = [{"adjclose": columns["close"]}]
        else:  # a range without bars: Yahoo leaves out timestamp and sends empty quote objects
            item["indicators"] = {"quote": [{}]}
            if interval == "1d":
                item["indicators"]["adjclose"] = [{}]
        return {"chart": {"result": [item], "error": None}}


def kind_of(symbol: str) -> str:
    if symbol.endswith("=X"):
        return "fx"
    if symbol.endswith("-USD"):
        return "crypto"
    return "index" if symbol.startswith("^") else "equity"


def zone_of(symbol: str) -> str:
    return {"fx": "Europe/London", "crypto": "UTC"}.get(kind_of(symbol), "America/New_York")


def bar_times(symbol: str, interval: str, p1: int, p2: int) -> list[int]:
    """Open times (epoch s) in [p1, p2) at which Yahoo would have a bar."""
    step, kind = STEPS[interval], kind_of(symbol)
    if interval == "1d":
        out = []
        for day in _dates(p1 - 86400, p2):
            if kind in ("equity", "index"):
                bounds = XNYS.session_bounds(day)
                stamp = int(bounds[0].timestamp()) if bounds else None
            elif kind == "fx":
                stamp = _midnight(day, "Europe/London") if day.weekday() < 5 else None
            else:
                stamp = _midnight(day, "UTC")
            if stamp is not None and p1 <= stamp < p2:
                out.append(stamp)
        return out
    if kind in ("equity", "index"):
        out = []
        for day in _dates(p1 - 86400, p2):
            bounds = XNYS.session_bounds(day)
            if bounds:
                start, end = (int(b.timestamp()) for b in bounds)
                out += [t for t in range(start, end, step) if p1 <= t < p2]
        return out
    first = -(-p1 // step) * step
    grid = range(first, p2, step)
    if kind == "fx":
        return [t for t in grid if FX_24_5.is_open(datetime.fromtimestamp(t, UTC))]
    return list(grid)


def trading_periods(symbol: str, interval: str, p1: int, p2: int) -> list[list[dict[str, Any]]]:
    """meta.tradingPeriods for intraday requests: one regular period per day."""
    if interval == "1d":
        return []
    zone, out = zone_of(symbol), []
    for day in _dates(p1 - 86400, p2 + 86400):
        if kind_of(symbol) in ("equity", "index"):
            bounds = XNYS.session_bounds(day)
            if bounds is None:
                continue
            start, end = (int(b.timestamp()) for b in bounds)
        else:
            start = _midnight(day, zone)
            end = _midnight(day + timedelta(days=1), zone)
        out.append([{"timezone": _abbrev(zone, start), "start": start, "end": end, "gmtoffset": _offset(zone, start)}])
    return out


def _meta(symbol: str, interval: str, times: list[int], closes: list[float],
          periods: list[list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    kind, zone = kind_of(symbol), zone_of(symbol)
    ref = times[-1] if times else 1717425000
    currency = symbol[3:6] if kind == "fx" else "USD"
    period = {"timezone": _abbrev(zone, ref), "start": ref, "end": ref + 3600, "gmtoffset": _offset(zone, ref)}
    meta: dict[str, Any] = {
        "currency": currency, "symbol": symbol, "exchangeName": {"fx": "CCY", "crypto": "CCC"}.get(kind, "NMS"),
        "fullExchangeName": {"fx": "CCY", "crypto": "CCC"}.get(kind, "NasdaqGS"),
        "instrumentType": {"fx": "CURRENCY", "crypto": "CRYPTOCURRENCY", "index": "INDEX"}.get(kind, "EQUITY"),
        "firstTradeDate": 345479400, "regularMarketTime": ref, "hasPrePostMarketData": kind == "equity",
        "gmtoffset": _offset(zone, ref), "timezone": _abbrev(zone, ref), "exchangeTimezoneName": zone,
        "regularMarketPrice": closes[-1] if closes else 100.0,
        "chartPreviousClose": closes[0] if closes else 100.0, "priceHint": 2,
        "currentTradingPeriod": {"pre": dict(period), "regular": dict(period), "post": dict(period)},
        "dataGranularity": interval, "range": "", "validRanges": _VALID_RANGES,
    }
    if periods:
        meta["tradingPeriods"] = periods
    return meta


def _error(status: int, code: str, description: str) -> web.Response:
    return web.Response(status=status, content_type="application/json",
                        text=json.dumps({"chart": {"result": None, "error": {"code": code, "description": description}}}))


def _dates(p1: int, p2: int) -> list[date]:
    first = datetime.fromtimestamp(p1, UTC).date()
    last = datetime.fromtimestamp(p2, UTC).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _midnight(day: date, zone: str) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone)).timestamp())


def _offset(zone: str, t: int) -> int:
    offset = datetime.fromtimestamp(t, ZoneInfo(zone)).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def _abbrev(zone: str, t: int) -> str:
    return datetime.fromtimestamp(t, ZoneInfo(zone)).tzname() or "UTC"
