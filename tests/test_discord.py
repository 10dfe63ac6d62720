"""Discord through the real discord.py against a local Discord (tests/fakes/discord_api.py: HTTP API and
gateway), and the embed renderer's properties."""
from __future__ import annotations

import asyncio
import re
import time
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.app import build_services
from bot.commands.registry import Caller, dispatch
from bot.delivery.notifier import Notifier
from bot.delivery.setup import start_delivery
from bot.delivery.worker import DeliveryWorker
from bot.http_server import start_http
from bot.settings import Settings
from bot.transports.discord import DiscordTransport, SlashCommand, start_discord
from bot.views.charts import signal_chart
from bot.views.discord_embed import (
    EMPTY, MAX_BUTTON_LABEL, MAX_DESCRIPTION, MAX_EMBEDS, MAX_FIELD_NAME, MAX_FIELD_VALUE, MAX_FIELDS, MAX_FOOTER,
    MAX_TITLE, MAX_TOTAL, button_rows, embed_length, escape_markdown, render_embeds, units,
)
from bot.views.doc import Button, Doc, Image, Table
from bot.views.telegram_html import CallbackCommands
from bot.views.text import render_table
from core.clock import FixedClock
from core.domain import AssetClass, DeliveryStatus, Direction, Signal, SignalOutcome, SignalStatus, Tier, Timeframe
from core.errors import DeliveryError
from core.events import SignalClosed, SignalIssued
from core.market_data import SimulatedMarket
from tests.conftest import make_bars, utc
from tests.fakes.discord_api import FakeDiscord, SentMessage, embed_problems
from tests.fakes.stripe_api import API_KEY, WEBHOOK_SECRET, FakeStripe, WebhookSender

START = utc(2025, 6, 2, 12)
SLOW = 60.0  # the first /signal in a process compiles pandas-ta's numba kernels
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- fixtures -------------------------------------------------------------------------------------------
@pytest.fixture
async def fake():
    async with FakeDiscord() as api:
        yield api


def transport_for(fake: FakeDiscord, **kwargs) -> DiscordTransport:  # noqa: ANN003
    kwargs.setdefault("guild_ready_timeout", 0.05)
    return DiscordTransport(fake.token, api_base=fake.api_base, **kwargs)


@pytest.fixture
async def services():
    clock = FixedClock(START)
    market = SimulatedMarket(seed=7, start=START, history_days=400, clock=clock)
    svc = await build_services(Settings(database_url="sqlite+aiosqlite:///:memory:", _env_file=None), market, clock)
    yield svc
    await svc.store.close()


@pytest.fixture
async def sender(fake):
    """A transport that only sends (logged in, no gateway)."""
    transport = transport_for(fake)
    await transport.initialize()
    yield transport
    await transport.stop()


def a_signal() -> Signal:
    return Signal(id="AAPL-1d-20250602-L", symbol="AAPL", asset_class=AssetClass.EQUITY, timeframe=Timeframe.D1,
                  direction=Direction.LONG, entry=100, target=104, stop=98, confidence=70, position_size=0.05,
                  issued_at=START, expires_at=START + timedelta(days=14), reasoning="Oversold.",
                  strategy="mean_reversion")


def field_map(message: SentMessage) -> dict[str, str]:
    return {f["name"]: f["value"] for e in message.embeds for f in e.get("fields", [])}


