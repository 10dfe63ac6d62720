"""One leader among the processes on one database (storage/leadership.py, bot/leader.py): the lock itself on a
real PostgreSQL server and on a SQLite file, the scheduler's leader-only jobs, and two `signalbot run` processes
on one database where the leader is killed with SIGKILL and the other takes over."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.leader import Leader
from bot.scheduler import JobScheduler
from storage import Database
from storage.leadership import AdvisoryLock, FileLock, SoleProcess, lock_for
from tests.conftest import MECHANICS_FAMILIES, REPO


async def test_one_advisory_lock_holder_and_a_lost_session_hands_it_over(pg_databases) -> None:  # noqa: ANN001
    url = pg_databases("lock")
    first, second = Database(url), Database(url)
    try:
        a, b = lock_for(first, "leader"), lock_for(second, "leader")
        assert isinstance(a, AdvisoryLock)
        assert await a.try_hold() and await a.try_hold()  # taken, then confirmed
        assert not await b.try_hold()
        pid = await a.backend_pid()
        async with second.engine.begin() as conn:  # the server ends the holder's session (a restart, a cut)
            assert (await conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})).scalar()
        for _ in range(50):  # the server releases the lock as the session ends
            if await b.try_hold():
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the lock was not released with its session")
        assert not await a.try_hold()  # the old holder learns it lost it, and cannot take it back
        await b.release()
        assert await a.try_hold()  # released cleanly: free at once
        await a.release()
    finally:
        await first.close()
        await second.close()


async def test_a_file_lock_is_exclusive_and_dies_with_its_process(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'svc.db'}")
    lock = lock_for(db, "leader")
    assert isinstance(lock, FileLock) and lock.path == tmp_path / "svc.db.leader.lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(lock.path)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert not await lock.try_hold()
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        assert await lock.try_hold() and await lock.try_hold()
        other = FileLock(lock.path, "leader")
        assert not await other.try_hold()
        await lock.release()
        assert await other.try_hold()
        await other.release()
    finally:
        holder.kill()
        await db.close()
    assert isinstance(lock_for(Database("sqlite+aiosqlite:///:memory:"), "leader"), SoleProcess)


class ScriptedLock:
    name = "scripted"

    def __init__(self) -> None:
        self.free = True

    async def try_hold(self) -> bool:
        return self.free

    async def release(self) -> None:
        pass


async def test_only_the_leader_runs_leader_jobs_and_a_new_leader_runs_them_at_once() -> None:
    lock = ScriptedLock()
    lock.free = False
    leader = Leader(lock, every=0.05)
    ran: list[str] = []

    async def job(name: str) -> None:
        ran.append(name)

    scheduler = JobScheduler(leads=lambda: leader.is_leader)
    leader.on_elected(scheduler.run_leader_jobs_now)
    scheduler.every(3600, lambda: job("scan"), "scan", leader_only=True)
    scheduler.every(3600, lambda: job("context"), "model-context")
    await leader.step()
    scheduler.start()
    await asyncio.sleep(0.2)
    assert ran == ["context"]  # a follower's first turn of the scan is skipped ...
    assert scheduler.jobs["scan"].last_ok is not None  # ... and is not a failing job for /readyz
    lock.free = True
    assert await leader.step() and leader.elections == 1
    await asyncio.sleep(0.2)
    assert ran == ["context", "scan"]  # elected: the scan runs now, not an hour later
    lock.free = False
    assert not await leader.step()
    await scheduler.shutdown()


def _start(url: str, cwd: Path, log: Path, extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SIGNALBOT_DATABASE_URL": url, "SIGNALBOT_LOG_LEVEL": "INFO",
           "SIGNALBOT_FAMILIES": MECHANICS_FAMILIES, "SIGNALBOT_LEADER_INTERVAL": "1", "PYTHONPATH": str(REPO)}
    for secret in ("TELEGRAM_TOKEN", "DISCORD_TOKEN", "STRIPE_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_API_KEY"):
        env.pop(secret, None)
    env.update(extra or {})
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "bot.cli", "run", "--speed", "20000"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=out, cwd=cwd, env=env)


def _wait_for(pattern: str, log: Path, timeout: float) -> float | None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if re.search(pattern, log.read_text(errors="replace")):
            return time.monotonic()
        time.sleep(0.05)
    return None


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_the_leader_killed_with_sigkill_is_replaced_within_seconds(backend: str, tmp_path: Path,
                                                                    request: pytest.FixtureRequest) -> None:
    url = (request.getfixturevalue("pg_databases")("procs") if backend == "postgresql"
           else f"sqlite+aiosqlite:///{tmp_path / 'svc.db'}")
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [_start(url, tmp_path, logs[0])]
    try:
        assert _wait_for("became the leader", logs[0], 90), logs[0].read_text()[-3000:]
        procs.append(_start(url, tmp_path, logs[1]))
        assert _wait_for("signalbot running", logs[1], 90), logs[1].read_text()[-3000:]
        time.sleep(2)
        assert "became the leader" not in logs[1].read_text()  # a follower while the first one lives
        killed = time.monotonic()
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        took_over = _wait_for("became the leader", logs[1], 30)
        assert took_over is not None, logs[1].read_text()[-3000:]
        failover = took_over - killed
        print(f"\n{backend}: the follower led {failover:.2f} s after the leader's SIGKILL")
        assert failover < 10
        procs[1].send_signal(signal.SIGTERM)
        assert procs[1].wait(60) == 0
        text = logs[1].read_text()
        assert "Traceback" not in text and "signalbot stopped cleanly" in text
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


async def _await_log(pattern: str, log: Path, timeout: float) -> float | None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if re.search(pattern, log.read_text(errors="replace")):
            return time.monotonic()
        await asyncio.sleep(0.05)
    return None


@pytest.mark.slow
async def test_one_telegram_poller_per_bot_token_and_the_other_process_takes_over(pg_databases, tmp_path: Path) -> None:  # noqa: ANN001
    """Two processes with one bot token on one PostgreSQL database: both send, one polls getUpdates (the local
    Bot API never sees two polls at once); SIGKILL the poller and the other polls within seconds."""
    from tests.fakes.telegram_bot_api import FakeBotApi

    url = pg_databases("poll")
    async with FakeBotApi() as fake:
        extra = {"TELEGRAM_TOKEN": fake.token, "SIGNALBOT_TELEGRAM_BASE_URL": fake.base_url,
                 "SIGNALBOT_TELEGRAM_BASE_FILE_URL": fake.base_file_url}
        logs = [tmp_path / "a.log", tmp_path / "b.log"]
        procs = [_start(url, tmp_path, logs[0], extra)]
        try:
            assert await _await_log("telegram: serving as", logs[0], 90), logs[0].read_text()[-3000:]
            procs.append(_start(url, tmp_path, logs[1], extra))
            assert await _await_log("signalbot running", logs[1], 90), logs[1].read_text()[-3000:]
            await asyncio.sleep(3)
            assert "telegram: serving as" not in logs[1].read_text()
            assert fake.polls >= 1 and fake.max_polls_in_flight == 1  # one poller while both live
            killed = time.monotonic()
            procs[0].send_signal(signal.SIGKILL)
            await asyncio.to_thread(procs[0].wait, 10)
            took_over = await _await_log("telegram: serving as", logs[1], 30)
            assert took_over is not None, logs[1].read_text()[-3000:]
            print(f"\ntelegram: the other process polled {took_over - killed:.2f} s after the poller's SIGKILL")
            assert took_over - killed < 10
            procs[1].send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(procs[1].wait, 60) == 0
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(10)
