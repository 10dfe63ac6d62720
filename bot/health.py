"""Liveness and readiness: what /livez and /readyz (and /healthz, the same as /readyz) answer.

Liveness is the process and its event loop answering. Readiness is what matters to users, each check with a
detail, and 503 when any fails:

    database   a write that commits (this process's heartbeat row), within WRITE_TIMEOUT seconds; a lock held
               too long, a read-only file or a full disk fail it (a SELECT 1 passes all three)
    jobs       each watched scheduled job (scan, track) succeeded within max(3 intervals, JOB_GRACE) seconds
    outbox     the oldest row due to be sent has waited at most OUTBOX_MAX_AGE seconds (wall time)
    <platform> each chat transport connected (Telegram polling without errors, Discord's gateway ready)

Components register as they are built (`watch_jobs`, `watch_transport`), so the HTTP server can start first.
"""
from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.leader import Leader
from bot.scheduler import JobRecord
from core.clock import Clock

WRITE_TIMEOUT = 3.0
JOB_GRACE = 300.0
OUTBOX_MAX_AGE = 900.0
WATCHED_JOBS = ("scan", "track")


class HealthStore(Protocol):
    async def heartbeat(self, process: str) -> None: ...

    async def outbox_backlog(self, now: Any, channels: Any = None) -> tuple[int, Any]: ...


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    detail: str


@dataclass
class Health:
    store: HealthStore
    wall: Clock
    process: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    started: float = field(default_factory=time.monotonic)
    _jobs: Mapping[str, JobRecord] | None = None
    _transports: dict[str, Callable[[], tuple[bool, str]]] = field(default_factory=dict)
    _probe: asyncio.Task[None] | None = None
    channels: frozenset[str] | None = None  # the outbox channels a worker serves (None: every row counts)
    leader: Leader | None = None  # this process's role among those on the database
    _probe_began: float = 0.0

    def watch_jobs(self, jobs: Mapping[str, JobRecord]) -> None:
        self._jobs = jobs

    def watch_transport(self, name: str, connection: Callable[[], tuple[bool, str]]) -> None:
        self._transports[name] = connection

    def live(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": True, "process": self.process,
                                "uptime_s": round(time.monotonic() - self.started, 3)}
        if self.leader is not None:
            body["role"] = "leader" if self.leader.is_leader else "follower"
        return body

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, Check] = {"database": await self._database()}
        if self._jobs is not None:
            checks["jobs"] = self._jobs_check(self._jobs)
        if checks["database"].ok:
            checks["outbox"] = await self._outbox()
        for name, connection in self._transports.items():
            ok, detail = connection()
            checks[name] = Check(ok, detail)
        ok = all(c.ok for c in checks.values())
        body = {**self.live(), "ok": ok, "checks": {k: {"ok": c.ok, "detail": c.detail} for k, c in checks.items()}}
        body["db"] = checks["database"].ok  # the field /healthz has always had
        return ok, body

    async def _database(self) -> Check:
        """The probe write runs in its own task: a write waiting on a lock cannot be cut short (the driver's
        thread waits out SQLite's busy timeout), so the answer comes after WRITE_TIMEOUT while the write goes on
        in the background, and no second probe starts before it ends."""
        probe, began = self._probe, self._probe_began
        if probe is not None and not probe.done() and time.monotonic() - began >= WRITE_TIMEOUT:
            return Check(False, f"a write has not committed for {time.monotonic() - began:.0f} s (locked?)")
        if probe is None or probe.done():  # a probe in flight and younger than the timeout is shared, not doubled
            began = self._probe_began = time.monotonic()
            self._probe = probe = asyncio.create_task(self.store.heartbeat(self.process), name="health-probe")
            probe.add_done_callback(_retrieve)
        done, _ = await asyncio.wait({probe}, timeout=max(0.0, WRITE_TIMEOUT - (time.monotonic() - began)))
        if not done:
            return Check(False, f"a write did not commit within {WRITE_TIMEOUT:.0f} s (locked?)")
        exc = probe.exception()
        if exc is not None:
            return Check(False, f"a write failed: {type(exc).__name__}: {str(exc)[:200]}")
        return Check(True, f"write committed in {(time.monotonic() - began) * 1000:.0f} ms")

    def _jobs_check(self, jobs: Mapping[str, JobRecord]) -> Check:
        now, parts, ok = time.monotonic(), [], True
        for name in WATCHED_JOBS:
            record = jobs.get(name)
            if record is None:
                continue
            grace = max(3 * record.interval, JOB_GRACE)
            if record.stale(now, grace):
                ok = False
                why = f"; last error {record.last_error}" if record.last_error else ""
                parts.append(f"{name}: no success for {now - (record.last_ok or record.added):.0f} s{why}")
            elif record.last_ok is None:
                parts.append(f"{name}: starting")
            else:
                failing = " (last run failed)" if (record.last_failed or 0) > record.last_ok else ""
                parts.append(f"{name}: ok {now - record.last_ok:.0f} s ago{failing}")
        return Check(ok, "; ".join(parts) or "no jobs")

    async def _outbox(self) -> Check:
        now = self.wall.now()
        try:
            count, oldest = await self.store.outbox_backlog(now, self.channels)
        except Exception as exc:  # noqa: BLE001
            return Check(False, f"outbox not readable: {type(exc).__name__}")
        if not count or oldest is None:
            return Check(True, "empty")
        age = (now - oldest).total_seconds()
        return Check(age <= OUTBOX_MAX_AGE, f"{count} due, oldest waiting {max(age, 0):.0f} s")


def _retrieve(task: asyncio.Task[None]) -> None:
    """A probe that ended after its answer was given: its exception is read (not logged as never retrieved)."""
    if not task.cancelled():
        task.exception()