# -- a whole conversation -------------------------------------------------------------------------------
async def test_conversation_start_prefs_signal_delivery_and_exit(fake, services):
    docs: list[Doc] = []

    async def handle(caller: Caller, text: str) -> Doc:
        doc = await dispatch(services.registry, services, caller, text)
        docs.append(doc)
        return doc

    transport = await start_discord(
        Settings(_env_file=None, DISCORD_TOKEN=fake.token, discord_api_base=fake.api_base), services, handle)
    assert transport is not None
    try:
        # slash commands from the registry, each with the optional "args" option; no privileged intent
        visible = services.registry.visible(False)
        published = {c["name"]: c for c in fake.commands["global"]}
        assert list(published) == [c.name for c in visible]
        for c in visible:
            assert published[c.name]["description"] == c.summary[:100]
            [option] = published[c.name]["options"]
            assert option["name"] == "args" and option["type"] == 3 and option["required"] is False
        assert fake.identify is not None and fake.identify["intents"] == 1  # guilds only
        user_id = 4242

        # /start: acknowledged with a deferred response, answered by a followup in the user's DM
        start = fake.slash("start", user_id=user_id, username="bob", global_name="Bob")
        [welcome] = await fake.wait_for_messages(1)
        assert start.responses == [{"type": 5}]
        assert welcome.via == "followup" and welcome.channel_id == fake.dm_of(user_id)
        assert welcome.title.startswith("Welcome, Bob! You are subscribed")
        assert welcome.embeds[0]["color"] == 0x2ECC71  # tone success
        assert "Signals per month" in field_map(welcome)
        assert [label for label, _ in welcome.buttons] == ["Preferences", "Active signals", "Help"]
        user = await services.store.users.find_user("discord", str(user_id))
        assert user is not None and user.active and user.chat_id == str(user_id) and user.display_name == "Bob"

        # /prefs, then a change, then the "Preferences" button under the welcome
        fake.slash("prefs", user_id=user_id, username="bob", global_name="Bob")
        prefs = (await fake.wait_for_messages(2))[-1]
        assert prefs.title == "Your preferences" and field_map(prefs)["Minimum confidence"] == "off"
        fake.slash("prefs", "confidence 65", user_id=user_id, username="bob", global_name="Bob")
        saved = (await fake.wait_for_messages(3))[-1]
        assert saved.title == "Preferences saved" and field_map(saved)["Minimum confidence"] == "65"
        fake.press(welcome, "Preferences", user_id=user_id, username="bob", global_name="Bob")
        again = (await fake.wait_for_messages(4))[-1]
        assert again.title == "Your preferences" and field_map(again)["Minimum confidence"] == "65"

        # /signal AAPL: the analysis, with its chart as an attachment shown in the embed when the command has one
        fake.slash("signal", "AAPL", user_id=user_id, username="bob", global_name="Bob")
        analysis = (await fake.wait_for_messages(5, timeout=SLOW))[-1]
        assert analysis.title.startswith("AAPL 1d")
        assert "RSI(14)" in analysis.text() and "Not investment advice" in analysis.text()
        signal_doc_returned = docs[-1]
        if signal_doc_returned.image is not None:
            [(name, data)] = analysis.files.items()
            assert data == signal_doc_returned.image.data and data.startswith(PNG_MAGIC)
            assert analysis.embeds[0]["image"]["url"] == analysis.raw["attachments"][0]["url"]
            assert analysis.raw["attachments"][0]["filename"] == name
        else:
            assert analysis.files == {}

        # a signal delivered by the delivery worker: a DM with the signal and its buttons
        s = a_signal()
        await services.store.signals.add_signal(s)
        worker = DeliveryWorker(transport, services.store, services.clock)
        notifier = Notifier(services.store, services.clock, {"discord"}, wake=worker.wake)
        await notifier.on_signal_issued(SignalIssued(s))
        assert await worker.process_due() == 1
        delivered = fake.messages[-1]
        assert delivered.via == "channel" and delivered.channel_id == fake.dm_of(user_id)
        assert delivered.title.startswith("BUY AAPL (1d)") and field_map(delivered)["Signal"] == s.id
        assert "Not investment advice" in delivered.embeds[-1]["footer"]["text"]
        assert [label for label, _ in delivered.buttons] == [
            "Details", "Track record", "Similar setups", "I took it", "I skipped it"]

        # its "Details" button runs /signal AAPL 1d for the person who pressed it
        fake.press(delivered, "Details", user_id=user_id, username="bob", global_name="Bob")
        details = (await fake.wait_for_messages(7, timeout=SLOW))[-1]
        assert details.title.startswith("AAPL 1d") and details.via == "followup"

        # the exit, as a reply to the delivered signal
        outcome = SignalOutcome(s.id, SignalStatus.TARGET, 100.5, START, 104, START + timedelta(days=2), 0.035,
                                0.034, 0.04, -0.01, 2)
        await services.store.signals.record_outcome(outcome)
        await notifier.on_signal_closed(SignalClosed(s, outcome))
        assert await worker.process_due() == 1
        exit_message = fake.messages[-1]
        assert exit_message.title.startswith("Target reached: BUY AAPL")
        assert exit_message.reference == {"type": 0, "message_id": str(delivered.id),
                                          "channel_id": str(delivered.channel_id)}
        assert exit_message.raw["type"] == 19  # a reply
        assert await services.store.outbox.count(DeliveryStatus.SENT) == 2
    finally:
        await transport.stop()


