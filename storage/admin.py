"""Admin and account tables and their repository: the admin audit log, per-day request counters, one-time
link codes, and accounts that join several platform identities (users rows).

Accounts: `account_members` maps a user id (one platform identity) to its account id, which is the user id of
the account's kept identity. A user without a row is an account of one (its own id). An account holds at most
one identity per platform.

Link codes are stored as SHA-256 hashes only; a code is single use (redeeming sets `used_at` in the same
UPDATE that checks it is unused and unexpired, so two redeemers cannot both win).

The tables are defined in storage.tables (every table of the schema is there); `AdminStore.ensure_schema()`
creates just them (checkfirst) on a database whose schema was created without them.
"""
from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import SQLModel

from core.admin import AuditEntry, AuditOutcome, LinkResult, Redeemed, UserCount
from core.clock import Clock, SystemClock
from storage.tables import (
    ACCOUNT_MEMBERS, ADMIN_TABLES as TABLES, AUDIT, LINK_CODES, PAYMENTS, REQUEST_COUNTS, SIGNALS, USERS,
)

from storage.database import Database, Insert

AUDIT_TEXT_LIMIT = 1000


def hash_link_code(code: str) -> str:
    """The stored form of a link code (case and surrounding spaces do not matter)."""
    return hashlib.sha256(code.strip().upper().encode()).hexdigest()


