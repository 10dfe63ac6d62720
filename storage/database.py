"""The database handle: one SQLAlchemy AsyncEngine, chosen by URL (SQLite by default, PostgreSQL by URL)."""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from storage import tables as _tables  # noqa: F401  (every table model, registered on SQLModel.metadata)

DEFAULT_URL = "sqlite+aiosqlite:///signalbot.db"
IN_CHUNK = 500  # values per IN (...) list or multi-row VALUES
Insert = sqlite.Insert | postgresql.Insert


def upsert(dialect: str, table: sa.Table) -> Insert:
    """The dialect's INSERT, which has `on_conflict_do_update/nothing` (the one place the two dialects differ)."""
    if dialect == "sqlite":
        return sqlite.insert(table)
    if dialect == "postgresql":
        return postgresql.insert(table)
    raise NotImplementedError(f"upsert is not implemented for dialect {dialect!r}")


def is_database_error(exc: BaseException) -> bool:
    """The database failed (locked, read-only, full, unreachable), as opposed to a bug in the caller."""
    return isinstance(exc, SQLAlchemyError)
SQLITE_BUSY_TIMEOUT_MS = 10_000


class Database:
    """Owns the engine. `upgrade()` makes or migrates the schema (storage.migrate); `fetch`/`write`/`insert` are
    the statements every store runs; `close()` disposes of the pool."""

    def __init__(self, url: str = DEFAULT_URL, *, echo: bool = False) -> None:
        self.url = make_url(url)
        self.engine: AsyncEngine = _create_engine(url, echo=echo)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def insert(self, table: sa.Table) -> Insert:
        """This dialect's INSERT into `table` (with `on_conflict_do_update/nothing`)."""
        return upsert(self.dialect, table)

    async def fetch(self, stmt: sa.Executable) -> list[sa.Row[Any]]:
        """Every row of a read, on a connection of its own."""
        async with self.engine.connect() as conn:
            return list((await conn.execute(stmt)).all())

    async def write(self, stmt: sa.Executable, params: Any = None) -> int:
        """One statement in its own transaction; the rows it changed."""
        async with self.engine.begin() as conn:
            result = await conn.execute(stmt, params)
            return int(getattr(result, "rowcount", 0) or 0)

    async def upgrade(self) -> None:
        """The schema created, or migrated to the newest revision (Alembic; storage.migrate)."""
        from storage import migrate  # migrate imports this module

        await migrate.upgrade(self)

    async def close(self) -> None:
        await self.engine.dispose()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _is_sqlite_memory(url: str) -> bool:
    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


def _create_engine(url: str, *, echo: bool) -> AsyncEngine:
    backend = make_url(url).get_backend_name()
    if backend != "sqlite":
        return create_async_engine(url, echo=echo, pool_pre_ping=True)
    if _is_sqlite_memory(url):
        engine = create_async_engine(
            url, echo=echo, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
        _on_connect(engine, _pragmas(file_backed=False))
        return engine
    engine = create_async_engine(url, echo=echo)
    _on_connect(engine, _pragmas(file_backed=True))
    return engine


def _pragmas(*, file_backed: bool) -> list[str]:
    pragmas = ["PRAGMA foreign_keys=ON"]
    if file_backed:
        pragmas += [
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",
            f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
        ]
    return pragmas


def _on_connect(engine: AsyncEngine, pragmas: list[str]) -> None:
    def set_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            for pragma in pragmas:
                cursor.execute(pragma)
        finally:
            cursor.close()

    event.listen(engine.sync_engine, "connect", set_pragmas)
