"""Notifier and delivery worker against the real store: exact recipients, nothing lost or doubled across a restart."""
from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import pytest

from bot.delivery.channel import ChatChannel
from bot.delivery.notifier import Notifier
from bot.delivery.retry import RetryPolicy
from bot.delivery.worker import DeliveryWorker
from bot.views.doc import Doc
from core.clock import FixedClock
from core.domain import (
    AssetClass, DeliveryKind, DeliveryStatus, Direction, Preferences, QuietHours, Signal, SignalOutcome, SignalStatus, Tier,
    Timeframe,
)
from core.errors import DeliveryError
from core.events import SignalClosed, SignalIssued
from storage import Database, Stores
from core.domain import DeliveryUpdate
from tests.conftest import utc

NOW = utc(2024, 3, 5, 15, 0)


def signal(sid="AAPL-1d-20240305-L", asset=AssetClass.EQUITY) -> Signal:
    return Signal(id=sid, symbol="AAPL", asset_class=asset, timeframe=Timeframe.D1, direction=Direction.LONG,
                  entry=100, target=104, stop=98, confidence=70, position_size=0.05, issued_at=NOW,
                  expires_at=NOW + timedelta(days=14), reasoning="because", strategy="mean_reversion")


class RecordingTransport:
    name = "console"

    def __init__(self, fail: dict[str, DeliveryError] | None = None, delay: float = 0.0) -> None:
        self.sent: list[tuple[str, str, str | None]] = []
        self.fail = fail or {}
        self.delay = delay
        self.progress = asyncio.Event()

    async def send(self, chat_id: str, doc: Doc, reply_to: str | None = None) -> str:
        await asyncio.sleep(self.delay)
        if chat_id in self.fail:
            raise self.fail.pop(chat_id)
        self.sent.append((chat_id, doc.heading, reply_to))
        if len(self.sent) >= 10:
            self.progress.set()
        return f"m{len(self.sent)}"


async def open_stores(url: str) -> Stores:
    db = Database(url)
    await db.upgrade()
    return Stores.over(db)


async def add_users(store: Stores, n: int, **prefs) -> list[int]:  # noqa: ANN003
    ids = []
    for i in range(n):
        u = await store.users.upsert_user("console", f"u{i}", f"chat{i}", f"user {i}")
        if prefs:
            await store.users.set_preferences(u.id, Preferences(**prefs))
        ids.append(u.id)
    return ids


async def test_recipients_follow_tier_and_preferences(db_url):
    store = await open_stores(db_url("a"))
    clock = FixedClock(NOW)
    everyone = await add_users(store, 3)
    picky = await store.users.upsert_user("console", "picky", "chat-picky", "")
    await store.users.set_preferences(picky.id, Preferences(min_confidence=90))
    fx_fan = await store.users.upsert_user("console", "fx", "chat-fx", "")
    await store.users.set_tier(fx_fan.id, Tier.TRADER)
    gone = await store.users.upsert_user("console", "gone", "chat-gone", "")
    await store.users.set_active(gone.id, False)
    other_platform = await store.users.upsert_user("telegram", "42", "42", "")
    notifier = Notifier(store, clock, {"console"}, wake=lambda: None)

    for s in (signal(), signal("EURUSD-1d-20240305-L", AssetClass.FX)):
        await store.signals.add_signal(s)
        await notifier.on_signal_issued(SignalIssued(s))
    assert await notifier.on_signal_issued(SignalIssued(signal())) == 0  # idempotent
    rows = await store.outbox.claim_due("console", NOW, 100)
    got = {(d.signal_id, d.user_id) for d in rows}
    expected = {("AAPL-1d-20240305-L", u) for u in everyone + [fx_fan.id]} | {("EURUSD-1d-20240305-L", fx_fan.id)}
    assert got == expected
    assert other_platform.id not in {d.user_id for d in rows}
    await store.close()


