"""What subscribers do with signals: their feedback on each (took it, skipped it, closed it at market: table
signal_feedback, one row per user and signal) and their watchlists (table watchlist); defined in storage.tables.

A decision is stored once: a second tap of the same button changes nothing, and a taken signal cannot become a
skipped one (or the reverse); a taken one can be closed, once. `watchers(symbol)` is cached until a write
through this store, and for at most 30 s after a write in another process (the fan-out asks once per signal).
"""
from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

import time

import sqlalchemy as sa

from core.clock import Clock, SystemClock
from core.domain import Decision, Feedback
from core.errors import TooManyWatched
from storage.database import IN_CHUNK, Database
from storage.tables import SIGNAL_FEEDBACK, WATCHLIST

MAX_WATCHED = 50
WATCHERS_CACHE_SECONDS = 30.0


def _feedback(row: sa.Row) -> Feedback:
    m = row._mapping
    return Feedback(int(m["user_id"]), str(m["signal_id"]), Decision(m["decision"]), m["decided_at"],
                    m["fill_price"], m["fill_at"], m["closed_price"], m["closed_at"])


class FeedbackStore:
    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self._db = db
        self._clock: Clock = clock or SystemClock()

    async def decide(self, user_id: int, signal_id: str, decision: Decision, *, fill_price: float | None = None,
                     fill_at: datetime | None = None) -> tuple[Feedback, bool]:
        """Record the user's decision unless one is stored: (the stored record, whether this call stored it)."""
        row = {"user_id": user_id, "signal_id": signal_id, "decision": decision.value,
               "decided_at": self._clock.now(), "fill_price": fill_price, "fill_at": fill_at}
        stmt = self._db.insert(SIGNAL_FEEDBACK).values(row).on_conflict_do_nothing(
            index_elements=[SIGNAL_FEEDBACK.c.user_id, SIGNAL_FEEDBACK.c.signal_id])
        async with self._db.engine.begin() as conn:
            stored = bool((await conn.execute(stmt)).rowcount)
            found = (await conn.execute(sa.select(SIGNAL_FEEDBACK).where(
                SIGNAL_FEEDBACK.c.user_id == user_id, SIGNAL_FEEDBACK.c.signal_id == signal_id))).one()
        return _feedback(found), stored

    async def close(self, user_id: int, signal_id: str, price: float, at: datetime) -> Feedback | None:
        """Close a taken, still open position at `price`; None when there is none (not taken, or closed)."""
        t = SIGNAL_FEEDBACK
        stmt = sa.update(t).where(t.c.user_id == user_id, t.c.signal_id == signal_id,
                                  t.c.decision == Decision.TOOK.value, t.c.closed_at.is_(None)).values(
            closed_price=price, closed_at=at)
        async with self._db.engine.begin() as conn:
            if not (await conn.execute(stmt)).rowcount:
                return None
            found = (await conn.execute(sa.select(t).where(t.c.user_id == user_id, t.c.signal_id == signal_id))).one()
        return _feedback(found)

    async def get(self, user_id: int, signal_id: str) -> Feedback | None:
        t = SIGNAL_FEEDBACK
        async with self._db.engine.connect() as conn:
            row = (await conn.execute(sa.select(t).where(t.c.user_id == user_id, t.c.signal_id == signal_id))).first()
        return None if row is None else _feedback(row)

    async def of_user(self, user_id: int) -> list[Feedback]:
        """The user's records, oldest decision first."""
        t = SIGNAL_FEEDBACK
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(t).where(t.c.user_id == user_id)
                                       .order_by(t.c.decided_at, t.c.signal_id))).all()
        return [_feedback(r) for r in rows]

    async def counts(self, signal_ids: Collection[str]) -> dict[str, dict[str, int]]:
        """Per signal: how many took and skipped it (for the admins and the API)."""
        t = SIGNAL_FEEDBACK
        wanted = sorted(set(signal_ids))
        out: dict[str, dict[str, int]] = {}
        async with self._db.engine.connect() as conn:
            for start in range(0, len(wanted), IN_CHUNK):
                stmt = (sa.select(t.c.signal_id, t.c.decision, sa.func.count())
                        .where(t.c.signal_id.in_(wanted[start:start + IN_CHUNK])).group_by(t.c.signal_id, t.c.decision))
                for sid, decision, n in (await conn.execute(stmt)).all():
                    out.setdefault(str(sid), {})[str(decision)] = int(n)
        return out


class WatchlistStore:
    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self._db = db
        self._clock: Clock = clock or SystemClock()
        self._watchers: dict[str, tuple[float, frozenset[int]]] = {}

    async def add(self, user_id: int, symbols: Collection[str]) -> list[str]:
        """Add symbols (already canonical); the ones that were not on the list yet."""
        have = set(await self.symbols_of(user_id))
        new = [s for s in dict.fromkeys(symbols) if s not in have]
        if len(have) + len(new) > MAX_WATCHED:
            raise TooManyWatched(f"Not added: a watchlist holds at most {MAX_WATCHED} symbols ({len(have)} on "
                                 "yours).")
        if new:
            now = self._clock.now()
            stmt = self._db.insert(WATCHLIST).values([{"user_id": user_id, "symbol": s, "added_at": now} for s in new])
            async with self._db.engine.begin() as conn:
                await conn.execute(stmt.on_conflict_do_nothing(index_elements=[WATCHLIST.c.user_id, WATCHLIST.c.symbol]))
            self._watchers.clear()
        return new

    async def remove(self, user_id: int, symbols: Collection[str]) -> list[str]:
        """Remove symbols; the ones that were on the list."""
        have = set(await self.symbols_of(user_id))
        gone = [s for s in dict.fromkeys(symbols) if s in have]
        if gone:
            stmt = sa.delete(WATCHLIST).where(WATCHLIST.c.user_id == user_id, WATCHLIST.c.symbol.in_(gone))
            async with self._db.engine.begin() as conn:
                await conn.execute(stmt)
            self._watchers.clear()
        return gone

    async def symbols_of(self, user_id: int) -> list[str]:
        """The user's watched symbols in the order they were added."""
        stmt = (sa.select(WATCHLIST.c.symbol).where(WATCHLIST.c.user_id == user_id)
                .order_by(WATCHLIST.c.added_at, WATCHLIST.c.symbol))
        async with self._db.engine.connect() as conn:
            return [str(r[0]) for r in (await conn.execute(stmt)).all()]

    async def watchers(self, symbol: str) -> frozenset[int]:
        """Users watching `symbol`."""
        hit = self._watchers.get(symbol)
        if hit is not None and time.monotonic() - hit[0] < WATCHERS_CACHE_SECONDS:
            return hit[1]
        stmt = sa.select(WATCHLIST.c.user_id).where(WATCHLIST.c.symbol == symbol)
        async with self._db.engine.connect() as conn:
            found = frozenset(int(r[0]) for r in (await conn.execute(stmt)).all())
        if len(self._watchers) > 1024:
            self._watchers.clear()
        self._watchers[symbol] = (time.monotonic(), found)
        return found
