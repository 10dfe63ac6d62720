"""MarketData over the bars table: what live scans read, kept fresh by the backfill/update job."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import pandas as pd

from core.domain import AssetClass, Instrument, Timeframe
from core.errors import UnknownSymbolError
from core.ports import BarRepository


class StoredMarketData:
    name = "store"

    def __init__(self, bars: BarRepository, instruments: Sequence[Instrument],
                 timeframes: Mapping[AssetClass, Sequence[Timeframe]]) -> None:
        self.bars = bars
        self._instruments = {i.symbol: i for i in instruments}
        self._timeframes = timeframes

    def instruments(self) -> Sequence[Instrument]:
        return list(self._instruments.values())

    def timeframes(self, symbol: str) -> Sequence[Timeframe]:
        inst = self._instruments.get(symbol)
        if inst is None:
            raise UnknownSymbolError(symbol)
        return list(self._timeframes.get(inst.asset_class, ()))

    async def get_bars(self, symbol: str, timeframe: Timeframe, *, end: datetime, limit: int | None = None) -> pd.DataFrame:
        if symbol not in self._instruments:
            raise UnknownSymbolError(symbol)
        return await self.bars.load_bars(symbol, timeframe, end=end, limit=limit)