async def test_restart_in_the_middle_of_deliveries_loses_and_doubles_nothing(db_url):
    path = db_url("outbox")
    store = await open_stores(path)
    clock = FixedClock(NOW)
    users = await add_users(store, 40)
    s = signal()
    await store.signals.add_signal(s)
    transport = RecordingTransport(delay=0.002)
    worker = DeliveryWorker(transport, store, clock, batch=15, poll_seconds=0.01)
    await Notifier(store, clock, {"console"}, wake=worker.wake).on_signal_issued(SignalIssued(s))
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(transport.progress.wait(), 5)
    task.cancel()  # stop in the middle of a batch
    with pytest.raises(asyncio.CancelledError):
        await task
    first_round = list(transport.sent)
    assert 10 <= len(first_round) < 40
    await store.close()

    store = await open_stores(path)  # the restart
    # a cancelled worker finished what was in flight and put the rest of its batch back: nothing is stale
    assert await store.outbox.requeue_stale_sending() == 0
    assert await store.outbox.count(DeliveryStatus.SENDING) == 0
    assert await store.outbox.count(DeliveryStatus.SENT) == len(first_round)
    again = RecordingTransport()
    worker = DeliveryWorker(again, store, clock, batch=15)
    while await worker.process_due():
        pass
    chats = [c for c, _, _ in first_round + again.sent]
    assert sorted(chats) == sorted(f"chat{i}" for i in range(40))  # each exactly once
    assert await store.outbox.count(DeliveryStatus.SENT) == 40
    assert users
    await store.close()


async def test_exit_is_a_reply_and_failures_are_retried_or_deactivate(db_url):
    store = await open_stores(db_url("b"))
    clock = FixedClock(NOW)
    await add_users(store, 3)
    s = signal()
    await store.signals.add_signal(s)
    transport = RecordingTransport(fail={"chat1": DeliveryError("timeout"),
                                         "chat2": DeliveryError("blocked", permanent=True)})
    worker = DeliveryWorker(transport, store, clock)
    notifier = Notifier(store, clock, {"console"}, wake=worker.wake)
    await notifier.on_signal_issued(SignalIssued(s))
    await worker.process_due()
    assert [c for c, _, _ in transport.sent] == ["chat0"]
    clock.advance(timedelta(seconds=5))  # past the first backoff
    await worker.process_due()
    assert sorted(c for c, _, _ in transport.sent) == ["chat0", "chat1"]
    blocked = await store.users.find_user("console", "u2")
    assert not blocked.active

    outcome = SignalOutcome(s.id, SignalStatus.TARGET, 100.5, NOW, 104, NOW + timedelta(days=2), 0.035, 0.034,
                            0.04, -0.01, 2)
    await store.signals.record_outcome(outcome)
    await notifier.on_signal_closed(SignalClosed(s, outcome))
    await worker.process_due()
    exits = [(c, r) for c, h, r in transport.sent if h.startswith("Target reached")]
    assert sorted(exits) == [("chat0", "m1"), ("chat1", "m2")]
    await store.close()


async def test_quiet_hours_defer_and_stale_signals_are_skipped(db_url):
    store = await open_stores(db_url("c"))
    clock = FixedClock(NOW)  # 15:00 UTC
    await add_users(store, 1, quiet_hours=QuietHours("14:00", "18:00", "UTC"))
    s = signal()
    await store.signals.add_signal(s)
    transport = RecordingTransport()
    worker = DeliveryWorker(transport, store, clock)
    await Notifier(store, clock, {"console"}, wake=worker.wake).on_signal_issued(SignalIssued(s))
    assert await worker.process_due() == 0
    clock.advance(timedelta(hours=3))
    assert await worker.process_due() == 1 and len(transport.sent) == 1
    await store.close()


# -- retries, pauses, blocked users, priorities ----------------------------------------------------------
class ScriptedTransport:
    """Fails per chat with the errors queued for it (in order), then sends."""

    name = "console"

    def __init__(self, script: dict[str, list[DeliveryError]] | None = None) -> None:
        self.script = script or {}
        self.sent: list[str] = []
        self.tried: list[str] = []

    async def send(self, chat_id: str, doc: Doc, reply_to: str | None = None) -> str:
        self.tried.append(chat_id)
        errors = self.script.get(chat_id)
        if errors:
            raise errors.pop(0)
        self.sent.append(chat_id)
        return f"m{len(self.sent)}"


async def queued(db_url, n_users: int, name: str = "d"):  # noqa: ANN001, ANN201
    store = await open_stores(db_url(name))
    ids = await add_users(store, n_users)
    s = signal()
    await store.signals.add_signal(s)
    return store, ids, s


