"""The REST API against its own OpenAPI schema (schemathesis, generating requests with hypothesis): on the running
service (`signalbot run`, offline, with an administrator's key made on the console), every generated request to
every operation gets an answer that is not a 5xx and that conforms to the documented response schema, status
code and content type. Then the same without a key: 401 everywhere, never a 5xx."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.conftest import MECHANICS_FAMILIES, REPO

SERVICE: dict[str, Any] = {}


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SIGNALBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'svc.db'}",
           "SIGNALBOT_HTTP_PORT": str(port), "SIGNALBOT_FAMILIES": MECHANICS_FAMILIES, "PYTHONPATH": str(REPO)}
    for secret in ("TELEGRAM_TOKEN", "DISCORD_TOKEN", "STRIPE_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_API_KEY"):
        env.pop(secret, None)
    out = tmp / "out.txt"
    with open(out, "wb") as stdout:
        proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "run", "--speed", "20000"], stdin=subprocess.PIPE,
                                stdout=stdout, stderr=subprocess.DEVNULL, cwd=tmp, env=env)
    assert proc.stdin is not None
    proc.stdin.write(b"/start\n/apikey create fuzz\n")
    proc.stdin.flush()
    try:
        key, end = None, time.monotonic() + 90
        while key is None and time.monotonic() < end:
            found = re.search(r"\bsb_[A-Za-z0-9_-]{43}\b", out.read_text(errors="replace"))
            key = found.group(0) if found else None
            time.sleep(0.2)
        assert key, out.read_text()[-2000:]
        base = f"http://127.0.0.1:{port}"
        end = time.monotonic() + 30
        while time.monotonic() < end and not httpx.get(f"{base}/api/v1/signals", params={"status": "all"},
                                                        headers={"X-API-Key": key}, timeout=5).json()["count"]:
            time.sleep(0.5)  # some signals issued: the fuzzing meets real rows
        SERVICE.update(base=base, key=key)
        yield schemathesis.openapi.from_url(f"{base}/openapi.json")
    finally:
        proc.stdin.close()
        proc.terminate()
        proc.wait(60)


def operations(api_schema: Any) -> list[Any]:
    ops = [result.ok() for result in api_schema.get_all_operations()]
    assert len(ops) >= 10, [op.label for op in ops]
    return ops


@pytest.mark.slow
def test_every_operation_answers_as_documented_and_never_5xx(api_schema: Any) -> None:
    headers = {"Authorization": f"Bearer {SERVICE['key']}"}
    for operation in operations(api_schema):
        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: Any) -> None:
            case.call_and_validate(base_url=SERVICE["base"], headers=headers)

        check()


@pytest.mark.slow
def test_without_a_key_every_private_operation_is_401(api_schema: Any) -> None:
    for operation in operations(api_schema):
        public = "/proof" in operation.path or "/public/" in operation.path

        @given(case=operation.as_strategy())
        @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: Any) -> None:
            response = case.call(base_url=SERVICE["base"])
            assert response.status_code < 500, (case.path, response.status_code)
            if not public:
                assert response.status_code in (401, 422), (case.path, response.status_code, response.text[:200])

        check()
