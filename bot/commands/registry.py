"""Command registry and dispatch. Transports call `dispatch`; they never parse or compute.

Dispatch is also where entitlements are enforced (never in a transport): a command's feature gate
(`requires`, a feature of core.tiers.FEATURES) and minimum tier (`min_tier`), and for `metered` commands the
tier's on-demand requests per UTC day, counted in storage per account. Administrators are exempt. Every attempt
at an `audited` command (the admin commands), allowed or refused, is written to the admin audit log.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Generic, Protocol, TypeVar

from bot.commands.caller import Caller
from bot.commands.parsing import CommandLine, split_command
from bot.news_job import NewsJob
from bot.notices import Notices
from bot.payments import Payments
from bot.settings import Settings
from bot.views.doc import Doc
from core.clock import Clock
from core.domain import Tier, User
from core.errors import MarketDataError, PermissionDenied, UserInputError
from core.tiers import FEATURES, entitlements, has_feature, lowest_tier_with, more_requests_than, next_utc_midnight
from core.events import EventBus
from core.instruments import InstrumentRegistry
from core.ports import AdminRepository, MarketData, StoreBundle
from core.signals.service import SignalService
from core.signals.tracker import LifecycleTracker
from storage import is_database_error
from core.admin import AuditEntry, AuditOutcome

log = logging.getLogger(__name__)
A = TypeVar("A")


class CommandServices(Protocol):
    """What a command may use (bot.services.Services is the one the composition root builds). `clock` is the
    market's (bars, signals, their expiry), `wall` people's time (link codes, quotas, audit, quiet hours)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def store(self) -> StoreBundle: ...
    @property
    def market(self) -> MarketData: ...
    @property
    def signal_service(self) -> SignalService: ...
    @property
    def tracker(self) -> LifecycleTracker: ...
    @property
    def bus(self) -> EventBus: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def wall(self) -> Clock: ...
    @property
    def registry(self) -> CommandRegistry: ...
    @property
    def instruments(self) -> InstrumentRegistry: ...
    @property
    def notices(self) -> Notices: ...
    @property
    def payments(self) -> Payments | None:
        """None: no payment provider configured."""
        ...
    @property
    def news(self) -> NewsJob | None:
        """The news job (None: no news source configured)."""
        ...
    @property
    def retrain(self) -> Callable[[], Awaitable[object]] | None:
        """/admin retrain (None: no retraining here: offline markets)."""
        ...
    def is_admin(self, caller: Caller) -> bool: ...


@dataclass(frozen=True, slots=True)
class CommandContext:
    caller: Caller
    user: User | None  # None until /start
    services: CommandServices
    is_admin: bool
    tier: Tier = Tier.FREE  # the caller's tier (free before /start)

    def allows(self, feature: str) -> bool:
        """Whether the caller's tier includes `feature` (administrators have every feature)."""
        return self.is_admin or has_feature(self.tier, feature)


@dataclass(frozen=True, slots=True)
class Command(Generic[A]):
    name: str
    summary: str
    usage: str
    parse: Callable[[Sequence[str]], A]
    handler: Callable[[CommandContext, A], Awaitable[Doc]]
    admin_only: bool = False
    needs_user: bool = True  # must /start first
    requires: str | None = None  # a feature of core.tiers.FEATURES the caller's tier must include
    min_tier: Tier | None = None  # the lowest tier allowed to run it
    metered: bool = False  # counts against the tier's on-demand requests per day
    audited: bool = False  # every attempt is written to the admin audit log (always for admin_only commands)

    def __post_init__(self) -> None:
        if self.requires is not None and self.requires not in FEATURES:
            raise ValueError(f"/{self.name}: unknown feature {self.requires!r} (one of {', '.join(FEATURES)})")


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


async def dispatch(registry: CommandRegistry, services: CommandServices, caller: Caller, text: str) -> Doc:
    """Parse, authorise, check entitlements, run; every failure becomes a friendly Doc. Never raises."""
    try:
        line = split_command(text)
    except UserInputError as exc:
        return Doc.error(str(exc))
    command = registry.get(line.name)
    if command is None:
        return Doc.error(f"Unknown command /{line.name}.", "Send /help to see the commands.")
    user: User | None = None
    outcome, detail = AuditOutcome.FAILED, ""
    try:
        is_admin = services.is_admin(caller)
        user = await services.store.users.find_user(caller.platform, caller.platform_user_id)
        if command.admin_only and not is_admin:
            outcome = AuditOutcome.REFUSED
            raise PermissionDenied(f"/{command.name} is for administrators.")
        doc, outcome = await _run(registry, command, services, caller, user, is_admin, line)
        detail = doc.body if doc.tone == "error" else doc.heading
        return dataclasses.replace(doc, private=True) if command.admin_only else doc
    except PermissionDenied as exc:
        outcome, detail = (outcome if outcome is AuditOutcome.REFUSED else AuditOutcome.INVALID), str(exc)
        return Doc.error(str(exc))
    except UserInputError as exc:
        outcome, detail = AuditOutcome.INVALID, str(exc)
        return Doc.error(str(exc))
    except MarketDataError as exc:
        detail = str(exc)
        return Doc.error(f"Market data is unavailable for that request: {exc}", "Try again in a minute.")
    except Exception as exc:
        detail = f"{type(exc).__name__}"
        log.exception("command failed: %r from %s:%s", text[:200], caller.platform, caller.platform_user_id)
        if is_database_error(exc):
            return Doc.error("Our database is not answering just now, so this may not have been saved.",
                             "Please try again in a minute.")
        return Doc.error("Something went wrong on our side; the error was logged.", "Please try again.")
    finally:
        if command.audited or command.admin_only:
            await _audit(services, caller, user, line, outcome, detail)


