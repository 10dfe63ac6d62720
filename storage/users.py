"""Users and their preferences (core.ports.UserRepository), with the fan-out's cache of active users."""
from __future__ import annotations

import time
from collections.abc import Collection

import sqlalchemy as sa

from core.clock import Clock, SystemClock
from core.domain import Preferences, Tier, User
from storage.database import IN_CHUNK, Database
from storage.rows import preferences_row, to_user, users_query
from storage.tables import PREFERENCES, USERS


class UserStore:
    def __init__(self, db: Database, clock: Clock | None = None, *, cache_seconds: float = 30.0) -> None:
        self._db = db
        self._clock: Clock = clock or SystemClock()
        # active_users() cache: every user write through this store bumps the generation and drops it; it also
        # expires after cache_seconds, for writers that bypass this store
        self._active_users: list[User] | None = None
        self._generation = 0
        self._cache_seconds = cache_seconds
        self._loaded_at = 0.0

    async def upsert_user(self, platform: str, platform_user_id: str, chat_id: str, display_name: str) -> User:
        """First sight: a free user with default preferences. Later: chat_id and display_name updated."""
        insert = self._db.insert(USERS).values(
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
        async with self._db.engine.begin() as conn:
            user_id = (await conn.execute(stmt)).scalar_one()
            prefs = self._db.insert(PREFERENCES).values(preferences_row(user_id, Preferences()))
            await conn.execute(prefs.on_conflict_do_nothing(index_elements=[PREFERENCES.c.user_id]))
            rows = (await conn.execute(users_query().where(USERS.c.id == user_id))).all()
        self.invalidate_users()
        return to_user(rows[0])

    async def get_user(self, user_id: int) -> User | None:
        rows = await self._db.fetch(users_query().where(USERS.c.id == user_id))
        return to_user(rows[0]) if rows else None

    async def find_user(self, platform: str, platform_user_id: str) -> User | None:
        stmt = users_query().where(USERS.c.platform == platform, USERS.c.platform_user_id == platform_user_id)
        rows = await self._db.fetch(stmt)
        return to_user(rows[0]) if rows else None

    async def set_active(self, user_id: int, active: bool) -> None:
        await self._write(sa.update(USERS).where(USERS.c.id == user_id).values(active=active))

    async def set_tier(self, user_id: int, tier: Tier) -> None:
        await self._write(sa.update(USERS).where(USERS.c.id == user_id).values(tier=Tier(tier).value))

    async def set_preferences(self, user_id: int, prefs: Preferences) -> None:
        row = preferences_row(user_id, prefs)
        stmt = self._db.insert(PREFERENCES).values(row)
        stmt = stmt.on_conflict_do_update(
            index_elements=[PREFERENCES.c.user_id],
            set_={k: stmt.excluded[k] for k in row if k != "user_id"},
        )
        await self._write(stmt)

    async def active_users(self) -> list[User]:
        """Every active user with preferences, ordered by id (called once per signal fan-out).

        Cached in this store until a user write through it (upsert_user, set_active, set_tier,
        set_preferences) or invalidate_users(), and for at most `cache_seconds`: code that changes the
        users or preferences tables by other means should call invalidate_users(), or its change reaches the
        fan-out only when the cache expires."""
        cached = self._active_users
        if cached is None or time.monotonic() - self._loaded_at > self._cache_seconds:
            generation, started = self._generation, time.monotonic()
            rows = await self._db.fetch(users_query().where(USERS.c.active.is_(True)).order_by(USERS.c.id))
            cached = [to_user(r) for r in rows]
            if generation == self._generation:  # no write raced the read
                self._active_users, self._loaded_at = cached, started
        return list(cached)

    @property
    def generation(self) -> int:
        """Counts the user writes through this store (and invalidate_users calls): a cache of users built
        at one generation is stale at the next."""
        return self._generation

    def invalidate_users(self) -> None:
        """Forget the cached active users (after the users or preferences tables changed)."""
        self._generation += 1
        self._active_users = None

    async def _write(self, stmt: sa.Executable) -> int:
        self.invalidate_users()
        try:
            return await self._db.write(stmt)
        finally:
            self.invalidate_users()

    async def users_by_ids(self, user_ids: Collection[int]) -> dict[int, User]:
        """The users (active or not) with these ids, in IN-lists of IN_CHUNK."""
        wanted = sorted(set(user_ids))
        found: dict[int, User] = {}
        for start in range(0, len(wanted), IN_CHUNK):
            rows = await self._db.fetch(users_query().where(USERS.c.id.in_(wanted[start: start + IN_CHUNK])))
            for row in rows:
                user = to_user(row)
                found[user.id] = user
        return found