async def test_backoff_with_jitter_is_stored_in_the_row_and_the_worker_gives_up(db_url):
    store, [uid], s = await queued(db_url, 1)
    clock = FixedClock(NOW)
    transport = ScriptedTransport({"chat0": [DeliveryError("502 from the platform")] * 5})
    policy = RetryPolicy(max_attempts=3, base_seconds=10, max_seconds=100, jitter=0.5)
    worker = DeliveryWorker(transport, store, clock, retry=policy, rng=random.Random(1))
    await Notifier(store, clock, {"console"}, wake=worker.wake).on_signal_issued(SignalIssued(s))
    for attempt, ceiling in ((1, 10.0), (2, 20.0)):
        assert await worker.process_due() == 1
        [row] = await store.outbox.claim_due("console", NOW + timedelta(days=1), 1)  # peek: claim and put back
        await store.outbox.record_attempts([DeliveryUpdate(row.id, DeliveryStatus.PENDING, refund_attempt=True)])
        wait = (row.not_before - clock.now()).total_seconds()
        assert row.attempts - 1 == attempt and ceiling / 2 <= wait <= ceiling  # exponential, jittered
        assert await worker.process_due() == 0  # not due yet
        clock.at = row.not_before
    assert await worker.process_due() == 1
    final = await store.outbox.get_delivery(row.id)
    assert final.status is DeliveryStatus.FAILED and final.attempts == 3
    assert final.error.startswith("gave up after 3 attempts: 502")
    assert transport.tried == ["chat0"] * 3 and transport.sent == []
    await store.close()


async def test_retry_after_pauses_the_whole_channel_and_does_not_count_as_an_attempt(db_url):
    store, ids, s = await queued(db_url, 3)
    clock = FixedClock(NOW)
    transport = ScriptedTransport({"chat0": [DeliveryError("429", retry_after=30)]})
    worker = DeliveryWorker(transport, store, clock)
    await Notifier(store, clock, {"console"}, wake=worker.wake).on_signal_issued(SignalIssued(s))
    assert await worker.process_due() == 3
    assert transport.tried == ["chat0"]  # the others of the batch were not tried during the pause
    assert worker.paused_until == NOW + timedelta(seconds=30)
    assert await store.outbox.count(DeliveryStatus.PENDING) == 3
    clock.advance(timedelta(seconds=29))
    assert await worker.process_due() == 0  # still paused: nothing is claimed
    clock.advance(timedelta(seconds=1))
    assert await worker.process_due() == 3 and sorted(transport.sent) == ["chat0", "chat1", "chat2"]
    rows = [await store.outbox.get_delivery(i) for i in range(1, 4)]
    assert [r.attempts for r in rows] == [1, 1, 1]  # the 429 did not use up an attempt
    await store.close()


async def test_a_user_who_blocked_the_bot_is_unsubscribed_and_their_queue_cancelled(db_url):
    store, ids, s = await queued(db_url, 2)
    clock = FixedClock(NOW)
    later = signal("MSFT-1d-20240305-L")
    await store.signals.add_signal(later)
    await store.outbox.enqueue([(later.id, ids[0], DeliveryKind.SIGNAL, "console", NOW + timedelta(hours=2), None)])
    transport = ScriptedTransport({"chat0": [DeliveryError("Forbidden: bot was blocked by the user", permanent=True)]})
    worker = DeliveryWorker(transport, store, clock)
    await Notifier(store, clock, {"console"}, wake=worker.wake).on_signal_issued(SignalIssued(s))
    assert [u.id for u in await store.users.active_users()] == ids  # cached
    await worker.process_due()
    assert transport.sent == ["chat1"]
    assert [u.id for u in await store.users.active_users()] == [ids[1]]  # the cache saw the change
    assert (await store.outbox.delivery_counts()) == {DeliveryStatus.SENT: 1, DeliveryStatus.FAILED: 1,
                                                      DeliveryStatus.SKIPPED: 1}
    clock.advance(timedelta(hours=3))
    assert await worker.process_due() == 0
    await store.close()


async def test_higher_tiers_are_served_first_when_a_queue_forms(db_url):
    store, ids, s = await queued(db_url, 8)
    clock = FixedClock(NOW)
    tiers = [Tier.FREE, Tier.PROFESSIONAL, Tier.HOBBYIST, Tier.TRADER] * 2
    for uid, tier in zip(ids, tiers, strict=True):
        await store.users.set_tier(uid, tier)
    transport = ScriptedTransport()
    worker = DeliveryWorker(transport, store, clock, batch=3)
    await Notifier(store, clock, {"console"}, wake=worker.wake).on_signal_issued(SignalIssued(s))
    while await worker.process_due():
        pass
    served = [tiers[int(chat.removeprefix("chat"))] for chat in transport.sent]
    assert served == sorted(tiers, key=lambda t: -t.rank)
    await store.close()


