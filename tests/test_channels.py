"""Email (smtplib against a local SMTP server) and webhooks (aiohttp against a local receiver that checks the
HMAC-SHA256 signature): the transports, the /email and /webhook commands, and a signal and its exit delivered
through the notifier and the real workers."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import storage.channels  # noqa: F401  (registers user_channels before create_all)
from bot.commands.registry import Caller, CommandRegistry, dispatch
from bot.delivery.channel import Outgoing
from bot.delivery.commands import channel_commands, parse_email, parse_webhook_url
from bot.delivery.digest import send_digests
from bot.delivery.extra_channels import EmailChannel, WebhookChannel
from bot.delivery.notifier import Notifier
from bot.delivery.payloads import webhook_body, webhook_payload
from bot.delivery.retry import RetryPolicy
from bot.delivery.worker import DeliveryWorker
from bot.transports.email import EmailTransport, SmtpConfig
from bot.transports.webhook import SIGNATURE_HEADER, WebhookTransport, verify
from bot.views.doc import Doc
from bot.views.signals import signal_doc
from core.clock import FixedClock
from core.domain import (
    AssetClass, DeliveryKind, DeliveryStatus, Direction, Signal, SignalOutcome, SignalStatus, Tier, Timeframe,
)
from core.errors import DeliveryError, UserInputError
from core.events import SignalClosed, SignalIssued
from storage import Database, Stores
from storage.channels import ChannelStore, DigestStore
from tests.conftest import utc
from tests.fakes.smtp_server import FakeSmtpServer

NOW = utc(2025, 6, 2, 20)


def make_signal(sid: str = "AAPL-1d-20250602-L") -> Signal:
    return Signal(id=sid, symbol="AAPL", asset_class=AssetClass.EQUITY, timeframe=Timeframe.D1,
                  direction=Direction.LONG, entry=187.2, target=193.9, stop=183.1, confidence=72, position_size=0.045,
                  issued_at=NOW, expires_at=NOW + timedelta(days=7), reasoning="Oversold after a gap down & <news>.",
                  strategy="mean_reversion")


# -- a webhook receiver on 127.0.0.1 ------------------------------------------------------------------
@dataclass
class Hook:
    headers: dict[str, str]
    body: bytes
    valid: bool

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    secrets: dict[str, str] = field(default_factory=dict)  # path -> secret
    statuses: dict[str, list[int]] = field(default_factory=dict)  # path -> statuses to answer, in order
    delay: dict[str, float] = field(default_factory=dict)
    hooks: dict[str, list[Hook]] = field(default_factory=dict)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        path = request.path
        await asyncio.sleep(self.delay.get(path, 0.0))
        secret = self.secrets.get(path, "")
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        valid = hmac.compare_digest(expected, request.headers.get(SIGNATURE_HEADER, ""))
        self.hooks.setdefault(path, []).append(Hook(dict(request.headers), body, valid))
        queue = self.statuses.get(path)
        status = queue.pop(0) if queue else (200 if valid else 401)
        return web.Response(status=status, text="ok" if status < 300 else "no")


@pytest.fixture
async def receiver():
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.port = int(runner.addresses[0][1])
    yield rec
    await runner.cleanup()


@pytest.fixture
async def smtp():
    async with FakeSmtpServer(user="mailer", password="s3cret-pass") as server:
        yield server


def smtp_transport(server: FakeSmtpServer, password: str = "s3cret-pass") -> EmailTransport:
    return EmailTransport(SmtpConfig("127.0.0.1", server.port, user="mailer", password=password,
                                     sender="Signals <signals@example.com>", starttls=False, timeout=5.0))


# -- transports ---------------------------------------------------------------------------------------------
async def test_email_has_text_and_html_parts_and_threads_the_exit(smtp) -> None:
    transport = smtp_transport(smtp)
    doc = signal_doc(make_signal())
    ref = await transport.send("ann@example.com", doc.heading, "plain body", "<p>html <b>body</b></p>")
    [msg] = await smtp.wait_for(1)
    assert msg["Message-ID"] == ref and msg["To"] == "ann@example.com" and msg["Subject"] == doc.heading
    assert msg.get_content_type() == "multipart/alternative"
    assert msg.get_body(("plain",)).get_content().strip() == "plain body"
    assert "<b>body</b>" in msg.get_body(("html",)).get_content()
    await transport.send("ann@example.com", "exit", "closed", None, in_reply_to=ref)
    [_, reply] = await smtp.wait_for(2)
    assert reply["In-Reply-To"] == ref and reply["References"] == ref
    assert smtp.received[1].recipients == ["ann@example.com"]


async def test_email_errors_are_permanent_only_for_a_refused_recipient(smtp) -> None:
    transport = smtp_transport(smtp)
    smtp.refuse("gone@example.com")
    with pytest.raises(DeliveryError) as refused:
        await transport.send("gone@example.com", "s", "t")
    assert refused.value.permanent and "550" in str(refused.value)
    smtp.fail_next(451)
    with pytest.raises(DeliveryError) as later:
        await transport.send("ann@example.com", "s", "t")
    assert not later.value.permanent and "451" in str(later.value)
    with pytest.raises(DeliveryError) as login:
        await smtp_transport(smtp, password="wrong-password").send("ann@example.com", "s", "t")
    assert not login.value.permanent and "wrong-password" not in str(login.value)
    closed = EmailTransport(SmtpConfig("127.0.0.1", 1, starttls=False, timeout=2.0))  # nothing listens on port 1
    with pytest.raises(DeliveryError) as down:
        await closed.send("ann@example.com", "s", "t")
    assert not down.value.permanent
    assert smtp.received == []


async def test_webhook_is_signed_and_statuses_map_to_retry_or_unsubscribe(receiver) -> None:
    receiver.secrets.update({"/ok": "k1", "/gone": "k2", "/down": "k3", "/slow": "k4"})
    receiver.statuses.update({"/gone": [410], "/down": [503]})
    receiver.delay["/slow"] = 1.0
    transport = WebhookTransport(timeout=0.3)
    try:
        body = b'{"hello":"world"}'
        assert await transport.post(receiver.url("/ok"), "k1", body, delivery_id="41", event="signal.issued") == "41"
        [hook] = receiver.hooks["/ok"]
        assert hook.valid and hook.body == body and hook.headers["X-Signalbot-Delivery"] == "41"
        assert hook.headers["Content-Type"] == "application/json" and verify("k1", body, hook.headers[SIGNATURE_HEADER])
        assert not verify("another", body, hook.headers[SIGNATURE_HEADER])
        with pytest.raises(DeliveryError) as gone:
            await transport.post(receiver.url("/gone"), "k2", body, delivery_id="42", event="signal.issued")
        assert gone.value.permanent
        for path in ("/down", "/slow"):
            with pytest.raises(DeliveryError) as failed:
                await transport.post(receiver.url(path) + "?token=abc", "k3", body, delivery_id="43", event="e")
            assert not failed.value.permanent and failed.value.retry_after is None
            assert "token=abc" not in str(failed.value) and "k3" not in str(failed.value)
        with pytest.raises(DeliveryError) as refused:  # nothing listens there
            await transport.post("http://127.0.0.1:1/x", "k", body, delivery_id="44", event="e")
        assert not refused.value.permanent
    finally:
        await transport.stop()


def test_webhook_payload_has_the_documented_fields() -> None:
    s = make_signal()
    outcome = SignalOutcome(s.id, SignalStatus.TARGET, 187.5, NOW, 193.9, NOW + timedelta(days=2), 0.034, 0.033,
                            0.04, -0.01, 2)
    issued = webhook_payload(Outgoing(7, DeliveryKind.SIGNAL, s, None, Doc("x")), NOW)
    assert issued["event"] == "signal.issued" and issued["delivery_id"] == "7" and "exit" not in issued
    assert set(issued["signal"]) == {"id", "symbol", "asset_class", "timeframe", "direction", "entry", "target",
                                     "stop", "confidence", "risk_reward", "position_size", "risk_tolerance",
                                     "expires_at", "reasoning", "issued_at"}
    assert issued["signal"]["risk_reward"] == pytest.approx(s.risk_reward, abs=1e-4)
    closed = webhook_payload(Outgoing(8, DeliveryKind.EXIT, s, outcome, Doc("x")), NOW)
    assert closed["event"] == "signal.exit" and closed["exit"]["status"] == "target"
    assert closed["exit"]["net_return"] == 0.033 and closed["exit"]["bars_held"] == 2


def test_the_seed_webhook_format_carries_the_same_facts_under_the_seed_names() -> None:
    s = make_signal()
    outcome = SignalOutcome(s.id, SignalStatus.STOP, 187.3, NOW, 183.1, NOW + timedelta(days=1), -0.022, -0.023,
                            0.01, -0.025, 1)
    new = json.loads(webhook_body(Outgoing(7, DeliveryKind.SIGNAL, s, None, Doc("x")), NOW, "seed"))
    assert new["event"] == "new_signal" and new["format"] == "seed-1" and new["signal_id"] == s.id
    assert (new["action"], new["entry_price"], new["target_price"], new["stop_loss"]) == ("BUY", s.entry, s.target,
                                                                                         s.stop)
    assert new["confidence"] == s.confidence and "pnl" not in new
    gone = json.loads(webhook_body(Outgoing(8, DeliveryKind.EXIT, s, outcome, Doc("x")), NOW, "seed"))
    assert gone["event"] == "signal_closed" and gone["status"] == "stop" and gone["pnl"] == -0.023
    assert gone["exit_price"] == 183.1
    assert json.loads(webhook_body(Outgoing(7, DeliveryKind.SIGNAL, s, None, Doc("x")), NOW))["version"] == 1


# -- commands -----------------------------------------------------------------------------------------------
@dataclass
class CommandServices:
    store: Stores
    registry: CommandRegistry
    clock: FixedClock = field(default_factory=lambda: FixedClock(NOW))

    def is_admin(self, caller: Caller) -> bool:
        return False


async def open_stores(url: str) -> tuple[Stores, ChannelStore]:
    db = Database(url)
    await db.upgrade()
    return Stores.over(db, FixedClock(NOW)), ChannelStore(db, FixedClock(NOW))


def registry_for(channels: ChannelStore, digests: DigestStore | None = None) -> CommandRegistry:
    registry = CommandRegistry()
    for command in channel_commands(channels, digest_store=digests, allow_private_webhooks=True):
        registry.register(command)
    return registry


async def test_commands_follow_the_tier_and_check_their_input(db_url) -> None:
    store, channels = await open_stores(db_url("cmd"))
    services = CommandServices(store, registry_for(channels))
    users = {}
    for name, tier in (("free", Tier.FREE), ("trader", Tier.TRADER), ("pro", Tier.PROFESSIONAL)):
        users[name] = await store.users.upsert_user("telegram", name, name, name)
        await store.users.set_tier(users[name].id, tier)

    async def say(who: str, text: str, chat: str | None = None) -> Doc:
        return await dispatch(services.registry, services, Caller("telegram", who, chat or who, who), text)

    refused = await say("free", "/email a@example.com")
    assert refused.tone == "error" and await channels.get(users["free"].id, "email") is None
    assert (await say("trader", "/email a@example.com")).heading == "Email delivery on"
    assert (await channels.get(users["trader"].id, "email")).address == "a@example.com"  # type: ignore[union-attr]
    assert (await say("trader", "/webhook https://example.com/h")).tone == "error"
    assert await channels.get(users["trader"].id, "webhook") is None
    assert "not an email address" in (await say("trader", "/email not-an-address")).body
    in_group = await say("pro", "/webhook https://example.com/h", chat="-100123")
    assert "private chat" in in_group.body and await channels.get(users["pro"].id, "webhook") is None
    done = await say("pro", "/webhook https://example.com/h")
    secret = dict(done.fields)["Signing secret"]
    stored = await channels.get(users["pro"].id, "webhook")
    assert stored is not None and stored.secret == secret and len(secret) >= 40
    assert secret not in (await say("pro", "/webhook")).body  # shown once, at creation
    assert "format v1" in (await say("pro", "/webhook")).body
    seed = await say("pro", "/webhook https://example.com/h seed")
    assert seed.heading == "Webhook delivery on" and "format seed" in seed.body
    assert (await channels.get(users["pro"].id, "webhook")).format == "seed"  # type: ignore[union-attr]
    assert "v1 (the default) or seed" in (await say("pro", "/webhook https://example.com/h xml")).body
    assert (await say("pro", "/webhook off")).heading == "Webhook delivery off"
    assert await channels.user_ids("webhook") == frozenset()
    assert await channels.user_ids("email") == frozenset({users["trader"].id})
    for bad in ("ftp://example.com/x", "https://user:pw@example.com/x", "example.com/x", "https://10.0.0.5/x",
                "https://127.0.0.1:8080/x", "https://localhost/x", "http://[::1]/x"):
        with pytest.raises(UserInputError):
            parse_webhook_url(bad)
    assert parse_webhook_url("http://127.0.0.1:9/x", allow_private=True) == "http://127.0.0.1:9/x"
    with pytest.raises(UserInputError):
        parse_email("a@b")
    await store.close()


# -- end to end: notifier -> outbox -> workers -> SMTP / webhook receiver ---------------------------------------
async def test_signal_and_exit_reach_email_and_webhook(db_url, smtp, receiver) -> None:
    store, channels = await open_stores(db_url("e2e"))
    clock = FixedClock(NOW)
    pro = await store.users.upsert_user("telegram", "1", "1", "Pat")
    trader = await store.users.upsert_user("telegram", "2", "2", "Tom")
    hobbyist = await store.users.upsert_user("telegram", "3", "3", "Hob")
    await store.users.set_tier(pro.id, Tier.PROFESSIONAL)
    await store.users.set_tier(trader.id, Tier.TRADER)
    await store.users.set_tier(hobbyist.id, Tier.HOBBYIST)
    await channels.set(pro.id, "email", "pat@example.com")
    await channels.set(pro.id, "webhook", receiver.url("/pat"), "pat-secret")
    sam = await store.users.upsert_user("telegram", "4", "4", "Sam")
    await store.users.set_tier(sam.id, Tier.PROFESSIONAL)
    await channels.set(sam.id, "webhook", receiver.url("/sam"), "sam-secret", "seed")  # the seed's format
    await channels.set(trader.id, "email", "tom@example.com")
    await channels.set(trader.id, "webhook", receiver.url("/tom"), "tom-secret")  # not in the trader tier
    await channels.set(hobbyist.id, "email", "hob@example.com")  # not in the hobbyist tier
    receiver.secrets.update({"/pat": "pat-secret", "/tom": "tom-secret", "/sam": "sam-secret"})
    receiver.statuses["/pat"] = [500]  # the first POST fails: retried

    webhook = WebhookTransport(timeout=2.0)
    fast = RetryPolicy(base_seconds=0.0, jitter=0.0)
    email_worker = DeliveryWorker(EmailChannel(smtp_transport(smtp), store, channels), store, clock, retry=fast)
    hook_worker = DeliveryWorker(WebhookChannel(webhook, store, channels, clock), store, clock, retry=fast)
    notifier = Notifier(store, clock, set(), wake=lambda: None, channel_store=channels,
                        extra_channels={"email", "webhook"})
    s = make_signal()
    await store.signals.add_signal(s)
    try:
        assert await notifier.on_signal_issued(SignalIssued(s)) == 4  # pat: email + webhook; tom: email; sam: hook
        while await email_worker.process_due() or await hook_worker.process_due():
            pass
        assert sorted(r.recipients[0] for r in smtp.received) == ["pat@example.com", "tom@example.com"]
        [first_try, hook] = receiver.hooks["/pat"]
        assert first_try.valid and hook.valid and "/tom" not in receiver.hooks
        assert first_try.headers["X-Signalbot-Delivery"] == hook.headers["X-Signalbot-Delivery"]  # one delivery
        payload = hook.json
        assert payload["event"] == "signal.issued" and payload["signal"]["id"] == s.id
        assert payload["signal"]["entry"] == 187.2 and payload["signal"]["confidence"] == 72
        assert payload["signal"]["reasoning"] == s.reasoning
        [seed] = receiver.hooks["/sam"]
        assert seed.valid and seed.json["event"] == "new_signal" and seed.json["entry_price"] == 187.2
        pat_mail = smtp.to("pat@example.com")[0]
        assert "BUY AAPL" in pat_mail["Subject"] and "&lt;news&gt;" in pat_mail.get_body(("html",)).get_content()
        assert "Oversold after a gap down & <news>." in pat_mail.get_body(("plain",)).get_content()

        outcome = SignalOutcome(s.id, SignalStatus.STOP, 187.3, NOW, 183.1, NOW + timedelta(days=1), -0.022, -0.023,
                                0.01, -0.025, 1)
        await store.signals.record_outcome(outcome)
        assert await notifier.on_signal_closed(SignalClosed(s, outcome)) == 4
        while await email_worker.process_due() or await hook_worker.process_due():
            pass
        exit_mail = smtp.to("pat@example.com")[1]
        assert exit_mail["In-Reply-To"] == pat_mail["Message-ID"] and exit_mail["Subject"].startswith("Stopped out")
        exit_hook = receiver.hooks["/pat"][-1]
        assert exit_hook.valid and exit_hook.json["event"] == "signal.exit"
        assert exit_hook.json["exit"]["status"] == "stop" and exit_hook.json["exit"]["net_return"] == -0.023
        assert receiver.hooks["/sam"][-1].json["event"] == "signal_closed"
        assert await store.outbox.count(DeliveryStatus.SENT) == 8
    finally:
        await webhook.stop()
        await store.close()


async def test_a_gone_webhook_or_refused_address_is_removed_and_the_user_stays(db_url, smtp,
                                                                               receiver) -> None:
    store, channels = await open_stores(db_url("gone"))
    clock = FixedClock(NOW)
    pro = await store.users.upsert_user("telegram", "1", "1", "Pat")
    await store.users.set_tier(pro.id, Tier.PROFESSIONAL)
    await channels.set(pro.id, "webhook", receiver.url("/pat"), "k")
    await channels.set(pro.id, "email", "gone@example.com")
    smtp.refuse("gone@example.com")
    receiver.secrets["/pat"] = "k"
    receiver.statuses["/pat"] = [410]
    first, second = make_signal(), make_signal("MSFT-1d-20250602-L")
    await store.signals.add_signals([first, second])
    later = NOW + timedelta(hours=1)
    await store.outbox.enqueue([(first.id, pro.id, DeliveryKind.SIGNAL, ch, None, None) for ch in ("webhook", "email")]
                               + [(second.id, pro.id, DeliveryKind.SIGNAL, ch, later, None) for ch in ("webhook", "email")])
    webhook = WebhookTransport(timeout=2.0)
    try:
        await DeliveryWorker(WebhookChannel(webhook, store, channels, clock), store, clock).process_due()
        await DeliveryWorker(EmailChannel(smtp_transport(smtp), store, channels), store, clock).process_due()
    finally:
        await webhook.stop()
    assert await channels.get(pro.id, "webhook") is None and await channels.get(pro.id, "email") is None
    counts = await store.outbox.delivery_counts()
    assert counts == {DeliveryStatus.FAILED: 2, DeliveryStatus.SKIPPED: 2}  # the later rows were cancelled
    user = await store.users.get_user(pro.id)
    assert user is not None and user.active  # still subscribed in chat
    await store.close()


# -- the daily digest ---------------------------------------------------------------------------------------
class ChatRecorder:
    name = "telegram"

    def __init__(self) -> None:
        self.sent: list[tuple[str, Doc]] = []
        self.fail_next: DeliveryError | None = None

    async def send(self, chat_id: str, doc: Doc, reply_to: str | None = None) -> str:
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        self.sent.append((chat_id, doc))
        return str(len(self.sent))


async def test_daily_digest_once_a_day_at_the_chosen_hour(db_url) -> None:
    store, channels = await open_stores(db_url("digest"))
    digests = DigestStore(store.database)
    services = CommandServices(store, registry_for(channels, digests))
    ann = await store.users.upsert_user("telegram", "1", "1", "Ann")
    quiet = await store.users.upsert_user("telegram", "2", "2", "Quiet")  # subscribed, but received nothing
    say = lambda who, text: dispatch(services.registry, services, Caller("telegram", who, who, who), text)  # noqa: E731
    assert (await say("1", "/digest 18")).heading == "Daily digest on"
    assert "hour" in (await say("2", "/digest 25")).body
    assert (await say("2", "/digest 18:00")).heading == "Daily digest on"
    opened, closed = make_signal("AAPL-1"), make_signal("MSFT-1")
    await store.signals.add_signals([opened, closed])
    await store.outbox.enqueue([(s.id, ann.id, DeliveryKind.SIGNAL, "telegram", None, None) for s in (opened, closed)])
    for d in await store.outbox.claim_due("telegram", NOW, 10):
        await store.outbox.mark(d.id, DeliveryStatus.SENT, message_ref="m", sent_at=NOW - timedelta(hours=3))
    await store.signals.record_outcome(SignalOutcome(closed.id, SignalStatus.TARGET, 187.3, NOW, 193.9, NOW, 0.035, 0.034,
                                                     0.04, -0.01, 1))
    chat = ChatRecorder()
    clock = FixedClock(utc(2025, 6, 2, 17, 30))
    assert await send_digests(store, digests, {"telegram": chat}, clock) == 0  # before 18:00
    clock.at = utc(2025, 6, 2, 18, 5)
    chat.fail_next = DeliveryError("timed out")
    assert await send_digests(store, digests, {"telegram": chat}, clock) == 0  # failed: released
    assert await send_digests(store, digests, {"telegram": chat}, clock) == 1
    assert await send_digests(store, digests, {"telegram": chat}, clock) == 0  # once a day
    [(chat_id, doc), (again, week)] = chat.sent  # a Monday: the weekly report beside the digest
    assert chat_id == "1" and doc.heading == "Your daily digest · 2025-06-02" and doc.table is not None
    assert [(r[0], r[-1]) for r in doc.table.rows] == [("AAPL", "open"), ("AAPL", "target +3.40%")]
    assert "2 signals" in doc.body and "1 closed (1 with a gain" in doc.body
    assert again == "1" and week.heading == "Your weekly report · 2025-05-26 to 2025-06-02"
    fields = dict(week.fields)
    assert fields["Your signals"] == "2 received, 1 closed"
    assert fields["Yours closed"].startswith("1 closed, 1 won (100%), average +3.40%")
    assert fields["Service, all closed"].startswith("1 closed, 1 won")
    clock.at = utc(2025, 6, 3, 18, 0)
    assert await send_digests(store, digests, {"telegram": chat}, clock) == 1  # the next day (within 24 h of 17:00)
    assert [d.heading for _, d in chat.sent[2:]] == ["Your daily digest · 2025-06-03"]  # no weekly on a Tuesday
    assert (await say("1", "/digest off")).heading == "Daily digest off"
    clock.at = utc(2025, 6, 4, 19, 0)
    assert await send_digests(store, digests, {"telegram": chat}, clock) == 0
    assert quiet.id not in {int(c) for c, _ in chat.sent}
    await store.close()


# -- the wiring the composition root calls --------------------------------------------------------------------
async def test_prepare_and_start_delivery_wire_commands_workers_and_the_bus(tmp_path: Path, smtp) -> None:
    from bot.app import build_services
    from bot.delivery.setup import start_delivery
    from bot.settings import Settings
    from core.market_data import SimulatedMarket

    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'svc.db'}", smtp_host="127.0.0.1",
                        smtp_port=smtp.port, smtp_user="mailer", smtp_password="s3cret-pass",
                        smtp_from="signals@example.com", smtp_starttls=False, _env_file=None)
    clock = FixedClock(NOW)
    market = SimulatedMarket(seed=7, start=NOW, history_days=60, clock=clock)
    services = await build_services(settings, market, clock)
    chat = ChatRecorder()
    try:
        assert {"email", "webhook", "digest"} <= {c.name for c in services.registry.visible(False)}
        delivery = await start_delivery(settings, services, [chat], clock)
        assert sorted(w.channel for w in delivery.workers) == ["email", "telegram", "webhook"]
        caller = Caller("telegram", "77", "77", "Pro")
        await dispatch(services.registry, services, caller, "/start")
        pro = await services.store.users.find_user("telegram", "77")
        assert pro is not None
        await services.store.users.set_tier(pro.id, Tier.PROFESSIONAL)
        assert (await dispatch(services.registry, services, caller, "/email pro@example.com")).tone == "success"
        s = make_signal()
        await services.store.signals.add_signal(s)
        await services.bus.publish(SignalIssued(s))
        for worker in delivery.workers:
            while await worker.process_due():
                pass
        assert [c for c, _ in chat.sent] == ["77"] and chat.sent[0][1].heading.startswith("BUY AAPL")
        assert [m["To"] for m in smtp.received and [r.message for r in smtp.received]] == ["pro@example.com"]
        await delivery.close()
    finally:
        await services.store.close()
