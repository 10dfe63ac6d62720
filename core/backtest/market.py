"""FrameMarket: a MarketData over bar frames held in memory (a subset of a universe, data cut at a date,
synthetic bars). Same contract as every provider: `get_bars` never returns a bar that had not closed by `end`."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import numpy as np
import pandas as pd

from core.domain import Instrument, Timeframe
from core.errors import MarketDataError, UnknownSymbolError
from core.market_data.resample import index_ns, tail_until, to_utc_ns
from core.ports import MarketData


class FrameMarket:
    name = "frames"

    def __init__(self, instruments: Sequence[Instrument], frames: Mapping[tuple[str, Timeframe], pd.DataFrame]) -> None:
        self._instruments = list(instruments)
        known = {i.symbol for i in self._instruments}
        unknown = {sym for sym, _ in frames} - known
        if unknown:
            raise ValueError(f"bars for symbols that are not instruments: {sorted(unknown)}")
        self._frames: dict[tuple[str, Timeframe], tuple[pd.DataFrame, np.ndarray]] = {
            (sym, Timeframe(tf)): (frame, index_ns(frame)) for (sym, tf), frame in frames.items()}

    def instruments(self) -> Sequence[Instrument]:
        return list(self._instruments)

    def timeframes(self, symbol: str) -> Sequence[Timeframe]:
        return sorted((tf for sym, tf in self._frames if sym == symbol), key=lambda tf: tf.duration)

    async def get_bars(self, symbol: str, timeframe: Timeframe, *, end: datetime, limit: int | None = None) -> pd.DataFrame:
        if not any(i.symbol == symbol for i in self._instruments):
            raise UnknownSymbolError(symbol)
        try:
            frame, times = self._frames[(symbol, Timeframe(timeframe))]
        except KeyError:
            raise MarketDataError(f"{symbol}: no {timeframe} bars") from None
        return tail_until(frame, times, Timeframe(timeframe), to_utc_ns(end), limit)

    def frame(self, symbol: str, timeframe: Timeframe) -> pd.DataFrame:
        """Every bar held for `symbol` at `timeframe` (for tests and tools; the signal path uses get_bars)."""
        return self._frames[(symbol, Timeframe(timeframe))][0]

    def cut(self, end: datetime) -> FrameMarket:
        """The same market as it looked at `end`: every bar that closes after it is gone."""
        end_ns = to_utc_ns(end)
        frames = {key: tail_until(frame, times, key[1], end_ns, None) for key, (frame, times) in self._frames.items()}
        return FrameMarket(self._instruments, frames)


async def frames_of(market: MarketData, symbols: Sequence[str], timeframe: Timeframe, end: datetime) -> FrameMarket:
    """A FrameMarket holding `symbols` of another MarketData (every bar closing by `end`)."""
    by_symbol = {i.symbol: i for i in market.instruments()}
    frames = {(s, timeframe): await market.get_bars(s, timeframe, end=end) for s in symbols}
    return FrameMarket([by_symbol[s] for s in symbols], frames)


class SymbolSubset:
    """Another MarketData restricted to some of its symbols (a backtest over part of a universe). Symbols the
    market does not have are listed in `missing`."""

    def __init__(self, market: MarketData, symbols: Sequence[str]) -> None:
        wanted = {s.strip().upper() for s in symbols if s.strip()}
        self._market = market
        self._instruments = [i for i in market.instruments() if i.symbol.upper() in wanted]
        self._known = {i.symbol for i in self._instruments}
        self.missing = sorted(wanted - {s.upper() for s in self._known})
        self.name = f"{market.name}[{len(self._instruments)} symbols]"

    def instruments(self) -> Sequence[Instrument]:
        return list(self._instruments)

    def timeframes(self, symbol: str) -> Sequence[Timeframe]:
        return self._market.timeframes(symbol) if symbol in self._known else []

    async def get_bars(self, symbol: str, timeframe: Timeframe, *, end: datetime, limit: int | None = None) -> pd.DataFrame:
        if symbol not in self._known:
            raise UnknownSymbolError(symbol)
        return await self._market.get_bars(symbol, timeframe, end=end, limit=limit)
