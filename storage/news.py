"""Stored news verdicts: every analyst answer with its item, time, provider, model and prompt version.

Implements `core.news.schema.VerdictStore`. One row per (item, symbol, provider, model, prompt version);
saving the same again replaces it. Backtests read these back (`NewsAnalysisService(mode="replay")` and
the news voter) instead of asking an LLM again. The table is defined in storage.tables.
"""
from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from core.news.schema import AnalysisRecord
from storage.database import IN_CHUNK, Database, upsert
from storage.tables import NEWS_VERDICTS



_KEY = ("item_id", "symbol", "provider", "model", "prompt_version")


class SqlVerdictStore:
    """Operations are serialised by a lock: an in-memory SQLite database is one shared connection, on which
    overlapping transactions from concurrent analyses would interfere (and SQLite serialises writes anyway)."""

    def __init__(self, db: Database) -> None:
        self._engine = db.engine
        self._lock = asyncio.Lock()

    async def save(self, record: AnalysisRecord) -> None:
        await self.save_many([record])

    async def save_many(self, records: Sequence[AnalysisRecord]) -> None:
        if not records:
            return
        rows = [_row(r) for r in records]
        dialect = self._engine.dialect.name
        async with self._lock, self._engine.begin() as conn:
            for start in range(0, len(rows), IN_CHUNK):
                stmt = upsert(dialect, NEWS_VERDICTS)
                stmt = stmt.values(rows[start:start + IN_CHUNK])
                stmt = stmt.on_conflict_do_update(
                    index_elements=[NEWS_VERDICTS.c[k] for k in _KEY],
                    set_={k: stmt.excluded[k] for k in rows[0] if k not in _KEY})
                await conn.execute(stmt)

    async def find(self, item_id: str, symbol: str, *, model: str | None = None,
                   prompt_version: str | None = None) -> list[AnalysisRecord]:
        c = NEWS_VERDICTS.c
        stmt = sa.select(NEWS_VERDICTS).where(c.item_id == item_id, c.symbol == symbol)
        if model is not None:
            stmt = stmt.where(c.model == model)
        if prompt_version is not None:
            stmt = stmt.where(c.prompt_version == prompt_version)
        stmt = stmt.order_by(c.analysed_at.desc(), c.id.desc())
        async with self._lock, self._engine.connect() as conn:
            return [_record(row) for row in (await conn.execute(stmt)).mappings().all()]

    async def between(self, symbols: Sequence[str], start: datetime, end: datetime) -> list[AnalysisRecord]:
        c = NEWS_VERDICTS.c
        wanted = sorted(set(symbols))
        out: list[AnalysisRecord] = []
        async with self._lock, self._engine.connect() as conn:
            for i in range(0, len(wanted), IN_CHUNK):
                stmt = sa.select(NEWS_VERDICTS).where(
                    c.symbol.in_(wanted[i:i + IN_CHUNK]), c.published_at >= start, c.published_at < end
                ).order_by(c.published_at, c.id)
                out += [_record(row) for row in (await conn.execute(stmt)).mappings().all()]
        return sorted(out, key=lambda r: r.published_at)

    async def keys(self, *, provider: str, model: str, prompt_version: str) -> set[tuple[str, str]]:
        """(item id, symbol) of every verdict by this provider, model and prompt version (what a cache holds)."""
        c = NEWS_VERDICTS.c
        stmt = sa.select(c.item_id, c.symbol).where(c.provider == provider, c.model == model,
                                                     c.prompt_version == prompt_version)
        async with self._lock, self._engine.connect() as conn:
            return {(row[0], row[1]) for row in (await conn.execute(stmt)).all()}

    async def count(self) -> int:
        async with self._lock, self._engine.connect() as conn:
            return int((await conn.execute(sa.select(sa.func.count()).select_from(NEWS_VERDICTS))).scalar_one())


def _row(record: AnalysisRecord) -> dict[str, Any]:
    return {
        "item_id": record.item_id, "symbol": record.symbol, "published_at": record.published_at,
        "analysed_at": record.analysed_at, "provider": record.provider, "model": record.model,
        "prompt_version": record.prompt_version, "market_wide": record.market_wide, "title": record.title,
        "verdict": record.verdict_json(), "sentiment": record.verdict.sentiment,
        "input_tokens": record.input_tokens, "output_tokens": record.output_tokens, "cost_usd": record.cost_usd,
        "latency_ms": record.latency_ms,
    }


def _record(row: Any) -> AnalysisRecord:
    return AnalysisRecord(
        item_id=row["item_id"], symbol=row["symbol"], published_at=row["published_at"],
        analysed_at=row["analysed_at"], provider=row["provider"], model=row["model"],
        prompt_version=row["prompt_version"], verdict=AnalysisRecord.parse_verdict(row["verdict"]),
        market_wide=bool(row["market_wide"]), title=row["title"], input_tokens=int(row["input_tokens"]),
        output_tokens=int(row["output_tokens"]), cost_usd=float(row["cost_usd"]), latency_ms=float(row["latency_ms"]))


async def open_verdict_file(path: str | Path) -> tuple[Database, SqlVerdictStore]:
    """A verdict store in its own SQLite file (created with its table when missing): the backtests' cache."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = Database(f"sqlite+aiosqlite:///{path}")
    async with db.engine.begin() as conn:
        await conn.run_sync(lambda sync: NEWS_VERDICTS.create(sync, checkfirst=True))
    return db, SqlVerdictStore(db)
