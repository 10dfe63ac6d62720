"""Telegram through the real python-telegram-bot against a local Bot API (tests/fakes/telegram_bot_api.py),
and the Telegram-HTML renderer's properties."""
from __future__ import annotations

import asyncio
import re
import time
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.app import build_services, start_telegram
from bot.commands.registry import Caller, dispatch
from bot.delivery.notifier import Notifier
from bot.delivery.setup import start_delivery
from bot.delivery.worker import DeliveryWorker
from bot.settings import Settings
from bot.transports.telegram import TelegramTransport
from bot.views.doc import Button, Doc, Image, Table
from bot.views.telegram_html import MAX_CALLBACK_DATA, CallbackCommands, render_for_telegram, render_html
from bot.views.text import render_table
from core.clock import FixedClock
from core.domain import (
    AssetClass, DeliveryStatus, Direction, Signal, SignalOutcome, SignalStatus, Tier, Timeframe,
)
from core.errors import DeliveryError
from core.events import SignalClosed, SignalIssued
from core.market_data import SimulatedMarket
from tests.conftest import utc
from tests.fakes.telegram_bot_api import STARS_SUBSCRIPTION_PERIOD, FakeBotApi, HtmlEntityError, parse_telegram_html

START = utc(2025, 6, 2, 12)
SLOW = 60.0  # the first /signal in a process compiles pandas-ta's numba kernels
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- fixtures -------------------------------------------------------------------------------------------
@pytest.fixture
async def fake():
    async with FakeBotApi() as api:
        yield api


def transport_for(fake: FakeBotApi, **kwargs) -> TelegramTransport:  # noqa: ANN003
    kwargs.setdefault("poll_timeout", 1.0)
    return TelegramTransport(fake.token, base_url=fake.base_url, base_file_url=fake.base_file_url, **kwargs)


@pytest.fixture
async def services():
    clock = FixedClock(START)
    market = SimulatedMarket(seed=7, start=START, history_days=400, clock=clock)
    svc = await build_services(Settings(database_url="sqlite+aiosqlite:///:memory:", _env_file=None), market, clock)
    yield svc
    await svc.store.close()


@pytest.fixture
async def served(fake, services):
    """The real command layer served over Telegram."""
    menu = [(c.name, c.summary) for c in services.registry.visible(False)]
    transport = transport_for(fake, commands=menu)

    async def handle(caller: Caller, text: str) -> Doc:
        return await dispatch(services.registry, services, caller, text)
    await transport.start(handle)
    yield transport
    await transport.stop()


@pytest.fixture
async def sender(fake):
    """A transport that only sends (initialised, not polling), with short timeouts."""
    transport = transport_for(fake, read_timeout=0.5, connect_timeout=1.0, pool_timeout=1.0)
    await transport.initialize()
    yield transport
    await transport.stop()


# -- a conversation through the real dispatch -------------------------------------------------------------
async def test_conversation_start_signal_and_buttons(fake, services, served):
    assert fake.commands == [{"command": c.name, "description": c.summary} for c in services.registry.visible(False)]

    hello = fake.command("/start", user_id=1001, first_name="Bob")
    [welcome] = await fake.wait_for_messages(1, chat_id=1001)
    assert welcome.text.startswith("Welcome, Bob! You are subscribed")
    assert welcome.parse_mode == "HTML" and welcome.raw.startswith("<b>Welcome, Bob!")
    assert {"type": "bold", "offset": 0} .items() <= welcome.entities[0].items()
    assert ("Preferences", "/prefs") in welcome.buttons
    assert welcome.reply_to_message_id is None  # a private chat: no quoting
    user = await services.store.users.find_user("telegram", "1001")
    assert user is not None and user.active and user.chat_id == "1001" and user.display_name == "Bob"
    assert hello["message_id"] < welcome.message_id

    fake.command("/signal AAPL", user_id=1001, first_name="Bob")
    analysis = (await fake.wait_for_messages(2, chat_id=1001, timeout=SLOW))[-1]
    assert analysis.text.startswith("AAPL 1d:")
    for label in ("Last close:", "RSI(14):", "Levels", "Not investment advice"):
        assert label in analysis.text
    assert any(e["type"] == "pre" for e in analysis.entities)  # the criteria table

    query_id = fake.callback("/prefs", user_id=1001, message_id=welcome.message_id)  # the "Preferences" button
    prefs = (await fake.wait_for_messages(3, chat_id=1001))[-1]
    assert prefs.text.startswith("Your preferences") and "Minimum confidence:" in prefs.text
    assert [a["callback_query_id"] for a in fake.callback_answers] == [query_id]

    fake.command("/nonsense", user_id=1001)
    assert "Unknown command /nonsense" in (await fake.wait_for_messages(4, chat_id=1001))[-1].text
    fake.text_message("hello there", user_id=1001)  # plain text in a private chat gets the hint
    assert "Commands start with '/'" in (await fake.wait_for_messages(5, chat_id=1001))[-1].text
    await fake.wait_until_consumed()  # every update was confirmed to the API (offset)


