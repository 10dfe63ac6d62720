"""Fan-out to 10,000 subscribers through the real worker and python-telegram-bot (TelegramTransport) against the
local Bot API (tests/fakes/telegram_bot_api.py, whose own fault injection is used) with 429 + retry_after, 403,
500 and timeouts: each eligible user gets the signal exactly once, also when the worker is stopped in the middle
(task cancelled, like SIGTERM) and a new store, transport and worker start again.

The window that cannot be closed: Telegram takes no idempotency key, so a message whose outcome is unknown is
sent again. That happens (1) when the process dies between a send and the write of its result (the second
test: exactly the rows in flight at the crash are doubled, nothing else), and (2) when a send times out after
Telegram accepted it (the third test). A timeout before Telegram took the message doubles nothing (first test)."""
from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from bot.delivery.notifier import Notifier
from bot.delivery.retry import RetryPolicy
from bot.delivery.worker import DeliveryWorker
from bot.transports.telegram import TelegramTransport
from bot.views.doc import Doc
from core.audience import admit
from core.clock import SystemClock
from core.domain import (
    AssetClass, DeliveryKind, DeliveryStatus, Direction, Preferences, Signal, Tier, Timeframe, User,
)
from core.events import SignalIssued
from storage import Database, Stores
from storage.outbox import OutboxStore
from storage.tables import DELIVERIES, PREFERENCES, USERS
from tests.fakes.telegram_bot_api import FakeBotApi

N_USERS = 10_000
TIERS = (Tier.FREE, Tier.HOBBYIST, Tier.TRADER, Tier.PROFESSIONAL)
FAST_RETRY = RetryPolicy(max_attempts=8, base_seconds=0.05, max_seconds=0.4)


def make_signal(now, sid: str = "AAPL-1d-fanout") -> Signal:  # noqa: ANN001
    return Signal(id=sid, symbol="AAPL", asset_class=AssetClass.EQUITY, timeframe=Timeframe.D1,
                  direction=Direction.LONG, entry=100, target=104, stop=98, confidence=70, position_size=0.05,
                  issued_at=now, expires_at=now + timedelta(days=3), reasoning="Oversold after a gap down.",
                  strategy="mean_reversion")


def user_row(i: int, now) -> dict:  # noqa: ANN001
    return {"id": i + 1, "platform": "telegram", "platform_user_id": str(100_000 + i), "chat_id": str(100_000 + i),
            "display_name": f"user {i}", "tier": TIERS[i % 4].value, "active": i % 17 != 0, "created_at": now}


def prefs_row(i: int) -> dict:
    min_conf = 80 if i % 10 == 3 else 50  # above the signal's 70: not eligible
    symbols = '["MSFT"]' if i % 10 == 7 else "[]"  # another symbol: not eligible
    return {"user_id": i + 1, "symbols": symbols, "asset_classes": "[]", "timeframes": "[]",
            "min_confidence": min_conf, "risk": ("low", "medium", "high")[i % 3]}


async def open_stores(url: str) -> Stores:
    db = Database(url)
    await db.upgrade()
    return Stores.over(db, SystemClock())


async def seed(path: str, n: int) -> tuple[Stores, Signal, set[str]]:
    """n telegram users in bulk, a signal; returns the chats admit() (the reference, user by user) lets in."""
    store = await open_stores(path)
    now = SystemClock().now()
    async with store.database.engine.begin() as conn:  # 10,000 upserts one by one would take a while
        await conn.execute(USERS.insert(), [user_row(i, now) for i in range(n)])
        await conn.execute(PREFERENCES.insert(), [prefs_row(i) for i in range(n)])
    store.users.invalidate_users()
    signal = make_signal(now)
    await store.signals.add_signal(signal)
    eligible = set()
    for i in range(n):
        row, p = user_row(i, now), prefs_row(i)
        user = User(id=row["id"], platform="telegram", platform_user_id=row["platform_user_id"],
                    chat_id=row["chat_id"], tier=Tier(row["tier"]), active=row["active"],
                    preferences=Preferences(symbols=frozenset({"MSFT"}) if p["symbols"] != "[]" else frozenset(),
                                            min_confidence=p["min_confidence"]))
        if admit(user, signal, now, 0).admitted:
            eligible.add(row["chat_id"])
    return store, signal, eligible


def transport_for(fake: FakeBotApi, read_timeout: float = 3.0) -> TelegramTransport:
    # no client-side rate limit: the fake's 429s are the platform's limit here. The read timeout stays well above
    # the fake's latency on a busy machine: a normal answer that arrives late would be the ambiguous case the
    # last test shows (sent, yet retried)
    return TelegramTransport(fake.token, base_url=fake.base_url, messages_per_second=0, read_timeout=read_timeout,
                             connect_timeout=2.0, pool_timeout=10.0, poll_timeout=1.0)


