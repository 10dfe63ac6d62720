"""/email ADDRESS|off and /webhook URL|off: where a user receives the extra delivery channels.

Only tiers whose Entitlements.channels include the channel may set one: dispatch checks it (Command.requires),
and the handlers check it again for administrators, whom dispatch exempts (a channel the tier lacks is never
delivered to, so setting it would mislead). A webhook's signing secret is made here
and shown once, only in a private chat (never in a group, never in a log).
"""
from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bot.commands.registry import Caller, Command, CommandContext
from bot.views.doc import Doc
from core.domain import Tier, User
from core.errors import PermissionDenied, UserInputError
from core.tiers import entitlements
from core.ports import ChannelRepository, DigestRepository

_EMAIL = re.compile(r"[^@\s<>\"',;]+@[^@\s<>\"',;]+\.[A-Za-z]{2,63}")
MAX_EMAIL = 254
MAX_URL = 2048


@dataclass(frozen=True, slots=True)
class ChannelArgs:
    value: str | None  # None: show; "off": remove; otherwise the address or URL
    format: str | None = None  # /webhook URL seed: the payload format


def channel_commands(channel_store: ChannelRepository, *, digest_store: DigestRepository | None = None,
                     allow_private_webhooks: bool = False) -> list[Command[Any]]:
    """The /email and /webhook commands over `channel_store`, and /digest when `digest_store` is given.
    `allow_private_webhooks` lets URLs point at loopback and private addresses (tests, a single-host setup);
    otherwise they are refused."""

    async def email(ctx: CommandContext, args: ChannelArgs) -> Doc:
        user = _entitled(ctx, "email")
        if args.value is None:
            current = await channel_store.get(user.id, "email")
            return Doc(heading="Email delivery", body=f"Signals also go to {current.address}." if current else
                       "Not set. Send /email ADDRESS to receive signals by email too.")
        if args.value == "off":
            removed = await channel_store.remove(user.id, "email")
            return Doc(heading="Email delivery off" if removed else "Email delivery was not on", tone="success")
        address = parse_email(args.value)
        await channel_store.set(user.id, "email", address)
        return Doc(heading="Email delivery on", body=f"Signals and their exits also go to {address}.",
                   note="Send /email off to stop.", tone="success")

    async def webhook(ctx: CommandContext, args: ChannelArgs) -> Doc:
        user = _entitled(ctx, "webhook")
        if args.value is None:
            current = await channel_store.get(user.id, "webhook")
            return Doc(heading="Webhook delivery", body=f"Signals are POSTed to {current.address} (format "
                       f"{current.format or 'v1'})." if current else "Not set. Send /webhook URL [v1|seed] (in a "
                       "private chat) to receive signals as signed JSON.")
        if args.value == "off":
            removed = await channel_store.remove(user.id, "webhook")
            return Doc(heading="Webhook delivery off" if removed else "Webhook delivery was not on", tone="success")
        if not _private(ctx.caller):
            raise UserInputError("Set your webhook in a private chat with me: its signing secret is shown once.")
        url = parse_webhook_url(args.value, allow_private=allow_private_webhooks)
        secret = secrets.token_urlsafe(32)
        fmt = None if args.format in (None, "v1") else args.format
        await channel_store.set(user.id, "webhook", url, secret, fmt)
        return Doc(
            heading="Webhook delivery on",
            body=f"Signals and their exits are POSTed as JSON to {url}, format {fmt or 'v1'}.",
            fields=(("Signing secret", secret),
                    ("Signature header", "X-Signalbot-Signature: sha256=HMAC-SHA256(secret, raw body), hex"),
                    ("Delivery header", "X-Signalbot-Delivery: the same id on every retry")),
            note="The secret is shown only now; send /webhook URL again for a new one, /webhook off to stop.",
            tone="success")

    async def digest(ctx: CommandContext, args: ChannelArgs) -> Doc:
        assert digest_store is not None and ctx.user is not None
        if args.value is None:
            hour = await digest_store.hour_of(ctx.user.id)
            return Doc(heading="Daily digest",
                       body="Off. Send /digest HH (UTC hour, e.g. /digest 18) for a daily summary." if hour is None
                       else f"On, at {hour:02d}:00 UTC.")
        if args.value == "off":
            removed = await digest_store.unsubscribe(ctx.user.id)
            return Doc(heading="Daily digest off" if removed else "The daily digest was not on", tone="success")
        hour = parse_hour(args.value)
        await digest_store.subscribe(ctx.user.id, hour)
        return Doc(heading="Daily digest on", body=f"Every day at {hour:02d}:00 UTC: the signals of the last 24 "
                   "hours and how each stands; on Mondays also the weekly report (/weekly).", note="Send /digest off to stop.", tone="success")

    commands: list[Command[Any]] = [
        Command("email", "receive signals by email too", "/email [ADDRESS|off]", _parse_one, email,
                requires="email"),
        Command("webhook", "receive signals as signed JSON webhooks", "/webhook [URL [v1|seed]|off]", _parse_webhook,
                webhook,
                requires="webhook"),
    ]
    if digest_store is not None:
        commands.append(Command("digest", "a daily summary of your signals", "/digest [HH|off]", _parse_one, digest))
    return commands


