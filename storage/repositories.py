"""SqlStore: core's repository ports over SQLAlchemy Core statements.

Rows are converted to and from core's frozen dataclasses here; core never sees a table model.
Every statement is portable between SQLite and PostgreSQL. Dialect-specific pieces: the upsert
(`INSERT ... ON CONFLICT`), chosen in `_insert()`; bulk inserts (bars, deliveries) compiled once for
the dialect and run as executemany of plain tuples (`_BulkInsert`); and enqueue's row count, taken
from executemany where the driver reports it (SQLite) and from RETURNING elsewhere (asyncpg).
"""
from __future__ import annotations

import functools
import itertools
import json
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Dialect, Row
from sqlalchemy.ext.asyncio import AsyncConnection

from core.clock import Clock, SystemClock
from core.domain import (
    BAR_COLUMNS,
    AssetClass,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
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
    User,
)
from core.errors import DataValidationError
from storage.database import IN_CHUNK, Database, Insert, upsert
from storage.tables import (BARS, DELIVERIES, DELIVERY_PARTS, EXITS, FANOUTS, HEARTBEATS, INSTRUMENTS, OUTCOMES, PREFERENCES, SIGNALS, USERS,
                            UTCDateTime)

BULK_CHUNK_ROWS = 10_000


class SqlStore:
    """SignalRepository, UserRepository and DeliveryRepository, plus bars and instruments."""

    def __init__(self, db: Database, clock: Clock | None = None, *, users_cache_seconds: float = 30.0) -> None:
        self._db = db
        self._engine = db.engine
        self._clock: Clock = clock or SystemClock()
        self._counts_executemany = bool(self._engine.dialect.supports_sane_multi_rowcount)
        # active_users() cache: every user write through this store bumps the generation and drops it; it also
        # expires after users_cache_seconds, for writers that bypass this store
        self._active_users: list[User] | None = None
        self._users_generation = 0
        self._users_cache_seconds = users_cache_seconds
        self._users_loaded_at = 0.0

    @property
    def database(self) -> Database:
        """The database this store writes to (other stores, e.g. storage.channels, share it)."""
        return self._db

    # ------------------------------------------------------------------ helpers

    def _insert(self, table: sa.Table) -> Insert:
        return upsert(self._engine.dialect.name, table)

    async def _fetch(self, stmt: sa.Executable) -> list[Row[Any]]:
        async with self._engine.connect() as conn:
            result = await conn.execute(stmt)
            return list(result.all())

    async def _write(self, stmt: sa.Executable, params: Any = None) -> int:
        async with self._engine.begin() as conn:
            result = await conn.execute(stmt, params)
            return int(getattr(result, "rowcount", 0) or 0)

    # ------------------------------------------------------------------ instruments

    async def upsert_instruments(self, instruments: Iterable[Instrument]) -> int:
        rows = [_instrument_row(i) for i in instruments]
        if not rows:
            return 0
        stmt = self._insert(INSTRUMENTS)
        stmt = stmt.on_conflict_do_update(
            index_elements=[INSTRUMENTS.c.symbol],
            set_={c: stmt.excluded[c] for c in ("asset_class", "name", "exchange", "quote_currency", "sector")},
        )
        async with self._engine.begin() as conn:
            await conn.execute(stmt, rows)
        return len(rows)

    async def list_instruments(self) -> list[Instrument]:
        rows = await self._fetch(sa.select(INSTRUMENTS).order_by(INSTRUMENTS.c.symbol))
        return [_instrument(r._mapping) for r in rows]

    # ------------------------------------------------------------------ bars

    async def upsert_bars(self, symbol: str, timeframe: Timeframe | str, df: pd.DataFrame) -> int:
        """Insert or replace bars (indexed by open time, BAR_COLUMNS). Idempotent; returns rows written."""
        tf = Timeframe(timeframe)
        columns = _bar_columns(symbol, tf, df)
        if columns is None:
            return 0
        bulk = self._bars_upsert
        rows = bulk.rows(columns, {"symbol": symbol, "timeframe": tf.value})
        async with self._engine.begin() as conn:
            for start in range(0, len(rows), BULK_CHUNK_ROWS):
                await conn.exec_driver_sql(bulk.sql, rows[start : start + BULK_CHUNK_ROWS])
        return len(rows)

    @functools.cached_property
    def _bars_upsert(self) -> _BulkInsert:
        stmt = self._insert(BARS)
        stmt = stmt.on_conflict_do_update(
            index_elements=[BARS.c.symbol, BARS.c.timeframe, BARS.c.time],
            set_={c: stmt.excluded[c] for c in BAR_COLUMNS},
        )
        return _BulkInsert.compile(stmt, self._engine.dialect, ["symbol", "timeframe", "time", *BAR_COLUMNS])

    async def load_bars(
        self, symbol: str, timeframe: Timeframe | str, end: datetime | None = None, limit: int | None = None
    ) -> pd.DataFrame:
        """Bars whose close time (open + timeframe) is <= `end`, the last `limit` of them, ascending."""
        tf = Timeframe(timeframe)
        cols = [BARS.c.time, *(BARS.c[c] for c in BAR_COLUMNS)]
        stmt = sa.select(*cols).where(BARS.c.symbol == symbol, BARS.c.timeframe == tf.value)
        if end is not None:
            stmt = stmt.where(BARS.c.time <= _epoch_seconds(_require_aware(end) - tf.duration))
        if limit is not None:
            stmt = stmt.order_by(BARS.c.time.desc()).limit(max(limit, 0))
        else:
            stmt = stmt.order_by(BARS.c.time)
        rows = await self._fetch(stmt)
        if limit is not None:
            rows.reverse()
        return _bars_frame(rows)

    # ------------------------------------------------------------------ signals

    async def add_signal(self, signal: Signal) -> None:
        """Store a signal. Signals are immutable: adding an id that exists already changes nothing."""
        stmt = self._insert(SIGNALS).on_conflict_do_nothing(index_elements=[SIGNALS.c.id])
        await self._write(stmt, _signal_row(signal))

    async def add_signals(self, signals: Sequence[Signal], *, fan_out: Collection[str] = ()) -> None:
        """Store several signals in one transaction; ids that exist already change nothing. `fan_out`: the ids
        to be sent to subscribers, recorded as pending fan-outs in the same transaction (pending_fanouts)."""
        if not signals:
            return
        stmt = self._insert(SIGNALS).on_conflict_do_nothing(index_elements=[SIGNALS.c.id])
        async with self._engine.begin() as conn:
            await conn.execute(stmt, [_signal_row(s) for s in signals])
            if fan_out:
                await self._add_fanouts(conn, [(i, DeliveryKind.SIGNAL) for i in fan_out])

    async def _add_fanouts(self, conn: AsyncConnection, items: Sequence[tuple[str, DeliveryKind]]) -> None:
        now = self._clock.now()
        stmt = self._insert(FANOUTS).on_conflict_do_nothing(index_elements=[FANOUTS.c.signal_id, FANOUTS.c.kind])
        await conn.execute(stmt, [{"signal_id": i, "kind": k.value, "created_at": now} for i, k in items])

    async def pending_fanouts(self, recorded_before: datetime | None = None) -> list[tuple[str, DeliveryKind]]:
        """(signal id, kind) stored but not yet queued to the outbox (recorded before `recorded_before`, if
        given), oldest first."""
        stmt = sa.select(FANOUTS.c.signal_id, FANOUTS.c.kind).where(FANOUTS.c.done_at.is_(None))
        if recorded_before is not None:
            stmt = stmt.where(FANOUTS.c.created_at < _require_aware(recorded_before))
        rows = await self._fetch(stmt.order_by(FANOUTS.c.created_at, FANOUTS.c.signal_id))
        return [(str(i), DeliveryKind(k)) for i, k in (tuple(r) for r in rows)]

    async def fanout_done(self, signal_id: str, kind: DeliveryKind) -> None:
        await self._write(self._fanout_done(signal_id, kind))

    def _fanout_done(self, signal_id: str, kind: DeliveryKind) -> sa.Update:
        return (sa.update(FANOUTS).where(FANOUTS.c.signal_id == signal_id, FANOUTS.c.kind == kind.value,
                                         FANOUTS.c.done_at.is_(None)).values(done_at=self._clock.now()))

    async def existing_signal_ids(self, ids: Collection[str]) -> set[str]:
        found: set[str] = set()
        wanted = sorted(set(ids))
        for start in range(0, len(wanted), IN_CHUNK):
            chunk = wanted[start: start + IN_CHUNK]
            rows = await self._fetch(sa.select(SIGNALS.c.id).where(SIGNALS.c.id.in_(chunk)))
            found.update(r[0] for r in rows)
        return found

    async def latest_signals_for(self, keys: Collection[tuple[str, Timeframe]]) -> dict[tuple[str, Timeframe], Signal]:
        """The newest signal (by issued_at, then id, as latest_signal_for) of each (symbol, timeframe)."""
        wanted = {(sym, Timeframe(tf)) for sym, tf in keys}
        symbols = sorted({sym for sym, _ in wanted})
        out: dict[tuple[str, Timeframe], Signal] = {}
        for start in range(0, len(symbols), IN_CHUNK):
            chunk = symbols[start: start + IN_CHUNK]
            newest = (
                sa.select(SIGNALS.c.symbol, SIGNALS.c.timeframe, sa.func.max(SIGNALS.c.issued_at).label("issued_at"))
                .where(SIGNALS.c.symbol.in_(chunk))
                .group_by(SIGNALS.c.symbol, SIGNALS.c.timeframe)
                .subquery()
            )
            stmt = sa.select(SIGNALS).join(newest, sa.and_(
                SIGNALS.c.symbol == newest.c.symbol, SIGNALS.c.timeframe == newest.c.timeframe,
                SIGNALS.c.issued_at == newest.c.issued_at))
            for row in await self._fetch(stmt):
                signal = _signal(row._mapping)
                key = (signal.symbol, signal.timeframe)
                if key in wanted and (key not in out or signal.id > out[key].id):
                    out[key] = signal
        return out

    async def get_signal(self, signal_id: str) -> Signal | None:
        rows = await self._fetch(sa.select(SIGNALS).where(SIGNALS.c.id == signal_id))
        return _signal(rows[0]._mapping) if rows else None

    async def open_signals(self) -> list[Signal]:
        stmt = (
            sa.select(SIGNALS)
            .select_from(SIGNALS.outerjoin(OUTCOMES, OUTCOMES.c.signal_id == SIGNALS.c.id))
            .where(OUTCOMES.c.signal_id.is_(None))
            .order_by(SIGNALS.c.issued_at, SIGNALS.c.id)
        )
        return [_signal(r._mapping) for r in await self._fetch(stmt)]

    async def latest_signal_for(self, symbol: str, timeframe: Timeframe) -> Signal | None:
        stmt = (
            sa.select(SIGNALS)
            .where(SIGNALS.c.symbol == symbol, SIGNALS.c.timeframe == Timeframe(timeframe).value)
            .order_by(SIGNALS.c.issued_at.desc(), SIGNALS.c.id.desc())
            .limit(1)
        )
        rows = await self._fetch(stmt)
        return _signal(rows[0]._mapping) if rows else None

    async def record_outcome(self, outcome: SignalOutcome, *, fan_out: bool = False) -> None:
        """Store (or replace) a signal's outcome and copy its status onto the signal, in one transaction (with
        `fan_out`, the exit's pending fan-out too)."""
        row = _outcome_row(outcome)
        stmt = self._insert(OUTCOMES)
        stmt = stmt.on_conflict_do_update(
            index_elements=[OUTCOMES.c.signal_id],
            set_={k: stmt.excluded[k] for k in row if k != "signal_id"},
        )
        status = sa.update(SIGNALS).where(SIGNALS.c.id == outcome.signal_id).values(status=row["status"])
        async with self._engine.begin() as conn:
            await conn.execute(stmt, row)
            await conn.execute(status)
            if fan_out:
                await self._add_fanouts(conn, [(outcome.signal_id, DeliveryKind.EXIT)])

    async def request_exits(self, exits: Sequence[tuple[str, datetime, str]]) -> None:
        """Store books' decisions to close signals (signal id, decision time, reason); the first decision for a
        signal stands (a restart that decides again changes nothing)."""
        if not exits:
            return
        stmt = self._insert(EXITS).on_conflict_do_nothing(index_elements=[EXITS.c.signal_id])
        await self._write(stmt, [{"signal_id": i, "decided_at": _require_aware(t), "reason": r} for i, t, r in exits])

    async def exit_requests(self, ids: Collection[str]) -> dict[str, tuple[datetime, str]]:
        """The stored exit decisions of these signals: id -> (decision time, reason)."""
        out: dict[str, tuple[datetime, str]] = {}
        wanted = sorted(set(ids))
        for start in range(0, len(wanted), IN_CHUNK):
            chunk = wanted[start: start + IN_CHUNK]
            rows = await self._fetch(sa.select(EXITS).where(EXITS.c.signal_id.in_(chunk)))
            out.update({r._mapping["signal_id"]: (r._mapping["decided_at"], r._mapping["reason"]) for r in rows})
        return out

    async def outcomes_since(self, since: datetime) -> list[tuple[Signal, SignalOutcome]]:
        stmt = (
            _closed_signals()
            .where(OUTCOMES.c.exit_time >= _require_aware(since))
            .order_by(OUTCOMES.c.exit_time, OUTCOMES.c.signal_id)
        )
        return [_signal_and_outcome(r) for r in await self._fetch(stmt)]

    async def outcome_count(self) -> int:
        """How many signals have closed (a cheap test of whether anything closed since the last look)."""
        rows = await self._fetch(sa.select(sa.func.count()).select_from(OUTCOMES))
        return int(rows[0][0])

    async def recent_outcomes(self, limit: int) -> list[tuple[Signal, SignalOutcome]]:
        stmt = _closed_signals().order_by(OUTCOMES.c.exit_time.desc(), OUTCOMES.c.signal_id.desc()).limit(limit)
        return [_signal_and_outcome(r) for r in await self._fetch(stmt)]

    # ------------------------------------------------------------------ users

    async def upsert_user(self, platform: str, platform_user_id: str, chat_id: str, display_name: str) -> User:
        """First sight: a free user with default preferences. Later: chat_id and display_name updated."""
        insert = self._insert(USERS).values(
            platform=platform,
            platform_user_id=platform_user_id,
            chat_id=chat_id,
            display_name=display_name,
            tier=Tier.FREE.value,
            active=True,
            created_at=self._clock.now(),
        )
        stmt = insert.on_conflict_do_update(
            index_elements=[USERS.c.platform, USERS.c.platform_user_id],
            set_={"chat_id": insert.excluded.chat_id, "display_name": insert.excluded.display_name},
        ).returning(USERS.c.id)
        self.invalidate_users()
        async with self._engine.begin() as conn:
            user_id = (await conn.execute(stmt)).scalar_one()
            prefs = self._insert(PREFERENCES).values(_preferences_row(user_id, Preferences()))
            await conn.execute(prefs.on_conflict_do_nothing(index_elements=[PREFERENCES.c.user_id]))
            rows = (await conn.execute(_users_query().where(USERS.c.id == user_id))).all()
        self.invalidate_users()
        return _user(rows[0])

    async def get_user(self, user_id: int) -> User | None:
        rows = await self._fetch(_users_query().where(USERS.c.id == user_id))
        return _user(rows[0]) if rows else None

    async def find_user(self, platform: str, platform_user_id: str) -> User | None:
        stmt = _users_query().where(USERS.c.platform == platform, USERS.c.platform_user_id == platform_user_id)
        rows = await self._fetch(stmt)
        return _user(rows[0]) if rows else None

    async def set_active(self, user_id: int, active: bool) -> None:
        await self._write_users(sa.update(USERS).where(USERS.c.id == user_id).values(active=active))

    async def set_tier(self, user_id: int, tier: Tier) -> None:
        await self._write_users(sa.update(USERS).where(USERS.c.id == user_id).values(tier=Tier(tier).value))

    async def set_preferences(self, user_id: int, prefs: Preferences) -> None:
        row = _preferences_row(user_id, prefs)
        stmt = self._insert(PREFERENCES).values(row)
        stmt = stmt.on_conflict_do_update(
            index_elements=[PREFERENCES.c.user_id],
            set_={k: stmt.excluded[k] for k in row if k != "user_id"},
        )
        await self._write_users(stmt)

    async def active_users(self) -> list[User]:
        """Every active user with preferences, ordered by id (called once per signal fan-out).

        Cached in this store until a user write through it (upsert_user, set_active, set_tier,
        set_preferences) or invalidate_users(), and for at most `users_cache_seconds`: code that changes the
        users or preferences tables by other means should call invalidate_users(), or its change reaches the
        fan-out only when the cache expires."""
        cached = self._active_users
        if cached is None or time.monotonic() - self._users_loaded_at > self._users_cache_seconds:
            generation, started = self._users_generation, time.monotonic()
            rows = await self._fetch(_users_query().where(USERS.c.active.is_(True)).order_by(USERS.c.id))
            cached = [_user(r) for r in rows]
            if generation == self._users_generation:  # no write raced the read
                self._active_users, self._users_loaded_at = cached, started
        return list(cached)

    def invalidate_users(self) -> None:
        """Forget the cached active users (after the users or preferences tables changed)."""
        self._users_generation += 1
        self._active_users = None

    async def _write_users(self, stmt: sa.Executable) -> int:
        self.invalidate_users()
        try:
            return await self._write(stmt)
        finally:
            self.invalidate_users()

    async def users_by_ids(self, user_ids: Collection[int]) -> dict[int, User]:
        """The users (active or not) with these ids, in IN-lists of IN_CHUNK."""
        wanted = sorted(set(user_ids))
        found: dict[int, User] = {}
        for start in range(0, len(wanted), IN_CHUNK):
            rows = await self._fetch(_users_query().where(USERS.c.id.in_(wanted[start: start + IN_CHUNK])))
            for row in rows:
                user = _user(row)
                found[user.id] = user
        return found

    # ------------------------------------------------------------------ deliveries

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
        columns, uniform = _delivery_columns(deliveries)
        constants = {**uniform, "status": DeliveryStatus.PENDING.value, "attempts": 0, "created_at": self._clock.now()}
        async with self._engine.begin() as conn:
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
        result = await conn.execute(stmt, params)
        return len(result.all())

    def _deliveries_insert_stmt(self) -> Insert:
        return self._insert(DELIVERIES).on_conflict_do_nothing(
            index_elements=[DELIVERIES.c.signal_id, DELIVERIES.c.user_id, DELIVERIES.c.kind, DELIVERIES.c.channel]
        )

    @functools.cached_property
    def _deliveries_insert(self) -> _BulkInsert:
        keys = [*_DELIVERY_INPUT_KEYS, "status", "attempts", "created_at"]
        return _BulkInsert.compile(self._deliveries_insert_stmt(), self._engine.dialect, keys)

    async def outbox_backlog(self, now: datetime, channels: Collection[str] | None = None
                             ) -> tuple[int, datetime | None]:
        """Rows due to be sent now (PENDING, not held; of `channels` if given: those a worker serves) and since
        when the oldest of them has been due."""
        due = sa.and_(DELIVERIES.c.status == DeliveryStatus.PENDING.value,
                      sa.or_(DELIVERIES.c.not_before.is_(None), DELIVERIES.c.not_before <= _require_aware(now)))
        if channels is not None:
            due = sa.and_(due, DELIVERIES.c.channel.in_(sorted(channels)))
        since = sa.func.coalesce(DELIVERIES.c.not_before, DELIVERIES.c.created_at)
        rows = await self._fetch(sa.select(sa.func.count(), sa.func.min(since)).where(due))
        count, oldest = tuple(rows[0])
        if isinstance(oldest, str):  # SQLite may return an aggregate over a coalesce() as text
            oldest = datetime.fromisoformat(oldest)
        return int(count), (oldest.replace(tzinfo=timezone.utc) if oldest is not None and oldest.tzinfo is None
                            else oldest)

    async def heartbeat(self, process: str) -> None:
        """A write that must commit (the readiness probe): this process's row, upserted in its own transaction."""
        stmt = self._insert(HEARTBEATS).values(process=process, at=self._clock.now())
        await self._write(stmt.on_conflict_do_update(index_elements=[HEARTBEATS.c.process],
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
                sa.or_(DELIVERIES.c.not_before.is_(None), DELIVERIES.c.not_before <= _require_aware(now)),
            )
            .order_by(_TIER_PRIORITY, DELIVERIES.c.created_at, DELIVERIES.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=DELIVERIES)
        )
        stmt = (
            sa.update(DELIVERIES)
            .where(DELIVERIES.c.id.in_(due), DELIVERIES.c.status == DeliveryStatus.PENDING.value)
            .values(status=DeliveryStatus.SENDING.value, attempts=DELIVERIES.c.attempts + 1)
            .returning(*DELIVERIES.c)
        )
        async with self._engine.begin() as conn:
            rows = (await conn.execute(stmt)).all()
            claimed = [_delivery(r._mapping) for r in rows]
            user_ids = sorted({d.user_id for d in claimed})
            tiers = dict((await conn.execute(sa.select(USERS.c.id, USERS.c.tier).where(USERS.c.id.in_(user_ids)))).all()
                         if user_ids else [])
        claimed.sort(key=lambda d: (-_TIERS[tiers.get(d.user_id, Tier.FREE.value)].rank, d.created_at or _EPOCH, d.id))
        return claimed

    async def upgrade_delivery_schema(self) -> bool:
        """Databases made before deliveries were unique per channel have the constraint (signal_id, user_id, kind);
        make it (signal_id, user_id, kind, channel), keeping every row. Idempotent; True when it changed the schema.
        Call it after Database.create_all() at start-up."""
        async with self._engine.begin() as conn:
            uniques = await conn.run_sync(
                lambda sync: sa.inspect(sync).get_unique_constraints(DELIVERIES.name)
                if sa.inspect(sync).has_table(DELIVERIES.name) else [])
            old = [u for u in uniques if sorted(u["column_names"]) == ["kind", "signal_id", "user_id"]]
            if not old:
                return False
            if self._engine.dialect.name == "postgresql":
                new = next(c for c in DELIVERIES.constraints if isinstance(c, sa.UniqueConstraint))
                await conn.execute(sa.text(f'ALTER TABLE {DELIVERIES.name} DROP CONSTRAINT "{old[0]["name"]}"'))
                await conn.execute(sa.schema.AddConstraint(new))
                return True
            # SQLite cannot drop a constraint: rebuild the table (no other table refers to it)
            columns = ", ".join(c.name for c in DELIVERIES.columns)
            await conn.execute(sa.text(f"ALTER TABLE {DELIVERIES.name} RENAME TO _deliveries_before_channels"))
            for index in DELIVERIES.indexes:
                await conn.execute(sa.text(f'DROP INDEX IF EXISTS "{index.name}"'))
            await conn.run_sync(lambda sync: DELIVERIES.create(sync))
            await conn.execute(sa.text(f"INSERT INTO {DELIVERIES.name} ({columns}) "
                                       f"SELECT {columns} FROM _deliveries_before_channels"))
            await conn.execute(sa.text("DROP TABLE _deliveries_before_channels"))
        return True

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
        async with self._engine.begin() as conn:
            await conn.execute(_RECORD_ATTEMPT, params)
            if parts:  # in the same transaction: a retry never resends a part recorded as sent
                stmt = self._insert(DELIVERY_PARTS)
                await conn.execute(stmt.on_conflict_do_update(
                    index_elements=[DELIVERY_PARTS.c.delivery_id],
                    set_={"parts_sent": stmt.excluded.parts_sent, "first_ref": stmt.excluded.first_ref,
                          "layout": stmt.excluded.layout}), parts)

    async def delivery_parts(self, ids: Collection[int]) -> dict[int, tuple[int, str, str]]:
        """delivery id -> (parts sent, first part's reference, layout) of deliveries an earlier attempt sent in
        part."""
        found: dict[int, tuple[int, str, str]] = {}
        wanted = sorted(set(ids))
        for start in range(0, len(wanted), IN_CHUNK):
            rows = await self._fetch(sa.select(DELIVERY_PARTS).where(
                DELIVERY_PARTS.c.delivery_id.in_(wanted[start:start + IN_CHUNK])))
            found.update({int(r.delivery_id): (int(r.parts_sent), str(r.first_ref), str(r.layout)) for r in rows})
        return found

    async def cancel_pending(self, user_id: int, reason: str, channel: str | None = None) -> int:
        """PENDING rows of a user (on one channel, or all) become SKIPPED with `reason`. Returns how many."""
        stmt = sa.update(DELIVERIES).where(
            DELIVERIES.c.user_id == user_id, DELIVERIES.c.status == DeliveryStatus.PENDING.value)
        if channel is not None:
            stmt = stmt.where(DELIVERIES.c.channel == channel)
        return await self._write(stmt.values(status=DeliveryStatus.SKIPPED.value, error=reason))

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
        return [(int(uid), str(channel), ref) for uid, channel, ref in (tuple(r) for r in await self._fetch(stmt))]

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
        since = _require_aware(since)
        closed = _require_aware(closed_since) if closed_since is not None else since
        stmt = (
            sa.select(SIGNALS, OUTCOMES)
            .select_from(SIGNALS.join(received, received.c.signal_id == SIGNALS.c.id)
                         .outerjoin(OUTCOMES, OUTCOMES.c.signal_id == SIGNALS.c.id))
            .where(sa.or_(received.c.sent_at >= since, OUTCOMES.c.exit_time >= closed))
            .order_by(SIGNALS.c.issued_at, SIGNALS.c.id)
        )
        out: list[tuple[Signal, SignalOutcome | None]] = []
        for row in await self._fetch(stmt):
            signal, outcome = _split(row, SIGNALS, _N_SIGNAL_COLS, OUTCOMES)
            out.append((_signal(signal), _outcome(outcome) if outcome["signal_id"] is not None else None))
        return out

    async def delivery_counts(self, channel: str | None = None) -> dict[DeliveryStatus, int]:
        """Rows per status (of one channel, or all)."""
        stmt = sa.select(DELIVERIES.c.status, sa.func.count()).group_by(DELIVERIES.c.status)
        if channel is not None:
            stmt = stmt.where(DELIVERIES.c.channel == channel)
        pairs: list[tuple[Any, ...]] = [tuple(r) for r in await self._fetch(stmt)]
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
        await self._write(sa.update(DELIVERIES).where(DELIVERIES.c.id == delivery_id).values(values))

    async def requeue_stale_sending(self) -> int:
        """At start-up: rows left SENDING by a crash go back to PENDING. Returns how many."""
        stmt = (
            sa.update(DELIVERIES)
            .where(DELIVERIES.c.status == DeliveryStatus.SENDING.value)
            .values(status=DeliveryStatus.PENDING.value)
        )
        return await self._write(stmt)

    async def sent_message_ref(self, signal_id: str, user_id: int) -> str | None:
        stmt = sa.select(DELIVERIES.c.message_ref).where(
            DELIVERIES.c.signal_id == signal_id,
            DELIVERIES.c.user_id == user_id,
            DELIVERIES.c.kind == DeliveryKind.SIGNAL.value,
            DELIVERIES.c.status == DeliveryStatus.SENT.value,
        )
        rows = await self._fetch(stmt)
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
        return [int(r[0]) for r in await self._fetch(stmt)]

    async def count(self, status: DeliveryStatus | None = None) -> int:
        stmt = sa.select(sa.func.count()).select_from(DELIVERIES)
        if status is not None:
            stmt = stmt.where(DELIVERIES.c.status == DeliveryStatus(status).value)
        rows = await self._fetch(stmt)
        return int(rows[0][0])

    async def sent_count_since(self, user_id: int, since: datetime) -> int:
        stmt = (
            sa.select(sa.func.count(sa.distinct(DELIVERIES.c.signal_id)))  # a signal on two channels counts once
            .select_from(DELIVERIES)
            .where(
                DELIVERIES.c.user_id == user_id,
                DELIVERIES.c.status == DeliveryStatus.SENT.value,
                DELIVERIES.c.kind == DeliveryKind.SIGNAL.value,
                DELIVERIES.c.sent_at >= _require_aware(since),
            )
        )
        rows = await self._fetch(stmt)
        return int(rows[0][0])

    async def sent_counts_since(self, since: datetime) -> dict[int, int]:
        """Signals SENT per user since `since`, on any channel (the monthly quota of every user in one query)."""
        stmt = (
            sa.select(DELIVERIES.c.user_id, sa.func.count(sa.distinct(DELIVERIES.c.signal_id)))
            .where(
                DELIVERIES.c.status == DeliveryStatus.SENT.value,
                DELIVERIES.c.kind == DeliveryKind.SIGNAL.value,
                DELIVERIES.c.sent_at >= _require_aware(since),
            )
            .group_by(DELIVERIES.c.user_id)
        )
        pairs: list[tuple[Any, ...]] = [tuple(row) for row in await self._fetch(stmt)]
        return {int(uid): int(n) for uid, n in pairs}

    async def get_outcome(self, signal_id: str) -> SignalOutcome | None:
        rows = await self._fetch(sa.select(OUTCOMES).where(OUTCOMES.c.signal_id == signal_id))
        return _outcome(rows[0]._mapping) if rows else None

    async def close(self) -> None:
        await self._db.close()

    async def get_delivery(self, delivery_id: int) -> Delivery | None:
        rows = await self._fetch(sa.select(DELIVERIES).where(DELIVERIES.c.id == delivery_id))
        return _delivery(rows[0]._mapping) if rows else None


