"""Command registry and dispatch. Transports call `dispatch`; they never parse or compute."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from bot.commands.parsing import split_command
from bot.views.doc import Doc
from core.domain import User
from core.errors import MarketDataError, PermissionDenied, UserInputError

log = logging.getLogger(__name__)
A = TypeVar("A")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a command, as the transport knows them."""

    platform: str
    platform_user_id: str
    chat_id: str
    display_name: str = ""


@dataclass(frozen=True, slots=True)
class CommandContext:
    caller: Caller
    user: User | None  # None until /start
    services: Any  # bot.services.Services (Any here keeps this module free of the composition root)
    is_admin: bool


@dataclass(frozen=True, slots=True)
class Command(Generic[A]):
    name: str
    summary: str
    usage: str
    parse: Callable[[Sequence[str]], A]
    handler: Callable[[CommandContext, A], Awaitable[Doc]]
    admin_only: bool = False
    needs_user: bool = True  # must /start first


class CommandRegistry:
    def __init__(self) -> None:
        self._commands: dict[str, Command[Any]] = {}

    def register(self, command: Command[Any]) -> None:
        if command.name in self._commands:
            raise ValueError(f"command /{command.name} registered twice")
        self._commands[command.name] = command

    def get(self, name: str) -> Command[Any] | None:
        return self._commands.get(name)

    def visible(self, is_admin: bool) -> list[Command[Any]]:
        return [c for c in self._commands.values() if is_admin or not c.admin_only]


async def dispatch(registry: CommandRegistry, services: Any, caller: Caller, text: str) -> Doc:
    """Parse, authorise, run; every failure becomes a friendly Doc. Never raises."""
    try:
        line = split_command(text)
        command = registry.get(line.name)
        if command is None:
            return Doc.error(f"Unknown command /{line.name}.", "Send /help to see the commands.")
        is_admin = services.is_admin(caller)
        if command.admin_only and not is_admin:
            raise PermissionDenied(f"/{command.name} is for administrators.")
        user = await services.store.find_user(caller.platform, caller.platform_user_id)
        if command.needs_user and (user is None or not user.active):
            return Doc.error("You are not subscribed.", "Send /start to subscribe (free).")
        try:
            args = command.parse(line.args)
        except UserInputError as exc:
            return Doc.error(str(exc), f"Usage: {command.usage}")
        return await command.handler(CommandContext(caller, user, services, is_admin), args)
    except UserInputError as exc:
        return Doc.error(str(exc))
    except MarketDataError as exc:
        return Doc.error(f"Market data is unavailable for that request: {exc}", "Try again in a minute.")
    except Exception:
        log.exception("command failed: %r from %s:%s", text[:200], caller.platform, caller.platform_user_id)
        return Doc.error("Something went wrong on our side; the error was logged.", "Please try again.")
