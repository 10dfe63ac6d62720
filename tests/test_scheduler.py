"""The in-process scheduler: a run in progress at shutdown completes before shutdown returns, and nothing
starts after it (the service closes its storage right after)."""
from __future__ import annotations

import asyncio
import logging

import pytest

from bot.scheduler import JobScheduler


@pytest.mark.asyncio
async def test_shutdown_waits_for_the_run_in_progress_and_starts_no_new_one(caplog: pytest.LogCaptureFixture) -> None:
    events: list[str] = []
    started = asyncio.Event()

    async def slow() -> None:
        events.append("start")
        started.set()
        await asyncio.sleep(0.3)
        events.append("end")

    scheduler = JobScheduler()
    scheduler.every(0.05, slow, "slow")
    scheduler.start()
    await asyncio.wait_for(started.wait(), 5)
    with caplog.at_level(logging.WARNING):
        await scheduler.shutdown(timeout=5)
        assert events == ["start", "end"]
        await asyncio.sleep(0.2)
    assert events == ["start", "end"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.asyncio
async def test_a_run_past_the_timeout_is_cancelled_and_awaited(caplog: pytest.LogCaptureFixture) -> None:
    cancelled = asyncio.Event()

    async def stuck() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    scheduler = JobScheduler()
    scheduler.every(10, stuck, "stuck")
    scheduler.start()
    await asyncio.sleep(0.1)
    with caplog.at_level(logging.WARNING):
        await scheduler.shutdown(timeout=0.2)
    assert cancelled.is_set()
    assert any("still running" in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
async def test_a_failing_job_is_logged_and_keeps_its_schedule(caplog: pytest.LogCaptureFixture) -> None:
    runs = 0

    async def failing() -> None:
        nonlocal runs
        runs += 1
        raise RuntimeError("boom")

    scheduler = JobScheduler()
    scheduler.every(0.05, failing, "failing")
    with caplog.at_level(logging.ERROR):
        scheduler.start()
        await asyncio.sleep(0.3)
        await scheduler.shutdown()
    assert runs >= 2
    assert any("scheduled job failing failed" in r.getMessage() for r in caplog.records)