async def test_whole_conversation_start_prefs_stars_signal_with_chart_and_exit(fake):
    """/start -> /prefs confidence 65 -> /subscribe trader (a Stars invoice in XTR) -> pre-checkout answered ->
    successful_payment -> trader tier -> a signal delivered with its chart -> its exit as a reply to it. Wired as
    the composition root (bot.app.run_service) wires it: build_services, start_telegram,
    bot.notices, start_delivery; python-telegram-bot against the local Bot API; a free user beside."""
    alice, bob = 1001, 1002
    settings = Settings(_env_file=None, database_url="sqlite+aiosqlite:///:memory:",
                        stars_prices="hobbyist=250,trader=750,professional=2000", telegram_base_url=fake.base_url,
                        telegram_base_file_url=fake.base_file_url, telegram_messages_per_second=0,
                        **{"TELEGRAM_TOKEN": fake.token})
    clock = FixedClock(START)
    market = SimulatedMarket(seed=7, start=START, history_days=400, clock=clock)
    services = await build_services(settings, market, clock)

    async def handle(caller: Caller, text: str) -> Doc:
        return await dispatch(services.registry, services, caller, text)
    transport = await start_telegram(settings, services, handle)
    assert transport is not None and services.payments is not None
    services.notices.add(transport)  # as run_service does: plan changes reach the user in Telegram
    delivery = await start_delivery(settings, services, [transport], clock)
    [worker] = [w for w in delivery.workers if w.channel == "telegram"]
    try:
        # /start, then the minimum confidence raised
        fake.command("/start", user_id=alice, first_name="Alice")
        [welcome] = await fake.wait_for_messages(1, chat_id=alice)
        assert welcome.text.startswith("Welcome, Alice! You are subscribed (free tier)")
        fake.command("/prefs confidence 65", user_id=alice, first_name="Alice")
        saved = (await fake.wait_for_messages(2, chat_id=alice))[-1]
        assert saved.text.startswith("Preferences saved") and "Minimum confidence: 65" in saved.text

        # /subscribe trader: an offer whose button opens a Stars invoice (XTR, 30 days)
        fake.command("/subscribe trader", user_id=alice, first_name="Alice")
        offer = (await fake.wait_for_messages(3, chat_id=alice))[-1]
        assert offer.text.startswith("Trader: 750 ⭐ per 30 days")
        invoice = fake.invoice_by_link(offer.reply_markup["inline_keyboard"][0][0]["url"])
        assert (invoice.currency, invoice.total_amount, invoice.subscription_period) == (
            "XTR", 750, STARS_SUBSCRIPTION_PERIOD)

        # Telegram asks before charging; the answer is yes, and nothing changes until the payment arrives
        query_id = fake.pre_checkout(invoice.payload, user_id=alice, total_amount=750)
        assert await fake.wait_for_pre_checkout_answer(query_id) == {"ok": True, "error_message": None}
        user = await services.store.users.find_user("telegram", str(alice))
        assert user is not None and user.tier is Tier.FREE
        fake.successful_payment(invoice.payload, user_id=alice, total_amount=750, charge_id="stxWHOLE1",
                                is_recurring=True, is_first_recurring=True,
                                subscription_expiration_date=int(time.time()) + STARS_SUBSCRIPTION_PERIOD)
        thanks = (await fake.wait_for_messages(4, chat_id=alice))[-1]
        assert thanks.text.startswith("Payment received") and "trader tier until" in thanks.text
        user = await services.store.users.find_user("telegram", str(alice))
        assert user is not None and user.tier is Tier.TRADER and user.preferences.min_confidence == 65

        fake.command("/start", user_id=bob, first_name="Bob")  # stays on the free tier: no charts
        await fake.wait_for_messages(1, chat_id=bob)
        await fake.wait_until_consumed()

        # a signal is issued (the scanner publishes SignalIssued on the bus): the notifier queues it, the worker
        # sends it; the trader gets the chart as a photo with the signal as its caption, the free user text
        [last] = (await market.get_bars("AAPL", Timeframe.D1, end=START, limit=1))["close"]
        s = Signal(id="AAPL-1d-20250602-L", symbol="AAPL", asset_class=AssetClass.EQUITY, timeframe=Timeframe.D1,
                   direction=Direction.LONG, entry=float(last), target=round(last * 1.05, 2),
                   stop=round(last * 0.97, 2), confidence=70, position_size=0.05, issued_at=START,
                   expires_at=START + timedelta(days=14), reasoning="Oversold after a gap down.",
                   strategy="mean_reversion")
        await services.store.signals.add_signal(s)
        await services.bus.publish(SignalIssued(s))
        assert await worker.process_due() == 2
        [photo, *rest] = fake.messages_to(alice)[4:]
        assert photo.method == "sendphoto" and photo.photo is not None and photo.photo.startswith(PNG_MAGIC)
        assert photo.photo_filename == "AAPL-1d.png" and len(photo.photo) > 10_000
        assert photo.text.startswith("BUY AAPL (1d) · confidence 70/100\nAAPL 1d: entry")  # heading, chart caption
        assert f"Signal: {s.id}" in "\n".join(m.text for m in (photo, *rest))
        assert all(m.method == "sendmessage" for m in rest)  # the text the caption could not hold, if any
        [plain] = fake.messages_to(bob)[1:]
        assert plain.method == "sendmessage" and plain.text.startswith("BUY AAPL (1d)") and plain.photo is None
        assert worker.chart.drawn == 1  # type: ignore[union-attr]  # one drawing for every recipient

        # the exit (the tracker publishes SignalClosed): a reply to the message that carried the signal
        outcome = SignalOutcome(s.id, SignalStatus.TARGET, s.entry, START + timedelta(days=1), s.target,
                                START + timedelta(days=3), 0.05, 0.049, 0.052, -0.004, 2)
        await services.store.signals.record_outcome(outcome)
        await services.bus.publish(SignalClosed(s, outcome))
        assert await worker.process_due() == 2
        exit_alice, exit_bob = fake.messages_to(alice)[-1], fake.messages_to(bob)[-1]
        assert exit_alice.method == "sendmessage" and exit_alice.text.startswith("Target reached: BUY AAPL (1d)")
        assert exit_alice.reply_to_message_id == photo.message_id
        assert exit_alice.params["reply_parameters"]["message_id"] == photo.message_id
        assert exit_bob.reply_to_message_id == plain.message_id and exit_bob.photo is None
        assert await services.store.outbox.delivery_counts("telegram") == {DeliveryStatus.SENT: 4}
    finally:
        await transport.stop()
        await delivery.close()
        await services.store.close()


