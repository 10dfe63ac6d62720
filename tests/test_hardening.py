"""Issue 19: what a red-team run of the service found, each as a test that failed before its fix."""
from __future__ import annotations

import asyncio
import contextlib
import io
import os
import subprocess
import sys
import time

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


# -- 2. readiness reflects what matters: a write that commits, the jobs, the outbox, each transport -------------
@pytest.fixture
async def ready_server(tmp_path):
    """The HTTP server with the readiness checks over a file database (WAL, as the service runs it)."""
    from bot.health import Health
    from bot.http_server import start_http
    from core.clock import SystemClock
    from storage import Database, Stores

    async def make(db_path):  # noqa: ANN001, ANN202
        db = Database(f"sqlite+aiosqlite:///{db_path}")
        await db.upgrade()
        store = Stores.over(db, SystemClock())
        health = Health(store.outbox, SystemClock())
        settings = Settings(_env_file=None, database_url=f"sqlite+aiosqlite:///{db_path}", http_port=0,
                            http_host="127.0.0.1")
        server = await start_http(settings, None, health=health)
        made.append((server, store))
        return server, store, health

    made: list = []
    yield make
    for server, store in made:
        await server.stop()
        await store.close()


async def _ready(server) -> tuple[int, dict]:  # noqa: ANN001
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/readyz") as r:
            body = await r.json()
        async with http.get(f"{server.url}/livez") as live:
            assert live.status == 200
        return r.status, body


