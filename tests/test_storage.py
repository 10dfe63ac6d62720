"""storage/: round trips of every domain type, the delivery outbox's guarantees, bars."""
from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.domain import (
    AssetClass,
    DeliveryKind,
    DeliveryStatus,
    DeliveryUpdate,
    Direction,
    Instrument,
    Preferences,
    QuietHours,
    RiskTolerance,
    Signal,
    SignalOutcome,
    SignalStatus,
    Tier,
    Timeframe,
)
from core.clock import FixedClock
from storage import Database, Stores

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(params=["memory", "file", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_databases")("t")
    else:
        url = "sqlite+aiosqlite:///:memory:" if request.param == "memory" else f"sqlite+aiosqlite:///{tmp_path / 't.db'}"
    database = Database(url)
    await database.upgrade()
    yield database
    await database.close()


@pytest.fixture
async def file_db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'f.db'}")
    await database.upgrade()
    yield database
    await database.close()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def store(db: Database, clock: FixedClock) -> Stores:
    return Stores.over(db, clock=clock)


def make_signal(sid: str = "s1", *, symbol: str = "AAPL", issued_at: datetime = T0, **kw: object) -> Signal:
    fields: dict[str, object] = dict(
        id=sid,
        symbol=symbol,
        asset_class=AssetClass.EQUITY,
        timeframe=Timeframe.D1,
        direction=Direction.LONG,
        entry=101.25,
        target=110.5,
        stop=97.125,
        confidence=72,
        position_size=0.05,
        issued_at=issued_at,
        expires_at=issued_at + timedelta(days=10),
        reasoning="RSI(2) < 5 above the 200-day average",
        strategy="oversold",
        evidence={"rsi": 3.14159, "votes": {"lgbm": [0.61, 0.2], "news": None}, "bars": [1, 2, 3], "ok": True},
    )
    fields.update(kw)
    return Signal(**fields)  # type: ignore[arg-type]


def make_outcome(sid: str, exit_time: datetime, status: SignalStatus = SignalStatus.TARGET) -> SignalOutcome:
    return SignalOutcome(
        signal_id=sid,
        status=status,
        fill_price=101.3,
        fill_time=T0 + timedelta(days=1),
        exit_price=110.5,
        exit_time=exit_time,
        gross_return=0.0908,
        net_return=0.0888,
        mfe=0.1,
        mae=-0.012,
        bars_held=4,
    )


def assert_utc(*values: datetime | None) -> None:
    for v in values:
        assert v is not None and v.tzinfo is not None and v.utcoffset() == timedelta(0), v


# ---------------------------------------------------------------- signals


async def test_signal_round_trip_with_evidence(store: Stores) -> None:
    signal = make_signal(evidence={"f": 0.1 + 0.2, "nested": {"xs": [1.5, -2.25e-9], "np": np.float64(1.0) / 3},
                                   "n": np.int64(7), "arr": np.array([1.0, 2.0])})
    await store.signals.add_signal(signal)
    got = await store.signals.get_signal("s1")
    assert got is not None
    expected_evidence = {"f": 0.1 + 0.2, "nested": {"xs": [1.5, -2.25e-9], "np": 1.0 / 3}, "n": 7, "arr": [1.0, 2.0]}
    assert got == make_signal(evidence=expected_evidence)
    assert_utc(got.issued_at, got.expires_at)
    assert isinstance(got.timeframe, Timeframe) and isinstance(got.direction, Direction)
    assert await store.signals.get_signal("missing") is None


async def test_add_signal_is_idempotent(store: Stores) -> None:
    await store.signals.add_signal(make_signal())
    await store.signals.add_signal(make_signal())
    assert len(await store.signals.open_signals()) == 1


async def test_non_utc_input_is_stored_as_utc(store: Stores) -> None:
    eastern = timezone(timedelta(hours=-5))
    await store.signals.add_signal(make_signal(issued_at=datetime(2024, 3, 1, 7, 0, tzinfo=eastern)))
    got = await store.signals.get_signal("s1")
    assert got is not None
    assert got.issued_at == T0
    assert got.issued_at.tzinfo == timezone.utc


async def test_naive_datetime_is_refused(store: Stores) -> None:
    with pytest.raises(Exception, match="naive"):
        await store.signals.add_signal(make_signal(issued_at=datetime(2024, 1, 1)))


async def test_outcome_round_trip_and_open_signals(store: Stores) -> None:
    for i in range(3):
        await store.signals.add_signal(make_signal(f"s{i}", issued_at=T0 + timedelta(hours=i)))
    outcome = make_outcome("s1", T0 + timedelta(days=5))
    await store.signals.record_outcome(outcome)

    assert [s.id for s in await store.signals.open_signals()] == ["s0", "s2"]
    pairs = await store.signals.outcomes_since(T0)
    assert len(pairs) == 1
    signal, got = pairs[0]
    assert signal.id == "s1" and got == outcome
    assert_utc(got.fill_time, got.exit_time)
    assert await store.signals.outcomes_since(T0 + timedelta(days=6)) == []


async def test_outcomes_order(store: Stores) -> None:
    for i in range(3):
        await store.signals.add_signal(make_signal(f"s{i}"))
    await store.signals.record_outcome(make_outcome("s0", T0 + timedelta(days=3), SignalStatus.STOP))
    await store.signals.record_outcome(make_outcome("s1", T0 + timedelta(days=1)))
    await store.signals.record_outcome(make_outcome("s2", T0 + timedelta(days=2), SignalStatus.EXPIRED))
    assert [s.id for s, _ in await store.signals.outcomes_since(T0 + timedelta(days=2))] == ["s2", "s0"]
    assert [s.id for s, _ in await store.signals.recent_outcomes(2)] == ["s0", "s2"]
    assert (await store.signals.recent_outcomes(1))[0][1].status is SignalStatus.STOP
    assert await store.signals.open_signals() == []


async def test_latest_signal_for(store: Stores) -> None:
    await store.signals.add_signal(make_signal("old", issued_at=T0))
    await store.signals.add_signal(make_signal("new", issued_at=T0 + timedelta(days=1)))
    await store.signals.add_signal(make_signal("other", symbol="MSFT", issued_at=T0 + timedelta(days=2)))
    latest = await store.signals.latest_signal_for("AAPL", Timeframe.D1)
    assert latest is not None and latest.id == "new"
    assert await store.signals.latest_signal_for("AAPL", Timeframe.H1) is None


async def test_batch_signal_reads_and_writes_agree_with_the_single_ones(store: Stores) -> None:
    await store.signals.add_signals([make_signal("old", issued_at=T0), make_signal("new", issued_at=T0 + timedelta(days=1)),
                                     make_signal("tie-a", symbol="MSFT", issued_at=T0), make_signal("tie-b", symbol="MSFT", issued_at=T0)])
    await store.signals.add_signals([make_signal("new", issued_at=T0 + timedelta(days=5))])  # an existing id changes nothing
    await store.signals.add_signals([])
    assert await store.signals.existing_signal_ids(["old", "new", "nope"]) == {"old", "new"}
    keys = [("AAPL", Timeframe.D1), ("MSFT", Timeframe.D1), ("AAPL", Timeframe.H1), ("IBM", Timeframe.D1)]
    latest = await store.signals.latest_signals_for(keys)
    assert set(latest) == {("AAPL", Timeframe.D1), ("MSFT", Timeframe.D1)}
    for key, signal in latest.items():
        assert signal == await store.signals.latest_signal_for(*key)
    assert latest[("AAPL", Timeframe.D1)].issued_at == T0 + timedelta(days=1)


# ---------------------------------------------------------------- users


async def test_upsert_user_creates_then_updates(store: Stores) -> None:
    user = await store.users.upsert_user("telegram", "42", "chat-1", "Ann")
    assert user.tier is Tier.FREE and user.active and user.preferences == Preferences()
    assert_utc(user.created_at)
    await store.users.set_tier(user.id, Tier.TRADER)
    again = await store.users.upsert_user("telegram", "42", "chat-2", "Ann B")
    assert again.id == user.id
    assert (again.chat_id, again.display_name, again.tier) == ("chat-2", "Ann B", Tier.TRADER)
    other = await store.users.upsert_user("discord", "42", "c", "")
    assert other.id != user.id
    assert await store.users.find_user("telegram", "42") == again
    assert await store.users.get_user(user.id) == again
    assert await store.users.find_user("telegram", "nobody") is None
    assert await store.users.get_user(999) is None


async def test_preferences_round_trip(store: Stores) -> None:
    user = await store.users.upsert_user("console", "me", "console", "Me")
    prefs = Preferences(
        symbols=frozenset({"AAPL", "BTC/USDT"}),
        asset_classes=frozenset({AssetClass.CRYPTO, AssetClass.EQUITY}),
        timeframes=frozenset({Timeframe.H4, Timeframe.D1}),
        min_confidence=65,
        risk=RiskTolerance.HIGH,
        quiet_hours=QuietHours("22:30", "07:00", "Europe/Berlin"),
    )
    await store.users.set_preferences(user.id, prefs)
    got = await store.users.get_user(user.id)
    assert got is not None and got.preferences == prefs
    assert all(isinstance(a, AssetClass) for a in got.preferences.asset_classes)
    await store.users.set_preferences(user.id, Preferences(min_confidence=80))
    got = await store.users.get_user(user.id)
    assert got is not None and got.preferences == Preferences(min_confidence=80)
    # a returning user keeps their preferences
    assert (await store.users.upsert_user("console", "me", "console", "Me")).preferences == Preferences(min_confidence=80)


async def test_active_users(store: Stores) -> None:
    a = await store.users.upsert_user("telegram", "1", "c1", "A")
    b = await store.users.upsert_user("telegram", "2", "c2", "B")
    await store.users.set_preferences(b.id, Preferences(symbols=frozenset({"ETH/USDT"})))
    await store.users.set_active(a.id, False)
    users = await store.users.active_users()
    assert [u.id for u in users] == [b.id]
    assert users[0].preferences.symbols == frozenset({"ETH/USDT"})


# ---------------------------------------------------------------- deliveries


async def _two_users_and_signal(store: Stores) -> tuple[int, int]:
    await store.signals.add_signal(make_signal())
    u1 = await store.users.upsert_user("telegram", "1", "c1", "A")
    u2 = await store.users.upsert_user("telegram", "2", "c2", "B")
    return u1.id, u2.id


@pytest.mark.parametrize("path", ["executemany", "returning"])
async def test_enqueue_is_idempotent(store: Stores, path: str) -> None:
    if path == "executemany" and store.database.dialect == "postgresql":
        pytest.skip("asyncpg reports no executemany row count: PostgreSQL always takes the RETURNING path")
    store.outbox._counts_executemany = path == "executemany"  # "returning" is the PostgreSQL path
    u1, u2 = await _two_users_and_signal(store)
    rows = [("s1", u1, DeliveryKind.SIGNAL, "telegram", None, None), ("s1", u2, DeliveryKind.SIGNAL, "telegram", None, None)]
    assert await store.outbox.enqueue(rows) == 2
    assert await store.outbox.enqueue(rows) == 0
    exit_row = ("s1", u1, DeliveryKind.EXIT, "telegram", None, "msg-9")
    assert await store.outbox.enqueue([*rows, exit_row]) == 1
    assert await store.outbox.enqueue([]) == 0
    assert await store.outbox.count() == 3
    assert await store.outbox.count(DeliveryStatus.PENDING) == 3
    [d] = [d for d in await store.outbox.claim_due("telegram", T0, 5) if d.kind is DeliveryKind.EXIT]
    assert (d.reply_to, d.created_at, d.not_before) == ("msg-9", T0, None)


async def test_enqueue_refuses_naive_not_before(store: Stores) -> None:
    u1, _ = await _two_users_and_signal(store)
    with pytest.raises(ValueError, match="naive"):
        await store.outbox.enqueue([("s1", u1, DeliveryKind.SIGNAL, "telegram", datetime(2024, 1, 1), None)])
    assert await store.outbox.count() == 0


async def test_delivery_round_trip_and_mark(store: Stores, clock: FixedClock) -> None:
    u1, _ = await _two_users_and_signal(store)
    await store.outbox.enqueue([("s1", u1, DeliveryKind.EXIT, "discord", None, "ref-1")])
    [d] = await store.outbox.claim_due("discord", T0, 10)
    assert (d.signal_id, d.user_id, d.kind, d.channel, d.reply_to) == ("s1", u1, DeliveryKind.EXIT, "discord", "ref-1")
    assert d.status is DeliveryStatus.SENDING and d.attempts == 1 and d.not_before is None
    assert_utc(d.created_at)
    clock.advance(timedelta(seconds=3))
    await store.outbox.mark(d.id, DeliveryStatus.SENT, message_ref="m-77")
    got = await store.outbox.get_delivery(d.id)
    assert got is not None
    assert got.status is DeliveryStatus.SENT and got.message_ref == "m-77" and got.sent_at == T0 + timedelta(seconds=3)
    assert_utc(got.sent_at)


async def test_claim_due_respects_not_before_and_order(store: Stores, clock: FixedClock) -> None:
    u1, u2 = await _two_users_and_signal(store)
    await store.signals.add_signal(make_signal("s2"))
    later = T0 + timedelta(minutes=5)
    await store.outbox.enqueue([("s1", u1, DeliveryKind.SIGNAL, "telegram", later, None)])
    clock.advance(timedelta(seconds=1))
    await store.outbox.enqueue([("s1", u2, DeliveryKind.SIGNAL, "telegram", None, None),
                                ("s2", u1, DeliveryKind.SIGNAL, "telegram", T0, None),
                                ("s2", u2, DeliveryKind.SIGNAL, "discord", None, None)])
    due = await store.outbox.claim_due("telegram", T0, 10)
    assert [(d.signal_id, d.user_id) for d in due] == [("s1", u2), ("s2", u1)]
    assert await store.outbox.claim_due("telegram", T0, 10) == []
    [d] = await store.outbox.claim_due("telegram", later, 10)
    assert (d.signal_id, d.user_id) == ("s1", u1) and d.not_before == later
    assert_utc(d.not_before)


async def test_retry_increments_attempts(store: Stores) -> None:
    u1, _ = await _two_users_and_signal(store)
    await store.outbox.enqueue([("s1", u1, DeliveryKind.SIGNAL, "telegram", None, None)])
    [d] = await store.outbox.claim_due("telegram", T0, 1)
    retry_at = T0 + timedelta(seconds=30)
    await store.outbox.mark(d.id, DeliveryStatus.PENDING, error="429", not_before=retry_at)
    assert await store.outbox.claim_due("telegram", T0, 1) == []
    [d2] = await store.outbox.claim_due("telegram", retry_at, 1)
    assert d2.id == d.id and d2.attempts == 2 and d2.error == "429"


async def test_claim_due_never_double_claims(db_url, clock: FixedClock) -> None:  # noqa: ANN001
    database = Database(db_url("claims"))
    await database.upgrade()
    store = Stores.over(database, clock=clock)
    await store.signals.add_signal(make_signal())
    users = [await store.users.upsert_user("telegram", str(i), f"c{i}", "") for i in range(300)]
    await store.outbox.enqueue([("s1", u.id, DeliveryKind.SIGNAL, "telegram", None, None) for u in users])

    async def claimer() -> list[int]:
        ids: list[int] = []
        while batch := await store.outbox.claim_due("telegram", T0, 7):
            ids += [d.id for d in batch]
            await asyncio.sleep(0)
        return ids

    a, b, c = await asyncio.gather(claimer(), claimer(), claimer())
    claimed = a + b + c
    assert len(claimed) == 300 and len(set(claimed)) == 300
    assert await store.outbox.count(DeliveryStatus.SENDING) == 300
    await database.close()


async def test_claim_due_two_engines_never_double_claim(db_url, clock: FixedClock) -> None:  # noqa: ANN001
    """Two Database objects on one database behave like two processes sharing the outbox (on PostgreSQL: FOR
    UPDATE SKIP LOCKED)."""
    url = db_url("two")
    first, second = Database(url), Database(url)
    try:
        await first.upgrade()
        a, b = Stores.over(first, clock=clock), Stores.over(second, clock=clock)
        await a.signals.add_signal(make_signal())
        users = [await a.users.upsert_user("discord", str(i), f"c{i}", "") for i in range(120)]
        await a.outbox.enqueue([("s1", u.id, DeliveryKind.SIGNAL, "discord", None, None) for u in users])

        async def drain(store: Stores) -> list[int]:
            ids: list[int] = []
            while batch := await store.outbox.claim_due("discord", T0, 5):
                ids += [d.id for d in batch]
            return ids

        got_a, got_b = await asyncio.gather(drain(a), drain(b))
        assert sorted(got_a + got_b) == sorted({*got_a, *got_b}) and len(got_a) + len(got_b) == 120
    finally:
        await first.close()
        await second.close()


async def test_requeue_stale_sending(store: Stores) -> None:
    u1, u2 = await _two_users_and_signal(store)
    await store.outbox.enqueue([("s1", u, DeliveryKind.SIGNAL, "telegram", None, None) for u in (u1, u2)])
    first, second = await store.outbox.claim_due("telegram", T0, 2)
    await store.outbox.mark(first.id, DeliveryStatus.SENT, message_ref="m1")
    assert await store.outbox.requeue_stale_sending() == 0  # the store that claimed it is still sending it
    from storage.outbox import OutboxStore

    restarted = OutboxStore(store.database, process=store.outbox.process)  # the same name after a restart (pid reuse)
    assert await restarted.requeue_stale_sending() == 1
    assert await restarted.requeue_stale_sending() == 0
    again = await restarted.claim_due("telegram", T0, 5)
    assert [d.id for d in again] == [second.id] and again[0].attempts == 2


async def test_a_long_outage_does_not_requeue_what_this_process_is_sending(db: Database, clock: FixedClock) -> None:
    """A database away longer than DEAD_AFTER leaves every heartbeat old, this process's too: the rows it claimed
    and has not recorded yet stay SENDING (its worker records them when the database is back); another
    process's rows whose heartbeat is that old go back to the queue."""
    from storage.outbox import DEAD_AFTER, OutboxStore

    stores = Stores.over(db, clock=clock)
    await stores.signals.add_signal(make_signal())
    users = [await stores.users.upsert_user("telegram", str(i), f"c{i}", "") for i in range(4)]
    await stores.outbox.enqueue([("s1", u.id, DeliveryKind.SIGNAL, "telegram", None, None) for u in users])
    me, peer = OutboxStore(db, clock, process="host:1"), OutboxStore(db, clock, process="host:2")
    await me.heartbeat(me.process)
    await peer.heartbeat(peer.process)
    mine = await me.claim_due("telegram", T0, 2)
    theirs = await peer.claim_due("telegram", T0, 2)
    clock.advance(DEAD_AFTER * 2)  # the outage: nobody could beat
    assert await me.requeue_stale_sending() == 2  # the peer's two, not mine
    assert {d.id for d in await me.claim_due("telegram", clock.now(), 10)} == {d.id for d in theirs}
    await me.record_attempts([DeliveryUpdate(d.id, DeliveryStatus.SENT, sent_at=clock.now()) for d in mine])
    assert await me.requeue_stale_sending() == 0  # the other two are held by me now


async def test_sent_queries(store: Stores, clock: FixedClock) -> None:
    u1, u2 = await _two_users_and_signal(store)
    await store.signals.add_signal(make_signal("s2"))
    await store.outbox.enqueue([("s1", u1, DeliveryKind.SIGNAL, "telegram", None, None),
                                ("s1", u2, DeliveryKind.SIGNAL, "telegram", None, None),
                                ("s2", u1, DeliveryKind.SIGNAL, "telegram", None, None)])
    d = {(x.signal_id, x.user_id): x for x in await store.outbox.claim_due("telegram", T0, 10)}
    await store.outbox.mark(d["s1", u1].id, DeliveryStatus.SENT, message_ref="111", sent_at=T0)
    await store.outbox.mark(d["s1", u2].id, DeliveryStatus.FAILED, error="blocked")
    await store.outbox.mark(d["s2", u1].id, DeliveryStatus.SENT, message_ref="222", sent_at=T0 + timedelta(days=40))
    await store.outbox.enqueue([("s1", u1, DeliveryKind.EXIT, "telegram", None, "111")])
    [exit_d] = await store.outbox.claim_due("telegram", T0, 10)
    await store.outbox.mark(exit_d.id, DeliveryStatus.SENT, message_ref="333")

    assert await store.outbox.sent_message_ref("s1", u1) == "111"
    assert await store.outbox.sent_message_ref("s1", u2) is None
    assert await store.outbox.recipients_of("s1") == [u1]
    assert await store.outbox.sent_count_since(u1, T0) == 2
    assert await store.outbox.sent_count_since(u1, T0 + timedelta(days=30)) == 1
    assert await store.outbox.sent_count_since(u2, T0) == 0
    assert await store.outbox.count(DeliveryStatus.SENT) == 3
    assert await store.outbox.count(DeliveryStatus.FAILED) == 1


# ---------------------------------------------------------------- bars & instruments


def make_bars(n: int, tf: Timeframe, start: datetime = T0) -> pd.DataFrame:
    index = pd.date_range(start, periods=n, freq=tf.pandas_freq, tz="UTC", name="time")
    close = 100 + np.arange(n, dtype=float)
    return pd.DataFrame(
        {"open": close - 0.5, "high": close + 1, "low": close - 1, "close": close, "volume": np.full(n, 1e6)},
        index=index,
    )


async def test_bars_upsert_idempotent_and_load(store: Stores) -> None:
    bars = make_bars(50, Timeframe.H1)
    assert await store.bars.upsert_bars("BTC/USDT", Timeframe.H1, bars) == 50
    assert await store.bars.upsert_bars("BTC/USDT", Timeframe.H1, bars) == 50
    revised = bars.iloc[-2:].copy()
    revised["close"] = [1.0, 2.0]
    await store.bars.upsert_bars("BTC/USDT", Timeframe.H1, revised)

    got = await store.bars.load_bars("BTC/USDT", Timeframe.H1)
    expected = bars.copy()
    expected.loc[revised.index, "close"] = [1.0, 2.0]
    assert len(got) == 50
    pd.testing.assert_frame_equal(got, expected, check_freq=False)
    assert str(got.index.tz) == "UTC" and got.index.name == "time" and got.index.is_monotonic_increasing
    assert list(got.columns) == ["open", "high", "low", "close", "volume"]
    assert (await store.bars.load_bars("BTC/USDT", Timeframe.D1)).empty
    assert (await store.bars.load_bars("ETH/USDT", Timeframe.H1)).empty


async def test_load_bars_end_and_limit(store: Stores) -> None:
    await store.bars.upsert_bars("EURUSD", "1h", make_bars(48, Timeframe.H1))
    end = T0 + timedelta(hours=10, minutes=30)  # the 10:00 bar closes at 11:00 > end
    got = await store.bars.load_bars("EURUSD", Timeframe.H1, end=end)
    assert got.index[-1] == T0 + timedelta(hours=9)
    assert (got.index + Timeframe.H1.duration <= end).all()
    exact = await store.bars.load_bars("EURUSD", Timeframe.H1, end=T0 + timedelta(hours=10))
    assert exact.index[-1] == T0 + timedelta(hours=9)
    last3 = await store.bars.load_bars("EURUSD", Timeframe.H1, end=end, limit=3)
    assert list(last3.index) == [T0 + timedelta(hours=h) for h in (7, 8, 9)]
    assert list((await store.bars.load_bars("EURUSD", Timeframe.H1, limit=2)).index) == [
        T0 + timedelta(hours=46), T0 + timedelta(hours=47)]
    assert (await store.bars.load_bars("EURUSD", Timeframe.H1, end=T0)).empty


async def test_bars_index_zone_and_resolution_do_not_matter(store: Stores) -> None:
    bars = make_bars(5, Timeframe.M15)
    eastern = bars.set_axis(bars.index.tz_convert("America/New_York").as_unit("s"))
    await store.bars.upsert_bars("SPY", Timeframe.M15, eastern)
    got = await store.bars.load_bars("SPY", Timeframe.M15)
    assert list(got.index) == list(bars.index)
    assert str(got.index.tz) == "UTC"


async def test_bars_reject_bad_frames(store: Stores) -> None:
    bars = make_bars(3, Timeframe.D1)
    with pytest.raises(Exception, match="NaN"):
        await store.bars.upsert_bars("X", Timeframe.D1, bars.assign(close=[1.0, np.nan, 2.0]))
    with pytest.raises(Exception, match="tz-aware"):
        await store.bars.upsert_bars("X", Timeframe.D1, bars.tz_localize(None))
    with pytest.raises(Exception, match="whole seconds"):
        await store.bars.upsert_bars("X", Timeframe.D1, bars.set_axis(bars.index + pd.Timedelta(milliseconds=1)))
    assert await store.bars.upsert_bars("X", Timeframe.D1, bars.iloc[:0]) == 0
    assert (await store.bars.load_bars("X", Timeframe.D1)).empty


async def test_instruments_upsert(store: Stores) -> None:
    apple = Instrument("AAPL", AssetClass.EQUITY, "Apple Inc.", "NASDAQ", "USD", "Technology")
    btc = Instrument("BTC/USDT", AssetClass.CRYPTO, "Bitcoin", "binance", "USDT")
    assert await store.bars.upsert_instruments([apple, btc]) == 2
    renamed = Instrument("AAPL", AssetClass.EQUITY, "Apple", "NASDAQ", "USD", "Tech")
    await store.bars.upsert_instruments([renamed])
    assert await store.bars.list_instruments() == [renamed, btc]


async def test_file_database_uses_wal_and_foreign_keys(file_db: Database) -> None:
    async with file_db.engine.connect() as conn:
        mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
        fk = (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar()
        timeout = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar()
    assert (mode, fk) == ("wal", 1) and timeout and timeout > 0


async def test_requeue_leaves_a_live_process_its_claims(db: Database, clock: FixedClock) -> None:
    """Several processes on one outbox: rows SENDING by a process that still beats stay with it; rows of a process
    that stopped beating, or a claim older than any batch takes, go back to the queue (a store never requeues
    the rows it holds itself)."""
    from storage.outbox import DEAD_AFTER, STALE_CLAIM, OutboxStore

    stores = Stores.over(db, clock=clock)
    await stores.signals.add_signal(make_signal())
    users = [await stores.users.upsert_user("telegram", str(i), f"c{i}", "") for i in range(6)]
    await stores.outbox.enqueue([("s1", u.id, DeliveryKind.SIGNAL, "telegram", None, None) for u in users])
    alive, dead = OutboxStore(db, clock, process="host:1"), OutboxStore(db, clock, process="host:2")
    await alive.heartbeat(alive.process)
    await dead.heartbeat(dead.process)
    mine = await alive.claim_due("telegram", T0, 3)
    theirs = await dead.claim_due("telegram", T0, 3)
    assert len(mine) == len(theirs) == 3  # a claim takes at most its limit (PostgreSQL once took all six)
    assert {d.status for d in mine + theirs} == {DeliveryStatus.SENDING}
    assert await alive.requeue_stale_sending() == 0  # both beat just now
    clock.advance(DEAD_AFTER + timedelta(seconds=1))
    await alive.heartbeat(alive.process)  # host:2 stopped beating
    assert await alive.requeue_stale_sending() == 3
    assert {d.id for d in await alive.claim_due("telegram", clock.now(), 10)} == {d.id for d in theirs}
    clock.advance(STALE_CLAIM + timedelta(seconds=1))
    await alive.heartbeat(alive.process)  # alive, but to another process a claim this old was lost
    assert await alive.requeue_stale_sending() == 0  # alive itself still holds all six
    other = OutboxStore(db, clock, process="host:3")
    assert await other.requeue_stale_sending() == 6


async def test_requeue_gives_back_at_once_the_rows_of_a_dead_process_on_this_host(db: Database, clock: FixedClock) -> None:
    """A restart after kill -9: the predecessor's heartbeat is seconds old, but its pid no longer runs."""
    import socket
    import subprocess
    import sys

    from storage.outbox import OutboxStore

    stores = Stores.over(db, clock=clock)
    await stores.signals.add_signal(make_signal())
    users = [await stores.users.upsert_user("telegram", str(i), f"c{i}", "") for i in range(4)]
    await stores.outbox.enqueue([("s1", u.id, DeliveryKind.SIGNAL, "telegram", None, None) for u in users])
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pid that ran on this host and is gone
    dead = OutboxStore(db, clock, process=f"{socket.gethostname()}:{child.pid}")
    live = OutboxStore(db, clock, process=f"{socket.gethostname()}:{os.getpid()}-other")
    await dead.heartbeat(dead.process)
    await live.heartbeat(live.process)
    assert len(await dead.claim_due("telegram", T0, 2)) == 2
    assert len(await live.claim_due("telegram", T0, 2)) == 2
    assert await stores.outbox.requeue_stale_sending() == 2  # the dead pid's; the live claimant keeps its rows
