"""Prometheus metrics (bot/metrics.py) at GET /metrics: scraped through a real HTTP client and parsed with
prometheus-client's own parser, in process (the values against the database they describe) and from a running
`signalbot run`."""
from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.app import build_services
from bot.delivery.notifier import Notifier
from bot.delivery.worker import DeliveryWorker
from bot.http_server import start_http
from bot.metrics import Metrics, MetricsEndpoint, delivery_observer
from bot.scheduler import JobScheduler
from bot.settings import Settings
from core.clock import FixedClock
from core.domain import DeliveryStatus
from core.events import SignalIssued
from core.market_data.simulated import SimulatedMarket
from storage.tables import PAYMENTS
from tests.conftest import MECHANICS_FAMILIES, REPO
from tests.test_delivery import NOW, RecordingTransport, add_users, signal


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_describe_the_database_and_what_the_process_did(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, database_url=f"sqlite+aiosqlite:///{tmp_path / 'm.db'}", http_port=0,
                        **{"SIGNALBOT_METRICS_TOKEN": "scrape-secret"})
    clock = FixedClock(NOW)
    market = SimulatedMarket(seed=7, start=NOW, history_days=60, clock=clock)
    services = await build_services(settings, market, clock)
    store = services.store
    metrics = Metrics()
    endpoint = MetricsEndpoint(metrics, services, token="scrape-secret")
    server = await start_http(settings, services, metrics=endpoint)
    assert server is not None
    try:
        users = await add_users(store, 3)
        s = signal()
        await store.signals.add_signal(s)
        await Notifier(store, clock, {"console"}, wake=lambda: None).on_signal_issued(SignalIssued(s))
        clock.advance(timedelta(seconds=42))  # queued at NOW, sent 42 s later
        worker = DeliveryWorker(RecordingTransport(), store, clock)
        worker.on_result = delivery_observer(metrics, "console", clock)
        assert await worker.process_due() == 3
        async with store.database.engine.begin() as conn:
            await conn.execute(PAYMENTS.insert(), [
                {"provider": "stripe", "charge_id": "ch_1", "user_id": users[0], "tier": "trader", "amount": 2900,
                 "currency": "usd", "paid_at": NOW},
                {"provider": "stripe", "charge_id": "ch_2", "user_id": users[1], "tier": "trader", "amount": 2900,
                 "currency": "usd", "paid_at": NOW},
                {"provider": "telegram_stars", "charge_id": "st_1", "user_id": users[2], "tier": "hobbyist",
                 "amount": 250, "currency": "XTR", "paid_at": NOW}])
        scheduler = JobScheduler(observe=metrics.job_ran)

        async def scan() -> None:
            await services.signal_service.scan()

        async def broken() -> None:
            raise RuntimeError("boom")

        scheduler.every(3600, scan, "scan")
        scheduler.every(3600, broken, "digests")
        scheduler.start()
        await asyncio.sleep(0.5)
        await scheduler.shutdown()

        async with httpx.AsyncClient(base_url=server.url) as client:
            refused = await client.get("/metrics")
            assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
            assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 401
            await client.get("/livez")
            got = await client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
        assert got.status_code == 200 and got.headers["content-type"].startswith("text/plain")
        m = samples(got.text)
        signals = await store.admin.signal_counts()
        assert m[("signalbot_active_signals", ())] == signals.get("open", 0) >= 1
        counts = await store.outbox.delivery_counts()
        assert m[("signalbot_outbox_depth", (("status", "sent"),))] == counts[DeliveryStatus.SENT] == 3
        assert m[("signalbot_outbox_depth", (("status", "pending"),))] == 0
        assert m[("signalbot_deliveries_total", (("channel", "console"), ("status", "sent")))] == 3
        latency = (("channel", "console"), ("kind", "signal"))
        assert m[("signalbot_delivery_latency_seconds_count", latency)] == 3
        assert m[("signalbot_delivery_latency_seconds_sum", latency)] == pytest.approx(3 * 42)
        assert m[("signalbot_subscription_revenue", (("currency", "usd"), ("provider", "stripe")))] == 5800
        assert m[("signalbot_subscription_revenue", (("currency", "XTR"), ("provider", "telegram_stars")))] == 250
        assert m[("signalbot_subscribers", (("tier", "free"),))] == 3
        assert m[("signalbot_signal_generation_seconds_count", ())] == 1
        assert m[("signalbot_job_failures_total", (("job", "digests"),))] == 1
        assert ("signalbot_job_failures_total", (("job", "scan"),)) not in m
        assert m[("signalbot_http_request_duration_seconds_count",
                  (("method", "GET"), ("route", "/livez"), ("status", "200")))] == 1
        assert m[("signalbot_http_request_duration_seconds_count",
                  (("method", "GET"), ("route", "/metrics"), ("status", "401")))] == 2
        assert "scrape-secret" not in got.text
    finally:
        await server.stop()
        await services.signal_service.close()
        await store.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_a_running_service_serves_its_metrics(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "SIGNALBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'svc.db'}",
           "SIGNALBOT_FAMILIES": MECHANICS_FAMILIES, "SIGNALBOT_HTTP_PORT": str(port), "PYTHONPATH": str(REPO)}
    for secret in ("TELEGRAM_TOKEN", "DISCORD_TOKEN", "STRIPE_API_KEY", "SIGNALBOT_METRICS_TOKEN"):
        env.pop(secret, None)
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "run", "--speed", "20000", "--for", "60"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path,
                            env=env)
    try:
        m: dict = {}
        end = time.monotonic() + 90
        while time.monotonic() < end:
            try:
                got = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
                m = samples(got.text)
                if m.get(("signalbot_signal_generation_seconds_count", ()), 0) >= 2:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert m.get(("signalbot_signal_generation_seconds_count", ()), 0) >= 2, m
        assert m[("signalbot_leader", ())] == 1
        assert {k[1] for k in m if k[0] == "signalbot_outbox_depth"} >= {(("status", s.value),) for s in DeliveryStatus}
        assert m[("signalbot_job_duration_seconds_count", (("job", "track"),))] >= 1
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and b"Traceback" not in err, err[-3000:]


