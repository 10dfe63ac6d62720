"""The delivery outbox (core.ports.DeliveryRepository): pending fan-outs, deliveries per user and channel, the
attempts made at them, and the processes' heartbeats.

enqueue's row count is taken from executemany where the driver reports it (SQLite) and from RETURNING elsewhere
(asyncpg).
"""
from __future__ import annotations

import asyncio

import functools
import os
import socket
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from core.clock import Clock, SystemClock
from core.domain import Delivery, DeliveryKind, DeliveryStatus, DeliveryUpdate, Signal, SignalOutcome, Tier
from storage.database import IN_CHUNK, Database, Insert
from storage.rows import (BULK_CHUNK_ROWS, DELIVERY_INPUT_KEYS, EPOCH, N_SIGNAL_COLS, TIERS, BulkInsert, delivery_columns,
                          require_aware, split_row, to_delivery, to_outcome, to_signal)
from storage.tables import DELIVERIES, DELIVERY_PARTS, FANOUTS, HEARTBEATS, OUTCOMES, SIGNALS, USERS, UTCDateTime


STALE_CLAIM = timedelta(minutes=10)  # no batch is SENDING that long: a claim older than this was lost
DEAD_AFTER = timedelta(seconds=30)  # a process whose heartbeat is older than this is taken for dead


