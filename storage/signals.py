"""Signals, their outcomes and the books' exit decisions (core.ports.SignalRepository)."""
from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime

import sqlalchemy as sa

from core.clock import Clock, SystemClock
from core.domain import DeliveryKind, Signal, SignalOutcome, SignalUpdate, Timeframe
from storage import chain
from storage.database import IN_CHUNK, Database
from storage.outbox import record_fanouts
from storage.rows import closed_signals, outcome_row, require_aware, signal_and_outcome, signal_row, to_outcome, to_signal
from storage.tables import EXITS, OUTCOMES, SIGNALS, UPDATES


class SignalStore:
    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self._db = db
        self._clock: Clock = clock or SystemClock()

    async def add_signal(self, signal: Signal) -> None:
        """Store a signal. Signals are immutable: adding an id that exists already changes nothing."""
        await self.add_signals([signal])

    async def add_signals(self, signals: Sequence[Signal], *, fan_out: Collection[str] = ()) -> None:
        """Store several signals in one transaction; ids that exist already change nothing. `fan_out`: the ids
        to be sent to subscribers, recorded as pending fan-outs in the same transaction (the outbox's
        pending_fanouts)."""
        if not signals:
            return
        stmt = self._db.insert(SIGNALS).on_conflict_do_nothing(index_elements=[SIGNALS.c.id])
        async with self._db.engine.begin() as conn:
            await chain.lock(self._db, conn)  # which ids are new, and their entries, in one critical section
            ids = sorted({s.id for s in signals})
            old: set[str] = set()
            for start in range(0, len(ids), IN_CHUNK):
                old.update(r[0] for r in await conn.execute(sa.select(SIGNALS.c.id).where(
                    SIGNALS.c.id.in_(ids[start:start + IN_CHUNK]))))
            await conn.execute(stmt, [signal_row(s) for s in signals])
            new = {s.id: s for s in signals if s.id not in old and not s.shadow}  # shadows are never issued
            await chain.append(self._db, conn, [("issue", s.id, chain.issue_payload(s)) for s in new.values()],
                               self._clock.now())
            if fan_out:
                await record_fanouts(self._db, conn, [(i, DeliveryKind.SIGNAL) for i in fan_out], self._clock.now())

    async def existing_signal_ids(self, ids: Collection[str]) -> set[str]:
        found: set[str] = set()
        wanted = sorted(set(ids))
        for start in range(0, len(wanted), IN_CHUNK):
            chunk = wanted[start: start + IN_CHUNK]
            rows = await self._db.fetch(sa.select(SIGNALS.c.id).where(SIGNALS.c.id.in_(chunk)))
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
            for row in await self._db.fetch(stmt):
                signal = to_signal(row._mapping)
                key = (signal.symbol, signal.timeframe)
                if key in wanted and (key not in out or signal.id > out[key].id):
                    out[key] = signal
        return out

    async def get_signal(self, signal_id: str) -> Signal | None:
        rows = await self._db.fetch(sa.select(SIGNALS).where(SIGNALS.c.id == signal_id))
        return to_signal(rows[0]._mapping) if rows else None

    async def open_signals(self) -> list[Signal]:
        stmt = (
            sa.select(SIGNALS)
            .select_from(SIGNALS.outerjoin(OUTCOMES, OUTCOMES.c.signal_id == SIGNALS.c.id))
            .where(OUTCOMES.c.signal_id.is_(None))
            .order_by(SIGNALS.c.issued_at, SIGNALS.c.id)
        )
        return [to_signal(r._mapping) for r in await self._db.fetch(stmt)]

    async def latest_signal_for(self, symbol: str, timeframe: Timeframe) -> Signal | None:
        stmt = (
            sa.select(SIGNALS)
            .where(SIGNALS.c.symbol == symbol, SIGNALS.c.timeframe == Timeframe(timeframe).value)
            .order_by(SIGNALS.c.issued_at.desc(), SIGNALS.c.id.desc())
            .limit(1)
        )
        rows = await self._db.fetch(stmt)
        return to_signal(rows[0]._mapping) if rows else None

    async def record_outcome(self, outcome: SignalOutcome, *, fan_out: bool = False) -> None:
        """Store (or replace) a signal's outcome and copy its status onto the signal, in one transaction (with
        `fan_out`, the exit's pending fan-out too)."""
        row = outcome_row(outcome)
        stmt = self._db.insert(OUTCOMES)
        stmt = stmt.on_conflict_do_update(
            index_elements=[OUTCOMES.c.signal_id],
            set_={k: stmt.excluded[k] for k in row if k != "signal_id"},
        )
        status = sa.update(SIGNALS).where(SIGNALS.c.id == outcome.signal_id).values(status=row["status"])
        async with self._db.engine.begin() as conn:
            await conn.execute(stmt, row)
            await conn.execute(status)
            evidence = (await conn.execute(sa.select(SIGNALS.c.evidence).where(SIGNALS.c.id == outcome.signal_id))).first()
            if evidence is not None and "shadow" not in json.loads(evidence[0] or "{}"):  # the public record's
                await chain.append(self._db, conn, [("exit", outcome.signal_id, chain.exit_payload(outcome))],
                                   self._clock.now())
            if fan_out:
                await record_fanouts(self._db, conn, [(outcome.signal_id, DeliveryKind.EXIT)], self._clock.now())

    async def get_outcome(self, signal_id: str) -> SignalOutcome | None:
        rows = await self._db.fetch(sa.select(OUTCOMES).where(OUTCOMES.c.signal_id == signal_id))
        return to_outcome(rows[0]._mapping) if rows else None

    async def request_exits(self, exits: Sequence[tuple[str, datetime, str]]) -> None:
        """Store books' decisions to close signals (signal id, decision time, reason); the first decision for a
        signal stands (a restart that decides again changes nothing)."""
        if not exits:
            return
        stmt = self._db.insert(EXITS).on_conflict_do_nothing(index_elements=[EXITS.c.signal_id])
        await self._db.write(stmt, [{"signal_id": i, "decided_at": require_aware(t), "reason": r} for i, t, r in exits])

    async def exit_requests(self, ids: Collection[str]) -> dict[str, tuple[datetime, str]]:
        """The stored exit decisions of these signals: id -> (decision time, reason)."""
        out: dict[str, tuple[datetime, str]] = {}
        wanted = sorted(set(ids))
        for start in range(0, len(wanted), IN_CHUNK):
            chunk = wanted[start: start + IN_CHUNK]
            rows = await self._db.fetch(sa.select(EXITS).where(EXITS.c.signal_id.in_(chunk)))
            out.update({r._mapping["signal_id"]: (r._mapping["decided_at"], r._mapping["reason"]) for r in rows})
        return out

    async def record_update(self, update: SignalUpdate, *, fan_out: bool = False) -> bool:
        """Store what turned against an open signal; only the first update of a signal is kept (False: it had
        one). `fan_out`: its pending fan-out recorded in the same transaction."""
        row = {"signal_id": update.signal_id, "at": require_aware(update.at), "changes": json.dumps(list(update.changes))}
        stmt = self._db.insert(UPDATES).on_conflict_do_nothing(index_elements=[UPDATES.c.signal_id])
        async with self._db.engine.begin() as conn:
            if (await conn.execute(sa.select(UPDATES.c.signal_id).where(
                    UPDATES.c.signal_id == update.signal_id))).first() is not None:
                return False
            await conn.execute(stmt, row)
            if fan_out:
                await record_fanouts(self._db, conn, [(update.signal_id, DeliveryKind.UPDATE)], self._clock.now())
            return True

    async def updates(self, ids: Collection[str]) -> dict[str, SignalUpdate]:
        """The stored updates of these signals, by id."""
        out: dict[str, SignalUpdate] = {}
        wanted = sorted(set(ids))
        for start in range(0, len(wanted), IN_CHUNK):
            chunk = wanted[start: start + IN_CHUNK]
            for r in await self._db.fetch(sa.select(UPDATES).where(UPDATES.c.signal_id.in_(chunk))):
                m = r._mapping
                out[m["signal_id"]] = SignalUpdate(m["signal_id"], m["at"], tuple(json.loads(m["changes"])))
        return out

    async def outcomes_since(self, since: datetime) -> list[tuple[Signal, SignalOutcome]]:
        stmt = (
            closed_signals()
            .where(OUTCOMES.c.exit_time >= require_aware(since))
            .order_by(OUTCOMES.c.exit_time, OUTCOMES.c.signal_id)
        )
        return [signal_and_outcome(r) for r in await self._db.fetch(stmt)]

    async def outcome_count(self) -> int:
        """How many signals have closed (a cheap test of whether anything closed since the last look)."""
        rows = await self._db.fetch(sa.select(sa.func.count()).select_from(OUTCOMES))
        return int(rows[0][0])

    async def recent_outcomes(self, limit: int) -> list[tuple[Signal, SignalOutcome]]:
        stmt = closed_signals().order_by(OUTCOMES.c.exit_time.desc(), OUTCOMES.c.signal_id.desc()).limit(limit)
        return [signal_and_outcome(r) for r in await self._db.fetch(stmt)]
