"""REST API keys and their usage (tables api_keys and api_usage), and the dashboard's one-time login links
(web_logins); defined in storage.tables.

A key is `sb_` + 43 URL-safe characters (256 random bits); only its SHA-256 is stored, so a leaked database
holds no usable key; `prefix` (the first 11 characters) names it in lists. Looking a key up by hash is cached for
`cache_seconds` (default 5): a revocation here takes effect at once, one in another process within that time.
Usage is counted in memory (`count`) and added to the table by `flush()` (the API runs it every few seconds and
at stop), so a request costs no write.
"""
from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa

from core.clock import Clock, SystemClock
from core.domain import ApiKey, ApiUsage
from storage.database import Database, upsert
from storage.tables import API_KEYS, API_USAGE, WEB_LOGINS

KEY_PREFIX = "sb_"
MAX_KEYS_PER_USER = 10


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _key(row: sa.Row) -> ApiKey:
    m = row._mapping
    return ApiKey(int(m["id"]), int(m["user_id"]), str(m["name"]), str(m["prefix"]), m["created_at"],
                  m["last_used_at"], m["revoked_at"])


class TooManyKeys(ValueError):
    pass


class ApiKeyStore:
    def __init__(self, db: Database, clock: Clock | None = None, *, cache_seconds: float = 5.0) -> None:
        self._db = db
        self._clock: Clock = clock or SystemClock()
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}
        self._counts: dict[tuple[int, str, str], list[int]] = {}  # (key, day, endpoint) -> [count, errors]
        self._used: dict[int, datetime] = {}
        self.generation = 0  # counts revocations here: a cache of keys built at one generation is stale at the next

    async def create(self, user_id: int, name: str = "") -> tuple[str, ApiKey]:
        """A new key for the user: (the key, shown once, its record)."""
        existing = [k for k in await self.keys_of(user_id) if k.active]
        if len(existing) >= MAX_KEYS_PER_USER:
            raise TooManyKeys(f"at most {MAX_KEYS_PER_USER} active keys; revoke one first")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        name, prefix, created = name[:64], key[:11], self._clock.now()
        row = {"user_id": user_id, "name": name, "prefix": prefix, "key_hash": hash_key(key), "created_at": created}
        async with self._db.engine.begin() as conn:
            new_id = (await conn.execute(sa.insert(API_KEYS).values(row).returning(API_KEYS.c.id))).scalar_one()
        return key, ApiKey(int(new_id), user_id, name, prefix, created)

    async def keys_of(self, user_id: int) -> list[ApiKey]:
        rows = await self._db.fetch(sa.select(API_KEYS).where(API_KEYS.c.user_id == user_id).order_by(API_KEYS.c.id))
        return [_key(r) for r in rows]

    async def revoke(self, user_id: int, key_id: int) -> bool:
        """Revoke the user's key `key_id`; False when the user has no such active key."""
        stmt = (sa.update(API_KEYS).where(API_KEYS.c.id == key_id, API_KEYS.c.user_id == user_id,
                                          API_KEYS.c.revoked_at.is_(None)).values(revoked_at=self._clock.now()))
        done = await self._db.write(stmt) > 0
        self._cache.clear()
        self.generation += 1
        return done

    async def lookup(self, key: str) -> ApiKey | None:
        """The active key `key` is, or None (unknown, malformed or revoked)."""
        if not key.startswith(KEY_PREFIX) or len(key) > 100:
            return None
        digest = hash_key(key)
        hit = self._cache.get(digest)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self._cache_seconds:
            return hit[1]
        rows = await self._db.fetch(sa.select(API_KEYS).where(API_KEYS.c.key_hash == digest))
        found = _key(rows[0]) if rows else None
        found = found if found is not None and found.active else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now, found)
        return found

    def count(self, key_id: int, endpoint: str, error: bool) -> None:
        """One request of `key_id` to `endpoint` (a route template), counted in memory until flush()."""
        now = self._clock.now()
        cell = self._counts.setdefault((key_id, now.strftime("%Y-%m-%d"), endpoint), [0, 0])
        cell[0] += 1
        cell[1] += int(error)
        self._used[key_id] = now

    async def flush(self) -> int:
        """Add the counts kept in memory to api_usage (and each key's last use); how many cells. On a database
        error the counts are kept for the next flush."""
        counts, used = self._counts, self._used
        if not counts:
            return 0
        self._counts, self._used = {}, {}
        rows = [{"key_id": k, "day": d, "endpoint": e, "count": c[0], "errors": c[1]} for (k, d, e), c in counts.items()]
        stmt = upsert(self._db.dialect, API_USAGE)
        stmt = stmt.on_conflict_do_update(
            index_elements=[API_USAGE.c.key_id, API_USAGE.c.day, API_USAGE.c.endpoint],
            set_={"count": API_USAGE.c.count + stmt.excluded.count, "errors": API_USAGE.c.errors + stmt.excluded.errors})
        try:
            async with self._db.engine.begin() as conn:
                await conn.execute(stmt, rows)
                for key_id, at in used.items():
                    await conn.execute(sa.update(API_KEYS).where(API_KEYS.c.id == key_id).values(last_used_at=at))
        except BaseException:
            for cell, c in counts.items():  # put them back, merged with what came in meanwhile
                mine = self._counts.setdefault(cell, [0, 0])
                mine[0] += c[0]
                mine[1] += c[1]
            for key_id, at in used.items():
                self._used.setdefault(key_id, at)
            raise
        return len(rows)

    async def usage(self, key_ids: Sequence[int] | None = None, since_day: str = "") -> list[ApiUsage]:
        """Recorded usage (flushed), of `key_ids` (None: every key), from `since_day` on."""
        stmt = sa.select(API_USAGE).where(API_USAGE.c.day >= since_day)
        if key_ids is not None:
            stmt = stmt.where(API_USAGE.c.key_id.in_(list(key_ids)))
        rows = await self._db.fetch(stmt.order_by(API_USAGE.c.day, API_USAGE.c.key_id, API_USAGE.c.endpoint))
        return [ApiUsage(int(m["key_id"]), str(m["day"]), str(m["endpoint"]), int(m["count"]), int(m["errors"]))
                for m in (r._mapping for r in rows)]


class WebLogins:
    """One-time dashboard login links (table web_logins): a token valid `ttl`, used once; only its hash kept."""

    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self._db = db
        self._clock: Clock = clock or SystemClock()

    async def issue(self, user_id: int, ttl: timedelta) -> str:
        token = secrets.token_urlsafe(32)
        now = self._clock.now()
        await self._db.write(sa.insert(WEB_LOGINS).values(token_hash=hash_key(token), user_id=user_id, created_at=now,
                                                          expires_at=now + ttl))
        return token

    async def redeem(self, token: str) -> int | None:
        """The user the token logs in, once; None when unknown, used or expired."""
        if len(token) > 100:
            return None
        now = self._clock.now()
        stmt = (sa.update(WEB_LOGINS)
                .where(WEB_LOGINS.c.token_hash == hash_key(token), WEB_LOGINS.c.used_at.is_(None),
                       WEB_LOGINS.c.expires_at > now)
                .values(used_at=now).returning(WEB_LOGINS.c.user_id))
        async with self._db.engine.begin() as conn:
            row = (await conn.execute(stmt)).first()
        return int(row[0]) if row is not None else None
