"""Backfill and incremental update of stored bars from any MarketData provider (or the router).

`backfill` walks each (symbol, timeframe) pair from where the store leaves off (the bar after the last
stored one; with nothing stored, `start`, by default two years before `end`) to `end` (default now),
in chunks of at most `chunk_bars` bars (default: the provider's max bars per request, else 1,000),
upserting each chunk as it arrives. It is therefore:

- resumable: an interrupted run, started again, continues after the last stored bar;
- idempotent: upserts by (symbol, timeframe, open time), so a repeated chunk changes nothing;
- incremental: run on a schedule with no `start`, it fetches only the bars that closed since.

Bars are validated by the provider on the way in (see core.market_data.validation). A chunk that fails
(after the provider's retries and the router's failover) stops that pair, stores nothing of that chunk,
and is reported; the other pairs go on. `progress` (sync or async callable) is called after every chunk
and when a pair ends, with a `BackfillProgress`; a CLI draws its bar from ``fraction``.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import pandas as pd

from core.clock import Clock, SystemClock
from core.domain import Timeframe
from core.errors import SignalBotError
from core.market_data.router import fetch_between
from core.ports import MarketData

logger = logging.getLogger(__name__)

DEFAULT_HISTORY = timedelta(days=730)
DEFAULT_CHUNK_BARS = 1000


class BarStore(Protocol):
    """What backfill needs from storage (storage.bars.BarStore has it)."""

    async def load_bars(self, symbol: str, timeframe: Timeframe | str, end: datetime | None = None,
                        limit: int | None = None) -> pd.DataFrame: ...

    async def upsert_bars(self, symbol: str, timeframe: Timeframe | str, df: pd.DataFrame) -> int: ...


@dataclass(frozen=True, slots=True)
class BackfillProgress:
    symbol: str
    timeframe: Timeframe
    chunk: int  # chunks of this pair done
    chunks: int  # chunks of this pair planned
    bars: int  # bars of this pair written so far
    pairs_done: int  # pairs finished (before this one, if it is still running)
    pairs: int
    done: bool = False  # this pair has finished (see error)
    error: str | None = None

    @property
    def fraction(self) -> float:
        """Overall completion, 0..1."""
        if self.pairs == 0:
            return 1.0
        within = 1.0 if self.done else (self.chunk / self.chunks if self.chunks else 1.0)
        finished = self.pairs_done - (1 if self.done else 0)
        return min(1.0, (finished + within) / self.pairs)


@dataclass(frozen=True, slots=True)
class PairResult:
    symbol: str
    timeframe: Timeframe
    start: datetime  # where this run began (after the last stored bar, or the requested start)
    end: datetime
    bars_written: int
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class BackfillResult:
    pairs: tuple[PairResult, ...]

    @property
    def bars_written(self) -> int:
        return sum(p.bars_written for p in self.pairs)

    @property
    def failed(self) -> list[PairResult]:
        return [p for p in self.pairs if not p.ok]


ProgressCallback = Callable[[BackfillProgress], Any]


async def backfill(
    provider: MarketData,
    store: BarStore,
    symbols: Iterable[str],
    timeframes: Iterable[Timeframe],
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    progress: ProgressCallback | None = None,
    chunk_bars: int | None = None,
    clock: Clock | None = None,
    concurrency: int = 1,
) -> BackfillResult:
    """Fill `store` with `provider`'s bars for every symbol x timeframe (see the module docstring)."""
    end = end or (clock or SystemClock()).now()
    start = start or end - DEFAULT_HISTORY
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be tz-aware")
    pairs = [(s, Timeframe(tf)) for s in symbols for tf in timeframes]
    run = _Run(provider, store, start, end, progress, chunk_bars or _chunk_bars(provider), len(pairs))
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(symbol: str, tf: Timeframe) -> PairResult:
        async with gate:
            return await run.pair(symbol, tf)

    results = await asyncio.gather(*(one(s, tf) for s, tf in pairs))
    return BackfillResult(tuple(results))


def _chunk_bars(provider: MarketData) -> int:
    caps = getattr(provider, "capabilities", None)
    per_request = getattr(caps, "max_bars_per_request", None)
    return int(per_request) if per_request else DEFAULT_CHUNK_BARS


def _reach(provider: MarketData, symbol: str, tf: Timeframe) -> timedelta | None:
    """The provider's lookback limit for this symbol and timeframe, if it declares one."""
    lookback = getattr(provider, "lookback", None)
    if callable(lookback):
        found = lookback(symbol, tf)
        return found if isinstance(found, timedelta) else None
    caps = getattr(provider, "capabilities", None)
    return caps.lookback(tf) if caps is not None else None


@dataclass
class _Run:
    provider: MarketData
    store: BarStore
    start: datetime
    end: datetime
    progress: ProgressCallback | None
    chunk_bars: int
    pairs: int
    pairs_done: int = 0

    def _oldest_reachable(self, symbol: str, tf: Timeframe) -> datetime:
        """A fresh backfill starts no earlier than the provider can serve (Yahoo keeps 1h bars 729 days)."""
        reach = _reach(self.provider, symbol, tf)
        return self.start if reach is None else self.end - reach + timedelta(days=1)

    async def pair(self, symbol: str, tf: Timeframe) -> PairResult:
        begin = await self._resume_point(symbol, tf)
        chunks = _chunks(begin, self.end, tf, self.chunk_bars)
        written, error = 0, None
        for i, (a, b) in enumerate(chunks):
            try:
                bars = await fetch_between(self.provider, symbol, tf, start=a, end=min(b + tf.duration, self.end))
            except SignalBotError as exc:
                error = f"{type(exc).__name__}: {exc}"
                logger.warning("backfill %s %s stopped at %s: %s", symbol, tf.value, a, error)
                break
            bars = bars[bars.index < pd.Timestamp(b)]
            if len(bars):
                written += await self.store.upsert_bars(symbol, tf, bars)
            await self._report(BackfillProgress(symbol, tf, i + 1, len(chunks), written, self.pairs_done, self.pairs))
        self.pairs_done += 1
        await self._report(BackfillProgress(symbol, tf, len(chunks), len(chunks), written, self.pairs_done,
                                            self.pairs, done=True, error=error))
        logger.info("backfill %s %s: %d bars from %s%s", symbol, tf.value, written, begin,
                    f" (stopped: {error})" if error else "")
        return PairResult(symbol, tf, begin, self.end, written, error)

    async def _resume_point(self, symbol: str, tf: Timeframe) -> datetime:
        last = await self.store.load_bars(symbol, tf, end=None, limit=1)
        if len(last) == 0:
            return max(self.start, self._oldest_reachable(symbol, tf))
        after_last = pd.Timestamp(last.index[-1]).tz_convert("UTC").to_pydatetime() + tf.duration
        return max(self.start, after_last)

    async def _report(self, event: BackfillProgress) -> None:
        if self.progress is None:
            return
        outcome = self.progress(event)
        if inspect.isawaitable(outcome):
            await outcome


def _chunks(begin: datetime, end: datetime, tf: Timeframe, chunk_bars: int) -> Sequence[tuple[datetime, datetime]]:
    """``[a, b)`` open-time windows covering bars that open at or after `begin` and close by `end`."""
    span = tf.duration * max(1, chunk_bars)
    out, a = [], begin
    last_open = end - tf.duration
    while a <= last_open:
        b = min(a + span, last_open + timedelta(microseconds=1))
        out.append((a, b))
        a = b
    return out