async def test_concurrent_sends_are_each_recorded_once(db_url):
    store, ids, s = await queued(db_url, 60)
    clock = FixedClock(NOW)
    transport = RecordingTransport(delay=0.005)
    worker = DeliveryWorker(transport, store, clock, batch=25, concurrency=8)
    await Notifier(store, clock, {"console"}, wake=worker.wake).on_signal_issued(SignalIssued(s))
    while await worker.process_due():
        pass
    assert sorted(c for c, _, _ in transport.sent) == sorted(f"chat{i}" for i in range(60))
    assert await store.outbox.delivery_counts() == {DeliveryStatus.SENT: 60}
    assert len({(await store.outbox.get_delivery(i)).message_ref for i in range(1, 61)}) == 60
    await store.close()


async def test_an_old_outbox_is_upgraded_to_one_row_per_channel(tmp_path):
    """A database from before migrations and before deliveries were per channel: adopted into the migrations,
    its deliveries' unique constraint widened, every row kept."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import sqlite as sqlite_dialect

    from storage import migrate
    from storage.tables import DELIVERIES

    store = await open_stores(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    [uid] = await add_users(store, 1)
    s = signal()
    await store.signals.add_signal(s)
    ddl = str(sa.schema.CreateTable(DELIVERIES).compile(dialect=sqlite_dialect.dialect()))
    old_ddl = ddl.replace('CONSTRAINT uq_deliveries_signal_user_kind_channel UNIQUE (signal_id, user_id, kind, channel)',
                          'CONSTRAINT uq_deliveries_signal_user_kind UNIQUE (signal_id, user_id, kind)')
    assert old_ddl != ddl
    old_ddl = "\n".join(line for line in old_ddl.splitlines() if "claimed_" not in line)  # columns of revision 0002
    async with store.database.engine.begin() as conn:  # the schema as it was before email and webhooks
        await conn.execute(sa.text("DROP TABLE deliveries"))
        await conn.execute(sa.text(old_ddl))
        for index in DELIVERIES.indexes:
            await conn.run_sync(lambda sync, index=index: index.create(sync))
        await conn.execute(DELIVERIES.insert().values(signal_id=s.id, user_id=uid, kind="signal", channel="console",
                                                      status="sent", created_at=NOW))
        await conn.execute(sa.text("DROP TABLE alembic_version"))  # made by create_all, before migrations
    with pytest.raises(Exception, match="ON CONFLICT"):  # the new conflict target does not match the old constraint
        await store.outbox.enqueue([(s.id, uid, DeliveryKind.SIGNAL, "email", None, None)])
    first = await migrate.upgrade(store.database)
    assert (first.adopted, first.before, first.after) == (True, migrate.BASELINE, migrate.head())
    again = await migrate.upgrade(store.database)
    assert (again.adopted, again.changed) == (False, False)
    assert await migrate.schema_diff(store.database) == []
    assert await store.outbox.count() == 1  # kept
    assert await store.outbox.enqueue([(s.id, uid, DeliveryKind.SIGNAL, "email", None, None)]) == 1
    assert await store.outbox.enqueue([(s.id, uid, DeliveryKind.SIGNAL, "console", None, None)]) == 0
    await store.close()


async def test_a_batch_that_cannot_be_prepared_goes_back_to_the_queue(db_url):
    store, ids, s = await queued(db_url, 3)
    clock = FixedClock(NOW)

    class BrokenAddressBook(ChatChannel):
        async def addresses(self, users):  # noqa: ANN001, ANN201
            raise OSError("database is locked")

    transport = ScriptedTransport()
    await Notifier(store, clock, {"console"}, wake=lambda: None).on_signal_issued(SignalIssued(s))
    with pytest.raises(OSError):
        await DeliveryWorker(BrokenAddressBook(transport, store), store, clock).process_due()
    assert await store.outbox.delivery_counts() == {DeliveryStatus.PENDING: 3}
    assert await DeliveryWorker(transport, store, clock).process_due() == 3
    assert sorted(transport.sent) == ["chat0", "chat1", "chat2"]
    assert {(await store.outbox.get_delivery(i)).attempts for i in (1, 2, 3)} == {1}  # the failed claim was refunded
    await store.close()