# ---------------------------------------------------------------------- queries

@dataclass(frozen=True, slots=True)
class DeliveryUpdate:
    """The result of one attempt at a claimed delivery, for SqlStore.record_attempts()."""

    delivery_id: int
    status: DeliveryStatus
    message_ref: str | None = None
    error: str | None = None
    not_before: datetime | None = None
    sent_at: datetime | None = None
    refund_attempt: bool = False
    parts_sent: int = 0  # a message in parts that stopped part-way: parts that went out, and the first's ref
    first_ref: str | None = None
    layout: str = ""  # how the parts were split (bot.transports.base.Resume)


# professional first: ascending order of this expression is descending tier rank
_TIER_PRIORITY = sa.case({t.value: -t.rank for t in Tier}, value=USERS.c.tier, else_=0)
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

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_N_SIGNAL_COLS = len(SIGNALS.c)


def _closed_signals() -> sa.Select[Any]:
    return sa.select(SIGNALS, OUTCOMES).join(OUTCOMES, OUTCOMES.c.signal_id == SIGNALS.c.id)


def _users_query() -> sa.Select[Any]:
    return sa.select(*_USER_COLUMNS).select_from(
        USERS.outerjoin(PREFERENCES, PREFERENCES.c.user_id == USERS.c.id)
    )