def _promtool() -> str:
    import shutil

    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("SIGNALBOT_REQUIRE_PROMTOOL") == "1":
            pytest.fail("promtool not found (Debian's prometheus package; scripts/test installs it as root)")
        pytest.skip("promtool not found (Debian's prometheus package; scripts/test installs it as root)")
    return found


def test_the_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    promtool = _promtool()
    rules = REPO / "scripts" / "prometheus"
    check = subprocess.run([promtool, "check", "rules", "alerts.yml"], cwd=rules, capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 0 and "SUCCESS" in check.stdout, check.stdout + check.stderr
    unit = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=rules, capture_output=True, text=True,
                          timeout=60)
    assert unit.returncode == 0, unit.stdout + unit.stderr


def test_the_exposition_passes_promtools_lint() -> None:
    promtool = _promtool()
    metrics = Metrics()
    metrics.job_ran("scan", 0.3, True)
    metrics.job_ran("digests", 0.1, False)
    metrics.http_duration.labels("GET", "/livez", "200").observe(0.002)
    lint = subprocess.run([promtool, "check", "metrics"], input=metrics.exposition(), capture_output=True,
                          timeout=60)
    assert lint.returncode == 0, (lint.stdout + lint.stderr).decode()


async def test_alert_conditions_reach_the_admins_in_chat_once_when_they_start_and_once_when_they_clear(
        tmp_path: Path) -> None:
    from bot.alerts import ChatAlerts, Limits, admin_notifier
    from bot.views.doc import Doc
    from core.resilience import CircuitBreaker

    settings = Settings(_env_file=None, database_url=f"sqlite+aiosqlite:///{tmp_path / 'a.db'}",
                        admins="telegram:900,telegram:901")
    clock = FixedClock(NOW)
    market = SimulatedMarket(seed=7, start=NOW, history_days=60, clock=clock)
    services = await build_services(settings, market, clock)
    try:
        admin = await services.store.users.upsert_user("telegram", "900", "chat-900", "admin")
        await services.store.users.upsert_user("telegram", "555", "chat-555", "not an admin")

        class Inbox:
            name = "telegram"

            def __init__(self) -> None:
                self.got: list[tuple[str, Doc]] = []

            async def send(self, chat_id: str, doc: Doc, reply_to: str | None = None) -> str:
                self.got.append((chat_id, doc))
                return "m"

        inbox = Inbox()
        services.notices.add(inbox)  # type: ignore[arg-type]
        alerts = ChatAlerts(services, admin_notifier(services), clock, Limits(backlog_rows=2))
        assert await alerts.check() == []
        for _ in range(6):
            alerts.job_ran("scan", 7.5, True)  # slow scans
        for _ in range(3):
            alerts.job_ran("digests", 0.1, False)
        users = await add_users(services.store, 3)
        s = signal()
        await services.store.signals.add_signal(s)
        await Notifier(services.store, clock, {"console"}, wake=lambda: None).on_signal_issued(SignalIssued(s))
        said = await alerts.check()
        assert len(said) == 3 and any("slow" in t and "7.5 s" in t for t in said)
        assert any("digests job failed 3 times" in t for t in said) and any("3 deliveries pending" in t for t in said)
        assert [c for c, _ in inbox.got] == ["chat-900"] * 3  # the admin who is a user; not the other user
        assert await alerts.check() == []  # told once
        alerts.job_ran("digests", 0.1, True)
        resolved = await alerts.check()
        assert resolved == ["Resolved: the digests job failed 3 times in a row"]
        assert admin.id not in users

        class Router:  # a market-data router's breakers, one of them open (cooldown long enough to stay open)
            breakers = {"yahoo": CircuitBreaker("yahoo", failure_threshold=1, cooldown=timedelta(hours=1), clock=clock)}

        Router.breakers["yahoo"].record_failure()
        alerts.services = dataclasses.replace(services, market=Router())  # type: ignore[arg-type]
        assert not [t for t in await alerts.check() if "breaker" in t]  # open, but not for long yet
        clock.advance(timedelta(minutes=11))
        assert [t for t in await alerts.check() if "breaker" in t] == [
            "Alert: provider yahoo: circuit breaker open for 11 minutes"]
    finally:
        await services.signal_service.close()
        await services.store.close()


def test_json_logs_are_one_object_per_line_with_the_fields_and_no_secret(tmp_path: Path) -> None:
    import json

    env = {**os.environ, "SIGNALBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'j.db'}",
           "SIGNALBOT_LOG_FORMAT": "json", "SIGNALBOT_LOG_LEVEL": "INFO", "PYTHONPATH": str(REPO),
           "STRIPE_WEBHOOK_SECRET": "whsec_should_never_show_123"}
    for secret in ("TELEGRAM_TOKEN", "DISCORD_TOKEN", "STRIPE_API_KEY"):
        env.pop(secret, None)
    proc = subprocess.run([sys.executable, "-m", "bot.cli", "run", "--for", "3"], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    assert lines and all({"timestamp", "level", "logger", "event", "process"} <= set(r) for r in lines)
    assert any(r["event"] == "signalbot stopped cleanly" and r["level"] == "info" for r in lines)
    assert "whsec_should_never_show_123" not in proc.stderr