async def test_whole_conversation_start_prefs_stripe_signal_with_chart_and_exit(fake, tmp_path):
    """/start -> /prefs confidence 65 -> /subscribe trader (a Stripe Checkout Session, through the official SDK
    against the local Stripe API) -> Stripe's webhooks, signed with the endpoint secret, posted to the service's
    HTTP server -> trader tier (and a DM saying so) -> a signal delivered as a DM with its chart attached -> its
    exit as a reply. Wired as bot.app.run_service wires it: build_services, start_discord,
    bot.notices, start_http, start_delivery; discord.py against the local Discord."""
    user_id = 4242
    async with FakeStripe({"price_hobbyist_m": 900, "price_trader_m": 2900, "price_pro_m": 9900}) as stripe_api:
        settings = Settings(
            _env_file=None, database_url=f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}", http_port=0,
            public_url="https://bot.example.com", stripe_api_base=stripe_api.api_base,
            stripe_prices="hobbyist=price_hobbyist_m,trader=price_trader_m,professional=price_pro_m",
            discord_api_base=fake.api_base,
            **{"STRIPE_API_KEY": API_KEY, "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET, "DISCORD_TOKEN": fake.token})
        clock = FixedClock(START)
        market = SimulatedMarket(seed=7, start=START, history_days=400, clock=clock)
        services = await build_services(settings, market, clock)
        transport = await start_discord(settings, services, dispatch_for(services))
        assert transport is not None and services.payments is not None
        services.notices.add(transport)  # as run_service does: plan changes reach the user on Discord
        server = await start_http(settings, services, payments=services.payments)
        assert server is not None
        delivery = await start_delivery(settings, services, [transport], clock)
        [worker] = [w for w in delivery.workers if w.channel == "discord"]
        try:
            # /start and /prefs, answered in the user's DM
            fake.slash("start", user_id=user_id, username="bob", global_name="Bob")
            [welcome] = await fake.wait_for_messages(1)
            dm = fake.dm_of(user_id)
            assert welcome.channel_id == dm and welcome.title.startswith("Welcome, Bob! You are subscribed (free")
            fake.slash("prefs", "confidence 65", user_id=user_id, username="bob", global_name="Bob")
            saved = (await fake.wait_for_messages(2))[-1]
            assert saved.title == "Preferences saved" and field_map(saved)["Minimum confidence"] == "65"

            # /subscribe trader: a Checkout Session made at Stripe, its page linked in the answer
            fake.slash("subscribe", "trader", user_id=user_id, username="bob", global_name="Bob")
            offer = (await fake.wait_for_messages(3))[-1]
            [(session_id, session)] = stripe_api.sessions.items()
            assert session["url"] in offer.text().replace("\\", "")  # (markdown escapes removed)
            user = await services.store.users.find_user("discord", str(user_id))
            assert user is not None and user.tier is Tier.FREE
            assert session["metadata"] == {"user_id": str(user.id), "tier": "trader"}

            # the customer pays; Stripe posts its three events, each signed, to the service's webhook endpoint
            events = stripe_api.complete_checkout(session_id)
            replies = await WebhookSender(f"{server.url}/stripe/webhook").send_all(events)
            assert [(r.status, r.body["outcome"]) for r in replies] == [(200, "processed")] * 3
            user = await services.store.users.find_user("discord", str(user_id))
            assert user is not None and user.tier is Tier.TRADER and user.preferences.min_confidence == 65
            told = (await fake.wait_for_messages(4))[-1]  # bot.notices: a DM about the new tier
            assert told.channel_id == dm and "trader" in told.text().lower()

            # a signal is issued (SignalIssued on the bus): a DM with the signal and its chart attached
            [last] = (await market.get_bars("AAPL", Timeframe.D1, end=START, limit=1))["close"]
            s = Signal(id="AAPL-1d-20250602-L", symbol="AAPL", asset_class=AssetClass.EQUITY,
                       timeframe=Timeframe.D1, direction=Direction.LONG, entry=float(last),
                       target=round(last * 1.05, 2), stop=round(last * 0.97, 2), confidence=70, position_size=0.05,
                       issued_at=START, expires_at=START + timedelta(days=14), reasoning="Oversold after a gap down.",
                       strategy="mean_reversion")
            await services.store.signals.add_signal(s)
            await services.bus.publish(SignalIssued(s))
            assert await worker.process_due() == 1
            delivered = fake.messages[-1]
            assert delivered.via == "channel" and delivered.channel_id == dm and delivered.reference is None
            assert delivered.title.startswith("BUY AAPL (1d)") and field_map(delivered)["Signal"] == s.id
            [(name, png)] = delivered.files.items()
            assert name == "AAPL-1d.png" and png.startswith(PNG_MAGIC)
            [attachment] = delivered.raw["attachments"]
            assert (attachment["width"], attachment["height"]) == (1000, 650)
            assert delivered.embeds[0]["image"]["url"] == attachment["url"]  # shown inside the signal's embed
            assert delivered.embeds[0]["description"].startswith("AAPL 1d: entry")  # the chart's caption
            assert [label for label, _ in delivered.buttons] == [
            "Details", "Track record", "Similar setups", "I took it", "I skipped it"]

            # the exit (SignalClosed on the bus): a reply to the delivered signal
            outcome = SignalOutcome(s.id, SignalStatus.TARGET, s.entry, START + timedelta(days=1), s.target,
                                    START + timedelta(days=3), 0.05, 0.049, 0.052, -0.004, 2)
            await services.store.signals.record_outcome(outcome)
            await services.bus.publish(SignalClosed(s, outcome))
            assert await worker.process_due() == 1
            exit_message = fake.messages[-1]
            assert exit_message.title.startswith("Target reached: BUY AAPL (1d)") and exit_message.files == {}
            assert exit_message.reference == {"type": 0, "message_id": str(delivered.id), "channel_id": str(dm)}
            assert exit_message.raw["type"] == 19  # a reply
            assert await services.store.outbox.delivery_counts("discord") == {DeliveryStatus.SENT: 2}
        finally:
            await transport.stop()
            await server.stop()
            await delivery.close()
            await services.payments.close()
            await services.store.close()


async def test_a_signal_chart_travels_as_an_attachment_shown_in_the_embed(fake):
    closes = 100 * np.exp(np.cumsum(np.random.default_rng(3).normal(0, 0.01, 170)))
    bars = make_bars(closes, volume=np.random.default_rng(4).uniform(1e5, 1e6, 170))
    png = await asyncio.to_thread(signal_chart, bars, "AAPL", "1d", closes[-1], closes[-1] * 1.04, closes[-1] * 0.97)

    async def handle(caller: Caller, text: str) -> Doc:
        return Doc(heading="AAPL 1d: BUY setup", fields=(("Entry", "100.00"),),
                   image=Image(png, "AAPL 1d chart.png", "entry, target, stop"), buttons=(Button("Refresh", text),))
    transport = transport_for(fake, commands=[SlashCommand("signal", "analysis", "/signal SYMBOL [TIMEFRAME]")])
    await transport.start(handle)
    try:
        fake.slash("signal", "AAPL")
        [message] = await fake.wait_for_messages(1)
    finally:
        await transport.stop()
    assert list(message.files) == ["AAPL_1d_chart.png"] and message.files["AAPL_1d_chart.png"] == png
    [attachment] = message.raw["attachments"]
    assert (attachment["width"], attachment["height"]) == (1000, 650)
    assert message.embeds[0]["image"]["url"] == attachment["url"]
    assert message.embeds[0]["description"].startswith("entry, target, stop")
    assert message.buttons == [("Refresh", "cmd:0:/signal AAPL")]


# -- delivery ---------------------------------------------------------------------------------------------
async def test_send_creates_a_dm_returns_a_reference_and_replies(fake, sender):
    ref = await sender.send("5005", Doc(heading="BUY AAPL", fields=(("Entry", "187.20"),)))
    dm = fake.dm_of(5005)
    [first] = fake.messages_in(dm)
    assert ref == f"{dm}/{first.id}" and first.reference is None
    reply_ref = await sender.send("5005", Doc(heading="Target reached"), reply_to=ref)
    reply = fake.messages_in(dm)[-1]
    assert reply_ref == f"{dm}/{reply.id}" and reply.reference["message_id"] == str(first.id)
    assert fake.calls("POST", "/users/@me/channels") == 1  # the DM channel is cached
    await sender.send("5005", Doc(heading="the original is gone"), reply_to="not-a-reference")
    assert fake.messages_in(dm)[-1].reference is None

    await sender.send("channel:777", Doc(heading="to a channel"))
    assert fake.messages_in(777)[0].title == "to a channel"
    with pytest.raises(DeliveryError) as info:
        await sender.send("@someone", Doc(heading="x"))
    assert info.value.permanent


async def test_a_short_429_is_waited_out_and_retried_by_discord_py(fake, sender):
    fake.fail(429, retry_after=0.4, path="/messages")
    begin = time.monotonic()
    ref = await sender.send("6006", Doc(heading="after the wait"))
    assert time.monotonic() - begin >= 0.4
    assert fake.calls("POST", "/messages") == 2 and fake.messages[-1].title == "after the wait"
    assert ref.endswith(str(fake.messages[-1].id))


async def test_a_long_429_becomes_retry_after_at_once(fake, sender):
    fake.fail(429, retry_after=45.0, path="/messages")
    begin = time.monotonic()
    with pytest.raises(DeliveryError) as info:
        await sender.send("6007", Doc(heading="later"))
    assert time.monotonic() - begin < 5
    assert info.value.retry_after == 45.0 and not info.value.permanent
    assert not fake.messages


@pytest.mark.parametrize(("status", "code", "message", "permanent"), [
    (403, 50007, "Cannot send messages to this user", True),
    (403, 50013, "Missing Permissions", True),
    (404, 10003, "Unknown Channel", True),
    (400, 50006, "Cannot send an empty message", False),
])
async def test_discord_errors_become_delivery_errors(fake, sender, status, code, message, permanent):
    fake.fail(status, code=code, message=message, path="/messages")
    with pytest.raises(DeliveryError) as info:
        await sender.send("7007", Doc(heading="hello"))
    assert info.value.permanent is permanent and info.value.retry_after is None
    assert message in str(info.value) and str(code) in str(info.value)
    assert fake.token not in str(info.value)
    await sender.send("7008", Doc(heading="another user is unaffected"))
    assert fake.messages[-1].title == "another user is unaffected"


async def test_embeds_discord_refuses_are_sent_again_as_plain_text(fake, sender):
    fake.fail(400, code=50035, message="Invalid Form Body", path="/messages")
    doc = Doc(heading="Heading", fields=(("Entry", "1 < 2"),), note="@everyone look", buttons=(Button("B", "/b"),))
    ref = await sender.send("7010", doc)
    [plain] = fake.messages_in(fake.dm_of(7010))
    assert ref.endswith(f"/{plain.id}") and plain.embeds == []
    assert plain.raw["content"].startswith("Heading") and "1 < 2" in plain.raw["content"]
    assert "@everyone" not in plain.raw["content"]  # mentions are defused
    assert [label for label, _ in plain.buttons] == ["B"]


async def test_a_server_error_is_retried_by_discord_py(fake, sender):
    fake.fail(500, path="/messages")
    await sender.send("7009", Doc(heading="after a 500"))
    assert fake.calls("POST", "/messages") == 2 and fake.messages[-1].title == "after a 500"


async def test_delivery_worker_over_discord(fake, sender, tmp_path):
    """The outbox through the real transport: 403 deactivates, 429 waits retry_after, the exit is a reply."""
    from storage import Database, Stores

    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}")
    await db.upgrade()
    clock = FixedClock(START)
    store = Stores.over(db, clock)
    for uid in (8001, 8002, 8003):
        await store.users.upsert_user("discord", str(uid), str(uid), f"user {uid}")
    s = a_signal()
    await store.signals.add_signal(s)
    worker = DeliveryWorker(sender, store, clock)
    notifier = Notifier(store, clock, {"discord"}, wake=worker.wake)
    fake.block(8002)
    await notifier.on_signal_issued(SignalIssued(s))
    fake.dm_channels.setdefault(8003, 9_000_003)
    fake.fail(429, retry_after=40, path="/channels/9000003/messages")
    await worker.process_due()
    assert [m.channel_id for m in fake.messages] == [fake.dm_of(8001)]
    blocked = await store.users.find_user("discord", "8002")
    assert blocked is not None and not blocked.active  # 403 / 50007: the user blocked the bot
    assert await worker.process_due() == 0  # 8003 waits for retry_after
    clock.advance(timedelta(seconds=41))
    await worker.process_due()
    assert sorted(m.channel_id for m in fake.messages) == sorted([fake.dm_of(8001), fake.dm_of(8003)])
    first = {m.channel_id: m for m in fake.messages}

    outcome = SignalOutcome(s.id, SignalStatus.STOP, 100.5, START, 98, START + timedelta(days=2), -0.025, -0.026,
                            0.01, -0.03, 2)
    await store.signals.record_outcome(outcome)
    await notifier.on_signal_closed(SignalClosed(s, outcome))
    await worker.process_due()
    exits = [m for m in fake.messages if m.title.startswith("Stopped out")]
    assert sorted((m.channel_id, m.reference["message_id"]) for m in exits) == sorted(
        (c, str(m.id)) for c, m in first.items())
    assert await store.outbox.count(DeliveryStatus.SENT) == 4 and await store.outbox.count(DeliveryStatus.FAILED) == 1
    await store.close()