def _require_aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: storage needs tz-aware datetimes")
    return value


# ---------------------------------------------------------------------- bulk inserts

@dataclass(frozen=True, slots=True)
class _BulkInsert:
    """An INSERT compiled once for one dialect and run as a DB-API executemany of plain tuples.

    For thousands of rows SQLAlchemy's per-row parameter handling costs about three times the
    insert itself; here each column's bind processor (the dialect's own) runs in one pass.
    """

    sql: str
    keys: tuple[str, ...]  # the statement's positional parameters, in order
    processors: tuple[Callable[[Any], Any] | None, ...]

    @classmethod
    def compile(cls, stmt: Insert, dialect: Dialect, keys: Sequence[str]) -> _BulkInsert:
        compiled = stmt.compile(dialect=dialect, column_keys=list(keys), for_executemany=True)
        order = tuple(compiled.positiontup or ())
        if sorted(order) != sorted(keys):
            raise NotImplementedError(f"bulk insert needs a positional paramstyle; got parameters {order!r}")
        table = stmt.table
        assert isinstance(table, sa.Table)
        processors = tuple(table.c[k].type.dialect_impl(dialect).bind_processor(dialect) for k in order)
        return cls(compiled.string, order, processors)

    def rows(self, columns: Mapping[str, Iterable[Any]], constants: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Parameter tuples from per-row `columns` and per-batch `constants` (processed once)."""
        streams: list[Iterable[Any]] = []
        for key, process in zip(self.keys, self.processors, strict=True):
            if key in constants:
                value = constants[key]
                streams.append(itertools.repeat(process(value) if process else value))
            else:
                streams.append(columns[key] if process is None else [process(v) for v in columns[key]])
        return list(zip(*streams, strict=False))  # the constants' repeat() streams are endless


# ---------------------------------------------------------------------- JSON

def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if isinstance(value, datetime):
        return value.isoformat()
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        return tolist()
    raise TypeError(f"cannot store {type(value).__name__} as JSON")


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default, separators=(",", ":"))


def _str_set(values: Iterable[str]) -> str:
    return _dumps(sorted(str(v) for v in values))


def _load_set(text: str | None) -> list[str]:
    return [] if not text or text == "[]" else list(json.loads(text))


# ---------------------------------------------------------------------- converters

def _instrument_row(i: Instrument) -> dict[str, Any]:
    return {
        "symbol": i.symbol,
        "asset_class": AssetClass(i.asset_class).value,
        "name": i.name,
        "exchange": i.exchange,
        "quote_currency": i.quote_currency,
        "sector": i.sector,
    }


def _instrument(m: Mapping[Any, Any]) -> Instrument:
    return Instrument(
        symbol=m["symbol"],
        asset_class=AssetClass(m["asset_class"]),
        name=m["name"],
        exchange=m["exchange"],
        quote_currency=m["quote_currency"],
        sector=m["sector"],
    )


def _bar_columns(symbol: str, tf: Timeframe, df: pd.DataFrame) -> dict[str, Iterable[Any]] | None:
    """The bars table's columns for `df` (None when it is empty); refuses frames that break BAR_COLUMNS."""
    if df.empty:
        return None
    missing = [c for c in BAR_COLUMNS if c not in df.columns]
    if missing:
        raise DataValidationError(f"bars of {symbol} {tf}: missing columns {missing}")
    index = pd.DatetimeIndex(df.index)
    if index.tz is None:
        raise DataValidationError(f"bars of {symbol} {tf}: index must be tz-aware UTC")
    nanoseconds = index.as_unit("ns").asi8  # since the Unix epoch, UTC, whatever the index's zone
    if (nanoseconds % 1_000_000_000).any():
        raise DataValidationError(f"bars of {symbol} {tf}: open times must be whole seconds")
    values = df[list(BAR_COLUMNS)].to_numpy(dtype=float)
    if np.isnan(values).any():
        raise DataValidationError(f"bars of {symbol} {tf}: NaN in OHLCV")
    columns: dict[str, Iterable[Any]] = {c: values[:, i].tolist() for i, c in enumerate(BAR_COLUMNS)}
    columns["time"] = (nanoseconds // 1_000_000_000).tolist()
    return columns


def _bars_frame(rows: Sequence[Row[Any]]) -> pd.DataFrame:
    values = np.array([tuple(r) for r in rows], dtype=float).reshape(len(rows), 1 + len(BAR_COLUMNS))
    seconds = values[:, 0].astype(np.int64).astype("datetime64[s]").astype("datetime64[us]")
    index = pd.DatetimeIndex(seconds, tz="UTC", name="time")
    return pd.DataFrame(values[:, 1:], index=index, columns=list(BAR_COLUMNS))


def _epoch_seconds(value: datetime) -> int:
    return int((value - _EPOCH).total_seconds() // 1)


def _signal_row(s: Signal) -> dict[str, Any]:
    return {
        "id": s.id,
        "symbol": s.symbol,
        "asset_class": AssetClass(s.asset_class).value,
        "timeframe": Timeframe(s.timeframe).value,
        "direction": Direction(s.direction).value,
        "entry": float(s.entry),
        "target": float(s.target),
        "stop": float(s.stop),
        "confidence": int(s.confidence),
        "position_size": float(s.position_size),
        "issued_at": s.issued_at,
        "expires_at": s.expires_at,
        "reasoning": s.reasoning,
        "strategy": s.strategy,
        "evidence": _dumps(s.evidence),
        "status": SignalStatus.OPEN.value,
    }


def _signal(m: Mapping[Any, Any]) -> Signal:
    return Signal(
        id=m["id"],
        symbol=m["symbol"],
        asset_class=AssetClass(m["asset_class"]),
        timeframe=Timeframe(m["timeframe"]),
        direction=Direction(m["direction"]),
        entry=m["entry"],
        target=m["target"],
        stop=m["stop"],
        confidence=m["confidence"],
        position_size=m["position_size"],
        issued_at=m["issued_at"],
        expires_at=m["expires_at"],
        reasoning=m["reasoning"],
        strategy=m["strategy"],
        evidence=json.loads(m["evidence"]) if m["evidence"] else {},
    )


def _outcome_row(o: SignalOutcome) -> dict[str, Any]:
    return {
        "signal_id": o.signal_id,
        "status": SignalStatus(o.status).value,
        "fill_price": float(o.fill_price),
        "fill_time": o.fill_time,
        "exit_price": float(o.exit_price),
        "exit_time": o.exit_time,
        "gross_return": float(o.gross_return),
        "net_return": float(o.net_return),
        "mfe": float(o.mfe),
        "mae": float(o.mae),
        "bars_held": int(o.bars_held),
    }


def _outcome(m: Mapping[Any, Any]) -> SignalOutcome:
    return SignalOutcome(
        signal_id=m["signal_id"],
        status=SignalStatus(m["status"]),
        fill_price=m["fill_price"],
        fill_time=m["fill_time"],
        exit_price=m["exit_price"],
        exit_time=m["exit_time"],
        gross_return=m["gross_return"],
        net_return=m["net_return"],
        mfe=m["mfe"],
        mae=m["mae"],
        bars_held=m["bars_held"],
    )


def _split(row: Row[Any], first: sa.Table, n_first: int, second: sa.Table) -> tuple[dict[str, Any], dict[str, Any]]:
    """A joined row as two name->value dicts (the tables share column names such as `status`)."""
    values = tuple(row)
    left = dict(zip(first.c.keys(), values[:n_first], strict=True))
    right = dict(zip(second.c.keys(), values[n_first:], strict=True))
    return left, right


def _signal_and_outcome(row: Row[Any]) -> tuple[Signal, SignalOutcome]:
    signal, outcome = _split(row, SIGNALS, _N_SIGNAL_COLS, OUTCOMES)
    return _signal(signal), _outcome(outcome)


def _preferences_row(user_id: int, p: Preferences) -> dict[str, Any]:
    quiet = p.quiet_hours
    return {
        "user_id": user_id,
        "symbols": _str_set(p.symbols),
        "asset_classes": _str_set(AssetClass(a).value for a in p.asset_classes),
        "timeframes": _str_set(Timeframe(t).value for t in p.timeframes),
        "min_confidence": int(p.min_confidence),
        "risk": RiskTolerance(p.risk).value,
        "quiet_start": quiet.start if quiet else None,
        "quiet_end": quiet.end if quiet else None,
        "quiet_tz": quiet.timezone if quiet else None,
    }


_USER_COLUMNS = (
    USERS.c.id, USERS.c.platform, USERS.c.platform_user_id, USERS.c.chat_id, USERS.c.display_name,
    USERS.c.tier, USERS.c.active, USERS.c.created_at,
    PREFERENCES.c.user_id, PREFERENCES.c.symbols, PREFERENCES.c.asset_classes, PREFERENCES.c.timeframes,
    PREFERENCES.c.min_confidence, PREFERENCES.c.risk, PREFERENCES.c.quiet_start, PREFERENCES.c.quiet_end,
    PREFERENCES.c.quiet_tz,
)  # _user() unpacks rows in this order
_TIERS = {t.value: t for t in Tier}
_DEFAULT_PREFERENCES = Preferences()


@functools.lru_cache(maxsize=4096)
def _preferences(
    symbols: str, asset_classes: str, timeframes: str, min_confidence: int, risk: str,
    quiet_start: str | None, quiet_end: str | None, quiet_tz: str | None,
) -> Preferences:
    """Preferences from their stored columns. Cached: most users share a few combinations."""
    quiet = None
    if quiet_start is not None and quiet_end is not None:
        quiet = QuietHours(start=quiet_start, end=quiet_end, timezone=quiet_tz or "UTC")
    return Preferences(
        symbols=frozenset(_load_set(symbols)),
        asset_classes=frozenset(AssetClass(a) for a in _load_set(asset_classes)),
        timeframes=frozenset(Timeframe(t) for t in _load_set(timeframes)),
        min_confidence=min_confidence,
        risk=RiskTolerance(risk),
        quiet_hours=quiet,
    )


def _user(row: Sequence[Any]) -> User:
    uid, platform, platform_user_id, chat_id, display_name, tier, active, created_at, pref_uid, *prefs = row
    return User(
        id=uid,
        platform=platform,
        platform_user_id=platform_user_id,
        chat_id=chat_id,
        display_name=display_name,
        tier=_TIERS[tier],
        active=bool(active),
        created_at=created_at,
        preferences=_DEFAULT_PREFERENCES if pref_uid is None else _preferences(*prefs),
    )


_DELIVERY_INPUT_KEYS = ("signal_id", "user_id", "kind", "channel", "not_before", "reply_to")


def _delivery_columns(
    deliveries: Sequence[tuple[str, int, DeliveryKind, str, datetime | None, str | None]],
) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """enqueue()'s input as (columns, constants): a column whose value is the same in every row (in a fan-out:
    signal, kind, channel, usually not_before and reply_to) becomes a constant, converted once, not per row."""
    columns: dict[str, list[Any]] = {k: list(v) for k, v in zip(_DELIVERY_INPUT_KEYS, zip(*deliveries), strict=True)}
    constants: dict[str, Any] = {}
    for key in _UNIFORM_CANDIDATES:
        values = columns[key]
        first = values[0]
        if all(v == first for v in values):
            constants[key] = first
            del columns[key]
    if "kind" in constants:
        constants["kind"] = DeliveryKind(constants["kind"]).value
    else:
        columns["kind"] = [DeliveryKind(k).value for k in columns["kind"]]
    return columns, constants


_UNIFORM_CANDIDATES = ("signal_id", "kind", "channel", "not_before", "reply_to")


def _delivery(m: Mapping[Any, Any]) -> Delivery:
    return Delivery(
        id=m["id"],
        signal_id=m["signal_id"],
        user_id=m["user_id"],
        kind=DeliveryKind(m["kind"]),
        channel=m["channel"],
        status=DeliveryStatus(m["status"]),
        attempts=m["attempts"],
        not_before=m["not_before"],
        message_ref=m["message_ref"],
        reply_to=m["reply_to"],
        error=m["error"],
        created_at=m["created_at"],
        sent_at=m["sent_at"],
    )


async def open_store(url: str, clock: Clock | None = None) -> SqlStore:
    """The store on the database at `url`, its schema created (SQLite by default, PostgreSQL by URL)."""
    db = Database(url)
    await db.create_all()
    return SqlStore(db, clock)
