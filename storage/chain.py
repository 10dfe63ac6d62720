"""The public track record's hash chain (table record_chain, defined in storage.tables).

Every signal issued to subscribers (shadow signals are never issued) gets an `issue` entry in the transaction that
stores it, and every outcome recorded for it an `exit` entry in the transaction that records it. An entry holds the
canonical JSON of what was recorded (`payload`: the signal's levels, confidence, size, times, strategy and reasoning;
or the outcome's status, prices, times and returns) and `hash = sha256(seq | kind | signal_id | prev_hash |
payload)`, `prev_hash` being the hash of the entry before (GENESIS for the first). Editing a stored signal or
outcome, deleting one, hiding one as a shadow, or editing, removing or reordering an entry breaks the chain
where it happened, which `verify()` reports in plain words. Appends are serialised: a transaction-level advisory
lock on PostgreSQL, the database's write lock on SQLite (and the unique seq behind both).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from core.domain import Signal, SignalOutcome
from storage.database import Database
from storage.rows import to_outcome, to_signal
from storage.tables import CHAIN, OUTCOMES, SIGNALS

GENESIS = "0" * 64
CHAIN_LOCK = 0x5EC0_C4A1  # pg_advisory_xact_lock key of chain appends


def _utc(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat()


def issue_payload(s: Signal) -> str:
    return json.dumps({"id": s.id, "symbol": s.symbol, "asset_class": s.asset_class.value,
                       "timeframe": s.timeframe.value, "direction": s.direction.value, "entry": float(s.entry),
                       "target": float(s.target), "stop": float(s.stop), "confidence": int(s.confidence),
                       "position_size": float(s.position_size), "issued_at": _utc(s.issued_at),
                       "expires_at": _utc(s.expires_at), "strategy": s.strategy, "reasoning": s.reasoning},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def exit_payload(o: SignalOutcome) -> str:
    return json.dumps({"signal_id": o.signal_id, "status": o.status.value, "fill_price": float(o.fill_price),
                       "fill_time": _utc(o.fill_time), "exit_price": float(o.exit_price),
                       "exit_time": _utc(o.exit_time), "gross_return": float(o.gross_return),
                       "net_return": float(o.net_return), "mfe": float(o.mfe), "mae": float(o.mae),
                       "bars_held": int(o.bars_held)}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(seq: int, kind: str, signal_id: str, prev_hash: str, payload: str) -> str:
    return hashlib.sha256(f"{seq}|{kind}|{signal_id}|{prev_hash}|{payload}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainEntry:
    seq: int
    kind: str
    signal_id: str
    payload: str
    prev_hash: str
    hash: str
    at: datetime

    @property
    def sound(self) -> bool:
        """Its hash is the hash of its own fields (the entry was not edited)."""
        return self.hash == entry_hash(self.seq, self.kind, self.signal_id, self.prev_hash, self.payload)


def _entry(row: Any) -> ChainEntry:
    m = row._mapping
    return ChainEntry(int(m["seq"]), str(m["kind"]), str(m["signal_id"]), str(m["payload"]), str(m["prev_hash"]),
                      str(m["hash"]), m["at"])


async def lock(db: Database, conn: AsyncConnection) -> None:
    """Hold the chain until the caller's transaction ends (PostgreSQL; SQLite has one writer at a time)."""
    if db.dialect == "postgresql":
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(CHAIN_LOCK)))


async def append(db: Database, conn: AsyncConnection, items: Sequence[tuple[str, str, str]], now: datetime) -> None:
    """Append (kind, signal_id, payload) entries in the caller's transaction, after the current head (call
    lock() first when what to append depends on what the transaction read)."""
    if not items:
        return
    await lock(db, conn)
    head = (await conn.execute(sa.select(CHAIN.c.seq, CHAIN.c.hash).order_by(CHAIN.c.seq.desc()).limit(1))).first()
    seq, prev = (int(head[0]), str(head[1])) if head is not None else (0, GENESIS)
    rows = []
    for kind, signal_id, payload in items:
        seq += 1
        digest = entry_hash(seq, kind, signal_id, prev, payload)
        rows.append({"seq": seq, "kind": kind, "signal_id": signal_id, "payload": payload, "prev_hash": prev,
                     "hash": digest, "at": now})
        prev = digest
    await conn.execute(sa.insert(CHAIN), rows)