class AdminStore:
    """Audit log, request counters, link codes and account membership."""

    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self._db = db
        self._engine = db.engine
        self._clock: Clock = clock or SystemClock()
        self._schema_ready = False

    async def ensure_schema(self) -> None:
        """Create this module's tables if they are missing (cheap after the first call)."""
        if self._schema_ready:
            return
        async with self._engine.begin() as conn:
            await conn.run_sync(lambda sync: SQLModel.metadata.create_all(sync, tables=list(TABLES), checkfirst=True))
        self._schema_ready = True

    def _insert(self, table: sa.Table) -> Insert:
        return self._db.insert(table)

    async def _fetch(self, stmt: sa.Executable) -> list[sa.Row[Any]]:
        return await self._db.fetch(stmt)

    # ------------------------------------------------------------------ audit

    async def audit(self, entry: AuditEntry) -> int:
        row = {
            "at": entry.at, "platform": entry.platform, "platform_user_id": entry.platform_user_id,
            "user_id": entry.user_id, "command": entry.command[:64],
            "arguments": entry.arguments[:AUDIT_TEXT_LIMIT], "outcome": AuditOutcome(entry.outcome).value,
            "detail": entry.detail[:AUDIT_TEXT_LIMIT],
        }
        async with self._engine.begin() as conn:
            result = await conn.execute(sa.insert(AUDIT).values(row).returning(AUDIT.c.id))
            return int(result.scalar_one())

    async def audit_log(self, limit: int = 50) -> list[AuditEntry]:
        """The newest entries first."""
        rows = await self._fetch(sa.select(AUDIT).order_by(AUDIT.c.id.desc()).limit(limit))
        return [_audit_entry(r._mapping) for r in rows]

    # ------------------------------------------------------------------ request counters

    async def consume_request(self, subject: str, day: date, limit: int) -> int | None:
        """Count one request of `subject` on `day` if fewer than `limit` were counted: the new count, or None
        when the quota is used up. Atomic (one upsert guarded by the limit)."""
        if limit <= 0:
            return None
        insert = self._insert(REQUEST_COUNTS).values(subject=subject, day=day.isoformat(), count=1)
        stmt = insert.on_conflict_do_update(
            index_elements=[REQUEST_COUNTS.c.subject, REQUEST_COUNTS.c.day],
            set_={"count": REQUEST_COUNTS.c.count + 1},
            where=REQUEST_COUNTS.c.count < limit,
        ).returning(REQUEST_COUNTS.c.count)
        async with self._engine.begin() as conn:
            value = (await conn.execute(stmt)).scalar_one_or_none()
        return None if value is None else int(value)

    async def refund_request(self, subject: str, day: date) -> None:
        """Give back one counted request (the command did not produce what was asked for)."""
        stmt = (sa.update(REQUEST_COUNTS)
                .where(REQUEST_COUNTS.c.subject == subject, REQUEST_COUNTS.c.day == day.isoformat(),
                       REQUEST_COUNTS.c.count > 0)
                .values(count=REQUEST_COUNTS.c.count - 1))
        async with self._engine.begin() as conn:
            await conn.execute(stmt)

    async def requests_used(self, subject: str, day: date) -> int:
        rows = await self._fetch(sa.select(REQUEST_COUNTS.c.count).where(
            REQUEST_COUNTS.c.subject == subject, REQUEST_COUNTS.c.day == day.isoformat()))
        return int(rows[0][0]) if rows else 0

    # ------------------------------------------------------------------ link codes

    async def create_link_code(self, user_id: int, code: str, ttl: timedelta) -> datetime:
        """Store `code` (hashed) for `user_id`; earlier unused codes of that user stop working. Returns expiry."""
        now = self._clock.now()
        expires = now + ttl
        async with self._engine.begin() as conn:
            await conn.execute(sa.delete(LINK_CODES).where(LINK_CODES.c.user_id == user_id,
                                                           LINK_CODES.c.used_at.is_(None)))
            await conn.execute(sa.insert(LINK_CODES).values(
                code_hash=hash_link_code(code), user_id=user_id, created_at=now, expires_at=expires))
        return expires

    async def redeem_link_code(self, code: str, redeemer_id: int) -> Redeemed:
        """Use `code` once. Wrong, expired and used codes are told apart for a clear reply."""
        digest, now = hash_link_code(code), self._clock.now()
        claim = (sa.update(LINK_CODES)
                 .where(LINK_CODES.c.code_hash == digest, LINK_CODES.c.used_at.is_(None),
                        LINK_CODES.c.expires_at > now)
                 .values(used_at=now, used_by=redeemer_id)
                 .returning(LINK_CODES.c.user_id))
        async with self._engine.begin() as conn:
            issuer = (await conn.execute(claim)).scalar_one_or_none()
            if issuer is not None:
                return Redeemed(LinkResult.OK, int(issuer))
            rows = (await conn.execute(sa.select(LINK_CODES.c.used_at).where(LINK_CODES.c.code_hash == digest))).all()
        if not rows:
            return Redeemed(LinkResult.WRONG)
        return Redeemed(LinkResult.USED if rows[0][0] is not None else LinkResult.EXPIRED)

    # ------------------------------------------------------------------ accounts

    async def account_of(self, user_id: int) -> int:
        rows = await self._fetch(sa.select(ACCOUNT_MEMBERS.c.account_id).where(ACCOUNT_MEMBERS.c.user_id == user_id))
        return int(rows[0][0]) if rows else user_id

    async def members(self, user_id: int) -> list[int]:
        """The user ids of every identity in `user_id`'s account (itself included), ascending."""
        account = await self.account_of(user_id)
        rows = await self._fetch(sa.select(ACCOUNT_MEMBERS.c.user_id).where(ACCOUNT_MEMBERS.c.account_id == account))
        return sorted({user_id, *(int(r[0]) for r in rows)})

    async def link(self, keep_user_id: int, join_user_id: int) -> list[int]:
        """Join `join_user_id`'s account into `keep_user_id`'s account (kept: its id stays the account id).
        Returns the members of the joined account."""
        now = self._clock.now()
        async with self._engine.begin() as conn:
            keep_account = await _account_in(conn, keep_user_id)
            join_account = await _account_in(conn, join_user_id)
            if join_account != keep_account:
                await conn.execute(sa.update(ACCOUNT_MEMBERS).where(ACCOUNT_MEMBERS.c.account_id == join_account)
                                   .values(account_id=keep_account, linked_at=now))
            for uid in {keep_user_id, join_user_id, keep_account, join_account}:
                stmt = self._insert(ACCOUNT_MEMBERS).values(user_id=uid, account_id=keep_account, linked_at=now)
                await conn.execute(stmt.on_conflict_do_update(
                    index_elements=[ACCOUNT_MEMBERS.c.user_id], set_={"account_id": keep_account}))
            rows = (await conn.execute(sa.select(ACCOUNT_MEMBERS.c.user_id)
                                       .where(ACCOUNT_MEMBERS.c.account_id == keep_account))).all()
        return sorted(int(r[0]) for r in rows)

    # ------------------------------------------------------------------ statistics

    async def user_counts(self) -> list[UserCount]:
        stmt = (sa.select(USERS.c.platform, USERS.c.tier, USERS.c.active, sa.func.count())
                .group_by(USERS.c.platform, USERS.c.tier, USERS.c.active)
                .order_by(USERS.c.platform, USERS.c.tier, USERS.c.active))
        rows = [tuple(r) for r in await self._fetch(stmt)]
        return [UserCount(str(p), str(t), bool(a), int(n)) for p, t, a, n in rows]

    async def revenue(self) -> list[tuple[str, str, int]]:
        """(provider, currency, total amount in the currency's smallest unit) of every payment received."""
        stmt = (sa.select(PAYMENTS.c.provider, PAYMENTS.c.currency, sa.func.sum(PAYMENTS.c.amount))
                .group_by(PAYMENTS.c.provider, PAYMENTS.c.currency))
        return [(str(p), str(c), int(n or 0)) for p, c, n in (tuple(r) for r in await self._fetch(stmt))]

    async def signal_counts(self) -> dict[str, int]:
        """Signals per status ("open", and each way a signal closes)."""
        stmt = sa.select(SIGNALS.c.status, sa.func.count()).group_by(SIGNALS.c.status)
        return {str(s): int(n) for s, n in (tuple(r) for r in await self._fetch(stmt))}

    async def last_signal_at(self) -> datetime | None:
        rows = await self._fetch(sa.select(sa.func.max(SIGNALS.c.issued_at)))
        value = rows[0][0] if rows else None
        return value if isinstance(value, datetime) else None


async def _account_in(conn: Any, user_id: int) -> int:
    rows = (await conn.execute(sa.select(ACCOUNT_MEMBERS.c.account_id)
                               .where(ACCOUNT_MEMBERS.c.user_id == user_id))).all()
    return int(rows[0][0]) if rows else user_id


def _audit_entry(m: Any) -> AuditEntry:
    return AuditEntry(at=m["at"], platform=m["platform"], platform_user_id=m["platform_user_id"],
                      user_id=m["user_id"], command=m["command"], arguments=m["arguments"],
                      outcome=AuditOutcome(m["outcome"]), detail=m["detail"], id=m["id"])


def users_in_account_of(user_id: int) -> sa.Select[Any]:
    """SELECT of the user ids in `user_id`'s account (for another module's `USERS.c.id.in_(...)`)."""
    account = sa.func.coalesce(
        sa.select(ACCOUNT_MEMBERS.c.account_id).where(ACCOUNT_MEMBERS.c.user_id == user_id).scalar_subquery(),
        user_id)
    return sa.union(sa.select(sa.literal(user_id)), sa.select(ACCOUNT_MEMBERS.c.user_id).where(
        ACCOUNT_MEMBERS.c.account_id == account)).subquery().select()

