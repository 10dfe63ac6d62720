"""Email and webhook delivery channels, and how the composition root builds their workers.

A user receives them when their tier's Entitlements.channels include the channel and they set an address
(/email, /webhook; stored in storage.channels). An address the platform rejects for good (SMTP 5xx for the
recipient, webhook 410) is removed and the user's pending rows on that channel are cancelled; the user stays
subscribed in chat.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from bot.delivery.channel import Address, Outgoing
from bot.delivery.payloads import EVENTS, email_parts, webhook_body
from bot.delivery.worker import DeliveryWorker
from bot.settings import Settings
from bot.transports.email import EmailTransport, SmtpConfig
from bot.transports.webhook import WebhookTransport
from core.clock import Clock
from core.domain import User
from core.tiers import entitlements
from core.ports import ChannelRepository, Repositories

log = logging.getLogger(__name__)


class _AddressBookChannel:
    """Addresses from storage.channels, for entitled users only; an unreachable address is removed."""

    name = ""

    def __init__(self, store: Repositories, channels: ChannelRepository) -> None:
        self.store = store
        self.channels = channels

    async def addresses(self, users: Sequence[User]) -> dict[int, Address]:
        entitled = [u.id for u in users if self.name in entitlements(u.tier).channels]
        found = await self.channels.addresses(self.name, entitled)
        return {uid: Address(a.address, a.secret, a.format) for uid, a in found.items()}

    async def unreachable(self, user: User, reason: str) -> None:
        await self.channels.remove(user.id, self.name)
        await self.store.outbox.cancel_pending(user.id, f"{self.name} address removed: {reason}", channel=self.name)


class EmailChannel(_AddressBookChannel):
    name = "email"

    def __init__(self, transport: EmailTransport, store: Repositories, channels: ChannelRepository) -> None:
        super().__init__(store, channels)
        self.transport = transport

    async def deliver(self, address: Address, message: Outgoing) -> str:
        subject, text, html = email_parts(message)
        return await self.transport.send(address.target, subject, text, html, in_reply_to=message.reply_to)


class WebhookChannel(_AddressBookChannel):
    name = "webhook"

    def __init__(self, transport: WebhookTransport, store: Repositories, channels: ChannelRepository, clock: Clock) -> None:
        super().__init__(store, channels)
        self.transport = transport
        self.clock = clock

    async def deliver(self, address: Address, message: Outgoing) -> str:
        if not address.secret:
            raise ValueError("a webhook address needs its secret")
        body = webhook_body(message, self.clock.now(), address.format)
        event = EVENTS[message.kind]
        return await self.transport.post(address.target, address.secret, body, delivery_id=str(message.delivery_id),
                                         event=event)


@dataclass
class ExtraDelivery:
    """What bot.app wires in: the workers (run them like the chat workers), the address store (the /email and
    /webhook commands and the Notifier use it) and the webhook session to close at shutdown."""

    workers: list[DeliveryWorker]
    channel_store: ChannelRepository
    webhook: WebhookTransport | None

    @property
    def channels(self) -> list[str]:
        return [w.channel for w in self.workers]

    async def close(self) -> None:
        if self.webhook is not None:
            await self.webhook.stop()


def build_extra_delivery(settings: Settings, store: Repositories, channel_store: ChannelRepository, clock: Clock, *,
                         poll_seconds: float | None = None, market_clock: Clock | None = None) -> ExtraDelivery:
    """Email when settings.smtp_host is set; webhooks always (they need nothing but the users' URLs). `clock`:
    wall time (the queue), `market_clock`: the signals' (DeliveryWorker)."""
    poll = poll_seconds if poll_seconds is not None else settings.delivery_poll
    workers: list[DeliveryWorker] = []
    if settings.smtp_host:
        smtp = SmtpConfig(host=settings.smtp_host, port=settings.smtp_port, user=settings.smtp_user,
                          password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
                          sender=settings.smtp_from, starttls=settings.smtp_starttls)
        workers.append(DeliveryWorker(EmailChannel(EmailTransport(smtp), store, channel_store), store, clock,
                                      poll_seconds=poll, concurrency=4, market_clock=market_clock))
    webhook = WebhookTransport(settings.webhook_timeout)
    workers.append(DeliveryWorker(WebhookChannel(webhook, store, channel_store, clock), store, clock,
                                  poll_seconds=poll, concurrency=16, market_clock=market_clock))
    return ExtraDelivery(workers, channel_store, webhook)