async def test_a_long_doc_is_split_over_messages_within_limits(fake, sender):
    rows = tuple((f"SYM{i:03d}", f"{100 + i * 0.37:.2f}", "oversold *cheap*" if i % 7 == 0 else "neutral")
                 for i in range(600))
    doc = Doc(heading="Scan results", body="Every symbol and its state. " * 300,
              fields=tuple((f"f{i}", f"value {i}") for i in range(40)), table=Table(("symbol", "close", "state"), rows),
              buttons=(Button("Refresh", "/scan"),), note="End of list.")
    earlier = await sender.send("9009", Doc(heading="earlier"))
    ref = await sender.send("9009", doc, reply_to=earlier)
    parts = fake.messages_in(fake.dm_of(9009))[1:]
    assert len(parts) >= 2  # and the fake accepted each one under Discord's limits
    assert ref.endswith(f"/{parts[0].id}")
    assert parts[0].reference is not None and all(p.reference is None for p in parts[1:])
    assert [bool(p.buttons) for p in parts] == [False] * (len(parts) - 1) + [True]
    text = "\n".join(p.text() for p in parts)
    assert all(f"{sym}  {close}" in text for sym, close, _ in rows)
    assert parts[-1].embeds[-1]["footer"]["text"] == "End of list."


async def test_buttons_with_long_commands_and_expired_buttons(fake):
    long_command = "/prefs symbols " + ",".join(f"SYM{i}" for i in range(40))
    older_command = "/prefs symbols " + ",".join(f"OLD{i}" for i in range(40))
    seen: list[tuple[Caller, str]] = []

    async def handle(caller: Caller, text: str) -> Doc:
        seen.append((caller, text))
        return Doc(heading=f"ran {len(text)}", buttons=(
            Button("Short", "/signals"), Button("Older", older_command), Button("Long", long_command),
            Button("Same", "/signals")))
    # room for one long command: the "Older" key is forgotten once "Long" is encoded (as after a restart)
    transport = transport_for(fake, commands=[SlashCommand("menu", "a menu", "/menu")],
                              callback_commands=CallbackCommands(capacity=1))
    await transport.start(handle)
    try:
        fake.slash("menu", user_id=31, username="dana", global_name="Dana Scully")
        [menu] = await fake.wait_for_messages(1)
        ids = [cid for _, cid in menu.buttons]
        assert len(set(ids)) == 4 and all(len(cid) <= 100 for cid in ids)  # unique even for the same command
        fake.press(menu, "Long", user_id=31, username="dana", global_name="Dana Scully")
        await fake.wait_for_messages(2)
        assert seen[-1] == (Caller("discord", "31", "31", "Dana Scully"), long_command)

        pressed = fake.press(menu, "Older", user_id=31)
        notice = (await fake.wait_for_messages(3))[-1]
        assert pressed.responses[0]["type"] == 4 and pressed.responses[0]["data"]["flags"] == 64  # ephemeral
        assert "expired" in notice.raw["content"] and notice.via == "callback"
        assert len(seen) == 2
    finally:
        await transport.stop()


