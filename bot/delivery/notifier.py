"""Notifier: turns issued and closed signals into outbox rows for exactly the admitted recipients."""
from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from datetime import datetime

from core.audience import admit
from core.clock import Clock
from core.domain import DeliveryKind
from core.events import SignalClosed, SignalIssued

log = logging.getLogger(__name__)


def month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


class Notifier:
    def __init__(self, store, clock: Clock, channels: Collection[str], wake: Callable[[], None]) -> None:  # noqa: ANN001
        self.store = store
        self.clock = clock
        self.channels = set(channels)
        self.wake = wake

    async def on_signal_issued(self, event: SignalIssued) -> int:
        """Queue the signal for every admitted user; idempotent (a re-run queues nothing twice)."""
        signal, now = event.signal, self.clock.now()
        users = [u for u in await self.store.active_users() if u.platform in self.channels]
        sent = await self.store.sent_counts_since(month_start(now))
        rows = []
        for user in users:
            a = admit(user, signal, now, sent.get(user.id, 0))
            if a.admitted:
                rows.append((signal.id, user.id, DeliveryKind.SIGNAL, user.platform, a.not_before, None))
        inserted = await self.store.enqueue(rows)
        log.info("signal %s: %d recipients of %d active users (%d new rows)", signal.id, len(rows), len(users), inserted)
        self.wake()
        return inserted

    async def on_signal_closed(self, event: SignalClosed) -> int:
        """Post the exit to everyone who received the signal, as a reply to that message."""
        signal = event.signal
        rows = []
        for user_id in await self.store.recipients_of(signal.id):
            user = await self.store.get_user(user_id)
            if user is None or not user.active or user.platform not in self.channels:
                continue
            ref = await self.store.sent_message_ref(signal.id, user_id)
            rows.append((signal.id, user_id, DeliveryKind.EXIT, user.platform, None, ref))
        inserted = await self.store.enqueue(rows)
        self.wake()
        return inserted