def process_name() -> str:
    """This process, as claims and heartbeats name it (the same as /livez's `process`)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _gone_here(claimant: str) -> bool:
    """A claimant `host:pid` on this host whose process no longer runs (or is a zombie): dead for sure, without
    waiting for its heartbeat to age (a process restarted after kill -9 gives its predecessor's rows back at once)."""
    host, _, pid_text = claimant.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


class OutboxStore:
    def __init__(self, db: Database, clock: Clock | None = None, process: str | None = None) -> None:
        self.process = process or process_name()
        self._db = db
        self._clock: Clock = clock or SystemClock()
        self._counts_executemany = bool(db.engine.dialect.supports_sane_multi_rowcount)
        # rows this store claimed and has not recorded yet (its workers are sending them, or keep their results
        # until the database answers again): never requeued under this process's own feet, however long an
        # outage left its heartbeat unrenewed. The lock keeps a claim and a requeue from interleaving.
        self._held: set[int] = set()
        self._claims = asyncio.Lock()

    async def pending_fanouts(self, recorded_before: datetime | None = None) -> list[tuple[str, DeliveryKind]]:
        """(signal id, kind) stored but not yet queued to the outbox (recorded before `recorded_before`, if
        given), oldest first."""
        stmt = sa.select(FANOUTS.c.signal_id, FANOUTS.c.kind).where(FANOUTS.c.done_at.is_(None))
        if recorded_before is not None:
            stmt = stmt.where(FANOUTS.c.created_at < require_aware(recorded_before))
        rows = await self._db.fetch(stmt.order_by(FANOUTS.c.created_at, FANOUTS.c.signal_id))
        return [(str(i), DeliveryKind(k)) for i, k in (tuple(r) for r in rows)]

    async def fanout_done(self, signal_id: str, kind: DeliveryKind) -> None:
        await self._db.write(self._fanout_done(signal_id, kind))

    def _fanout_done(self, signal_id: str, kind: DeliveryKind) -> sa.Update:
        return (sa.update(FANOUTS).where(FANOUTS.c.signal_id == signal_id, FANOUTS.c.kind == kind.value,
                                         FANOUTS.c.done_at.is_(None)).values(done_at=self._clock.now()))

    async def enqueue(
        self, deliveries: Sequence[tuple[str, int, DeliveryKind, str, datetime | None, str | None]], *,
        fanout: tuple[str, DeliveryKind] | None = None,
    ) -> int:
        """Insert rows as PENDING; an existing (signal_id, user_id, kind, channel) is left alone. Returns rows
        inserted. `fanout`: the (signal id, kind) these rows fan out, marked done in the same transaction."""
        if not deliveries:
            if fanout is not None:
                await self.fanout_done(*fanout)
            return 0
        columns, uniform = delivery_columns(deliveries)
        constants = {**uniform, "status": DeliveryStatus.PENDING.value, "attempts": 0, "created_at": self._clock.now()}
        async with self._db.engine.begin() as conn:
            if self._counts_executemany:
                inserted = await self._enqueue_executemany(conn, columns, constants)
            else:
                inserted = await self._enqueue_returning(conn, columns, constants)
            if fanout is not None:
                await conn.execute(self._fanout_done(*fanout))
            return inserted

    async def _enqueue_executemany(
        self, conn: AsyncConnection, columns: Mapping[str, Sequence[Any]], constants: Mapping[str, Any]
    ) -> int:
        """Fast path where the driver reports executemany's row count (SQLite): rows actually inserted."""
        bulk = self._deliveries_insert
        rows = bulk.rows(columns, constants)
        inserted = 0
        for start in range(0, len(rows), BULK_CHUNK_ROWS):
            result = await conn.exec_driver_sql(bulk.sql, rows[start : start + BULK_CHUNK_ROWS])
            inserted += result.rowcount
        return inserted

    async def _enqueue_returning(
        self, conn: AsyncConnection, columns: Mapping[str, Sequence[Any]], constants: Mapping[str, Any]
    ) -> int:
        """Portable path (PostgreSQL/asyncpg has no executemany row count): RETURNING one id per new row."""
        keys = list(columns)
        params = [dict(zip(keys, values, strict=True)) for values in zip(*columns.values(), strict=True)]
        stmt = self._deliveries_insert_stmt().values(**constants).returning(DELIVERIES.c.id)
        try:
            result = await conn.execute(stmt, params)
        except sa.exc.StatementError as exc:  # a value our types refuse (a naive datetime) is the caller's bug,
            if isinstance(exc.orig, ValueError):  # not a database failure: raise it as the SQLite path does
                raise exc.orig from exc
            raise
        return len(result.all())

    def _deliveries_insert_stmt(self) -> Insert:
        return self._db.insert(DELIVERIES).on_conflict_do_nothing(
            index_elements=[DELIVERIES.c.signal_id, DELIVERIES.c.user_id, DELIVERIES.c.kind, DELIVERIES.c.channel]
        )

    @functools.cached_property
    def _deliveries_insert(self) -> BulkInsert:
        keys = [*DELIVERY_INPUT_KEYS, "status", "attempts", "created_at"]
        return BulkInsert.compile(self._deliveries_insert_stmt(), self._db.engine.dialect, keys)

    async def outbox_backlog(self, now: datetime, channels: Collection[str] | None = None
                             ) -> tuple[int, datetime | None]:
        """Rows due to be sent now (PENDING, not held; of `channels` if given: those a worker serves) and since
        when the oldest of them has been due."""
        due = sa.and_(DELIVERIES.c.status == DeliveryStatus.PENDING.value,
                      sa.or_(DELIVERIES.c.not_before.is_(None), DELIVERIES.c.not_before <= require_aware(now)))
        if channels is not None:
            due = sa.and_(due, DELIVERIES.c.channel.in_(sorted(channels)))
        since = sa.func.coalesce(DELIVERIES.c.not_before, DELIVERIES.c.created_at)
        rows = await self._db.fetch(sa.select(sa.func.count(), sa.func.min(since)).where(due))
        count, oldest = tuple(rows[0])
        if isinstance(oldest, str):  # SQLite may return an aggregate over a coalesce() as text
            oldest = datetime.fromisoformat(oldest)
        return int(count), (oldest.replace(tzinfo=timezone.utc) if oldest is not None and oldest.tzinfo is None
                            else oldest)

    async def heartbeat(self, process: str) -> None:
        """A write that must commit (the readiness probe): this process's row, upserted in its own transaction."""
        stmt = self._db.insert(HEARTBEATS).values(process=process, at=self._clock.now())
        await self._db.write(stmt.on_conflict_do_update(index_elements=[HEARTBEATS.c.process],
                                                     set_={"at": stmt.excluded.at}))

    async def claim_due(self, channel: str, now: datetime, limit: int) -> list[Delivery]:
        """Atomically mark up to `limit` due PENDING rows of `channel` SENDING (attempts + 1): higher tiers
        first (the recipient's tier now), then oldest first; returned in that order.

        One UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) ... RETURNING: SQLite serialises
        writers, PostgreSQL skips rows another claimer holds; the outer `status = pending` re-check
        means a row is never handed out twice.
        """
        if limit <= 0:
            return []
        due = (
            sa.select(DELIVERIES.c.id)
            .select_from(DELIVERIES.join(USERS, USERS.c.id == DELIVERIES.c.user_id))
            .where(
                DELIVERIES.c.channel == channel,
                DELIVERIES.c.status == DeliveryStatus.PENDING.value,
                sa.or_(DELIVERIES.c.not_before.is_(None), DELIVERIES.c.not_before <= require_aware(now)),
            )
            .order_by(TIER_PRIORITY, DELIVERIES.c.created_at, DELIVERIES.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=DELIVERIES)
        )
        # a MATERIALIZED CTE: PostgreSQL runs it once. As a plain `IN (subquery)` the planner may re-run the
        # LIMITed, locking subquery while it joins, and one claim took every due row (found by the tests on a
        # real server: 6 rows for a limit of 3)
        chosen = due.cte("due").prefix_with("MATERIALIZED")
        stmt = (
            sa.update(DELIVERIES)
            .add_cte(chosen)
            .where(DELIVERIES.c.id.in_(sa.select(chosen.c.id)), DELIVERIES.c.status == DeliveryStatus.PENDING.value)
            .values(status=DeliveryStatus.SENDING.value, attempts=DELIVERIES.c.attempts + 1,
                    claimed_by=self.process, claimed_at=self._clock.now())
            .returning(*DELIVERIES.c)
        )
        async with self._claims:
            claimed: list[Delivery] = []
            try:
                async with self._db.engine.begin() as conn:
                    rows = (await conn.execute(stmt)).all()
                    claimed = [to_delivery(r._mapping) for r in rows]
                    self._held.update(d.id for d in claimed)  # before the commit: held once they are SENDING
                    user_ids = sorted({d.user_id for d in claimed})
                    tiers = dict((await conn.execute(sa.select(USERS.c.id, USERS.c.tier)
                                                     .where(USERS.c.id.in_(user_ids)))).all() if user_ids else [])
            except BaseException:
                self._held.difference_update(d.id for d in claimed)  # rolled back (or unknown: requeue decides)
                raise
        claimed.sort(key=lambda d: (-TIERS[tiers.get(d.user_id, Tier.FREE.value)].rank, d.created_at or EPOCH, d.id))
        return claimed

    async def record_attempts(self, updates: Sequence[DeliveryUpdate]) -> None:
        """What happened to claimed rows, in one transaction: each row's status, and its message_ref, error,
        not_before and sent_at where given (others keep their values). `refund_attempt` takes back the
        attempt claim_due counted (a send that never reached the platform: paused, or shut down before)."""
        if not updates:
            return
        params = [
            {"b_id": u.delivery_id, "b_status": DeliveryStatus(u.status).value, "b_message_ref": u.message_ref,
             "b_error": u.error, "b_not_before": u.not_before, "b_sent_at": u.sent_at,
             "b_refund": 1 if u.refund_attempt else 0}
            for u in updates
        ]
        parts = [{"delivery_id": u.delivery_id, "parts_sent": u.parts_sent, "first_ref": u.first_ref,
                  "layout": u.layout}
                 for u in updates if u.parts_sent > 0 and u.first_ref is not None]
        async with self._db.engine.begin() as conn:
            await conn.execute(_RECORD_ATTEMPT, params)
            if parts:  # in the same transaction: a retry never resends a part recorded as sent
                stmt = self._db.insert(DELIVERY_PARTS)
                await conn.execute(stmt.on_conflict_do_update(
                    index_elements=[DELIVERY_PARTS.c.delivery_id],
                    set_={"parts_sent": stmt.excluded.parts_sent, "first_ref": stmt.excluded.first_ref,
                          "layout": stmt.excluded.layout}), parts)
        self._held.difference_update(u.delivery_id for u in updates)

    async def delivery_parts(self, ids: Collection[int]) -> dict[int, tuple[int, str, str]]:
        """delivery id -> (parts sent, first part's reference, layout) of deliveries an earlier attempt sent in
        part."""
        found: dict[int, tuple[int, str, str]] = {}
        wanted = sorted(set(ids))
        for start in range(0, len(wanted), IN_CHUNK):
            rows = await self._db.fetch(sa.select(DELIVERY_PARTS).where(
                DELIVERY_PARTS.c.delivery_id.in_(wanted[start:start + IN_CHUNK])))
            found.update({int(r.delivery_id): (int(r.parts_sent), str(r.first_ref), str(r.layout)) for r in rows})
        return found

    async def cancel_pending(self, user_id: int, reason: str, channel: str | None = None) -> int:
        """PENDING rows of a user (on one channel, or all) become SKIPPED with `reason`. Returns how many."""
        stmt = sa.update(DELIVERIES).where(
            DELIVERIES.c.user_id == user_id, DELIVERIES.c.status == DeliveryStatus.PENDING.value)
        if channel is not None:
            stmt = stmt.where(DELIVERIES.c.channel == channel)
        return await self._db.write(stmt.values(status=DeliveryStatus.SKIPPED.value, error=reason))

    async def signal_receipts(self, signal_id: str) -> list[tuple[int, str, str | None]]:
        """(user_id, channel, message_ref) of every SENT delivery of the signal itself, by user and channel."""
        stmt = (
            sa.select(DELIVERIES.c.user_id, DELIVERIES.c.channel, DELIVERIES.c.message_ref)
            .where(
                DELIVERIES.c.signal_id == signal_id,
                DELIVERIES.c.kind == DeliveryKind.SIGNAL.value,
                DELIVERIES.c.status == DeliveryStatus.SENT.value,
            )
            .order_by(DELIVERIES.c.user_id, DELIVERIES.c.channel)
        )
        return [(int(uid), str(channel), ref) for uid, channel, ref in (tuple(r) for r in await self._db.fetch(stmt))]

    async def received_since(self, user_id: int, since: datetime, *, closed_since: datetime | None = None
                             ) -> list[tuple[Signal, SignalOutcome | None]]:
        """Signals the user received (a SENT signal delivery, any channel) that were sent since `since` (the
        outbox's clock) or closed since `closed_since` (the market's; default `since`), each once, by issue
        time; with their outcome when closed (the daily digest)."""
        received = (
            sa.select(DELIVERIES.c.signal_id, sa.func.max(DELIVERIES.c.sent_at).label("sent_at"))
            .where(DELIVERIES.c.user_id == user_id, DELIVERIES.c.kind == DeliveryKind.SIGNAL.value,
                   DELIVERIES.c.status == DeliveryStatus.SENT.value)
            .group_by(DELIVERIES.c.signal_id)
            .subquery()
        )
        since = require_aware(since)
        closed = require_aware(closed_since) if closed_since is not None else since
        stmt = (
            sa.select(SIGNALS, OUTCOMES)
            .select_from(SIGNALS.join(received, received.c.signal_id == SIGNALS.c.id)
                         .outerjoin(OUTCOMES, OUTCOMES.c.signal_id == SIGNALS.c.id))
            .where(sa.or_(received.c.sent_at >= since, OUTCOMES.c.exit_time >= closed))
            .order_by(SIGNALS.c.issued_at, SIGNALS.c.id)
        )
        out: list[tuple[Signal, SignalOutcome | None]] = []
        for row in await self._db.fetch(stmt):
            signal, outcome = split_row(row, SIGNALS, N_SIGNAL_COLS, OUTCOMES)
            out.append((to_signal(signal), to_outcome(outcome) if outcome["signal_id"] is not None else None))
        return out

    async def delivery_counts(self, channel: str | None = None) -> dict[DeliveryStatus, int]:
        """Rows per status (of one channel, or all)."""
        stmt = sa.select(DELIVERIES.c.status, sa.func.count()).group_by(DELIVERIES.c.status)
        if channel is not None:
            stmt = stmt.where(DELIVERIES.c.channel == channel)
        pairs: list[tuple[Any, ...]] = [tuple(r) for r in await self._db.fetch(stmt)]
        return {DeliveryStatus(status): int(n) for status, n in pairs}

    async def mark(
        self,
        delivery_id: int,
        status: DeliveryStatus,
        *,
        message_ref: str | None = None,
        error: str | None = None,
        not_before: datetime | None = None,
        sent_at: datetime | None = None,
    ) -> None:
        """Set the status; the other fields only when given. SENT stamps sent_at (given, or now)."""
        status = DeliveryStatus(status)
        values: dict[str, Any] = {"status": status.value}
        if message_ref is not None:
            values["message_ref"] = message_ref
        if error is not None:
            values["error"] = error
        if not_before is not None:
            values["not_before"] = not_before
        if status is DeliveryStatus.SENT:
            values["sent_at"] = sent_at or self._clock.now()
        elif sent_at is not None:
            values["sent_at"] = sent_at
        await self._db.write(sa.update(DELIVERIES).where(DELIVERIES.c.id == delivery_id).values(values))
        self._held.discard(delivery_id)

    async def requeue_stale_sending(self, *, dead_after: timedelta = DEAD_AFTER,
                                    stale_claim: timedelta = STALE_CLAIM) -> int:
        """Rows left SENDING by a process that died go back to PENDING: claimed by a process with no heartbeat
        within `dead_after`, or by a process of this host that no longer runs, or by nobody on record (claimed
        before claims were recorded), or claimed more than `stale_claim` ago (a claim whose answer the database
        lost); and rows in this process's name that this store does not hold (a predecessor's with the same
        pid, or a claim whose commit this store never heard of). Rows a live process is sending stay with it, so
        a process starting beside others does not send their messages twice; the rows this store holds stay
        with it whatever its heartbeat says (a database outage longer than `dead_after` leaves every heartbeat
        old, this one's too). At start-up and then every minute (the leader). Returns how many."""
        async with self._claims:
            now = self._clock.now()
            alive = sa.select(HEARTBEATS.c.process).where(HEARTBEATS.c.at >= now - dead_after)
            claimants = await self._db.fetch(sa.select(DELIVERIES.c.claimed_by).distinct().where(
                DELIVERIES.c.status == DeliveryStatus.SENDING.value, DELIVERIES.c.claimed_by.is_not(None)))
            gone = [c for (c,) in claimants if c != self.process and _gone_here(c)]  # a restart on this host
            other = DELIVERIES.c.claimed_by != self.process
            stale = sa.or_(DELIVERIES.c.claimed_by.is_(None), DELIVERIES.c.claimed_by.in_(gone),
                           sa.and_(other, DELIVERIES.c.claimed_by.not_in(alive)),
                           DELIVERIES.c.claimed_at.is_(None), DELIVERIES.c.claimed_at < now - stale_claim,
                           ~other)
            where = [DELIVERIES.c.status == DeliveryStatus.SENDING.value, stale]
            if self._held:
                where.append(DELIVERIES.c.id.not_in(sorted(self._held)))
            return await self._db.write(sa.update(DELIVERIES).where(*where).values(status=DeliveryStatus.PENDING.value))

    async def sent_message_ref(self, signal_id: str, user_id: int) -> str | None:
        stmt = sa.select(DELIVERIES.c.message_ref).where(
            DELIVERIES.c.signal_id == signal_id,
            DELIVERIES.c.user_id == user_id,
            DELIVERIES.c.kind == DeliveryKind.SIGNAL.value,
            DELIVERIES.c.status == DeliveryStatus.SENT.value,
        )
        rows = await self._db.fetch(stmt)
        return rows[0][0] if rows else None

    async def first_sent_at(self, signal_id: str, user_id: int) -> datetime | None:
        """When the signal first reached the user on any channel (None: it has not)."""
        stmt = sa.select(sa.func.min(DELIVERIES.c.sent_at)).where(
            DELIVERIES.c.signal_id == signal_id, DELIVERIES.c.user_id == user_id,
            DELIVERIES.c.kind == DeliveryKind.SIGNAL.value, DELIVERIES.c.status == DeliveryStatus.SENT.value)
        rows = await self._db.fetch(stmt)  # min() keeps the column's type: tz-aware UTC
        return rows[0][0] if rows else None

    async def recipients_of(self, signal_id: str) -> list[int]:
        stmt = (
            sa.select(DELIVERIES.c.user_id)
            .where(
                DELIVERIES.c.signal_id == signal_id,
                DELIVERIES.c.kind == DeliveryKind.SIGNAL.value,
                DELIVERIES.c.status == DeliveryStatus.SENT.value,
            )
            .distinct()  # one user may have received it on several channels
            .order_by(DELIVERIES.c.user_id)
        )
        return [int(r[0]) for r in await self._db.fetch(stmt)]

    async def count(self, status: DeliveryStatus | None = None) -> int:
        stmt = sa.select(sa.func.count()).select_from(DELIVERIES)
        if status is not None:
            stmt = stmt.where(DELIVERIES.c.status == DeliveryStatus(status).value)
        rows = await self._db.fetch(stmt)
        return int(rows[0][0])

    async def sent_count_since(self, user_id: int, since: datetime) -> int:
        stmt = (
            sa.select(sa.func.count(sa.distinct(DELIVERIES.c.signal_id)))  # a signal on two channels counts once
            .select_from(DELIVERIES)
            .where(
                DELIVERIES.c.user_id == user_id,
                DELIVERIES.c.status == DeliveryStatus.SENT.value,
                DELIVERIES.c.kind == DeliveryKind.SIGNAL.value,
                DELIVERIES.c.sent_at >= require_aware(since),
            )
        )
        rows = await self._db.fetch(stmt)
        return int(rows[0][0])

    async def sent_counts_since(self, since: datetime) -> dict[int, int]:
        """Signals SENT per user since `since`, on any channel (the monthly quota of every user in one query)."""
        stmt = (
            sa.select(DELIVERIES.c.user_id, sa.func.count(sa.distinct(DELIVERIES.c.signal_id)))
            .where(
                DELIVERIES.c.status == DeliveryStatus.SENT.value,
                DELIVERIES.c.kind == DeliveryKind.SIGNAL.value,
                DELIVERIES.c.sent_at >= require_aware(since),
            )
            .group_by(DELIVERIES.c.user_id)
        )
        pairs: list[tuple[Any, ...]] = [tuple(row) for row in await self._db.fetch(stmt)]
        return {int(uid): int(n) for uid, n in pairs}

    async def get_delivery(self, delivery_id: int) -> Delivery | None:
        rows = await self._db.fetch(sa.select(DELIVERIES).where(DELIVERIES.c.id == delivery_id))
        return to_delivery(rows[0]._mapping) if rows else None


# professional first: ascending order of this expression is descending tier rank
TIER_PRIORITY = sa.case({t.value: -t.rank for t in Tier}, value=USERS.c.tier, else_=0)
_RECORD_ATTEMPT = (
    sa.update(DELIVERIES)
    .where(DELIVERIES.c.id == sa.bindparam("b_id"))
    .values(
        status=sa.bindparam("b_status"),
        message_ref=sa.func.coalesce(sa.bindparam("b_message_ref", type_=sa.String()), DELIVERIES.c.message_ref),
        error=sa.func.coalesce(sa.bindparam("b_error", type_=sa.Text()), DELIVERIES.c.error),
        not_before=sa.func.coalesce(sa.bindparam("b_not_before", type_=UTCDateTime()), DELIVERIES.c.not_before),
        sent_at=sa.func.coalesce(sa.bindparam("b_sent_at", type_=UTCDateTime()), DELIVERIES.c.sent_at),
        attempts=DELIVERIES.c.attempts - sa.bindparam("b_refund", type_=sa.Integer()),
    )
)


async def record_fanouts(db: Database, conn: AsyncConnection, items: Sequence[tuple[str, DeliveryKind]],
                         now: datetime) -> None:
    """Record (signal id, kind) as pending fan-outs on `conn`, in the caller's transaction (the signal store's
    add_signals and record_outcome)."""
    stmt = db.insert(FANOUTS).on_conflict_do_nothing(index_elements=[FANOUTS.c.signal_id, FANOUTS.c.kind])
    await conn.execute(stmt, [{"signal_id": i, "kind": k.value, "created_at": now} for i, k in items])