async def test_guild_commands_are_published_to_the_guild_and_answered_there(fake):
    seen: list[Caller] = []

    async def handle(caller: Caller, text: str) -> Doc:
        seen.append(caller)
        return Doc(heading=f"ran {text}")
    transport = transport_for(fake, guild_id=555, commands=[SlashCommand("help", "the commands", "/help")])
    await transport.start(handle)
    try:
        assert [c["name"] for c in fake.commands["555"]] == ["help"] and "global" not in fake.commands
        fake.slash("help", "me", user_id=66, username="eve", global_name="Eve", guild_id=555)
        [answer] = await fake.wait_for_messages(1)
    finally:
        await transport.stop()
    assert answer.title == "ran /help me" and answer.channel_id == 556  # the guild channel it was used in
    assert seen == [Caller("discord", "66", "66", "Eve")]  # signals still go to the user's DMs


async def test_one_user_is_served_in_order(fake):
    log: list[str] = []
    release = asyncio.Event()

    async def handle(caller: Caller, text: str) -> Doc:
        log.append(f"{caller.platform_user_id} {text} begins")
        if text == "/slow":
            await release.wait()
        log.append(f"{caller.platform_user_id} {text} ends")
        return Doc(heading=text)
    transport = transport_for(fake, commands=[SlashCommand("slow", "s", "/slow"), SlashCommand("quick", "q", "/quick")])
    await transport.start(handle)
    try:
        fake.slash("slow", user_id=11)
        await asyncio.sleep(0.2)
        fake.slash("quick", user_id=11)  # the same user: waits for /slow
        fake.slash("quick", user_id=22)  # someone else: not held up
        await fake.wait_for_messages(1)
        assert "11 /quick begins" not in log
        release.set()
        await fake.wait_for_messages(3)
        assert log.index("11 /slow ends") < log.index("11 /quick begins")
    finally:
        await transport.stop()


