"""Instruments and OHLCV bars (core.ports.BarRepository)."""
from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime

import pandas as pd
import sqlalchemy as sa

from core.domain import BAR_COLUMNS, Instrument, Timeframe
from storage.database import Database
from storage.rows import (BULK_CHUNK_ROWS, BulkInsert, bar_columns, bars_frame, epoch_seconds, instrument_row,
                          require_aware, to_instrument)
from storage.tables import BARS, INSTRUMENTS


class BarStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def upsert_instruments(self, instruments: Iterable[Instrument]) -> int:
        rows = [instrument_row(i) for i in instruments]
        if not rows:
            return 0
        stmt = self._db.insert(INSTRUMENTS)
        stmt = stmt.on_conflict_do_update(
            index_elements=[INSTRUMENTS.c.symbol],
            set_={c: stmt.excluded[c] for c in ("asset_class", "name", "exchange", "quote_currency", "sector")},
        )
        async with self._db.engine.begin() as conn:
            await conn.execute(stmt, rows)
        return len(rows)

    async def list_instruments(self) -> list[Instrument]:
        rows = await self._db.fetch(sa.select(INSTRUMENTS).order_by(INSTRUMENTS.c.symbol))
        return [to_instrument(r._mapping) for r in rows]

    async def upsert_bars(self, symbol: str, timeframe: Timeframe | str, df: pd.DataFrame) -> int:
        """Insert or replace bars (indexed by open time, BAR_COLUMNS). Idempotent; returns rows written."""
        tf = Timeframe(timeframe)
        columns = bar_columns(symbol, tf, df)
        if columns is None:
            return 0
        bulk = self._bars_upsert
        rows = bulk.rows(columns, {"symbol": symbol, "timeframe": tf.value})
        async with self._db.engine.begin() as conn:
            for start in range(0, len(rows), BULK_CHUNK_ROWS):
                await conn.exec_driver_sql(bulk.sql, rows[start : start + BULK_CHUNK_ROWS])
        return len(rows)

    @functools.cached_property
    def _bars_upsert(self) -> BulkInsert:
        stmt = self._db.insert(BARS)
        stmt = stmt.on_conflict_do_update(
            index_elements=[BARS.c.symbol, BARS.c.timeframe, BARS.c.time],
            set_={c: stmt.excluded[c] for c in BAR_COLUMNS},
        )
        return BulkInsert.compile(stmt, self._db.engine.dialect, ["symbol", "timeframe", "time", *BAR_COLUMNS])

    async def load_bars(
        self, symbol: str, timeframe: Timeframe | str, end: datetime | None = None, limit: int | None = None
    ) -> pd.DataFrame:
        """Bars whose close time (open + timeframe) is <= `end`, the last `limit` of them, ascending."""
        tf = Timeframe(timeframe)
        cols = [BARS.c.time, *(BARS.c[c] for c in BAR_COLUMNS)]
        stmt = sa.select(*cols).where(BARS.c.symbol == symbol, BARS.c.timeframe == tf.value)
        if end is not None:
            stmt = stmt.where(BARS.c.time <= epoch_seconds(require_aware(end) - tf.duration))
        if limit is not None:
            stmt = stmt.order_by(BARS.c.time.desc()).limit(max(limit, 0))
        else:
            stmt = stmt.order_by(BARS.c.time)
        rows = await self._db.fetch(stmt)
        if limit is not None:
            rows.reverse()
        return bars_frame(rows)
