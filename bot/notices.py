"""Plain notices (an admin's announcement, a change of plan) sent to users on the platform they registered from.

`Notices` is built before the services with no transport; the composition root adds each chat transport as it
starts (`add`), so nothing hands transports around or assigns hooks afterwards. A user whose platform has no
transport running is counted out and logged; so is a failed send. (The delivery outbox is keyed by signal;
once it carries plain notices as well, these should be queued there, for retries and quiet hours.)
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

from bot.transports.base import Transport
from bot.views.doc import Doc
from core.errors import DeliveryError
from core.domain import User
from core.ports import UserRepository

log = logging.getLogger(__name__)


class Notices:
    def __init__(self, users: UserRepository) -> None:
        self._users = users
        self._transports: dict[str, Transport] = {}

    def add(self, transport: Transport) -> None:
        """A chat transport that has started (its `name` is the users' platform: console, telegram, discord)."""
        self._transports[transport.name] = transport

    @property
    def platforms(self) -> frozenset[str]:
        return frozenset(self._transports)

    async def send(self, user: User, doc: Doc) -> bool:
        """One notice to one user; False when it could not be sent (no transport for the platform, or it failed)."""
        transport = self._transports.get(user.platform)
        if transport is None:
            log.info("notice to user %d not sent: no %s transport running", user.id, user.platform)
            return False
        try:
            await transport.send(user.chat_id, doc)
        except DeliveryError as exc:
            log.warning("notice to user %d failed: %s", user.id, exc)
            return False
        return True

    async def to_user(self, user_id: int, doc: Doc) -> bool:
        """A notice to an active user by id (False: unknown, inactive, or not sent)."""
        user = await self._users.get_user(user_id)
        if user is None or not user.active:
            return False
        return await self.send(user, doc)

    async def broadcast(self, users: Sequence[User], text: str) -> int:
        """An announcement to each user in turn (each transport applies its platform's rate limits); how many got
        it."""
        doc = Doc(heading="Announcement", body=text)
        delivered = 0
        for user in users:
            delivered += await self.send(user, doc)
        return delivered