async def test_group_commands_quote_and_ignore_other_bots(fake, served):
    fake.command("/help@SomeOtherBot", user_id=1001, chat_id=-100777)
    cmd = fake.command(f"/help@{served.bot_username}", user_id=1001, chat_id=-100777)
    [reply] = await fake.wait_for_messages(1, chat_id=-100777)
    await fake.wait_until_consumed()
    assert reply.text.startswith("Commands") and reply.reply_to_message_id == cmd["message_id"]
    assert len(fake.messages_to(-100777)) == 1  # the command for another bot got no answer


async def test_long_button_commands_travel_as_short_keys(fake):
    long_command = "/prefs symbols " + ",".join(f"SYM{i}" for i in range(30))
    seen: list[tuple[Caller, str]] = []

    async def handle(caller: Caller, text: str) -> Doc:
        seen.append((caller, text))
        return Doc(heading=f"ran {len(text)} characters", buttons=(Button("Short", "/signals"), Button("Long", long_command)))
    transport = transport_for(fake)
    await transport.start(handle)
    try:
        fake.command("/menu", user_id=42, first_name="Dana", last_name="Scully")
        [menu] = await fake.wait_for_messages(1, chat_id=42)
        (_, short), (_, key) = menu.buttons
        assert short == "/signals"
        assert key.startswith("#") and len(key.encode()) <= MAX_CALLBACK_DATA
        fake.callback(key, user_id=42, first_name="Dana", last_name="Scully")
        await fake.wait_for_messages(2, chat_id=42)
        assert seen[-1] == (Caller("telegram", "42", "42", "Dana Scully"), long_command)
        fake.callback("#forgotten", user_id=42)  # e.g. a button from before a restart
        await fake.wait_for_calls("answerCallbackQuery", 2)
        assert "expired" in fake.callback_answers[-1]["text"]
        assert len(seen) == 2
    finally:
        await asyncio.wait_for(transport.stop(), 10)


