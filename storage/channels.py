"""Where a user receives the extra delivery channels (an email address, a webhook URL and its signing secret), and
who asked for a daily digest at which UTC hour.

Tables user_channels (one row per user and channel) and digests (one row per user), defined in storage.tables.
"""
from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timezone

import sqlalchemy as sa

from core.clock import Clock, SystemClock
from core.domain import ChannelAddress
from storage.tables import DIGESTS, USER_CHANNELS

from storage.database import IN_CHUNK, Database, upsert

EXTRA_CHANNELS = ("email", "webhook")


class ChannelStore:
    """Reads and writes user_channels. `user_ids(channel)` is cached until a write through this store."""

    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self._engine = db.engine
        self._clock: Clock = clock or SystemClock()
        self._subscribers: dict[str, frozenset[int]] = {}

    async def set(self, user_id: int, channel: str, address: str, secret: str | None = None,
                  format: str | None = None) -> ChannelAddress:
        _check_channel(channel)
        row = {"user_id": user_id, "channel": channel, "address": address, "secret": secret, "format": format,
               "updated_at": self._clock.now()}
        stmt = upsert(self._engine.dialect.name, USER_CHANNELS).values(row)
        stmt = stmt.on_conflict_do_update(index_elements=[USER_CHANNELS.c.user_id, USER_CHANNELS.c.channel],
                                          set_={k: stmt.excluded[k] for k in ("address", "secret", "format", "updated_at")})
        async with self._engine.begin() as conn:
            await conn.execute(stmt)
        self._subscribers.pop(channel, None)
        return ChannelAddress(user_id, channel, address, secret, format)

    async def remove(self, user_id: int, channel: str) -> bool:
        """Forget the user's address on this channel; whether there was one."""
        _check_channel(channel)
        stmt = sa.delete(USER_CHANNELS).where(USER_CHANNELS.c.user_id == user_id, USER_CHANNELS.c.channel == channel)
        async with self._engine.begin() as conn:
            result = await conn.execute(stmt)
        self._subscribers.pop(channel, None)
        return bool(result.rowcount)

    async def get(self, user_id: int, channel: str) -> ChannelAddress | None:
        found = await self.addresses(channel, [user_id])
        return found.get(user_id)

    async def addresses(self, channel: str, user_ids: Collection[int]) -> dict[int, ChannelAddress]:
        _check_channel(channel)
        wanted = sorted(set(user_ids))
        out: dict[int, ChannelAddress] = {}
        async with self._engine.connect() as conn:
            for start in range(0, len(wanted), IN_CHUNK):
                stmt = sa.select(USER_CHANNELS.c.user_id, USER_CHANNELS.c.address, USER_CHANNELS.c.secret,
                                 USER_CHANNELS.c.format).where(
                    USER_CHANNELS.c.channel == channel, USER_CHANNELS.c.user_id.in_(wanted[start:start + IN_CHUNK]))
                for uid, address, secret, fmt in (await conn.execute(stmt)).all():
                    out[int(uid)] = ChannelAddress(int(uid), channel, address, secret, fmt)
        return out

    async def user_ids(self, channel: str) -> frozenset[int]:
        """Users with an address on `channel` (the notifier asks once per signal)."""
        _check_channel(channel)
        cached = self._subscribers.get(channel)
        if cached is None:
            stmt = sa.select(USER_CHANNELS.c.user_id).where(USER_CHANNELS.c.channel == channel)
            async with self._engine.connect() as conn:
                cached = frozenset(int(r[0]) for r in (await conn.execute(stmt)).all())
            self._subscribers[channel] = cached
        return cached


class DigestStore:
    """Daily digest subscriptions. A digest is claimed (marked sent for the day) before it is sent and released
    if sending fails, so a crash between the two loses that day's digest rather than sending it twice."""

    def __init__(self, db: Database) -> None:
        self._engine = db.engine

    async def subscribe(self, user_id: int, hour_utc: int) -> None:
        if not 0 <= hour_utc <= 23:
            raise ValueError("the digest hour is 0..23 (UTC)")
        row = {"user_id": user_id, "hour_utc": hour_utc, "last_sent_on": None}
        dialect = self._engine.dialect.name
        stmt = upsert(dialect, DIGESTS).values(row)
        stmt = stmt.on_conflict_do_update(index_elements=[DIGESTS.c.user_id], set_={"hour_utc": hour_utc})
        async with self._engine.begin() as conn:
            await conn.execute(stmt)

    async def unsubscribe(self, user_id: int) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(sa.delete(DIGESTS).where(DIGESTS.c.user_id == user_id))
        return bool(result.rowcount)

    async def hour_of(self, user_id: int) -> int | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(DIGESTS.c.hour_utc).where(DIGESTS.c.user_id == user_id))).first()
        return None if row is None else int(row[0])

    async def claim_due(self, now: datetime) -> list[int]:
        """Users whose digest hour has come today (UTC) and who have not had today's, marked as sent today
        (one UPDATE ... RETURNING: two runs never claim the same digest)."""
        utc = now.astimezone(timezone.utc)
        today = utc.date().isoformat()
        stmt = (sa.update(DIGESTS)
                .where(DIGESTS.c.hour_utc <= utc.hour,
                       sa.or_(DIGESTS.c.last_sent_on.is_(None), DIGESTS.c.last_sent_on < today))
                .values(last_sent_on=today)
                .returning(DIGESTS.c.user_id))
        async with self._engine.begin() as conn:
            return sorted(int(r[0]) for r in (await conn.execute(stmt)).all())

    async def release(self, user_id: int) -> None:
        """Sending failed: the digest is due again at the next run."""
        async with self._engine.begin() as conn:
            await conn.execute(sa.update(DIGESTS).where(DIGESTS.c.user_id == user_id).values(last_sent_on=None))


def _check_channel(channel: str) -> None:
    if channel not in EXTRA_CHANNELS:
        raise ValueError(f"unknown delivery channel {channel!r} (expected one of {', '.join(EXTRA_CHANNELS)})")

