"""Closed crypto bars as they close, from the exchange's WebSocket through ccxt's streaming API.

One connection carries every (pair, timeframe) (ccxt.pro `watch_ohlcv_for_symbols`). A candle is closed when the
exchange says so (Binance's kline flag `x`, which ccxt drops: crypto_exchange.stream_exchange keeps it) or when a newer
candle of the same key arrives; each closed candle is handed on once, in order (`on_closed`), so a duplicate or
an out-of-order message changes nothing. A hole between the last candle handed on and the next closed one (a
disconnect, a dropped message) is back-filled from the REST API (`rest`, a CcxtMarketData) before it, so the
bars handed on have no gap. A stream that says nothing for `stall_seconds` is treated as dead: the connection is
closed and opened again, with back-off, and the bars that closed meanwhile come from REST first. While the
stream is down the service's polling job still refreshes the stored bars (the router fails over to Yahoo when
the exchange's REST is down too).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from core.clock import Clock, SystemClock
from core.domain import BAR_COLUMNS, Timeframe
from core.errors import MarketDataError
from core.instruments import CCXT
from core.market_data.crypto_exchange import CcxtMarketData, stream_exchange
from core.market_data.resample import bars_from_block, index_ns

log = logging.getLogger(__name__)

Key = tuple[str, Timeframe]  # (our symbol, timeframe)
OnClosed = Callable[[str, Timeframe, pd.DataFrame], Awaitable[None]]


@dataclass
class _State:
    market: str  # ccxt's unified symbol, "BTC/USDT"
    market_id: str  # the exchange's, "BTCUSDT"
    last: int | None = None  # open ms of the last candle handed on


class BarStream:
    def __init__(self, rest: CcxtMarketData, keys: Sequence[Key], on_closed: OnClosed, *,
                 ws_url: str | None = None, stall_seconds: float = 30.0, backoff: Sequence[float] = (0.5, 1, 2, 5, 10),
                 last_closed: Mapping[Key, datetime] | None = None, clock: Clock | None = None) -> None:
        """`keys`: the (symbol, timeframe) pairs to follow; `last_closed`: the open time of the newest stored
        bar of each (the first closed candle after a hole is back-filled from there; absent: from the first
        closed candle the stream sees). `ws_url` replaces the exchange's stream URL (tests: a local server)."""
        self.rest = rest
        self.keys = list(keys)
        self.on_closed = on_closed
        self.stall_seconds = stall_seconds
        self.backoff = tuple(backoff)
        self.clock = clock or SystemClock()
        self.exchange = stream_exchange(rest, ws_url)
        self._states: dict[Key, _State] = {}
        self._last_closed = {k: int(v.timestamp() * 1000) for k, v in (last_closed or {}).items()}
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.backfilled = 0  # bars handed on from REST (holes and reconnects)
        self.last_message_at: float | None = None  # loop time of the last stream message

    def resume_after(self, last_closed: Mapping[Key, datetime]) -> None:
        """Before `run`: the open time of the newest bar already held per key (see __init__)."""
        self._last_closed.update({k: int(v.timestamp() * 1000) for k, v in last_closed.items()})

    async def close(self) -> None:
        await self.exchange.close()

    async def run(self) -> None:
        """Until cancelled: follow the stream, reconnecting after a failure or a stall."""
        attempt = 0
        try:
            while True:
                try:
                    await self._follow()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a disconnect, a stall, a refused subscription: connect again
                    self.connected.clear()
                    with contextlib.suppress(Exception):
                        await self.exchange.close()
                    delay = self.backoff[min(attempt, len(self.backoff) - 1)] if self.backoff else 0.0
                    attempt += 1
                    self.reconnects += 1
                    log.warning("bar stream %s: %s: %s; reconnecting in %.1f s", self.exchange.id,
                                type(exc).__name__, str(exc)[:200], delay)
                    await asyncio.sleep(delay)
                    with contextlib.suppress(Exception):
                        await self._catch_up()
                else:
                    attempt = 0
        finally:
            with contextlib.suppress(Exception):
                await self.exchange.close()

    async def _follow(self) -> None:
        if not self._states:
            await self._load()
        subscriptions = [[s.market, k[1].value] for k, s in self._states.items()]
        by_market = {(s.market, k[1].value): k for k, s in self._states.items()}
        loop = asyncio.get_running_loop()
        while True:
            async with asyncio.timeout(self.stall_seconds):
                update = await self.exchange.watch_ohlcv_for_symbols(subscriptions)
            self.connected.set()
            self.last_message_at = loop.time()
            for market, by_tf in update.items():
                for tf in by_tf:
                    key = by_market.get((market, tf))
                    if key is not None:
                        await self._advance(key)

    async def _load(self) -> None:
        await self.exchange.load_markets()
        unlisted: set[str] = set()
        for key in self.keys:
            rec = self.rest.registry.get(key[0])
            market = rec.provider_symbol(CCXT)
            if market is None or market not in self.exchange.markets:
                unlisted.add(key[0])
                continue
            self._states[key] = _State(market, self.exchange.markets[market]["id"], self._last_closed.get(key))
        if unlisted:
            log.warning("bar stream: not listed on %s, not streamed: %s", self.exchange.id, ", ".join(sorted(unlisted)))

    async def _advance(self, key: Key) -> None:
        """Hand on every candle of `key` that has closed since the last one handed on, in order."""
        state, tf = self._states[key], key[1]
        step = int(tf.duration.total_seconds() * 1000)
        cache = (self.exchange.ohlcvs.get(state.market) or {}).get(tf.value) or []
        candles = {int(c[0]): c for c in cache}
        if not candles:
            return
        flagged = getattr(self.exchange, "closed_klines", {}).get((state.market_id, tf.value), -1)
        final = max(flagged, max(candles) - step)  # a newer candle closes the ones before it
        ready = sorted(t for t in candles if t <= final and (state.last is None or t > state.last))
        for t in ready:
            if not _sound(candles[t]):  # left out: the next sound candle back-fills it from REST
                log.warning("bar stream: %s %s: malformed candle %s dropped", key[0], tf, str(candles[t])[:80])
                continue
            if state.last is not None and t > state.last + step:
                await self._fill(key, state.last + step, t)
            await self._hand_on(key, _frame([candles[t]]))

    async def _fill(self, key: Key, first_ms: int, before_ms: int) -> None:
        """REST candles with open in [first_ms, before_ms): a hole in the stream."""
        start = datetime.fromtimestamp(first_ms / 1000, timezone.utc)
        end = datetime.fromtimestamp(before_ms / 1000, timezone.utc)
        bars = await self.rest.get_bars_between(key[0], key[1], start=start, end=end)
        if len(bars):
            self.backfilled += len(bars)
            log.info("bar stream: %s %s: %d bars back-filled from REST", key[0], key[1], len(bars))
            await self._hand_on(key, bars)

    async def _catch_up(self) -> None:
        """After a reconnect: what closed while the stream was down, from REST."""
        now_ms = int(self.clock.now().timestamp() * 1000)
        for key, state in self._states.items():
            if state.last is None:
                continue
            step = int(key[1].duration.total_seconds() * 1000)
            last_closed_open = (now_ms // step) * step - step
            if last_closed_open > state.last:
                try:
                    await self._fill(key, state.last + step, last_closed_open + step)
                except MarketDataError as exc:
                    log.warning("bar stream: catching up %s %s failed: %s", key[0], key[1], exc)

    async def _hand_on(self, key: Key, bars: pd.DataFrame) -> None:
        state = self._states[key]
        opens = index_ns(bars) // 1_000_000
        keep = opens > (state.last if state.last is not None else -1)
        if not keep.any():
            return
        bars = bars[keep]
        await self.on_closed(key[0], key[1], bars)
        state.last = int(opens[keep][-1])


def _sound(c: Sequence[Any]) -> bool:
    try:
        o, h, lo, cl, v = (float(x) for x in c[1:6])
    except (TypeError, ValueError):
        return False
    return bool(np.isfinite([o, h, lo, cl, v]).all()) and lo > 0 and v >= 0 and h >= max(o, cl) and lo <= min(o, cl)


def _frame(candles: Sequence[Sequence[Any]]) -> pd.DataFrame:
    arr = np.array([[float(v) for v in c[:6]] for c in candles], dtype=np.float64)
    return bars_from_block(arr[:, 0].astype(np.int64) * 1_000_000, arr[:, 1:1 + len(BAR_COLUMNS)])
