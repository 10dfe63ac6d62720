"""/apikey: the REST API's keys, for the tiers that include the API (core.tiers: professional).

    /apikey                  your keys (id, prefix, name, created, last used) and their requests in 30 days
    /apikey create [NAME]    a new key, shown once in this answer (only its hash is stored)
    /apikey revoke ID        the key stops working at once here, within seconds in the other processes

The answers are private: asked in a group, they go to the asker's own chat.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bot.commands.registry import Command, CommandContext
from bot.views.doc import Doc, Table
from core.errors import UserInputError

USAGE = "/apikey [create NAME | revoke ID]"


@dataclass(frozen=True, slots=True)
class KeyAction:
    action: str  # list | create | revoke
    name: str = ""
    key_id: int = 0


def parse_apikey(args: Sequence[str]) -> KeyAction:
    if not args or args[0].lower() == "list":
        if len(args) > 1:
            raise UserInputError("/apikey list takes no arguments.")
        return KeyAction("list")
    action = args[0].lower()
    if action == "create":
        name = " ".join(args[1:]).strip()
        if len(name) > 64:
            raise UserInputError("A key's name is at most 64 characters.")
        return KeyAction("create", name=name)
    if action == "revoke":
        if len(args) != 2 or not args[1].isdigit():
            raise UserInputError("Give the id of the key to revoke, e.g. /apikey revoke 3 (see /apikey).")
        return KeyAction("revoke", key_id=int(args[1]))
    raise UserInputError(f"Unknown /apikey action {args[0]!r}.")


async def apikey(ctx: CommandContext, req: KeyAction) -> Doc:
    assert ctx.user is not None
    keys = ctx.services.store.api_keys
    base = ctx.services.settings.public_url.rstrip("/")
    if req.action == "create":
        try:
            key, record = await keys.create(ctx.user.id, req.name)
        except ValueError as exc:
            raise UserInputError(str(exc)) from exc
        return Doc(heading="New API key (shown once: store it now)", private=True,
                   fields=(("Key", key), ("Id", str(record.id)), ("Name", record.name or "-")),
                   body=f"Send it as `Authorization: Bearer <key>` to {base}/api/v1/signals; the schema is at "
                        f"{base}/openapi.json and the docs at {base}/api/docs.",
                   note="Anyone with the key reads your signals; /apikey revoke " + str(record.id) + " ends it.")
    if req.action == "revoke":
        if not await keys.revoke(ctx.user.id, req.key_id):
            raise UserInputError(f"You have no active key {req.key_id} (see /apikey).")
        return Doc(heading=f"API key {req.key_id} revoked", private=True,
                   body="Requests with it are refused from now on.")
    mine = await keys.keys_of(ctx.user.id)
    if not mine:
        return Doc(heading="No API keys", private=True, body="Create one with /apikey create NAME.")
    since = (ctx.services.wall.now() - timedelta(days=29)).strftime("%Y-%m-%d")
    await keys.flush()
    used: dict[int, int] = {}
    for u in await keys.usage([k.id for k in mine], since):
        used[u.key_id] = used.get(u.key_id, 0) + u.count
    rows = tuple((str(k.id), k.prefix + "…", k.name or "-", f"{k.created_at:%Y-%m-%d}",
                  f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "never", f"{used.get(k.id, 0):,}",
                  "active" if k.active else f"revoked {k.revoked_at:%Y-%m-%d}")
                 for k in mine)
    return Doc(heading=f"Your API keys ({sum(k.active for k in mine)} active)", private=True,
               table=Table(("id", "key", "name", "created", "last used", "requests 30 d", "status"), rows),
               note="/apikey create NAME, /apikey revoke ID")


def apikey_commands() -> list[Command[Any]]:
    return [Command("apikey", "your REST API keys: list, create, revoke", USAGE, parse_apikey, apikey,
                    requires="api", audited=True)]
