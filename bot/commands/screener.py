"""/screener FILTER...: the instruments whose latest daily bar passes every filter (core.screener), the strongest
setups first, from the same analysis /signal shows.

Class and sector filters narrow the universe before any data is read; each remaining instrument is analysed
on its daily bars (its finest timeframe where it has no daily ones), at most SCREEN_CONCURRENCY at a time, and
an analysis is reused for SCREEN_CACHE_SECONDS of wall time (the bar it reads changes once a day).
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from bot.commands.registry import Command, CommandContext, CommandServices
from bot.views.doc import Button, Doc, Table
from bot.views.formatting import price
from core.domain import AssetClass, Timeframe
from core.errors import SignalBotError
from core.screener import NUMERIC, TEXT, Filter, ScreenRow, parse_filters, screen

log = logging.getLogger(__name__)
SCREEN_CONCURRENCY = 8
SCREEN_CACHE_SECONDS = 300.0
SCREEN_ROWS = 20
SCREEN_MAX_INSTRUMENTS = 600
SCREENER_USAGE = "/screener FILTER... e.g. /screener rsi<30 sector=tech class=equity"
_cache: dict[tuple[int, str], tuple[float, ScreenRow | None]] = {}  # (id of the market, symbol) ->


def parse_screener(args: Sequence[str]) -> list[Filter]:
    return parse_filters(args)


async def screen_rows(svc: CommandServices, filters: Sequence[Filter]) -> tuple[list[ScreenRow], int]:
    """(the rows that pass, how many instruments had data to screen)."""
    classes = {AssetClass(str(f.value)) for f in filters if f.field == "class"}
    sectors = [str(f.value) for f in filters if f.field == "sector"]
    universe = [i for i in svc.signal_service.market.instruments()  # what the service has data for
                if (not classes or i.asset_class in classes) and all(s in i.sector.lower() for s in sectors)]
    universe = universe[:SCREEN_MAX_INSTRUMENTS]
    gate = asyncio.Semaphore(SCREEN_CONCURRENCY)

    market = id(svc.signal_service.market)

    async def one(symbol: str) -> ScreenRow | None:
        hit = _cache.get((market, symbol))
        if hit is not None and time.monotonic() - hit[0] < SCREEN_CACHE_SECONDS:
            return hit[1]
        async with gate:
            row = await _row(svc, symbol)
        if len(_cache) > 4 * SCREEN_MAX_INSTRUMENTS:
            _cache.clear()
        _cache[(market, symbol)] = (time.monotonic(), row)
        return row

    rows = [r for r in await asyncio.gather(*(one(i.symbol) for i in universe)) if r is not None]
    return screen(rows, filters), len(rows)


async def _row(svc: CommandServices, symbol: str) -> ScreenRow | None:
    try:
        available = list(svc.signal_service.market.timeframes(symbol))
        tf = Timeframe.D1 if Timeframe.D1 in available or not available else available[-1]
        a = await svc.signal_service.analyse(symbol, tf)
    except SignalBotError as exc:  # not enough history, a provider failing: left out of this screen
        log.debug("screener: %s left out: %s", symbol, exc)
        return None
    snap, inst = a.snapshot, a.instrument

    def num(key: str) -> float:
        value = snap.get(key, math.nan)
        return float(value) if value is not None else math.nan

    side = (a.setup.direction or a.leaning).verb.lower()
    return ScreenRow(inst.symbol, inst.name, inst.asset_class.value, inst.sector, num("close"), num("rsi_14"),
                     num("adx_14"), num("zscore_20"), a.trend.score, a.setup.score, side, a.ensemble.confidence,
                     a.setup.name)


def clear_screen_cache() -> None:
    _cache.clear()


async def screener(ctx: CommandContext, filters: list[Filter]) -> Doc:
    if not filters:
        fields = tuple((k, v) for k, v in NUMERIC.items()) + tuple(
            (k, ", ".join(v) if v else "part of the sector's name") for k, v in TEXT.items())
        return Doc(heading="Screener", body=f"Usage: {SCREENER_USAGE}. Every filter must hold; numbers take "
                                            "<, <=, >, >= or =.", fields=fields)
    rows, looked = await screen_rows(ctx.services, filters)
    label = " ".join(map(str, filters))
    if not rows:
        return Doc(heading=f"No instrument passes {label}", body=f"{looked} instruments with data screened. Loosen a filter.")
    shown = rows[:SCREEN_ROWS]
    table = Table(("symbol", "class", "sector", "last", "RSI", "ADX", "trend", "setup", "score", "side"), tuple(
        (r.symbol, r.asset_class, r.sector[:18], price(r.price), _f(r.rsi, 1), _f(r.adx, 1), r.trend_word,
         r.setup[:14], f"{r.score:.2f}", r.side) for r in shown))
    more = f" The first {SCREEN_ROWS} are shown." if len(rows) > SCREEN_ROWS else ""
    return Doc(heading=f"{len(rows)} of {looked} instruments pass {label}", table=table,
               note=f"From each instrument's latest daily bar; strongest setups first.{more} A screen is not a "
                    "signal: /signal SYMBOL has the full analysis.",
               buttons=tuple(Button(r.symbol, f"/signal {r.symbol}") for r in shown[:5]))


def _f(x: float, digits: int) -> str:
    return "-" if math.isnan(x) else f"{x:.{digits}f}"


def screener_commands() -> tuple[Command[Any], ...]:
    return (Command("screener", "instruments by indicator filters: RSI, ADX, trend, setup score, class, sector",
                    SCREENER_USAGE, parse_screener, screener, needs_user=False, metered=True),)
