"""What a market-data provider declares about itself, and the optional range-fetch extension."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

import pandas as pd

from core.domain import AssetClass, Timeframe


@dataclass(frozen=True, slots=True)
class ProviderCapabilities:
    """A provider's declared reach and limits.

    `native_timeframes` are fetched as such; other timeframes it serves are resampled from them.
    `max_bars_per_request` is the most bars one vendor request returns (None: no fixed cap; requests
    are split by `max_span` instead). `requests_per_second` is the rate the adapter keeps to.
    `max_lookback` says how far back a timeframe reaches (absent: no known limit)."""

    asset_classes: frozenset[AssetClass]
    native_timeframes: frozenset[Timeframe]
    max_bars_per_request: int | None
    requests_per_second: float | None
    max_span: tuple[tuple[Timeframe, timedelta], ...] = ()
    max_lookback: tuple[tuple[Timeframe, timedelta], ...] = ()

    def serves(self, asset_class: AssetClass) -> bool:
        return asset_class in self.asset_classes

    def span(self, timeframe: Timeframe) -> timedelta | None:
        """The longest time range one request may cover for `timeframe` (None: unlimited)."""
        return dict(self.max_span).get(timeframe)

    def lookback(self, timeframe: Timeframe) -> timedelta | None:
        return dict(self.max_lookback).get(timeframe)

    @staticmethod
    def of(asset_classes: Iterable[AssetClass], native: Iterable[Timeframe], *, max_bars: int | None,
           per_second: float | None, max_span: dict[Timeframe, timedelta] | None = None,
           max_lookback: dict[Timeframe, timedelta] | None = None) -> ProviderCapabilities:
        return ProviderCapabilities(frozenset(asset_classes), frozenset(native), max_bars, per_second,
                                    tuple((max_span or {}).items()), tuple((max_lookback or {}).items()))


@runtime_checkable
class RangeMarketData(Protocol):
    """A provider that can fetch a time range directly (network providers: used by backfill)."""

    name: str

    async def get_bars_between(self, symbol: str, timeframe: Timeframe, *, start: datetime,
                               end: datetime) -> pd.DataFrame:
        """Bars with open time >= `start` whose close time (open + timeframe) is <= `end`."""
        ...


class RequestThrottle:
    """Spaces requests at least 1/`per_second` apart (one shared slot per adapter instance)."""

    def __init__(self, per_second: float | None) -> None:
        self._interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if self._interval <= 0:
            return
        async with self._lock:
            now = time.monotonic()
            delay = self._next - now
            self._next = max(now, self._next) + self._interval
        if delay > 0:
            await asyncio.sleep(delay)