async def test_a_wrong_token_fails_at_start_without_naming_it(fake):
    transport = DiscordTransport("wrong.token.value", api_base=fake.api_base)
    with pytest.raises(DeliveryError) as info:
        await transport.initialize()
    assert "DISCORD_TOKEN" in str(info.value) and "wrong.token.value" not in str(info.value)
    await transport.stop()
    with pytest.raises(DeliveryError):
        await transport.send("1", Doc(heading="not started"))


async def test_start_discord_without_a_token_or_with_an_unreachable_api(services):
    assert await start_discord(Settings(_env_file=None), services, dispatch_for(services)) is None
    unreachable = Settings(_env_file=None, DISCORD_TOKEN="x.y.z", discord_api_base="http://127.0.0.1:9/api/v10")
    assert await start_discord(unreachable, services, dispatch_for(services)) is None


async def test_stop_is_prompt_and_idempotent(fake):
    transport = transport_for(fake)

    async def handle(caller: Caller, text: str) -> Doc:
        return Doc(heading="ok")
    await transport.start(handle)
    await asyncio.wait_for(transport.stop(), 10)
    await transport.stop()
    with pytest.raises(DeliveryError):
        await transport.send("1", Doc(heading="after stop"))


def dispatch_for(services):  # noqa: ANN001, ANN201
    async def handle(caller: Caller, text: str) -> Doc:
        return await dispatch(services.registry, services, caller, text)
    return handle


