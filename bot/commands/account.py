"""/link and /account: one person, several platform identities, one account.

`/link` on one platform answers with a one-time code (random, 8 characters, valid LINK_CODE_TTL, single use,
stored hashed). `/link CODE` on another platform joins that identity to the account of the identity that issued
the code. The rules:
- the account that issued the code is kept (its id stays the account id); the joining identity's whole
  account (if it was linked already) moves into it;
- the tier is the higher of the two accounts' tiers (linking never takes away what someone paid for), and every
  identity of the account gets it;
- preferences are those of the identity that issued the code, copied to every identity of the account; a
  later /prefs change on any identity is written to all of them;
- an account holds at most one identity per platform (so a paid tier cannot be shared among many Telegram
  users); each identity keeps its own chat and its own /start and /stop;
- on-demand requests per day are counted per account.
Failed attempts are limited to LINK_FAILURES_PER_DAY per identity and UTC day.
"""
from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import timedelta, timezone
from typing import Any

from bot.commands.registry import Caller, Command, CommandContext
from bot.views.doc import Doc
from core.domain import User
from core.errors import UserInputError
from core.tiers import entitlements
from core.admin import LinkResult
from core.ports import AdminRepository

LINK_CODE_TTL = timedelta(minutes=10)
LINK_CODE_LENGTH = 8
LINK_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud and typed on a phone
LINK_FAILURES_PER_DAY = 10


def new_link_code() -> str:
    return "".join(secrets.choice(LINK_ALPHABET) for _ in range(LINK_CODE_LENGTH))


def parse_link_args(args: Sequence[str]) -> str | None:
    if not args:
        return None
    if len(args) > 1:
        raise UserInputError("Give one code: /link CODE.")
    code = args[0].strip().upper().replace("-", "")
    if len(code) != LINK_CODE_LENGTH or any(c not in LINK_ALPHABET for c in code):
        raise UserInputError(f"A link code is {LINK_CODE_LENGTH} letters and digits, like the one /link gave you.")
    return code


async def _store(ctx: CommandContext) -> AdminRepository:
    store = ctx.services.store.admin
    await store.ensure_schema()
    return store


async def link(ctx: CommandContext, code: str | None) -> Doc:
    if code is None:
        return await issue_link_code(ctx)
    return await redeem_link_code(ctx, code)


async def issue_link_code(ctx: CommandContext) -> Doc:
    if ctx.user is None or not ctx.user.active:
        return Doc.error("You are not subscribed.", "Send /start first, then /link.")
    code = new_link_code()
    expires = await (await _store(ctx)).create_link_code(ctx.user.id, code, LINK_CODE_TTL)
    minutes = int(LINK_CODE_TTL.total_seconds() // 60)
    return Doc(heading=f"Your link code: {code}",
               body=f"On your other platform (Telegram, Discord, ...), send /link {code} within {minutes} minutes. "
                    "Both identities then share one account: the higher tier and these preferences.",
               note=f"Valid until {expires.astimezone(timezone.utc):%H:%M} UTC, once. Keep it to yourself: whoever "
                    "uses it joins your account. A new /link replaces it.")


async def redeem_link_code(ctx: CommandContext, code: str) -> Doc:
    admins = await _store(ctx)
    failures = f"link-fail:{ctx.caller.platform}:{ctx.caller.platform_user_id}"
    today = ctx.services.wall.now().astimezone(timezone.utc).date()
    if await admins.requests_used(failures, today) >= LINK_FAILURES_PER_DAY:
        return Doc.error("Too many wrong link codes today.", "Try again tomorrow (UTC), with a fresh /link code.")
    joiner = await _subscribed_user(ctx)
    redeemed = await admins.redeem_link_code(code, joiner.id)
    if redeemed.result is not LinkResult.OK or redeemed.issuer_id is None:
        await admins.consume_request(failures, today, LINK_FAILURES_PER_DAY)
        reason = {LinkResult.WRONG: "That link code is not valid.",
                  LinkResult.EXPIRED: "That link code has expired.",
                  LinkResult.USED: "That link code has been used already."}[redeemed.result]
        return Doc.error(reason, "Send /link on the platform you are linked from for a new code.")
    return await join_accounts(ctx, admins, redeemed.issuer_id, joiner)


async def _subscribed_user(ctx: CommandContext) -> User:
    """The caller's user; first contact through /link CODE subscribes them, as /start would."""
    if ctx.user is not None and ctx.user.active:
        return ctx.user
    c: Caller = ctx.caller
    store = ctx.services.store
    user = await store.users.upsert_user(c.platform, c.platform_user_id, c.chat_id, c.display_name)
    if not user.active:
        await store.users.set_active(user.id, True)
    assert isinstance(user, User)
    return user


async def join_accounts(ctx: CommandContext, admins: AdminRepository, issuer_id: int, joiner: User) -> Doc:
    store = ctx.services.store
    keep_ids = await admins.members(issuer_id)
    join_ids = await admins.members(joiner.id)
    if joiner.id in keep_ids:
        return Doc(heading="Already linked", body="This identity is already part of that account.")
    users = await store.users.users_by_ids([*keep_ids, *join_ids])
    issuer = users.get(issuer_id)
    if issuer is None:
        raise UserInputError("The account that issued this code no longer exists.")
    keep_platforms = {users[u].platform for u in keep_ids if u in users}
    clash = sorted(keep_platforms & {users[u].platform for u in join_ids if u in users})
    if clash:
        return Doc.error(f"That account already has a {', '.join(clash)} identity; an account holds one per platform.")
    members = await admins.link(issuer_id, joiner.id)
    tier = max((users[u].tier for u in [*keep_ids, *join_ids] if u in users), key=lambda t: t.rank)
    for uid in members:
        if users.get(uid) is None or users[uid].tier is not tier:
            await store.users.set_tier(uid, tier)
        if uid not in keep_ids:
            await store.users.set_preferences(uid, issuer.preferences)
    return Doc(heading="Accounts linked", tone="success",
               body=f"This {joiner.platform} identity now shares an account with "
                    f"{issuer.platform}:{issuer.display_name or issuer.platform_user_id}: the {tier.value} tier "
                    "and the same preferences.",
               fields=(("Identities", ", ".join(sorted(users[u].platform for u in members if u in users))),))


async def show_account(ctx: CommandContext, _: None) -> Doc:
    assert ctx.user is not None, "dispatch guarantees a user for needs_user commands"
    user = ctx.user
    admins = await _store(ctx)
    members = await admins.members(user.id)
    identities = await ctx.services.store.users.users_by_ids(members)
    account = await admins.account_of(user.id)
    now = ctx.services.wall.now().astimezone(timezone.utc)
    used = await admins.requests_used(f"account:{account}", now.date())
    allowance = entitlements(user.tier).requests_per_day
    left = "unlimited" if allowance is None or ctx.is_admin else f"{max(allowance - used, 0)} of {allowance} left"
    return Doc(heading=f"Your account ({user.tier.value} tier)",
               fields=(("Identities", ", ".join(f"{u.platform}" + (" (this one)" if u.id == user.id else "")
                                               for _, u in sorted(identities.items()))),
                       ("Analyses today", left)),
               note="Link another platform: send /link here, then /link CODE there.")


def _no_args(args: Sequence[str]) -> None:
    if args:
        raise UserInputError("This command takes no arguments.")


def account_commands() -> list[Command[Any]]:
    return [
        Command("link", "link your Telegram and Discord identities (one account)", "/link [CODE]",
                parse_link_args, link, needs_user=False),
        Command("account", "your account: linked identities and today's allowance", "/account", _no_args,
                show_account),
    ]