def parse_email(text: str) -> str:
    address = text.strip()
    if len(address) > MAX_EMAIL or not _EMAIL.fullmatch(address):
        raise UserInputError(f"'{address[:80]}' is not an email address (like name@example.com).")
    return address


def parse_webhook_url(text: str, *, allow_private: bool = False) -> str:
    url = text.strip()
    if len(url) > MAX_URL:
        raise UserInputError(f"That URL is longer than {MAX_URL} characters.")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UserInputError("A webhook URL starts with https:// and names a host.")
    if parts.username or parts.password:
        raise UserInputError("Put no user name or password in the URL; verify the signature instead.")
    try:
        parts.port  # noqa: B018  (raises on a port out of range)
    except ValueError:
        raise UserInputError("That URL's port is not valid.") from None
    if not allow_private and _private_host(parts.hostname):
        raise UserInputError("Webhooks cannot point at local or private network addresses.")
    return url


def parse_hour(text: str) -> int:
    value = text.strip().removesuffix(":00")
    if not value.isdigit() or not 0 <= int(value) <= 23:
        raise UserInputError("Give the hour as 0-23 (UTC), e.g. /digest 18.")
    return int(value)


def _parse_one(args: Sequence[str]) -> ChannelArgs:
    if len(args) > 1:
        raise UserInputError("Give one address, or 'off'.")
    if not args:
        return ChannelArgs(None)
    return ChannelArgs("off" if args[0].lower() == "off" else args[0])


def _parse_webhook(args: Sequence[str]) -> ChannelArgs:
    if len(args) == 2:
        fmt = args[1].lower()
        if fmt not in ("v1", "seed"):
            raise UserInputError("The format is v1 (the default) or seed (the seed's field names: new_signal, "
                                 "entry_price, ...).")
        return ChannelArgs(args[0], fmt)
    if len(args) > 2:
        raise UserInputError("Give one URL and optionally a format (v1 or seed), or 'off'.")
    return _parse_one(args)


def _entitled(ctx: CommandContext, channel: str) -> User:
    user = ctx.user
    assert user is not None, "dispatch guarantees a user for needs_user commands"
    if channel not in entitlements(user.tier).channels:
        tiers = " and ".join(t.value.title() for t in Tier if channel in entitlements(t).channels)
        raise PermissionDenied(f"{channel.title()} delivery is part of the {tiers} tier"
                               f"{'s' if ' and ' in tiers else ''}; you are on {user.tier.value}.")
    return user


def _private(caller: Caller) -> bool:
    return caller.platform == "console" or caller.chat_id == caller.platform_user_id


def _private_host(host: str) -> bool:
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost") or name.endswith(".local"):
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False  # a DNS name: not resolved here
    return ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_unspecified
