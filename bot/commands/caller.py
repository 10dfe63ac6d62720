"""Who sent a command (a leaf module: payments and transports name a caller without the command layer)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a command, as the transport knows them."""

    platform: str
    platform_user_id: str
    chat_id: str
    display_name: str = ""