# -- delivery ---------------------------------------------------------------------------------------------
async def test_send_returns_the_message_id_and_replies(fake, sender):
    ref = await sender.send("2002", Doc(heading="BUY AAPL", fields=(("Entry", "187.20"),)))
    [first] = fake.messages_to(2002)
    assert ref == str(first.message_id)
    exit_ref = await sender.send("2002", Doc(heading="Target reached: BUY AAPL"), reply_to=ref)
    second = fake.messages_to(2002)[-1]
    assert exit_ref == str(second.message_id) != ref
    assert second.reply_to_message_id == first.message_id and second.allow_sending_without_reply is True
    await sender.send("2002", Doc(heading="the original is gone"), reply_to="99999")  # still delivered
    assert fake.messages_to(2002)[-1].text == "the original is gone"


@pytest.mark.parametrize(("fault", "permanent", "retry_after", "words"), [
    ({"status": 429, "retry_after": 7}, False, 7.0, "retry in 7"),
    ({"status": 403}, True, None, "blocked by the user"),
    ({"status": 403, "description": "Forbidden: user is deactivated"}, True, None, "deactivated"),
    ({"status": 400, "description": "Bad Request: chat not found"}, True, None, "chat not found"),
    ({"status": 400, "description": "Bad Request: message is too long"}, False, None, "too long"),
    ({"status": 500}, False, None, "Internal Server Error"),
    ({"status": 502}, False, None, "Bad Gateway"),
    ({"status": 0, "delay": 2.0}, False, None, "may have been delivered"),  # slower than the read timeout
])
async def test_telegram_errors_become_delivery_errors(fake, sender, fault, permanent, retry_after, words):
    fake.fail(chat_id=3003, **fault)
    with pytest.raises(DeliveryError) as info:
        await sender.send("3003", Doc(heading="hello"))
    assert info.value.permanent is permanent
    assert info.value.retry_after == retry_after
    assert words.lower() in str(info.value).lower()
    assert fake.token not in str(info.value)
    await sender.send("3004", Doc(heading="another chat is unaffected"))
    assert fake.messages_to(3004)


async def test_concurrent_fan_out_with_faults_maps_every_outcome(fake):
    transport = transport_for(fake, messages_per_second=0, read_timeout=5.0)
    await transport.initialize()
    fake.fail(429, retry_after=3, times=None, probability=0.05)
    fake.fail(500, times=None, probability=0.05)
    for chat in range(9000, 9300, 30):
        fake.block(chat)
    sem = asyncio.Semaphore(32)
    doc = Doc(heading="BUY AAPL", fields=(("Entry", "187.20"),), buttons=(Button("Details", "/signal AAPL"),))

    async def one(chat: int) -> tuple[int, str | DeliveryError]:
        async with sem:
            try:
                return chat, await transport.send(str(chat), doc)
            except DeliveryError as exc:
                return chat, exc
    try:
        outcomes = await asyncio.gather(*(one(chat) for chat in range(9000, 9300)))
    finally:
        await transport.stop()
    ok = {chat: ref for chat, ref in outcomes if isinstance(ref, str)}
    errors = {chat: exc for chat, exc in outcomes if isinstance(exc, DeliveryError)}
    assert {m.chat_id: str(m.message_id) for m in fake.sent} == ok  # a success is exactly one recorded message
    assert {c for c, e in errors.items() if e.permanent} == set(range(9000, 9300, 30))
    limited = [e for e in errors.values() if e.retry_after is not None]
    assert limited and all(e.retry_after == 3 and not e.permanent for e in limited)
    server = [e for e in errors.values() if not e.permanent and e.retry_after is None]
    assert server and all("Internal Server Error" in str(e) for e in server)
    assert len(ok) + len(errors) == 300


