"""One leader at a time among the processes that share a database: the one that scans, tracks, reads news,
sends digests and retrains (bot/leader.py runs the loop; every process delivers).

Each lock is held by a live session, so it is released when its holder dies, however it dies (kill -9
included), and nobody has to wait out a lease:
- PostgreSQL: a session advisory lock (`pg_try_advisory_lock`) on a connection kept open for it. The holder
  checks that connection on every renewal; if the server ended it (a restart, a network cut, an admin's
  `pg_terminate_backend`) the holder knows it lost the lock before anyone else can take it over.
- SQLite file: an exclusive `flock` on `<database file>.<name>.lock` beside it (processes sharing a SQLite file are
  on one machine; the kernel drops the lock with the process).
- SQLite in memory: one process by construction, always the leader.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from core.ports import LeaderLock
from storage.database import Database, is_database_error

log = logging.getLogger(__name__)


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for `name` (advisory locks are keyed by integers)."""
    return int.from_bytes(hashlib.blake2b(f"signalbot:{name}".encode(), digest_size=8).digest(), "big", signed=True)


class AdvisoryLock:
    def __init__(self, db: Database, name: str) -> None:
        self._db, self.name, self._key = db, name, lock_key(name)
        self._conn: AsyncConnection | None = None

    async def try_hold(self) -> bool:
        if self._conn is not None:
            try:  # still our session? (a lost session means a lost lock)
                await self._conn.execute(sa.text("SELECT 1"))
                return True
            except Exception as exc:  # noqa: BLE001 - any failure of our session ends the hold
                log.warning("lock %s: its session failed (%s): no longer held", self.name, type(exc).__name__)
                await self._drop()
        try:
            conn = await self._db.engine.connect()
        except Exception as exc:
            if is_database_error(exc) or isinstance(exc, OSError):
                return False
            raise
        try:
            got = bool((await conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key})).scalar())
            await conn.commit()  # autobegun transaction ended; the session lock stays with the session
        except Exception:
            await conn.close()
            raise
        if not got:
            await conn.close()
            return False
        self._conn = conn
        return True

    async def backend_pid(self) -> int | None:
        """The server process of our session (tests end it to simulate a lost connection)."""
        if self._conn is None:
            return None
        pid = (await self._conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar()
        await self._conn.commit()
        return int(pid) if pid is not None else None

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()  # never back into the pool: the session may still hold the lock

    async def release(self) -> None:
        if self._conn is None:
            return
        try:
            await self._conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
            await self._conn.commit()
            await self._conn.close()
            self._conn = None
        except Exception:  # noqa: BLE001 - the session is gone, and the lock with it
            await self._drop()


class FileLock:
    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name = path, name
        self._fd: int | None = None

    async def try_hold(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    async def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class SoleProcess:
    """An in-memory database has one process: it always leads."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def try_hold(self) -> bool:
        return True

    async def release(self) -> None:
        pass


def lock_for(db: Database, name: str) -> LeaderLock:
    """The lock `name` among the processes on `db`."""
    url = db.url
    if db.dialect == "postgresql":
        return AdvisoryLock(db, name)
    database = url.database or ""
    if db.dialect == "sqlite" and database not in ("", ":memory:") and not database.startswith("file:"):
        safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
        return FileLock(Path(f"{database}.{safe}.lock"), name)
    return SoleProcess(name)
