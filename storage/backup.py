"""Backups and restores of the service's database, while it runs.

SQLite: SQLite's online backup API (a consistent copy page by page, writers wait only for each step), checked
with `PRAGMA integrity_check`. PostgreSQL: `pg_dump --format=custom` (one consistent snapshot), checked by
`pg_restore --list`; restored by `pg_restore --clean --if-exists --single-transaction`, so a failed restore
leaves the database as it was. The password of a PostgreSQL URL goes to the tools in PGPASSWORD, never on their
command line. After a restore the schema is migrated to the newest revision (a backup from an older release
comes up to date).
"""
from __future__ import annotations

import asyncio
import glob
import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from core.errors import SignalBotError
from storage import migrate
from storage.database import Database


class BackupError(SignalBotError):
    """A backup or restore that could not be done (the message says why)."""


@dataclass(frozen=True, slots=True)
class BackupInfo:
    path: Path
    bytes: int
    revision: str | None
    rows: dict[str, int]

    def summary(self) -> str:
        total = sum(self.rows.values())
        return (f"{self.path} ({self.bytes:,} bytes, revision {self.revision or 'none'}, {total:,} rows in "
                f"{len(self.rows)} tables)")


def default_path(url: str, now: datetime | None = None, folder: Path = Path("backups")) -> Path:
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    suffix = ".db" if make_url(url).get_backend_name() == "sqlite" else ".dump"
    return folder / f"signalbot-{stamp}{suffix}"


async def row_counts(db: Database) -> dict[str, int]:
    """Rows per table of the service's schema (the tables present)."""
    async with db.engine.connect() as conn:
        return await _row_counts(conn)


async def _row_counts(conn: AsyncConnection) -> dict[str, int]:
    from sqlmodel import SQLModel

    present = set(await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names()))
    counts = {}
    for table in SQLModel.metadata.sorted_tables:
        if table.name in present:
            counts[table.name] = int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())
    return counts


async def _described(url: str, path: Path) -> BackupInfo:
    db = Database(url)
    try:
        return BackupInfo(path=path, bytes=path.stat().st_size, revision=await migrate.current(db),
                          rows=await row_counts(db))
    finally:
        await db.close()


def _sqlite_file(url: URL) -> Path:
    if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
        raise BackupError(f"not a SQLite database file: {url.database!r}")
    return Path(url.database)


def _sqlite_copy(source: Path, dest: Path) -> None:
    """SQLite's online backup from `source` into `dest` (created or overwritten), in steps of 1,024 pages."""
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
        try:
            out = sqlite3.connect(dest, timeout=30)
            try:
                src.backup(out, pages=1024)
                problems = out.execute("PRAGMA integrity_check").fetchall()
            finally:
                out.close()
        finally:
            src.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{source}: {exc}") from exc
    if problems != [("ok",)]:
        raise BackupError(f"integrity check of {dest} failed: {problems[:3]}")


def pg_tool(name: str) -> str:
    """A PostgreSQL client program: $PG_BINDIR, Debian's newest /usr/lib/postgresql/N/bin, then PATH."""
    dirs = [os.environ.get("PG_BINDIR", "")]
    dirs += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    for d in dirs:
        if d and (Path(d) / name).is_file():
            return str(Path(d) / name)
    found = shutil.which(name)
    if not found:
        raise BackupError(f"{name} not found: install PostgreSQL's client programs (Debian: postgresql-client)")
    return found


def _libpq(url: URL) -> tuple[str, dict[str, str]]:
    """The libpq connection string (no password) and the environment that carries the password."""
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    plain = url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _run(cmd: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode:
        raise BackupError(f"{Path(cmd[0]).name} failed: {proc.stderr.strip()[-1000:]}")
    return proc.stdout


async def backup(url: str, dest: Path) -> BackupInfo:
    """A consistent copy of the database at `url` written to `dest` (its folder created); the rows it describes
    are the copy's own (SQLite: counted in the copy; PostgreSQL: counted in the snapshot pg_dump reads)."""
    parsed = make_url(url)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    if parsed.get_backend_name() == "sqlite":
        source = _sqlite_file(parsed)
        if not source.exists():
            raise BackupError(f"no database at {source}")
        await asyncio.to_thread(_sqlite_copy, source, tmp)
        tmp.replace(dest)
        return await _described(f"sqlite+aiosqlite:///{dest}", dest)
    if parsed.get_backend_name() != "postgresql":
        raise BackupError(f"backups are not implemented for {parsed.get_backend_name()}")
    dsn, env = _libpq(parsed)
    db = Database(url)
    try:
        async with db.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():  # one snapshot, exported to pg_dump and counted here
                snapshot = (await conn.execute(sa.text("SELECT pg_export_snapshot()"))).scalar_one()
                revision = await conn.run_sync(migrate.current_of)
                rows = await _row_counts(conn)
                await asyncio.to_thread(_run, [pg_tool("pg_dump"), "--format=custom", "--no-owner",
                                               f"--snapshot={snapshot}", f"--file={tmp}", f"--dbname={dsn}"], env)
    finally:
        await db.close()
    await asyncio.to_thread(_run, [pg_tool("pg_restore"), "--list", str(tmp)], env)
    tmp.replace(dest)
    return BackupInfo(path=dest, bytes=dest.stat().st_size, revision=revision, rows=rows)


async def restore(url: str, source: Path) -> BackupInfo:
    """The database at `url` replaced by the backup `source`, then migrated to the newest revision. Stop the
    service first: its open connections would keep writing into what is being replaced."""
    parsed = make_url(url)
    source = Path(source)
    if not source.is_file():
        raise BackupError(f"no backup at {source}")
    if parsed.get_backend_name() == "sqlite":
        target = _sqlite_file(parsed)
        target.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(_sqlite_restore, source, target)
    elif parsed.get_backend_name() == "postgresql":
        dsn, env = _libpq(parsed)
        await asyncio.to_thread(_run, [pg_tool("pg_restore"), "--clean", "--if-exists", "--no-owner",
                                       "--single-transaction", "--exit-on-error", f"--dbname={dsn}", str(source)], env)
    else:
        raise BackupError(f"restores are not implemented for {parsed.get_backend_name()}")
    db = Database(url)
    try:
        await migrate.upgrade(db)
    finally:
        await db.close()
    return await _described(url, source)


def _sqlite_restore(source: Path, target: Path) -> None:
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    try:
        if src.execute("PRAGMA integrity_check").fetchall() != [("ok",)]:
            raise BackupError(f"{source} is not a sound SQLite database")
        out = sqlite3.connect(target, timeout=30)
        try:
            src.backup(out, pages=1024)  # into the live file through SQLite (WAL and readers stay consistent)
        finally:
            out.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{source}: {exc}") from exc
    finally:
        src.close()