def worker_for(transport: TelegramTransport | object, store: Stores) -> DeliveryWorker:
    return DeliveryWorker(transport, store, SystemClock(), batch=250, concurrency=32, poll_seconds=0.02,  # type: ignore[arg-type]
                          retry=FAST_RETRY)


async def run_until_drained(worker: DeliveryWorker, store: Stores, timeout: float) -> None:
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(timeout):
            while True:
                counts = await store.outbox.delivery_counts("telegram")
                if not counts.get(DeliveryStatus.PENDING) and not counts.get(DeliveryStatus.SENDING):
                    return
                await asyncio.sleep(0.1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def errors_of(store: Stores, chats: list[str]) -> list[tuple[int, int, str | None]]:
    """(user id, attempts, last error) of these chats' rows: what a failure message needs."""
    async with store.database.engine.connect() as conn:
        rows = await conn.execute(sa.select(DELIVERIES.c.user_id, DELIVERIES.c.attempts, DELIVERIES.c.error).where(
            DELIVERIES.c.user_id.in_([int(c) - 100_000 + 1 for c in chats])))
        return [(int(u), int(a), e) for u, a, e in rows.all()]


def chats_of(fake: FakeBotApi, signal_id: str) -> Counter[str]:
    return Counter(str(m.chat_id) for m in fake.sent if signal_id in m.text)


def inject_faults(fake: FakeBotApi, blocked: list[str]) -> None:
    fake.rate_limit(retry_after=1, times=2)  # the flood limit, twice: the channel pauses 1 s each time
    fake.fail(500, times=None, probability=0.03)  # the platform's own errors, all along
    # no answer within the read timeout (then a 504 the client no longer waits for: the message was not taken)
    fake.fail(504, "Gateway Timeout", delay=3.5, times=12, probability=0.005)
    for chat in blocked:
        fake.block(chat)  # 403 until cleared


async def test_ten_thousand_subscribers_each_get_the_signal_exactly_once_across_a_restart(db_url) -> None:  # noqa: ANN001
    path = db_url("fanout")
    store, signal, eligible = await seed(path, N_USERS)
    blocked = sorted(eligible)[::97]  # about 70 eligible users who blocked the bot
    later = make_signal(signal.issued_at, "MSFT-1d-later")  # a second signal still waiting for them (quiet hours)
    await store.signals.add_signal(later)
    blocked_ids = [int(c) - 100_000 + 1 for c in blocked]
    await store.outbox.enqueue([(later.id, uid, DeliveryKind.SIGNAL, "telegram", signal.issued_at + timedelta(hours=8), None)
                                for uid in blocked_ids])

    queued = await Notifier(store, SystemClock(), {"telegram"}, wake=lambda: None).on_signal_issued(SignalIssued(signal))
    assert queued == len(eligible)

    async with FakeBotApi(validate=False) as fake:
        inject_faults(fake, blocked)
        transport = transport_for(fake)
        await transport.initialize()
        worker = worker_for(transport, store)
        task = asyncio.create_task(worker.run())
        try:
            async with asyncio.timeout(40):
                while len(fake.sent) < 3_000:
                    await asyncio.sleep(0.02)
        finally:
            task.cancel()  # stop in the middle, like SIGTERM: in-flight sends finish and are recorded
            await asyncio.gather(task, return_exceptions=True)
            await transport.stop()
        first_round = len(chats_of(fake, signal.id))
        assert 3_000 <= first_round < len(eligible) - len(blocked)
        first_messages = [str(m.chat_id) for m in fake.sent]
        await store.close()

        store = await open_stores(path)  # the restart: a new store, transport and worker
        assert await store.outbox.requeue_stale_sending() == 0  # a clean stop leaves nothing half-done
        transport = transport_for(fake)
        await transport.initialize()
        try:
            await run_until_drained(worker_for(transport, store), store, timeout=45)
        finally:
            await transport.stop()

        got = chats_of(fake, signal.id)
        assert set(got) == eligible - set(blocked)  # every eligible user who did not block the bot ...
        doubled = sorted(c for c, n in got.items() if n > 1)
        assert not doubled, f"sent twice: {doubled[:5]} {await errors_of(store, doubled[:5])}"  # ... exactly once
        counts = await store.outbox.delivery_counts("telegram")
        assert counts[DeliveryStatus.SENT] == len(eligible) - len(blocked)
        assert counts[DeliveryStatus.FAILED] == len(blocked)
        assert counts[DeliveryStatus.SKIPPED] == len(blocked)  # their other pending row was cancelled
        for chat in blocked[:5]:
            user = await store.users.find_user("telegram", chat)
            assert user is not None and not user.active
        assert not {u.chat_id for u in await store.users.active_users()} & set(blocked)
        # the faults really happened
        assert fake.calls_to("sendMessage") and any(c.status == 429 for c in fake.calls_to("sendMessage"))
        assert any(c.status == 500 for c in fake.calls_to("sendMessage"))
        assert any(c.status == 504 for c in fake.calls_to("sendMessage"))  # answered after the client gave up
        async with store.database.engine.connect() as conn:
            timed_out = (await conn.execute(sa.select(sa.func.count()).where(
                DELIVERIES.c.error.like("%may have been delivered%"), DELIVERIES.c.status == "sent"))).scalar_one()
        assert timed_out > 0  # those users still got the signal, once
        # higher tiers first: while professionals were queued nobody else was served
        tier_of = {str(100_000 + i): TIERS[i % 4] for i in range(N_USERS)}
        pros = sum(1 for c in eligible if tier_of[c] is Tier.PROFESSIONAL)
        assert {tier_of[c] for c in first_messages[: pros - 300]} == {Tier.PROFESSIONAL}
    await store.close()


class ProcessKilled(BaseException):
    """Stands for the process dying: nothing after it runs (not an Exception, so the worker does not survive it)."""


class DyingOutbox(OutboxStore):
    """Dies while writing the results of the `die_at`-th group: the messages of that group went out, unrecorded."""

    def __init__(self, db: Database, die_at: int) -> None:
        super().__init__(db, SystemClock())
        self.die_at = die_at
        self.writes = 0
        self.dead = False
        self.lost: list[int] = []  # delivery ids whose result was never written

    async def record_attempts(self, updates) -> None:  # noqa: ANN001
        self.writes += 1
        if self.dead or self.writes == self.die_at:
            self.dead = True
            self.lost.extend(u.delivery_id for u in updates)
            raise ProcessKilled
        await super().record_attempts(updates)


class DeadAfterCrash:
    """The transport of a process that died: sends nothing once the store died."""

    name = "telegram"

    def __init__(self, inner: TelegramTransport, store: DyingOutbox) -> None:
        self.inner, self.store = inner, store

    async def send(self, chat_id: str, doc: Doc, reply_to: str | None = None) -> str:
        if self.store.dead:
            raise ProcessKilled
        return await self.inner.send(chat_id, doc, reply_to)


async def test_a_hard_crash_between_send_and_record_resends_only_what_was_in_flight(db_url) -> None:  # noqa: ANN001
    path = db_url("crash")
    store, signal, eligible = await seed(path, 1_500)
    await Notifier(store, SystemClock(), {"telegram"}, wake=lambda: None).on_signal_issued(SignalIssued(signal))
    await store.close()
    async with FakeBotApi(validate=False) as fake:
        db = Database(path)
        dying = DyingOutbox(db, die_at=4)
        crashing = dataclasses.replace(Stores.over(db, SystemClock()), outbox=dying)
        transport = transport_for(fake)
        await transport.initialize()
        try:
            worker = worker_for(DeadAfterCrash(transport, dying), crashing)
            with pytest.raises(ProcessKilled):
                await asyncio.wait_for(worker.run(), 30)
            sent_before = chats_of(fake, signal.id)
            assert 0 < len(sent_before) < len(eligible)
            await crashing.close()

            store = await open_stores(path)  # the restart
            stale = await store.outbox.requeue_stale_sending()
            assert stale >= len(dying.lost) > 0
            await run_until_drained(worker_for(transport, store), store, timeout=30)
        finally:
            await transport.stop()

        got = chats_of(fake, signal.id)
        assert set(got) == eligible  # nothing lost
        doubled = {chat for chat, n in got.items() if n > 1}
        assert set(got.values()) <= {1, 2}
        # only messages that went out but whose result died with the process were sent again
        lost_chats = {str(d.user_id - 1 + 100_000) for d in [await store.outbox.get_delivery(i) for i in dying.lost] if d}
        assert doubled <= lost_chats and doubled == lost_chats & set(sent_before)
        assert len(doubled) <= worker.batch
        assert await store.outbox.count(DeliveryStatus.SENT) == len(eligible)
    await store.close()


async def test_timeout_after_the_platform_took_the_message_can_double_it(db_url) -> None:  # noqa: ANN001
    """The other side of the window: a send that times out after Telegram accepted it is retried (it might
    have been lost), so that user sees it twice. No Bot API call can tell the two cases apart."""
    path = db_url("late")
    store, signal, eligible = await seed(path, 40)
    await Notifier(store, SystemClock(), {"telegram"}, wake=lambda: None).on_signal_issued(SignalIssued(signal))
    async with FakeBotApi(validate=False) as fake:
        late_chat = sorted(eligible)[0]
        fake.slow(0.8, chat_id=late_chat)  # answers after the client's 0.5 s read timeout, but records it
        transport = transport_for(fake, read_timeout=0.5)
        await transport.initialize()
        try:
            await run_until_drained(worker_for(transport, store), store, timeout=20)
            await asyncio.sleep(1.0)  # the slow answer to the first try lands after the retry
        finally:
            await transport.stop()
        got = chats_of(fake, signal.id)
        assert set(got) == eligible
        assert {c for c, n in got.items() if n > 1} == {late_chat} and got[late_chat] == 2
    await store.close()