async def _run(registry: CommandRegistry, command: Command[Any], services: CommandServices, caller: Caller, user: User | None,
               is_admin: bool, line: CommandLine) -> tuple[Doc, AuditOutcome]:
    if command.needs_user and (user is None or not user.active):
        return Doc.error("You are not subscribed.", "Send /start to subscribe (free)."), AuditOutcome.INVALID
    try:
        args = command.parse(line.args)
    except UserInputError as exc:
        return Doc.error(str(exc), f"Usage: {command.usage}"), AuditOutcome.INVALID
    tier = user.tier if user is not None else Tier.FREE
    if not is_admin:
        can_subscribe = registry.get("subscribe") is not None
        refusal = check_gates(command.name, command.requires, command.min_tier, tier, can_subscribe)
        if refusal is not None:
            return refusal, AuditOutcome.INVALID
    ctx = CommandContext(caller, user, services, is_admin, tier)
    if not command.metered or is_admin or entitlements(tier).requests_per_day is None:
        return await command.handler(ctx, args), AuditOutcome.OK
    store = services.store.admin
    await store.ensure_schema()
    quota = QuotaCheck(await metered_subject(store, caller, user), tier, services.wall.now())
    if await store.consume_request(quota.subject, quota.day, quota.limit or 0) is None:
        return quota_used_doc(quota, registry.get("subscribe") is not None), AuditOutcome.INVALID
    try:
        return await command.handler(ctx, args), AuditOutcome.OK
    except Exception:
        await store.refund_request(quota.subject, quota.day)  # nothing was answered: it does not count
        raise


async def _audit(services: CommandServices, caller: Caller, user: User | None, line: CommandLine, outcome: AuditOutcome,
                 detail: str) -> None:
    try:
        store = services.store.admin
        await store.ensure_schema()
        await store.audit(AuditEntry(
            at=services.wall.now(), platform=caller.platform, platform_user_id=caller.platform_user_id,
            user_id=user.id if user is not None else None, command=line.name, arguments=" ".join(line.args),
            outcome=outcome, detail=detail))
    except Exception:
        log.exception("could not write the audit entry for /%s from %s:%s", line.name, caller.platform,
                      caller.platform_user_id)


# ---------------------------------------------------------------------- entitlements

@dataclass(frozen=True, slots=True)
class QuotaCheck:
    """One metered request: who is counted, on which UTC day, against which allowance."""

    subject: str  # "account:<id>", or "<platform>:<id>" for a caller who has not subscribed
    tier: Tier
    now: datetime

    @property
    def day(self) -> date:
        return self.now.astimezone(timezone.utc).date()

    @property
    def limit(self) -> int | None:
        return entitlements(self.tier).requests_per_day


async def metered_subject(store: AdminRepository, caller: Caller, user: User | None) -> str:
    """Requests are counted per account (linked identities share one allowance)."""
    if user is None:
        return f"{caller.platform}:{caller.platform_user_id}"
    return f"account:{await store.account_of(user.id)}"


def _upgrade_hint(tier: Tier | None, can_subscribe: bool) -> str:
    if tier is None:
        return ""
    return f" Send /subscribe {tier.value} to upgrade." if can_subscribe else ""


def quota_used_doc(quota: QuotaCheck, can_subscribe: bool) -> Doc:
    resets = next_utc_midnight(quota.now)
    left = resets - quota.now
    hours, minutes = int(left.total_seconds() // 3600), int(left.total_seconds() % 3600 // 60)
    more = more_requests_than(quota.tier)
    more_text = ""
    if more is not None:
        theirs = entitlements(more).requests_per_day
        more_text = (f" The {more.value} tier has {'unlimited' if theirs is None else theirs} per day."
                     + _upgrade_hint(more, can_subscribe))
    return Doc.error(
        f"You have used all {quota.limit} on-demand analyses of your {quota.tier.value} tier for today.",
        f"Your allowance resets at {resets:%Y-%m-%d %H:%M} UTC (in {hours} h {minutes:02d} min).{more_text}")


def check_gates(name: str, requires: str | None, min_tier: Tier | None, tier: Tier, can_subscribe: bool) -> Doc | None:
    """A refusal when `tier` lacks the command's feature or minimum tier; None when it may run."""
    if requires is not None and not has_feature(tier, requires):
        needed = lowest_tier_with(requires)
        where = f"the {needed.value} tier and above" if needed is not None else "no tier at the moment"
        return Doc.error(f"/{name} needs {requires}, which is part of {where}; you are on the {tier.value} tier.",
                         _upgrade_hint(needed, can_subscribe).strip())
    if min_tier is not None and tier.rank < min_tier.rank:
        return Doc.error(f"/{name} is for the {min_tier.value} tier and above; you are on the {tier.value} tier.",
                         _upgrade_hint(min_tier, can_subscribe).strip())
    return None
