"""The in-process scheduler (APScheduler's asyncio scheduler); the only module that imports apscheduler."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger(__name__)


@dataclass(slots=True)
class JobRecord:
    """How one job has been doing, on the monotonic clock (health checks read it)."""

    interval: float
    added: float
    last_ok: float | None = None
    last_failed: float | None = None
    last_error: str | None = None

    def stale(self, now: float, grace: float) -> bool:
        """No success within `grace` seconds (counted from when the job was added until the first one)."""
        return now - (self.last_ok if self.last_ok is not None else self.added) > grace


class JobScheduler:
    """`leads`: whether this process is the leader now (bot/leader.py); jobs added with `leader_only` run only
    while it is, and a turn skipped by a follower counts as done for the health checks (it is not its work)."""

    def __init__(self, leads: Callable[[], bool] | None = None,
                 observe: Callable[[str, float, bool], None] | None = None) -> None:
        """`observe(job, seconds, ok)` after each run (the metrics)."""
        self._observe = observe
        self._scheduler = AsyncIOScheduler(timezone=timezone.utc)
        self._running: set[asyncio.Task[None]] = set()
        self._closing = False
        self._leads = leads or (lambda: True)
        self._leader_only: set[str] = set()
        self.jobs: dict[str, JobRecord] = {}

    def every(self, seconds: float, job: Callable[[], Awaitable[object]], name: str, *,
              leader_only: bool = False) -> None:
        """Run `job` every `seconds`, first right away; a run still going when the next is due is not doubled."""
        self.jobs[name] = JobRecord(seconds, time.monotonic())
        if leader_only:
            self._leader_only.add(name)
        self._scheduler.add_job(self._guarded(job, name), "interval", seconds=seconds, id=name, name=name,
                                max_instances=1, coalesce=True, next_run_time=datetime.now(timezone.utc),
                                misfire_grace_time=None)

    def run_leader_jobs_now(self) -> None:
        """A process that just became the leader does the leader's work at once (a scan the old leader was due
        to run is not left for a whole interval)."""
        if not self._scheduler.running:
            return
        now = datetime.now(timezone.utc)
        for name in self._leader_only:
            self._scheduler.modify_job(name, next_run_time=now)

    def start(self) -> None:
        self._scheduler.start()

    async def shutdown(self, timeout: float = 30.0) -> None:
        """Stop scheduling, then let the runs in progress finish (a scan half-way through is completed) before
        the caller closes what they use. Jobs run in tasks of our own, shielded from APScheduler's executor, which
        cancels whatever it still tracks at shutdown; a run still going after `timeout` is cancelled and awaited."""
        if not self._scheduler.running:
            return
        self._closing = True
        self._scheduler.shutdown(wait=False)
        await asyncio.sleep(0)  # a run submitted just before the pause starts (and sees _closing) or never does
        if self._running:
            _, late = await asyncio.wait(set(self._running), timeout=timeout)
            for task in late:
                log.warning("scheduled job %s still running after %.0f s at shutdown: cancelled", task.get_name(),
                            timeout)
                task.cancel()
            if late:
                await asyncio.wait(late)

    def _guarded(self, job: Callable[[], Awaitable[object]], name: str) -> Callable[[], Awaitable[None]]:
        async def body() -> None:
            record = self.jobs.get(name)
            if name in self._leader_only and not self._leads():
                if record is not None:
                    record.last_ok = time.monotonic()
                return
            began = time.monotonic()
            try:
                await job()
            except Exception as exc:
                log.exception("scheduled job %s failed", name)
                if record is not None:
                    record.last_failed, record.last_error = time.monotonic(), f"{type(exc).__name__}: {exc}"[:300]
                ok = False
            else:
                if record is not None:
                    record.last_ok = time.monotonic()
                ok = True
            if self._observe is not None:
                self._observe(name, time.monotonic() - began, ok)

        async def run() -> None:
            if self._closing:
                return
            task = asyncio.create_task(body(), name=name)
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            with contextlib.suppress(asyncio.CancelledError):  # the executor's cancel; shutdown() awaits `task`
                await asyncio.shield(task)
        run.__name__ = name
        return run