async def test_a_long_doc_is_split_into_several_messages(fake, sender):
    rows = tuple((f"SYM{i:03d}", f"{100 + i * 0.37:.2f}", "oversold & <cheap>" if i % 7 == 0 else "neutral")
                 for i in range(400))
    doc = Doc(heading="Scan <results>", body="Every symbol & its state.", table=Table(("symbol", "close", "state"), rows),
              buttons=(Button("Refresh", "/scan"),), note="End of list.")
    await sender.send("5005", Doc(heading="earlier"))
    earlier = fake.messages_to(5005)[0]
    ref = await sender.send("5005", doc, reply_to=str(earlier.message_id))
    parts = fake.messages_to(5005)[1:]
    assert len(parts) >= 3 and all(p.method == "sendmessage" and p.parse_mode == "HTML" for p in parts)
    assert all(len(p.raw) <= 4096 for p in parts)  # and the fake parsed each one like Telegram
    assert ref == str(parts[0].message_id)
    assert parts[0].reply_to_message_id == earlier.message_id
    assert all(p.reply_to_message_id is None for p in parts[1:])
    assert [p.buttons for p in parts] == [[]] * (len(parts) - 1) + [[("Refresh", "/scan")]]
    assert all(p.raw.count("<pre>") == p.raw.count("</pre>") == 1 for p in parts[1:-1])  # closed and reopened
    text = "\n".join(p.text for p in parts)
    assert all(f"{sym}  {close}" in text for sym, close, _ in rows)
    assert text.count("oversold & <cheap>") == sum(1 for r in rows if r[2] != "neutral")
    assert parts[-1].text.endswith("End of list.")


async def test_a_doc_with_an_image_is_a_photo_with_caption(fake, sender):
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
    doc = Doc(heading="AAPL 1d", fields=(("RSI(14)", "24.1"),), image=Image(png, "aapl.png", "entry, target, stop"),
              buttons=(Button("Details", "/signal AAPL 1d"),))
    ref = await sender.send("6006", doc)
    [photo] = fake.messages_to(6006)
    assert photo.method == "sendphoto" and photo.photo == png and photo.photo_filename == "aapl.png"
    assert photo.raw.startswith("<b>AAPL 1d</b>\n<i>entry, target, stop</i>") and "RSI(14): 24.1" in photo.text
    assert photo.buttons == [("Details", "/signal AAPL 1d")] and ref == str(photo.message_id)

    long = Doc(heading="Equity curve", body="x " * 2000, image=Image(png), buttons=(Button("More", "/performance"),))
    await sender.send("6006", long)
    photo2, *texts = fake.messages_to(6006)[1:]
    assert photo2.method == "sendphoto" and len(photo2.text) <= 1024 and texts
    assert photo2.buttons == [] and texts[-1].buttons == [("More", "/performance")]


async def test_delivery_worker_over_telegram(fake, sender, tmp_path):
    """The outbox through the real transport: 403 deactivates, 429 waits retry_after, the exit is a reply."""
    from storage import Database, Stores

    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}")
    await db.upgrade()
    clock = FixedClock(START)
    store = Stores.over(db, clock)
    for uid in (7001, 7002, 7003):
        await store.users.upsert_user("telegram", str(uid), str(uid), f"user {uid}")
    s = Signal(id="AAPL-1d-20250602-L", symbol="AAPL", asset_class=AssetClass.EQUITY, timeframe=Timeframe.D1,
               direction=Direction.LONG, entry=100, target=104, stop=98, confidence=70, position_size=0.05,
               issued_at=START, expires_at=START + timedelta(days=14), reasoning="Oversold.", strategy="mean_reversion")
    await store.signals.add_signal(s)
    worker = DeliveryWorker(sender, store, clock)
    notifier = Notifier(store, clock, {"telegram"}, wake=worker.wake)
    fake.block(7002)
    fake.rate_limit(retry_after=5, chat_id=7003)
    await notifier.on_signal_issued(SignalIssued(s))
    await worker.process_due()
    assert [m.chat_id for m in fake.sent] == [7001]
    blocked = await store.users.find_user("telegram", "7002")
    assert blocked is not None and not blocked.active
    assert await worker.process_due() == 0  # 7003 waits for retry_after
    clock.advance(timedelta(seconds=6))
    await worker.process_due()
    assert sorted(m.chat_id for m in fake.sent) == [7001, 7003]
    first = {m.chat_id: m for m in fake.sent}
    assert all(m.text.startswith("BUY AAPL") and ("Details", "/signal AAPL 1d") in m.buttons for m in first.values())

    outcome = SignalOutcome(s.id, SignalStatus.TARGET, 100.5, START, 104, START + timedelta(days=2), 0.035, 0.034,
                            0.04, -0.01, 2)
    await store.signals.record_outcome(outcome)
    await notifier.on_signal_closed(SignalClosed(s, outcome))
    await worker.process_due()
    exits = [m for m in fake.sent if m.text.startswith("Target reached")]
    assert sorted((m.chat_id, m.reply_to_message_id) for m in exits) == [
        (7001, first[7001].message_id), (7003, first[7003].message_id)]
    assert await store.outbox.count(DeliveryStatus.SENT) == 4 and await store.outbox.count(DeliveryStatus.FAILED) == 1
    await store.close()