# -- the renderer's properties ----------------------------------------------------------------------------
_CODE = re.compile(r"```\n(.*?)\n```", re.S)


def unmark(text: str) -> str:
    """Visible text of rendered markdown: escapes resolved, unescaped markup characters (** ...) removed."""
    return re.sub(r"\\(.)|\*", lambda m: m.group(1) or "", text, flags=re.S)


def shown_text(messages) -> str:  # noqa: ANN001
    pieces = []
    for m in messages:
        for e in m.embeds:
            pieces.append(unmark(e.get("title", "")))
            description = e.get("description", "")
            position = 0
            for block in _CODE.finditer(description):
                pieces.append(unmark(description[position:block.start()]))
                pieces.append(block.group(1))
                position = block.end()
            pieces.append(unmark(description[position:]))
            for f in e.get("fields", []):
                pieces.extend((unmark(f["name"]), unmark(f["value"])))
            pieces.append(e.get("footer", {}).get("text", ""))
    return squash("".join(pieces))


def squash(text: str) -> str:
    return "".join(text.replace(EMPTY, "").split())


def expected_text(doc: Doc) -> str:
    pieces = [doc.heading, doc.image.caption if doc.image else "", doc.body]
    for name, value in doc.fields:
        pieces.extend((name, value))
    if doc.table is not None and (doc.table.headers or doc.table.rows):
        pieces.extend(render_table(doc.table))
    pieces.append(doc.note)
    return squash("".join(pieces).replace("\r", "\n"))


words = st.text(max_size=30) | st.sampled_from(
    ["a * b", "_x_", "**", "`code`", "```", "# head", "- item", "1. one", "> quote", "\\", "<@123>", "[l](u)",
     "x" * 70, "😀" * 5, "  ", "\n", "AAPL", "-2.4"])
long_text = st.lists(words, max_size=40).map(" ".join) | st.lists(words, max_size=12).map("\n".join) | \
    st.builds(lambda w, n: w * n, words, st.integers(0, 600))
