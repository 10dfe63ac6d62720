"""Notifier: turns issued, updated and closed signals into outbox rows for exactly the admitted recipients.

A signal goes to each admitted user on their chat platform (when a worker serves it) and, for tiers entitled to
them, on the extra channels (email, webhook) where the user set an address. The fan-out is one read of the
cached active users (users.active_users), one quota query, admission shared by users with equal settings
(core.audience.admit_many) and one bulk insert; re-running it queues nothing twice.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from datetime import datetime

from core.audience import Admission, admit_many
from core.clock import Clock
from core.domain import DeliveryKind, Signal, User
from core.events import SignalClosed, SignalIssued, SignalUpdated
from core.tiers import entitlements
from core.ports import ChannelRepository, Repositories, WatchlistRepository

log = logging.getLogger(__name__)

Row = tuple[str, int, DeliveryKind, str, datetime | None, str | None]


def month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


class Notifier:
    def __init__(self, store: Repositories, clock: Clock, channels: Collection[str], wake: Callable[[], None], *,
                 channel_store: ChannelRepository | None = None, extra_channels: Collection[str] = (),
                 market_clock: Clock | None = None, watchlist: WatchlistRepository | None = None) -> None:
        """`channels`: the chat platforms a worker serves; `extra_channels`: served email/webhook channels,
        whose addresses `channel_store` holds. `clock` is wall time (quiet hours, monthly quotas, the queue);
        `market_clock` the signals' (default: the same); `watchlist`: whose watchlists admit a signal past their
        preferences (core.audience)."""
        if extra_channels and channel_store is None:
            raise ValueError("extra channels need a channel_store")
        self.store = store
        self.clock = clock
        self.market_clock = market_clock or clock
        self.channels = set(channels)
        self.extra_channels = tuple(sorted(set(extra_channels)))
        self.channel_store = channel_store
        self.wake = wake
        self.watchlist = watchlist

    async def on_signal_issued(self, event: SignalIssued) -> int:
        """Queue the signal for every admitted user; idempotent (a re-run queues nothing twice)."""
        rows = await self.recipients(event)
        inserted = await self.store.outbox.enqueue(rows, fanout=(event.signal.id, DeliveryKind.SIGNAL))
        log.info("signal %s: %d deliveries (%d new rows)", event.signal.id, len(rows), inserted)
        self.wake()
        return inserted

    async def recipients(self, event: SignalIssued) -> list[Row]:
        """The outbox rows for a new signal (not yet queued)."""
        signal, now = event.signal, self.clock.now()
        expires_at = now + (signal.expires_at - self.market_clock.now())  # on the wall clock
        users = await self.store.users.active_users()
        sent = await self.store.outbox.sent_counts_since(month_start(now))
        watchers = await self.watchlist.watchers(signal.symbol) if self.watchlist is not None else frozenset()
        admitted: list[tuple[User, Admission]] = [
            (u, a) for u, a in admit_many(users, signal, now, sent, expires_at=expires_at, watchers=watchers)
            if a.admitted]
        kind = DeliveryKind.SIGNAL
        rows: list[Row] = [(signal.id, u.id, kind, u.platform, a.not_before, None)
                           for u, a in admitted if u.platform in self.channels]
        for channel in self.extra_channels:
            assert self.channel_store is not None
            subscribed = await self.channel_store.user_ids(channel)
            if subscribed:
                rows.extend((signal.id, u.id, kind, channel, a.not_before, None) for u, a in admitted
                            if u.id in subscribed and channel in entitlements(u.tier).channels)
        return rows

    async def on_signal_closed(self, event: SignalClosed) -> int:
        """Post the exit wherever the signal was delivered, as a reply to that message."""
        return await self._replies(event.signal, DeliveryKind.EXIT)

    async def on_signal_updated(self, event: SignalUpdated) -> int:
        """Post what turned against an open signal wherever it was delivered, as a reply to that message."""
        return await self._replies(event.signal, DeliveryKind.UPDATE)

    async def _replies(self, signal: Signal, kind: DeliveryKind) -> int:
        receipts = await self.store.outbox.signal_receipts(signal.id)
        served = self.channels | set(self.extra_channels)
        users = await self.store.users.users_by_ids({uid for uid, _, _ in receipts})
        rows: list[Row] = []
        for user_id, channel, ref in receipts:
            user = users.get(user_id)
            if user is None or not user.active or channel not in served:
                continue
            rows.append((signal.id, user_id, kind, channel, None, ref))
        inserted = await self.store.outbox.enqueue(rows, fanout=(signal.id, kind))
        self.wake()
        return inserted
