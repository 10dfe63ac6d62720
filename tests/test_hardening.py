"""Issue 19: what a red-team run of the service found, each as a test that failed before its fix."""
from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys

import pytest

from bot.app import RunOptions, run_service, supervise
from bot.commands.registry import Caller
from bot.settings import Settings
from bot.transports.console import MAX_LINE_BYTES, ConsoleTransport
from bot.views.doc import Doc
from tests.conftest import MECHANICS_FAMILIES, REPO


# -- 1. console: an over-long line is refused and the console keeps reading; a dead task stops the service ------
async def _serve_pipe(payload: bytes) -> str:
    """Feed `payload` to the console through a real pipe (the loop's reader, as with `signalbot run < file |`)."""
    read_fd, write_fd = os.pipe()
    out = io.StringIO()
    console = ConsoleTransport(out)

    async def handle(caller: Caller, text: str) -> Doc:
        return Doc(heading=f"ok {len(text)}")

    async def feed() -> None:
        with os.fdopen(write_fd, "wb") as w:
            for i in range(0, len(payload), 50_000):  # in pieces, as a pipe delivers them
                w.write(payload[i:i + 50_000])
                w.flush()
                await asyncio.sleep(0)

    with os.fdopen(read_fd, "r") as r:
        await asyncio.gather(console.serve(handle, r), asyncio.to_thread(lambda: asyncio.run(feed())))
    return out.getvalue()


async def test_an_overlong_console_line_is_refused_and_the_lines_after_it_are_answered():
    lines = [b"/help"] * 3 + [b"x" * (MAX_LINE_BYTES * 3 + 17)] + [f"/line {i}".encode() for i in range(3000)]
    lines.insert(1, b"y" * MAX_LINE_BYTES)  # exactly at the limit: still read
    out = await _serve_pipe(b"\n".join(lines) + b"\n" + b"z" * (MAX_LINE_BYTES + 1))  # and an unterminated tail
    replies = [b for b in out.split("\n\n") if b.startswith("> ")]
    assert len(replies) == len(lines) + 1
    assert sum("\nok 5" in r for r in replies) == 3 and "> /line 0\nok 7" in out and "> /line 2999\nok 10" in out
    assert f"> (a line of {MAX_LINE_BYTES * 3 + 17:,} bytes)" in out
    assert f"> (a line of {MAX_LINE_BYTES + 1:,} bytes)" in out
    assert "console reads commands of at most" in out and "Nothing was done" in out
    assert f"ok {MAX_LINE_BYTES}" in out


async def test_a_task_that_dies_stops_the_service_with_a_non_zero_exit(tmp_path):
    class Broken(io.StringIO):
        def __iter__(self):  # noqa: ANN204
            raise RuntimeError("stdin exploded")

    settings = Settings(_env_file=None, database_url=f"sqlite+aiosqlite:///{tmp_path / 'svc.db'}",
                        families=MECHANICS_FAMILIES)
    code = await asyncio.wait_for(run_service(settings, RunOptions(duration=60), stdin=Broken(), stdout=io.StringIO()),
                                  timeout=45)
    assert code == 1


async def test_supervise_ignores_tasks_that_end_or_are_cancelled():
    stop = asyncio.Event()

    async def ends() -> None:
        return None

    async def waits() -> None:
        await asyncio.sleep(10)

    tasks = [asyncio.create_task(ends(), name="ends"), asyncio.create_task(waits(), name="waits")]
    died = supervise(tasks, stop)
    await asyncio.sleep(0.01)
    tasks[1].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0)
    assert died == [] and not stop.is_set()


def test_the_service_started_with_dev_null_as_input_prints_no_traceback(tmp_path):
    env = {**os.environ, "SIGNALBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'svc.db'}",
           "SIGNALBOT_LOG_LEVEL": "INFO", "SIGNALBOT_FAMILIES": MECHANICS_FAMILIES}
    env.pop("TELEGRAM_TOKEN", None)
    env.pop("DISCORD_TOKEN", None)
    with open(os.devnull) as devnull:
        proc = subprocess.run([sys.executable, "-m", "bot.cli", "run", "--for", "4"], stdin=devnull,
                              capture_output=True, text=True, cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)},
                              timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "PermissionError" not in proc.stderr
    assert "signalbot stopped cleanly" in proc.stderr