docs = st.builds(
    Doc,
    heading=long_text,
    body=long_text,
    fields=st.lists(st.tuples(words | long_text, long_text), max_size=40).map(tuple),
    table=st.none() | st.builds(
        Table, st.lists(words, min_size=1, max_size=4).map(tuple),
        st.lists(st.lists(words, min_size=4, max_size=4).map(tuple), max_size=80).map(tuple)),
    image=st.none() | st.builds(Image, st.just(b"png"), st.sampled_from(["c.png", "my chart.png", "../x"]), words),
    note=long_text,
    tone=st.sampled_from(["info", "success", "warning", "error"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(doc=docs)
def test_any_doc_renders_within_discords_limits_and_completely(doc):
    messages = render_embeds(doc)
    assert messages
    for m in messages:
        assert 1 <= len(m.embeds) <= MAX_EMBEDS
        assert sum(embed_length(e) for e in m.embeds) <= MAX_TOTAL
        for e in m.embeds:
            assert units(e.get("title", "")) <= MAX_TITLE
            assert units(e.get("description", "")) <= MAX_DESCRIPTION
            assert len(e.get("fields", [])) <= MAX_FIELDS
            assert all(units(f["name"]) <= MAX_FIELD_NAME and units(f["value"]) <= MAX_FIELD_VALUE
                       for f in e.get("fields", []))
            assert units(e.get("footer", {}).get("text", "")) <= MAX_FOOTER
            assert e["description"].count("```") % 2 == 0 if "description" in e else True
        files = {"x"} | ({m.embeds[0]["image"]["url"][13:]} if m.carries_image else set())
        assert embed_problems(list(m.embeds), files) == []  # and the fake's independent check agrees
    assert [m.carries_image for m in messages] == [doc.image is not None] + [False] * (len(messages) - 1)
    expected = expected_text(doc)
    if expected:
        assert shown_text(messages) == expected
    else:  # nothing to read: an image alone, empty fields, or "…"
        assert shown_text(messages) in ("", "…")


@given(st.text(max_size=300))
def test_markdown_escaping_round_trips(text):
    assert unmark(escape_markdown(text)) == text.replace("\r\n", "\n").replace("\r", "\n")


@given(st.lists(st.builds(Button, st.text(max_size=120), st.text(max_size=50)), max_size=40))
def test_buttons_fit_in_five_rows_of_five(buttons):
    rows = button_rows(buttons)
    assert len(rows) <= 5 and all(1 <= len(r) <= 5 for r in rows)
    assert all(1 <= len(b.label) <= MAX_BUTTON_LABEL for r in rows for b in r)
    assert [b.command for r in rows for b in r] == [b.command for b in buttons[:25]]


def test_embed_layout_of_a_signal():
    doc = Doc(heading="BUY AAPL (1d) · confidence 72/100", body="Oversold: z-score -2.4, RSI 24.",
              fields=(("Entry", "187.20 (next bar's open)"), ("Signal", "AAPL-1d-20250602-L")),
              table=Table(("k", "v"), (("a", "`b`"),)), note="Not investment advice.", tone="warning")
    [message] = render_embeds(doc)
    first, table = message.embeds
    assert first["title"] == "BUY AAPL (1d) · confidence 72/100" and first["color"] == 0xF1C40F
    assert first["description"] == "Oversold: z-score -2.4, RSI 24."
    assert first["fields"] == [{"name": "Entry", "value": "187.20 (next bar's open)", "inline": True},
                               {"name": "Signal", "value": "AAPL-1d-20250602-L", "inline": True}]
    assert table["description"] == f"```\n  k  v\n  -  ---\n  a  `{EMPTY}b`{EMPTY}\n```"
    assert table["footer"] == {"text": "Not investment advice."}
    assert escape_markdown("*x* _y_ <@1> # no") == "\\*x\\* \\_y\\_ \\<@1\\> # no"
    assert escape_markdown("# heading\n- item\n2. step") == "\\# heading\n\\- item\n2\\. step"


def test_an_empty_doc_is_one_valid_embed():
    [message] = render_embeds(Doc(heading=" "))
    assert message.embeds == ({"type": "rich", "color": 0x3498DB, "description": "…"},)


def test_a_charted_doc_names_its_attachment_safely():
    png = signal_chart(make_bars(np.linspace(100, 110, 80)), "EURUSD", "1h")
    [message] = render_embeds(Doc(heading="EURUSD", image=Image(png, "../../etc/passwd")))
    assert message.carries_image and message.embeds[0]["image"]["url"] == "attachment://etc_passwd.png"