async def test_html_the_api_refuses_is_sent_again_as_plain_text(fake, sender):
    fake.fail(400, "Bad Request: can't parse entities: unsupported start tag", method="sendMessage", chat_id=8008)
    ref = await sender.send("8008", Doc(heading="Heading", fields=(("Entry", "1 < 2"),), buttons=(Button("B", "/b"),)))
    [plain] = fake.messages_to(8008)
    assert ref == str(plain.message_id) and plain.parse_mode is None
    assert plain.text.startswith("Heading") and "1 < 2" in plain.text and plain.buttons == [("B", "/b")]


async def test_one_chat_is_served_in_order_while_chats_run_concurrently(fake):
    log: list[str] = []
    release = asyncio.Event()

    async def handle(caller: Caller, text: str) -> Doc:
        log.append(f"{caller.chat_id} {text} begins")
        if text == "/slow":
            await release.wait()
        log.append(f"{caller.chat_id} {text} ends")
        return Doc(heading=text)
    transport = transport_for(fake)
    await transport.start(handle)
    try:
        fake.command("/slow", user_id=11)
        fake.command("/quick", user_id=11)  # same chat: waits for /slow
        fake.command("/other", user_id=22)  # another chat: not held up
        await fake.wait_for_messages(1, chat_id=22)
        assert "11 /quick begins" not in log
        release.set()
        await fake.wait_for_messages(2, chat_id=11)
        assert [m.text for m in fake.messages_to(11)] == ["/slow", "/quick"]
        assert log.index("11 /slow ends") < log.index("11 /quick begins")
    finally:
        await asyncio.wait_for(transport.stop(), 10)


async def test_stop_is_prompt_while_a_long_poll_is_open(fake):
    transport = transport_for(fake, poll_timeout=30.0)

    async def handle(caller: Caller, text: str) -> Doc:
        return Doc(heading="ok")
    await transport.start(handle)
    await fake.wait_for_calls("deleteWebhook")
    await asyncio.sleep(0.2)  # a getUpdates is now waiting on the server
    await asyncio.wait_for(transport.stop(), 10)
    await transport.stop()  # twice is fine
    with pytest.raises(DeliveryError):
        await transport.send("1", Doc(heading="after stop"))


async def test_a_wrong_token_fails_at_start(fake):
    transport = TelegramTransport("999:wrong", base_url=fake.base_url)
    with pytest.raises(DeliveryError) as info:
        await transport.initialize()
    assert "TELEGRAM_TOKEN" in str(info.value) and "999:wrong" not in str(info.value)


# -- the renderer's properties ----------------------------------------------------------------------------
class TagBalance(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        self.stack.append(tag)

    def handle_endtag(self, tag):  # noqa: ANN001
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)

    def handle_data(self, data):  # noqa: ANN001
        self.text.append(data)


def parse(part: str) -> str:
    p = TagBalance()
    p.feed(part)
    p.close()
    assert not p.errors and not p.stack, (p.errors, p.stack, part[:200])
    return "".join(p.text)


def squash(text: str) -> str:
    return "".join(text.split())


def expected_text(doc: Doc) -> str:
    pieces = [doc.heading, doc.image.caption if doc.image else "", doc.body]
    for name, value in doc.fields:
        pieces.append(f"{name}:{value}" if squash(name) else value)
    if doc.table is not None:
        pieces.extend(render_table(doc.table))
    pieces.append(doc.note)
    return squash("".join(pieces))


