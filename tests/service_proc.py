"""`signalbot run` as a child process for the API tests: offline, SQLite, HTTP on a free port, an API key made
on its console (`/apikey create NAME`), and a dashboard link (`/web`), as the README's example does it."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import MECHANICS_FAMILIES, REPO

KEY = re.compile(r"\bsb_[A-Za-z0-9_-]{43}\b")


@dataclass(frozen=True)
class RunningService:
    base: str
    port: int
    key: str
    console: Path  # what the service printed on its console

    def wait_for_signals(self, timeout: float = 60) -> list[dict]:
        """The signals (any status) once the replay has issued some."""
        end = time.monotonic() + timeout
        while True:
            r = httpx.get(f"{self.base}/api/v1/signals", params={"status": "all"},
                          headers={"Authorization": f"Bearer {self.key}"}, timeout=5)
            assert r.status_code == 200, r.text
            if r.json()["count"] or time.monotonic() > end:
                return list(r.json()["signals"])
            time.sleep(0.5)


@contextmanager
def running_service(workdir: Path, key_name: str = "laptop") -> Iterator[RunningService]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {**os.environ, "SIGNALBOT_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'svc.db'}",
           "SIGNALBOT_HTTP_PORT": str(port), "SIGNALBOT_FAMILIES": MECHANICS_FAMILIES, "PYTHONPATH": str(REPO)}
    for secret in ("TELEGRAM_TOKEN", "DISCORD_TOKEN", "STRIPE_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_API_KEY"):
        env.pop(secret, None)
    out = workdir / "out.txt"
    with open(out, "wb") as stdout:
        proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "run", "--speed", "20000"], stdin=subprocess.PIPE,
                                stdout=stdout, stderr=subprocess.DEVNULL, cwd=workdir, env=env)
    assert proc.stdin is not None
    proc.stdin.write(f"/start\n/apikey create {key_name}\n/web\n".encode())
    proc.stdin.flush()
    try:
        key, end = None, time.monotonic() + 90
        while key is None and time.monotonic() < end:
            found = KEY.search(out.read_text(errors="replace"))
            key = found.group(0) if found else None
            time.sleep(0.2)
        assert key, out.read_text()[-2000:]
        yield RunningService(f"http://127.0.0.1:{port}", port, key, out)
    finally:
        proc.stdin.close()
        proc.terminate()
        proc.wait(60)