@dataclass
class Verification:
    """What verify() found: `ok` when the chain is whole and every chained signal and outcome is as recorded."""

    entries: int = 0
    signals: int = 0
    head: str = GENESIS
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class ChainStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def entries(self, signal_id: str | None = None) -> list[ChainEntry]:
        stmt = sa.select(CHAIN).order_by(CHAIN.c.seq)
        if signal_id is not None:
            stmt = stmt.where(CHAIN.c.signal_id == signal_id)
        return [_entry(r) for r in await self._db.fetch(stmt)]

    async def entries_after(self, seq: int, limit: int = 1000) -> list[ChainEntry]:
        """The entries after `seq`, in order, at most `limit` (the stream's and the download's pages)."""
        stmt = sa.select(CHAIN).where(CHAIN.c.seq > seq).order_by(CHAIN.c.seq).limit(limit)
        return [_entry(r) for r in await self._db.fetch(stmt)]

    async def head_seq(self) -> int:
        """The last entry's seq (0: an empty chain)."""
        rows = await self._db.fetch(sa.select(sa.func.max(CHAIN.c.seq)))
        return int(rows[0][0] or 0)

    async def around(self, seq: int) -> tuple[ChainEntry | None, ChainEntry | None]:
        """The entries just before and just after `seq`."""
        before = await self._db.fetch(sa.select(CHAIN).where(CHAIN.c.seq < seq).order_by(CHAIN.c.seq.desc()).limit(1))
        after = await self._db.fetch(sa.select(CHAIN).where(CHAIN.c.seq > seq).order_by(CHAIN.c.seq).limit(1))
        return (_entry(before[0]) if before else None), (_entry(after[0]) if after else None)

    async def verify(self) -> Verification:
        """Walk the chain from genesis: each entry's hash, its link to the one before, no gap in seq; then each
        chained signal and outcome against what the tables hold now; then signals issued since the chain began
        that it does not hold."""
        found = Verification()
        entries = await self.entries()
        found.entries = len(entries)
        prev, expected_seq = GENESIS, 1
        latest: dict[tuple[str, str], ChainEntry] = {}
        for e in entries:
            if e.seq != expected_seq:
                found.problems.append(f"entries {expected_seq}..{e.seq - 1} are missing (removed from the chain)")
            if e.prev_hash != prev:
                found.problems.append(f"entry {e.seq} ({e.kind} {e.signal_id}) does not follow the entry before it")
            if not e.sound:
                found.problems.append(f"entry {e.seq} ({e.kind} {e.signal_id}) was edited: its hash does not match")
            prev, expected_seq = e.hash, e.seq + 1
            latest[(e.kind, e.signal_id)] = e
        found.head = prev
        signals = {str(r._mapping["id"]): to_signal(r._mapping) for r in await self._db.fetch(sa.select(SIGNALS))}
        outcomes = {str(r._mapping["signal_id"]): to_outcome(r._mapping) for r in await self._db.fetch(sa.select(OUTCOMES))}
        chained = {sid for kind, sid in latest if kind == "issue"}
        found.signals = len(chained)
        for (kind, sid), e in latest.items():
            s = signals.get(sid)
            if kind == "issue":
                if s is None:
                    found.problems.append(f"signal {sid} (entry {e.seq}) was deleted")
                elif s.shadow:
                    found.problems.append(f"signal {sid} (entry {e.seq}) was issued, and is now hidden as a shadow")
                elif issue_payload(s) != e.payload:
                    found.problems.append(f"signal {sid} (entry {e.seq}) was edited after it was issued")
            else:
                o = outcomes.get(sid)
                if o is None:
                    found.problems.append(f"the outcome of {sid} (entry {e.seq}) was deleted")
                elif exit_payload(o) != e.payload:
                    found.problems.append(f"the outcome of {sid} (entry {e.seq}) was edited after it was recorded")
        for sid, s in signals.items():  # the migration that made the chain chained every signal there was
            if not s.shadow and sid not in chained:
                found.problems.append(f"signal {sid} is in the record but not in the chain (added afterwards)")
        for sid in outcomes:
            s = signals.get(sid)
            if s is not None and not s.shadow and ("exit", sid) not in latest:
                found.problems.append(f"the outcome of {sid} is in the record but not in the chain")
        return found
