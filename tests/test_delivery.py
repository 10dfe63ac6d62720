"""Notifier and delivery worker against the real store: exact recipients, nothing lost or doubled across a restart."""
from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from bot.delivery.notifier import Notifier
from bot.delivery.worker import DeliveryWorker
from bot.views.doc import Doc
from core.clock import FixedClock
from core.domain import (
    AssetClass, DeliveryStatus, Direction, Preferences, QuietHours, Signal, SignalOutcome, SignalStatus, Tier,
    Timeframe,
)
from core.errors import DeliveryError
from core.events import SignalClosed, SignalIssued
from storage import Database, SqlStore
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


async def open_store(path) -> SqlStore:  # noqa: ANN001
    db = Database(f"sqlite+aiosqlite:///{path}")
    await db.create_all()
    return SqlStore(db)


async def add_users(store: SqlStore, n: int, **prefs) -> list[int]:  # noqa: ANN003
    ids = []
    for i in range(n):
        u = await store.upsert_user("console", f"u{i}", f"chat{i}", f"user {i}")
        if prefs:
            await store.set_preferences(u.id, Preferences(**prefs))
        ids.append(u.id)
    return ids


async def test_recipients_follow_tier_and_preferences(tmp_path):
    store = await open_store(tmp_path / "a.db")
    clock = FixedClock(NOW)
    everyone = await add_users(store, 3)
    picky = await store.upsert_user("console", "picky", "chat-picky", "")
    await store.set_preferences(picky.id, Preferences(min_confidence=90))
    fx_fan = await store.upsert_user("console", "fx", "chat-fx", "")
    await store.set_tier(fx_fan.id, Tier.TRADER)
    gone = await store.upsert_user("console", "gone", "chat-gone", "")
    await store.set_active(gone.id, False)
    other_platform = await store.upsert_user("telegram", "42", "42", "")
    notifier = Notifier(store, clock, {"console"}, wake=lambda: None)

    for s in (signal(), signal("EURUSD-1d-20240305-L", AssetClass.FX)):
        await store.add_signal(s)
        await notifier.on_signal_issued(SignalIssued(s))
    assert await notifier.on_signal_issued(SignalIssued(signal())) == 0  # idempotent
    rows = await store.claim_due("console", NOW, 100)
    got = {(d.signal_id, d.user_id) for d in rows}
    expected = {("AAPL-1d-20240305-L", u) for u in everyone + [fx_fan.id]} | {("EURUSD-1d-20240305-L", fx_fan.id)}
    assert got == expected
    assert other_platform.id not in {d.user_id for d in rows}
    await store.close()


async def test_restart_in_the_middle_of_deliveries_loses_and_doubles_nothing(tmp_path):
    path = tmp_path / "outbox.db"
    store = await open_store(path)
    clock = FixedClock(NOW)
    users = await add_users(store, 40)
    s = signal()
    await store.add_signal(s)
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

    store = await open_store(path)  # the restart
    requeued = await store.requeue_stale_sending()
    assert requeued > 0
    again = RecordingTransport()
    worker = DeliveryWorker(again, store, clock, batch=15)
    while await worker.process_due():
        pass
    chats = [c for c, _, _ in first_round + again.sent]
    assert sorted(chats) == sorted(f"chat{i}" for i in range(40))  # each exactly once
    assert await store.count(DeliveryStatus.SENT) == 40
    assert users
    await store.close()


async def test_exit_is_a_reply_and_failures_are_retried_or_deactivate(tmp_path):
    store = await open_store(tmp_path / "b.db")
    clock = FixedClock(NOW)
    await add_users(store, 3)
    s = signal()
    await store.add_signal(s)
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
    blocked = await store.find_user("console", "u2")
    assert not blocked.active

    outcome = SignalOutcome(s.id, SignalStatus.TARGET, 100.5, NOW, 104, NOW + timedelta(days=2), 0.035, 0.034,
                            0.04, -0.01, 2)
    await store.record_outcome(outcome)
    await notifier.on_signal_closed(SignalClosed(s, outcome))
    await worker.process_due()
    exits = [(c, r) for c, h, r in transport.sent if h.startswith("Target reached")]
    assert sorted(exits) == [("chat0", "m1"), ("chat1", "m2")]
    await store.close()


async def test_quiet_hours_defer_and_stale_signals_are_skipped(tmp_path):
    store = await open_store(tmp_path / "c.db")
    clock = FixedClock(NOW)  # 15:00 UTC
    await add_users(store, 1, quiet_hours=QuietHours("14:00", "18:00", "UTC"))
    s = signal()
    await store.add_signal(s)
    transport = RecordingTransport()
    worker = DeliveryWorker(transport, store, clock)
    await Notifier(store, clock, {"console"}, wake=worker.wake).on_signal_issued(SignalIssued(s))
    assert await worker.process_due() == 0
    clock.advance(timedelta(hours=3))
    assert await worker.process_due() == 1 and len(transport.sent) == 1
    await store.close()
