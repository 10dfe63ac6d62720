"""What a delivery worker sends through: a channel that resolves recipients' addresses and delivers one message.

Chat transports (console, Telegram, Discord) become a channel through `ChatChannel`: the address is the user's
chat id, and a user the platform says is unreachable (blocked the bot) is unsubscribed. Email and webhooks are
channels of their own (bot.delivery.extra_channels): the address lives in storage.channels, and an unreachable
address is removed for that channel only.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from bot.transports.base import Resume, Transport
from bot.views.doc import Doc
from core.domain import DeliveryKind, RiskTolerance, Signal, SignalOutcome, SignalUpdate, User
from core.ports import Repositories


@dataclass(frozen=True, slots=True)
class Address:
    target: str  # chat id, email address, webhook URL
    secret: str | None = None  # the webhook's signing secret
    format: str | None = None  # the webhook's payload format (None: "v1")


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message for one recipient: the Doc a chat shows, and the facts behind it for structured channels."""

    delivery_id: int
    kind: DeliveryKind
    signal: Signal
    outcome: SignalOutcome | None  # set for exits
    doc: Doc
    reply_to: str | None = None  # the platform's reference of the message an exit or update answers
    risk: RiskTolerance = RiskTolerance.MEDIUM  # the recipient's, for the position size
    resume: Resume | None = None  # an earlier attempt sent part of it (a chart, not the text): send the rest
    update: SignalUpdate | None = None  # set for thesis updates


@runtime_checkable
class Channel(Protocol):
    name: str

    async def addresses(self, users: Sequence[User]) -> dict[int, Address]:
        """Where each user receives this channel's messages; users without one are left out (their rows skipped)."""
        ...

    async def deliver(self, address: Address, message: Outgoing) -> str:
        """Send; return the platform's reference of the message. Raises core.errors.DeliveryError."""
        ...

    async def unreachable(self, user: User, reason: str) -> None:
        """The platform said this address can never be delivered to (blocked, gone)."""
        ...


class ChatChannel:
    """A chat transport as a channel: address = the user's chat id; unreachable = unsubscribed everywhere."""

    def __init__(self, transport: Transport, store: Repositories) -> None:
        self.transport = transport
        self.store = store
        self.name = transport.name

    async def addresses(self, users: Sequence[User]) -> dict[int, Address]:
        return {u.id: Address(u.chat_id) for u in users}

    async def deliver(self, address: Address, message: Outgoing) -> str:
        if message.resume is not None:  # only transports that send in parts report progress, so only they get it
            send: Any = self.transport.send
            return str(await send(address.target, message.doc, reply_to=message.reply_to, resume=message.resume))
        return await self.transport.send(address.target, message.doc, reply_to=message.reply_to)

    async def unreachable(self, user: User, reason: str) -> None:
        await self.store.users.set_active(user.id, False)
        await self.store.outbox.cancel_pending(user.id, f"user unreachable: {reason}")
