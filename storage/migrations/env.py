"""Alembic's environment for the service's schema. Run through storage.migrate (start-up and `signalbot db
upgrade`), which hands over an open connection in `config.attributes["connection"]`; the plain `alembic` command
works too, with `-x url=...` (defaults to SIGNALBOT_DATABASE_URL, then the service's default)."""
from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from storage import tables as _tables  # noqa: F401  (registers every table on SQLModel.metadata)

target_metadata = SQLModel.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite alters a table by copying it; batch mode does that portably
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_standalone() -> None:
    from storage.database import DEFAULT_URL, Database

    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("SIGNALBOT_DATABASE_URL", DEFAULT_URL)

    async def run() -> None:
        db = Database(url)
        try:
            async with db.engine.begin() as conn:
                await conn.run_sync(_configure)
        finally:
            await db.close()

    asyncio.run(run())


connection = context.config.attributes.get("connection")
if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run them against a database")
if connection is not None:
    _configure(connection)
else:
    _run_standalone()
