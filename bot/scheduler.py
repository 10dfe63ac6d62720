"""The in-process scheduler (APScheduler's asyncio scheduler); the only module that imports apscheduler."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger(__name__)


class JobScheduler:
    def __init__(self) -> None:
        self._scheduler = AsyncIOScheduler(timezone=timezone.utc)
        self._running: set[asyncio.Task[object]] = set()

    def every(self, seconds: float, job: Callable[[], Awaitable[object]], name: str) -> None:
        """Run `job` every `seconds`, first right away; a run still going when the next is due is not doubled."""
        self._scheduler.add_job(self._guarded(job, name), "interval", seconds=seconds, id=name, name=name,
                                max_instances=1, coalesce=True, next_run_time=datetime.now(timezone.utc),
                                misfire_grace_time=None)

    def start(self) -> None:
        self._scheduler.start()

    async def shutdown(self, timeout: float = 30.0) -> None:
        """Stop scheduling, let the runs in progress finish (a scan half-way through is completed), then shut
        down (APScheduler's asyncio executor cancels whatever still runs at shutdown)."""
        if not self._scheduler.running:
            return
        self._scheduler.pause()
        if self._running:
            await asyncio.wait(set(self._running), timeout=timeout)
        self._scheduler.shutdown(wait=False)

    def _guarded(self, job: Callable[[], Awaitable[object]], name: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            task = asyncio.current_task()
            if task is not None:
                self._running.add(task)
            try:
                await job()
            except Exception:
                log.exception("scheduled job %s failed", name)
            finally:
                if task is not None:
                    self._running.discard(task)
        run.__name__ = name
        return run