words = st.text(max_size=30) | st.sampled_from(
    ["a & b", "<b>", "</pre>", "&amp;", "x" * 70, "😀" * 5, "  ", "\n", "AAPL", "-2.4"])
long_text = st.lists(words, max_size=40).map(" ".join) | st.lists(words, max_size=12).map("\n".join) | \
    st.builds(lambda w, n: w * n, words, st.integers(0, 400))
docs = st.builds(
    Doc,
    heading=long_text,
    body=long_text,
    fields=st.lists(st.tuples(words, long_text), max_size=8).map(tuple),
    table=st.none() | st.builds(
        Table, st.lists(words, min_size=1, max_size=4).map(tuple),
        st.lists(st.lists(words, min_size=4, max_size=4).map(tuple), max_size=60).map(tuple)),
    image=st.none() | st.builds(Image, st.just(b"png"), st.just("c.png"), words),
    note=long_text,
)


def check_parts(doc: Doc, parts: list[str], limit: int, first_limit: int | None = None) -> None:
    for i, part in enumerate(parts):
        room = first_limit if (i == 0 and first_limit is not None) else limit
        assert len(part.encode("utf-16-le")) // 2 <= room  # Telegram counts UTF-16 code units
        text = parse(part)  # tags balanced (html.parser)
        telegram_text, _ = parse_telegram_html(part)  # and Telegram's own parse accepts it
        assert telegram_text == text and text.strip()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(doc=docs, limit=st.sampled_from([64, 100, 333, 4096]))
def test_any_doc_renders_within_limits_balanced_and_complete(doc, limit):
    parts = render_html(doc, limit=limit)
    check_parts(doc, parts, limit)
    shown = squash("".join(parse(p) for p in parts))
    assert shown == (expected_text(doc) or "…")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(doc=docs)
def test_parts_split_at_line_boundaries(doc):
    [unsplit] = render_html(doc, limit=10**9)
    if any(len(line.encode("utf-16-le")) > 2 * 4000 for line in unsplit.split("\n")):
        return  # a line longer than a message is cut inside; covered above
    whole = parse(unsplit).split("\n")
    parts = render_html(doc)
    check_parts(doc, parts, 4096)
    position = 0
    for part in parts:
        lines = parse(part).split("\n")
        while whole[position:position + len(lines)] != lines:  # each part is a run of whole lines, in order
            position += 1
            assert position < len(whole), (lines[:3], part[:200])
        position += len(lines)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(doc=docs)
def test_a_photo_caption_fits_1024(doc):
    rendered = render_for_telegram(Doc(**{**{f: getattr(doc, f) for f in ("heading", "body", "fields", "table", "note")},
                                          "image": Image(b"png", caption="chart")}))
    assert rendered.caption is not None
    if rendered.caption:
        check_parts(doc, [rendered.caption], 4096, first_limit=1024)
    check_parts(doc, list(rendered.messages), 4096)


@given(st.text(max_size=200))
def test_callback_data_fits_64_bytes_and_round_trips(command):
    codec = CallbackCommands()
    data = codec.encode(command)
    assert 1 <= len(data.encode()) <= MAX_CALLBACK_DATA
    assert codec.decode(data) == command.strip()


def test_callback_keys_are_bounded():
    codec = CallbackCommands(capacity=3)
    keys = [codec.encode("/x " + "y" * 80 + str(i)) for i in range(5)]
    assert [codec.decode(k) for k in keys] == [None, None] + ["/x " + "y" * 80 + str(i) for i in (2, 3, 4)]


def test_markup_is_escaped_and_styled():
    [part] = render_html(Doc(heading="A <b> & c", body="1 < 2", fields=(("Entry", "<x>"),),
                             table=Table(("k", "v"), (("a", "&"),)), note="n"))
    assert part == ("<b>A &lt;b&gt; &amp; c</b>\n\n1 &lt; 2\n\n<b>Entry</b>: &lt;x&gt;\n\n"
                    "<pre>  k  v\n  -  -\n  a  &amp;</pre>\n\n<i>n</i>")
    with pytest.raises(HtmlEntityError):
        parse_telegram_html("<b>unclosed")
    assert re.fullmatch(r"…", render_html(Doc(heading=" "))[0])
