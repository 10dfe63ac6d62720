"""/web: a one-time link that logs the user into the dashboard (bot.web), valid 10 minutes; private."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from bot.commands.registry import Command, CommandContext
from bot.views.doc import Doc
from core.errors import UserInputError

LOGIN_TTL = timedelta(minutes=10)


def _no_args(args: Sequence[str]) -> None:
    if args:
        raise UserInputError("/web takes no arguments.")


async def web_link(ctx: CommandContext, _: None) -> Doc:
    assert ctx.user is not None
    token = await ctx.services.store.web_logins.issue(ctx.user.id, LOGIN_TTL)
    base = ctx.services.settings.public_url.rstrip("/")
    return Doc(heading="Your dashboard", private=True, fields=(("Link", f"{base}/web/login?token={token}"),),
               body="Open the link to log in: it works once, for 10 minutes. No password is ever needed.",
               note="Anyone with the link can log in as you until it is used: do not forward it.")


def web_commands() -> list[Command[Any]]:
    return [Command("web", "a one-time link to your web dashboard", "/web", _no_args, web_link)]
