"""Which process leads: the loop that takes or renews the leader's lock (storage/leadership.py) every few
seconds. The leader scans, tracks, reads news, sends digests and retrains; every process delivers (outbox rows
are claimed with FOR UPDATE SKIP LOCKED) and answers chat and HTTP. A process that loses the lock (its database
session ended) stops leading at its next renewal; a follower takes over at its next try after the old leader's
session is gone: within `every` seconds of a kill -9 on PostgreSQL or on a shared SQLite file."""
from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
from collections.abc import Awaitable, Callable

from core.ports import LeaderLock

log = logging.getLogger(__name__)
LOCK_NAME = "scheduler-leader"


def process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Leader:
    def __init__(self, lock: LeaderLock, *, every: float = 2.0) -> None:
        self._lock, self.every = lock, every
        self._on_elected: list[Callable[[], Awaitable[None] | None]] = []
        self._on_deposed: list[Callable[[], Awaitable[None] | None]] = []
        self.is_leader = False
        self.elections = 0

    def on_elected(self, callback: Callable[[], Awaitable[None] | None]) -> None:
        """`callback()` (awaited when it is a coroutine) each time this process becomes the leader."""
        self._on_elected.append(callback)

    def on_deposed(self, callback: Callable[[], Awaitable[None] | None]) -> None:
        """`callback()` each time this process stops being the leader (its lock lost)."""
        self._on_deposed.append(callback)

    async def step(self) -> bool:
        """One try: take or confirm the lock. Logs each change of role."""
        try:
            held = await self._lock.try_hold()
        except Exception:  # noqa: BLE001 - a failed try leaves us a follower until the next one
            log.exception("leader lock %s: the try failed", self._lock.name)
            held = False
        if held and not self.is_leader:
            self.elections += 1
            log.warning("%s became the leader (lock %s)", process_name(), self._lock.name)
            self.is_leader = True
            try:
                await _call(self._on_elected)
            except Exception:  # noqa: BLE001 - what leading needs failed here: let another process lead
                log.exception("%s could not take up the lead (lock %s): released", process_name(), self._lock.name)
                self.is_leader = False
                await self._lock.release()
        elif not held and self.is_leader:
            log.warning("%s is no longer the leader (lock %s lost)", process_name(), self._lock.name)
            self.is_leader = False
            await _call(self._on_deposed)
        return self.is_leader

    async def run(self) -> None:
        while True:
            await self.step()
            await asyncio.sleep(self.every)

    async def close(self) -> None:
        self.is_leader = False
        await self._lock.release()


async def _call(callbacks: list[Callable[[], Awaitable[None] | None]]) -> None:
    for callback in callbacks:
        result = callback()
        if inspect.isawaitable(result):
            await result
