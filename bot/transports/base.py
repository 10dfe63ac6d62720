"""What the delivery layer needs from a chat platform."""
from __future__ import annotations

from typing import Protocol

from bot.views.doc import Doc


class Transport(Protocol):
    name: str  # the platform: "console", "telegram", "discord"

    async def send(self, chat_id: str, doc: Doc, reply_to: str | None = None) -> str:
        """Deliver `doc`; return the platform's message reference. Raises core.errors.DeliveryError."""
        ...