async def test_readiness_fails_while_another_process_holds_the_write_lock_and_recovers_after(ready_server, tmp_path):
    import sqlite3

    server, _, _ = await ready_server(tmp_path / "bot.db")
    status, body = await _ready(server)
    assert status == 200 and body["checks"]["database"]["ok"] and body["checks"]["outbox"]["detail"] == "empty"
    assert [s for s, _ in await asyncio.gather(*(_ready(server) for _ in range(5)))] == [200] * 5  # probes at once
    other = sqlite3.connect(tmp_path / "bot.db", timeout=0.1, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        began = time.monotonic()
        status, body = await _ready(server)
        assert time.monotonic() - began < 8  # the answer is bounded (3 s), not SQLite's 10 s busy timeout
        assert status == 503 and body["db"] is False and "did not commit" in body["checks"]["database"]["detail"]
        status, body = await _ready(server)  # the first probe still waits: no second write piles up behind it
        assert status == 503 and "has not committed for" in body["checks"]["database"]["detail"]
    finally:
        other.execute("ROLLBACK")
        other.close()
    for _ in range(50):  # the write the probe gave up on finishes in the background first
        status, body = await _ready(server)
        if status == 200:
            break
        await asyncio.sleep(0.5)
    assert status == 200, body


async def test_readiness_fails_on_a_read_only_database(ready_server, tmp_path):
    from bot.health import Health
    from core.clock import SystemClock
    from storage import Database, Stores

    await (await ready_server(tmp_path / "bot.db"))[1].outbox.heartbeat("seed")
    read_only = Stores.over(Database(f"sqlite+aiosqlite:///file:{tmp_path / 'bot.db'}?mode=ro&uri=true"), SystemClock())
    try:
        ok, body = await Health(read_only.outbox, SystemClock()).ready()
        assert not ok and "readonly" in body["checks"]["database"]["detail"].lower().replace("-", "")
    finally:
        await read_only.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
async def test_readiness_fails_on_a_full_disk(ready_server, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("tmpfs could not be mounted here")
    try:
        server, store, _ = await ready_server(disk / "bot.db")
        with open(disk / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        status, body = await _ready(server)
        assert status == 503 and not body["checks"]["database"]["ok"], body
        assert "full" in body["checks"]["database"]["detail"].lower()
        os.remove(disk / "filler")
        status, body = await _ready(server)
        assert status == 200, body
        await server.stop()
        await store.close()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


async def test_readiness_names_a_stale_job_an_old_outbox_row_and_a_disconnected_transport(ready_server, tmp_path):
    import time as _time
    from datetime import timedelta

    from bot.scheduler import JobRecord
    from core.domain import DeliveryKind
    from tests.test_delivery import signal as make_signal

    server, store, health = await ready_server(tmp_path / "bot.db")
    jobs = {"scan": JobRecord(2.0, _time.monotonic()), "track": JobRecord(2.0, _time.monotonic() - 1000)}
    jobs["scan"].last_ok = _time.monotonic()
    health.watch_jobs(jobs)
    health.watch_transport("telegram", lambda: (False, "getUpdates failing: NetworkError"))
    status, body = await _ready(server)
    assert status == 503
    assert body["checks"]["jobs"]["ok"] is False and "track: no success for" in body["checks"]["jobs"]["detail"]
    assert body["checks"]["telegram"] == {"ok": False, "detail": "getUpdates failing: NetworkError"}

    jobs["track"].last_ok = _time.monotonic()
    health.watch_transport("telegram", lambda: (True, "polling"))
    signal = make_signal()
    await store.signals.add_signal(signal)
    user = await store.users.upsert_user("telegram", "1", "1", "Ann")
    await store.outbox.enqueue([(signal.id, user.id, DeliveryKind.SIGNAL, "telegram", None, None)])
    assert (await _ready(server))[0] == 200  # just queued
    health.wall = type("Later", (), {"now": lambda self: store.outbox._clock.now() + timedelta(hours=1)})()
    status, body = await _ready(server)
    assert status == 503 and body["checks"]["outbox"]["detail"].startswith("1 due, oldest waiting 36")


# -- 5. people's clocks are wall time; only market data and signal timing follow the market clock --------------
async def test_link_codes_quotas_and_audit_run_on_wall_time_while_the_market_clock_races(tmp_path):
    from datetime import timedelta

    from bot.app import build_services
    from bot.commands.registry import dispatch
    from bot.views.text import render_text
    from core.clock import FixedClock
    from core.market_data import SimulatedMarket
    from tests.conftest import utc

    market_clock, wall = FixedClock(utc(2025, 6, 2, 13, 30)), FixedClock(utc(2026, 12, 6, 9, 0))
    market = SimulatedMarket(seed=7, start=market_clock.now(), history_days=400, clock=market_clock)
    svc = await build_services(Settings(database_url="sqlite+aiosqlite:///:memory:", admins="telegram:42",
                                        families=MECHANICS_FAMILIES, _env_file=None), market, market_clock, wall=wall)
    tg, dc = Caller("telegram", "1001", "1001", "Bob"), Caller("discord", "2002", "c2002", "Bob")
    admin = Caller("telegram", "42", "42", "Op")

    async def say(caller: Caller, text: str) -> str:
        return render_text(await dispatch(svc.registry, svc, caller, text))

    try:
        await say(tg, "/start")
        await say(dc, "/start")
        code = (await say(tg, "/link")).split("Your link code: ")[1].split()[0]
        market_clock.advance(timedelta(days=3))  # at speed 3600 that is 72 s of the operator's time
        assert "Accounts linked" in await say(dc, f"/link {code}")
        second = (await say(tg, "/link")).split("Your link code: ")[1].split()[0]
        wall.advance(timedelta(minutes=11))
        assert "has expired" in await say(dc, f"/link {second}")

        for _ in range(10):  # ten wrong codes: the day's limit, counted by the wall date
            await say(dc, "/link ZZZZZZZZ")
        market_clock.advance(timedelta(days=2))
        assert "Too many wrong link codes today" in await say(dc, "/link ZZZZZZZZ")
        wall.advance(timedelta(days=1))
        assert "Too many wrong link codes" not in await say(dc, "/link ZZZZZZZZ")

        await say(admin, "/admin stats")
        entries = await svc.store.admin.audit_log(5)
        assert entries and all(abs((e.at - wall.now()).total_seconds()) < 1 for e in entries[:1])
    finally:
        await svc.store.close()


async def test_quiet_hours_are_the_users_wall_time_and_expiry_the_signals_market_time():
    from datetime import timedelta

    from bot.delivery.notifier import Notifier
    from core.clock import FixedClock
    import dataclasses

    from core.domain import Preferences, QuietHours
    from core.events import SignalIssued
    from storage import Database, Stores
    from tests.conftest import utc
    from tests.test_delivery import signal as make_signal

    wall = FixedClock(utc(2026, 12, 6, 23, 0))  # 23:00 UTC: inside the user's quiet hours 22-07
    market = FixedClock(utc(2024, 3, 5, 15, 0))  # mid-afternoon in the replay: outside them
    db = Database("sqlite+aiosqlite:///:memory:")
    await db.upgrade()
    store = Stores.over(db, wall)
    try:
        sleeper = await store.users.upsert_user("console", "1", "1", "Sleeper")
        await store.users.set_preferences(sleeper.id, Preferences(quiet_hours=QuietHours("22:00", "07:00")))
        notifier = Notifier(store, wall, {"console"}, lambda: None, market_clock=market)
        sig = make_signal()  # issued at the market's now, expires 14 market days later
        await store.signals.add_signal(sig)
        rows = await notifier.recipients(SignalIssued(sig))
        assert rows and rows[0][4] == utc(2026, 12, 7, 7, 0)  # held until 07:00 wall time
        short = dataclasses.replace(make_signal("AAPL-1d-short"), expires_at=market.now() + timedelta(hours=2))
        await store.signals.add_signal(short)
        assert await notifier.recipients(SignalIssued(short)) == []  # 2 market hours: gone before 07:00
        long = dataclasses.replace(make_signal("AAPL-1d-long"), expires_at=market.now() + timedelta(hours=9))
        await store.signals.add_signal(long)
        assert len(await notifier.recipients(SignalIssued(long))) == 1
    finally:
        await store.close()


# -- 6. a signal stored but not queued (a crash between the two) is queued at the next start --------------------
async def test_signals_and_exits_stored_before_a_crash_are_queued_at_the_next_start():
    import dataclasses

    from bot.delivery.notifier import Notifier
    from bot.delivery.setup import recover_fanouts
    from core.clock import FixedClock
    from core.domain import DeliveryKind, DeliveryStatus, SignalOutcome, SignalStatus
    from storage import Database, Stores
    from tests.conftest import utc
    from tests.test_delivery import signal as make_signal

    clock = FixedClock(utc(2024, 3, 5, 15, 0))
    db = Database("sqlite+aiosqlite:///:memory:")
    await db.upgrade()
    store = Stores.over(db, clock)
    try:
        users = [await store.users.upsert_user("console", str(i), str(i), f"U{i}") for i in range(3)]
        a, b = make_signal("AAPL-1d-a"), make_signal("AAPL-1d-b")
        shadow = dataclasses.replace(make_signal("AAPL-1d-shadow"), evidence={"shadow": {"scope": "x"}})
        # what SignalService.scan stores; the process dies before the notifier queues anything
        await store.signals.add_signals([a, b, shadow], fan_out=[a.id, b.id])
        assert await store.outbox.pending_fanouts() == [(a.id, DeliveryKind.SIGNAL), (b.id, DeliveryKind.SIGNAL)]

        notifier = Notifier(store, clock, {"console"}, lambda: None)  # the next start
        # the scheduled retry leaves fan-outs younger than its cut-off to the notifier that is queueing them
        assert await recover_fanouts(store, notifier, recorded_before=clock.now()) == 0
        assert await recover_fanouts(store, notifier) == 2
        queued = {(d.signal_id, d.user_id) for d in await store.outbox.claim_due("console", clock.now(), 100)}
        assert queued == {(s.id, u.id) for s in (a, b) for u in users}
        assert await store.outbox.pending_fanouts() == [] and await recover_fanouts(store, notifier) == 0

        # the exit: the outcome is stored with its pending fan-out; the process dies before the replies are queued
        async with db.engine.begin() as conn:  # a's messages went out (refs m<user id>)
            import sqlalchemy as sa

            from storage.tables import DELIVERIES
            await conn.execute(sa.update(DELIVERIES).where(DELIVERIES.c.signal_id == a.id).values(
                status=DeliveryStatus.SENT.value, message_ref="m" + DELIVERIES.c.user_id.cast(sa.String)))
        now = clock.now()
        outcome = SignalOutcome(a.id, SignalStatus.TARGET, a.entry, now, a.target, now, 0.04, 0.038, 0.05, -0.01, 3)
        await store.signals.record_outcome(outcome, fan_out=True)
        assert await store.outbox.pending_fanouts() == [(a.id, DeliveryKind.EXIT)]
        assert await recover_fanouts(store, notifier) == 1
        exits = [d for d in await store.outbox.claim_due("console", clock.now(), 100) if d.kind is DeliveryKind.EXIT]
        assert sorted(d.reply_to for d in exits) == [f"m{u.id}" for u in users]

        # a signal that closed before it could be queued is not sent any more
        await store.signals.add_signals([make_signal("AAPL-1d-c")], fan_out=["AAPL-1d-c"])
        await store.signals.record_outcome(dataclasses.replace(outcome, signal_id="AAPL-1d-c"))
        assert await recover_fanouts(store, notifier) == 0 and await store.outbox.pending_fanouts() == []
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def telegram_on_a_fake():  # noqa: ANN201
    """A real TelegramTransport, initialised (no polling), against the local fake Bot API."""
    from bot.transports.telegram import TelegramTransport
    from tests.fakes.telegram_bot_api import FakeBotApi

    async with FakeBotApi() as fake:
        transport = TelegramTransport(fake.token, base_url=fake.base_url, base_file_url=fake.base_file_url,
                                      messages_per_second=0)
        await transport.initialize()
        try:
            yield fake, transport
        finally:
            await transport.stop()


def fake_failures_hit(fake) -> int:  # noqa: ANN001
    """How many injected faults were used up (each fault's `times` counts down as requests hit it)."""
    return sum(6 if f.status == 500 else 2 for f in fake.faults if f.times == 0)


# -- 3. a message in parts (chart, then text) that fails part-way is resumed, never resent from the start --------
async def test_a_chart_signal_whose_text_fails_is_retried_without_sending_the_chart_again(tmp_path):
    import dataclasses
    from datetime import timedelta

    from bot.delivery.notifier import Notifier
    from bot.delivery.worker import DeliveryWorker
    from core.clock import FixedClock
    from core.domain import DeliveryStatus
    from core.events import SignalIssued
    from tests.test_delivery_charts import NOW, TIERS, Charts, a_signal, drain, seeded_store

    store = await seeded_store(tmp_path / "parts.db", 16)
    clock = FixedClock(NOW)
    async with telegram_on_a_fake() as (fake, transport):
        worker = DeliveryWorker(transport, store, clock, batch=4, chart=Charts())
        notifier = Notifier(store, clock, {"telegram"}, wake=worker.wake)
        # reasoning too long for a photo's caption: the chart goes first, then the text as its own message
        s = dataclasses.replace(a_signal(), reasoning="The trend is up and the pullback held. " * 40)
        await store.signals.add_signal(s)
        fake.fail(500, method="sendmessage", times=6)  # the text after the chart, for the first recipients
        fake.fail(429, method="sendmessage", retry_after=1, times=2)
        await notifier.on_signal_issued(SignalIssued(s))
        for _ in range(20):
            await drain(worker)
            counts = await store.outbox.delivery_counts("telegram")
            if counts.get(DeliveryStatus.SENT, 0) == 16:
                break
            clock.advance(timedelta(minutes=10))
        assert counts == {DeliveryStatus.SENT: 16}, counts
        refs = {uid: ref for uid, _, ref in await store.outbox.signal_receipts(s.id)}
        for i in range(16):
            msgs = fake.messages_to(str(i))
            photos = [m for m in msgs if m.method == "sendphoto"]
            texts = [m for m in msgs if m.method == "sendmessage"]
            charted = TIERS[i % 4].value != "free"
            assert len(photos) == (1 if charted else 0), (i, [m.method for m in msgs])
            assert len(texts) == 1, (i, [m.method for m in msgs])
            assert refs[i + 1] == str(msgs[0].message_id)  # an exit replies to the first part: the chart
        assert fake_failures_hit(fake) == 8
    await store.close()


async def test_a_discord_message_in_parts_resumes_after_the_parts_that_went_out():
    from bot.transports.base import Resume
    from bot.transports.discord import DiscordTransport
    from core.errors import DeliveryError
    from tests.fakes.discord_api import FakeDiscord

    doc = Doc(heading="AAPL 1d: BUY", body=("A long reasoning paragraph. " * 150 + "\n\n") * 6)  # several messages
    async with FakeDiscord() as fake:
        transport = DiscordTransport(fake.token, api_base=fake.api_base, guild_ready_timeout=0.05)
        await transport.initialize()
        try:
            await transport.send("4242", doc)  # once in full: how many parts the Doc has
            parts = len(fake.messages)
            assert parts >= 3
            fake.messages.clear()
            original, calls = transport._send_one, 0

            async def third_fails(target, kwargs, reference):  # noqa: ANN001, ANN202
                nonlocal calls
                calls += 1
                if calls == 3:  # e.g. discord.py gave up on a 5xx after its own retries
                    raise DeliveryError("discord: 503 Service Unavailable")
                return await original(target, kwargs, reference)

            transport._send_one = third_fails  # type: ignore[method-assign]
            with pytest.raises(DeliveryError) as failed:
                await transport.send("4242", doc)
            assert failed.value.parts_sent == 2 and failed.value.first_ref
            assert len(fake.messages) == 2
            transport._send_one = original  # type: ignore[method-assign]
            ref = await transport.send("4242", doc, resume=Resume(failed.value.parts_sent, failed.value.first_ref,
                                                                  failed.value.layout))
            assert ref == failed.value.first_ref and len(fake.messages) == parts  # each part exactly once
            assert ref.endswith(f"/{fake.messages[0].id}")
        finally:
            await transport.stop()


# -- 7. smaller findings ------------------------------------------------------------------------------------------
async def test_a_scan_that_can_evaluate_nothing_says_why_in_text_and_exits_non_zero(shared_data):
    from bot.cli.scan import run_scan

    one = sorted((shared_data / "crypto").glob("*.csv*"))[0]
    text, code = await run_scan(one, "2010-01-01", False)
    assert code == 1 and "0 of 2 instrument-timeframes evaluated" in text
    assert "not evaluated" in text and "bar closed by 2010-01-02" in text
    as_json, code_json = await run_scan(one, "2010-01-01", True)
    assert code_json == 1 and '"not_evaluated"' in as_json


async def test_admin_figures_asked_in_a_group_are_answered_in_private():
    from bot.transports.telegram import TelegramTransport
    from tests.fakes.telegram_bot_api import FakeBotApi

    group = -100777

    async def handle(caller: Caller, text: str) -> Doc:
        if text.startswith("/admin"):
            return Doc(heading="Service statistics", body="Users: 1234 · revenue 5678", private=True)
        return Doc(heading="Public answer")

    async with FakeBotApi() as fake:
        transport = TelegramTransport(fake.token, base_url=fake.base_url, base_file_url=fake.base_file_url)
        await transport.start(handle)
        try:
            fake.command("/admin stats", user_id=42, chat_id=group, chat_type="supergroup")
            [private] = await fake.wait_for_messages(1, chat_id=42)
            [notice] = await fake.wait_for_messages(1, chat_id=group)
            assert "Users: 1234" in private.text and "1234" not in notice.text
            assert "Sent to you in private" in notice.text
            fake.block(43)  # never opened a private chat with the bot: Telegram answers 403
            fake.command("/admin stats", user_id=43, chat_id=group, chat_type="supergroup")
            second = (await fake.wait_for_messages(2, chat_id=group))[-1]
            assert "Open a private chat with @" in second.text and "1234" not in second.text
            fake.command("/help", user_id=42, chat_id=group, chat_type="supergroup")
            assert "Public answer" in (await fake.wait_for_messages(3, chat_id=group))[-1].text
        finally:
            await transport.stop()


async def test_admin_answers_are_marked_private_and_database_errors_say_nothing_was_changed(monkeypatch):
    from bot.app import build_services
    from bot.commands.registry import dispatch
    from core.clock import FixedClock
    from core.market_data import SimulatedMarket
    from tests.conftest import utc

    clock = FixedClock(utc(2025, 6, 2, 13, 30))
    market = SimulatedMarket(seed=7, start=clock.now(), history_days=400, clock=clock)
    svc = await build_services(Settings(database_url="sqlite+aiosqlite:///:memory:", admins="telegram:42",
                                        families=MECHANICS_FAMILIES, _env_file=None), market, clock)
    admin, user = Caller("telegram", "42", "-100777", "Op"), Caller("telegram", "7", "7", "Ann")
    try:
        assert (await dispatch(svc.registry, svc, admin, "/admin stats")).private
        assert not (await dispatch(svc.registry, svc, user, "/start")).private
        import sqlalchemy.exc

        async def locked(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            raise sqlalchemy.exc.OperationalError("UPDATE preferences", {}, Exception("database is locked"))

        monkeypatch.setattr(svc.store.users, "set_preferences", locked)
        doc = await dispatch(svc.registry, svc, user, "/prefs confidence 70")
        assert doc.tone == "error" and "may not have been saved" in doc.body and "try again" in doc.note.lower()
    finally:
        await svc.store.close()


def test_secrets_are_redacted_from_every_log_record_and_library():
    import logging

    from bot.logs import install_redaction

    token = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawX"
    settings = Settings(_env_file=None, TELEGRAM_TOKEN=token, STRIPE_API_KEY="sk_test_abcdef123456",
                        database_url="sqlite+aiosqlite:///:memory:")
    stream = io.StringIO()
    logger = logging.getLogger("redaction-test")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        install_redaction(settings, logger)
        child = logging.getLogger("redaction-test.telegram.ext")  # a library's logger, propagating to ours
        child.debug("POST %s", f"https://api.telegram.org/bot{token}/getUpdates")
        other = "987654321:BBHdqTcvCH1vGWJxfSeofSAs0K5PALDsawY"  # a token we were not told about, same shape
        child.debug("retrying https://api.telegram.org/bot%s/sendMessage", other)
        try:
            raise RuntimeError(f"stripe said no to sk_test_abcdef123456 at bot{token}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert token not in out and other not in out and "sk_test_abcdef123456" not in out
    assert out.count("<redacted>") >= 3 and "<token>" in out and "getUpdates" in out and "Traceback" in out


async def test_a_huge_header_is_refused_with_one_log_line_not_a_traceback(ready_server, tmp_path, caplog):
    import logging

    server, _, _ = await ready_server(tmp_path / "bot.db")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 60_000 + b"\r\n\r\n")
    await writer.drain()
    with caplog.at_level(logging.DEBUG):
        status = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        await asyncio.sleep(0.1)
    assert b" 400 " in status or b" 431 " in status
    records = [r for r in caplog.records if r.name in ("bot.http_server", "uvicorn.error")]
    assert records and all(r.exc_info is None and r.levelno == logging.WARNING for r in records)
    assert "refused a malformed request" in records[0].getMessage()


async def test_results_the_database_could_not_record_are_written_before_anything_new_and_never_resent(tmp_path):
    from bot.delivery.notifier import Notifier
    from bot.delivery.worker import DeliveryWorker
    from core.clock import FixedClock
    from core.domain import DeliveryStatus
    from core.events import SignalIssued
    from tests.test_delivery import NOW, RecordingTransport, add_users, open_stores
    from tests.test_delivery import signal as make_signal

    store = await open_stores(f"sqlite+aiosqlite:///{tmp_path / 'rec.db'}")
    clock = FixedClock(NOW)
    await add_users(store, 6)
    transport = RecordingTransport()
    worker = DeliveryWorker(transport, store, clock, batch=3)
    notifier = Notifier(store, clock, {"console"}, wake=worker.wake)
    s = make_signal()
    await store.signals.add_signal(s)
    await notifier.on_signal_issued(SignalIssued(s))
    real, read_only = store.outbox.record_attempts, [True]

    async def flaky(updates):  # noqa: ANN001, ANN202 - the database refuses writes while read_only
        if read_only[0]:
            raise OSError("attempt to write a readonly database")
        return await real(updates)

    store.outbox.record_attempts = flaky  # type: ignore[method-assign]
    with pytest.raises(OSError):
        await worker.process_due()  # three sent, their results not written
    assert len(transport.sent) == 3
    with pytest.raises(OSError):
        await worker.process_due()  # still failing: nothing new is claimed or sent
    assert len(transport.sent) == 3
    read_only[0] = False
    while await worker.process_due():
        pass
    assert len(transport.sent) == 6 and len({chat for chat, _, _ in transport.sent}) == 6
    assert await store.outbox.delivery_counts("console") == {DeliveryStatus.SENT: 6}
    assert await store.outbox.requeue_stale_sending() == 0  # a restart would resend nothing
    await store.close()


async def test_a_resumed_chart_message_whose_chart_is_gone_still_delivers_its_text(tmp_path):
    """The chart went out, the text failed; at the retry (a restart: a new worker) the chart cannot be drawn.
    Skipping by count would skip the text and mark the row SENT with only the photo delivered."""
    import dataclasses
    from datetime import timedelta

    from bot.delivery.notifier import Notifier
    from bot.delivery.worker import DeliveryWorker
    from core.clock import FixedClock
    from core.domain import DeliveryStatus
    from core.events import SignalIssued
    from tests.test_delivery_charts import NOW, Charts, a_signal, seeded_store

    store = await seeded_store(tmp_path / "gone.db", 2)  # chat "1" is on a tier with charts
    clock = FixedClock(NOW)
    async with telegram_on_a_fake() as (fake, transport):
        first = DeliveryWorker(transport, store, clock, chart=Charts())
        s = dataclasses.replace(a_signal(), reasoning="The trend is up and the pullback held. " * 40)
        await store.signals.add_signal(s)
        await Notifier(store, clock, {"telegram"}, wake=first.wake).on_signal_issued(SignalIssued(s))
        fake.fail(500, method="sendmessage", chat_id=1, times=1)
        await first.process_due()
        assert [m.method for m in fake.messages_to("1")] == ["sendphoto"]
        clock.advance(timedelta(hours=1))
        second = DeliveryWorker(transport, store, clock, chart=Charts(fail=RuntimeError("no chart")))
        while await second.process_due():
            pass
        methods = [m.method for m in fake.messages_to("1")]
        assert "sendmessage" in methods, methods  # the text arrived
        assert await store.outbox.delivery_counts("telegram") == {DeliveryStatus.SENT: 2}
    await store.close()


async def test_the_digest_counts_sends_on_wall_time_and_closes_on_market_time():
    from datetime import timedelta

    import sqlalchemy as sa

    from core.clock import FixedClock
    from core.domain import DeliveryKind, DeliveryStatus, SignalOutcome, SignalStatus
    from storage import Database, Stores
    from storage.tables import DELIVERIES
    from tests.conftest import utc
    from tests.test_delivery import signal as make_signal

    wall = FixedClock(utc(2026, 12, 6, 9, 0))
    market = FixedClock(utc(2024, 3, 20, 15, 0))  # a replay: two weeks after the signal's issue
    db = Database("sqlite+aiosqlite:///:memory:")
    await db.upgrade()
    store = Stores.over(db, wall)
    try:
        u = await store.users.upsert_user("console", "1", "1", "Ann")
        old, recent = make_signal("AAPL-1d-old"), make_signal("AAPL-1d-recent")
        for sig in (old, recent):
            await store.signals.add_signal(sig)
            await store.outbox.enqueue([(sig.id, u.id, DeliveryKind.SIGNAL, "console", None, None)])
        async with db.engine.begin() as conn:  # both sent three days ago (wall)
            await conn.execute(sa.update(DELIVERIES).values(status=DeliveryStatus.SENT.value,
                                                            sent_at=wall.now() - timedelta(days=3)))
        for sig, closed in ((old, market.now() - timedelta(days=5)), (recent, market.now() - timedelta(hours=2))):
            await store.signals.record_outcome(SignalOutcome(sig.id, SignalStatus.TARGET, 100, sig.issued_at, 104, closed,
                                                             0.04, 0.038, 0.05, -0.01, 3))
        day = timedelta(hours=24)
        items = await store.outbox.received_since(u.id, wall.now() - day, closed_since=market.now() - day)
        assert [s.id for s, _ in items] == [recent.id]  # closed in the market's last day; the other long before
    finally:
        await store.close()
