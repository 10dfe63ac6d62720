"""/subscribe, /subscription, /cancel: plans and payments, transport-neutral.

Inside Telegram, digital goods are paid in Telegram Stars (the Doc carries an Invoice the Telegram transport
turns into a Stars invoice); everywhere else /subscribe TIER answers with a Stripe Checkout link.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.commands.registry import Command, CommandContext
from bot.payments import Payments
from bot.views.doc import Button, Doc, Table
from core.billing import PAID_TIERS, Provider, Subscription, SubscriptionStatus, entitled_tier
from core.domain import Tier, Timeframe, User
from core.errors import UserInputError
from core.tiers import ALL_CLASSES, OFFERED_TIMEFRAMES, Entitlements, entitlements

STARS_PLATFORM = "telegram"


def parse_tier(args: Sequence[str]) -> Tier | None:
    if not args:
        return None
    if len(args) > 1:
        raise UserInputError("Give one plan.")
    name = args[0].strip().lower()
    try:
        tier = Tier(name)
    except ValueError:
        raise UserInputError(f"Unknown plan '{args[0][:20]}' (one of {', '.join(PAID_TIERS)}).") from None
    if tier not in PAID_TIERS:
        raise UserInputError("The free tier needs no subscription; /cancel ends a paid one.")
    return tier


def _no_args(args: Sequence[str]) -> None:
    if args:
        raise UserInputError("This command takes no arguments.")


def _payments(ctx: CommandContext) -> Payments:
    payments = ctx.services.payments
    if payments is None:
        raise UserInputError("Payments are not enabled on this server.")
    return payments


def _user(ctx: CommandContext) -> User:
    assert ctx.user is not None, "dispatch guarantees a user for needs_user commands"
    return ctx.user


# /subscribe [TIER] --------------------------------------------------------------------------------------
async def subscribe(ctx: CommandContext, tier: Tier | None) -> Doc:
    payments = _payments(ctx)
    stars = ctx.caller.platform == STARS_PLATFORM
    if tier is None:
        return await plans_doc(payments, stars, _user(ctx).tier)
    user = _user(ctx)
    held = await _held(payments, user, tier)
    if held is not None:
        return held
    if stars:
        invoice = await payments.stars_invoice(user, tier)
        return Doc(heading=f"{tier.value.title()}: {invoice.amount} ⭐ per 30 days",
                   body="Pay with Telegram Stars below. Your plan changes as soon as the payment succeeds; it renews "
                        "every 30 days until you cancel it in Telegram (Settings > My Stars).",
                   fields=_features(entitlements(tier)), invoice=invoice)
    link = await payments.stripe_checkout(user, tier)
    return Doc(heading=f"{tier.value.title()} by card",
               body=f"Pay on Stripe's secure checkout page:\n{link.url}\n\nYour plan changes as soon as Stripe "
                    "confirms the payment; you will get a message here.",
               fields=_features(entitlements(tier)), note="The link is yours alone and expires in 24 hours.")


async def _held(payments: Payments, user: User, tier: Tier) -> Doc | None:
    """A reply when a subscription the user pays for already gives `tier` or more (no second subscription)."""
    now = payments.clock.now()
    for sub in await payments.subscriptions_of(user):
        if entitled_tier(sub, now).rank >= tier.rank and sub.status is not SubscriptionStatus.PAST_DUE:
            until = sub.current_period_end.strftime("%Y-%m-%d") if sub.current_period_end else "-"
            how = "Telegram Stars" if sub.provider is Provider.TELEGRAM_STARS else "card"
            return Doc(heading=f"You already have {sub.tier}",
                       body=f"Your {sub.tier} subscription ({how}) runs until {until}.",
                       note="Send /subscription to see it, /cancel to stop renewing it.")
    return None


async def plans_doc(payments: Payments, stars: bool, current: Tier) -> Doc:
    """Plans side by side (one column per tier keeps the table narrow enough for a phone)."""
    if stars:
        prices = {t: f"{a}⭐" for t, a in payments.stars_prices.items()}
    else:
        prices = await payments.stripe.price_labels() if payments.stripe is not None else {}
    tiers = list(Tier)
    ents = [entitlements(t) for t in tiers]
    price_row = ["free" if t is Tier.FREE else prices.get(t, "card" if t in payments.card_tiers else "-")
                 for t in tiers]
    rows = (
        ("price", *price_row),
        ("signals/month", *(_count(e.signals_per_month) for e in ents)),
        ("analyses/day", *(_count(e.requests_per_day) for e in ents)),
        ("assets", *(_assets(e) for e in ents)),
        ("timeframes", *(_timeframes(e) for e in ents)),
        ("charts", *("yes" if e.charts else "no" for e in ents)),
        ("also by", *(",".join(sorted(e.channels)) or "-" for e in ents)),
    )
    buyable = [t for t in PAID_TIERS if (t in payments.stars_prices if stars else t in payments.card_tiers)]
    how = "Prices in Telegram Stars per 30 days." if stars else "Paid by card through Stripe."
    return Doc(heading="Plans", body=f"{how} You are on {current}.",
               table=Table(("", *(t.value + ("*" if t is current else "") for t in tiers)), rows),
               buttons=tuple(Button(t.value.title(), f"/subscribe {t.value}") for t in buyable)
               + (Button("My subscription", "/subscription"),),
               note="Send /subscribe PLAN, e.g. /subscribe trader." if buyable else "Payments are not configured.")


def _assets(ent: Entitlements) -> str:
    return "all" if ent.asset_classes >= ALL_CLASSES else ",".join(sorted(ent.asset_classes))


def _timeframes(ent: Entitlements) -> str:
    return "all" if ent.timeframes >= set(OFFERED_TIMEFRAMES) else ",".join(
        t.value for t in Timeframe if t in ent.timeframes)


# /subscription ------------------------------------------------------------------------------------------
async def show_subscription(ctx: CommandContext, _: None) -> Doc:
    payments = _payments(ctx)
    user = _user(ctx)
    subs = await payments.subscriptions_of(user)
    now = payments.clock.now()
    live = [s for s in subs if s.status not in (SubscriptionStatus.CANCELED, SubscriptionStatus.EXPIRED)]
    rows = tuple(_subscription_row(s, now) for s in sorted(live, key=lambda s: s.status_at or now, reverse=True))
    return Doc(heading=f"Your plan: {user.tier}",
               body="No paid subscription." if not rows else "",
               table=Table(("plan", "paid with", "status", "until"), rows) if rows else None,
               buttons=(Button("Plans", "/subscribe"),),
               note="Send /cancel to stop renewing a card subscription." if any(
                   s.provider is Provider.STRIPE for s in live) else "")


def _subscription_row(s: Subscription, now: datetime) -> tuple[str, str, str, str]:
    status = s.status.value.replace("_", " ")
    if s.status is SubscriptionStatus.PAST_DUE:
        status += " (grace)" if entitled_tier(s, now) is s.tier else " (access paused)"
    elif s.provider is Provider.TELEGRAM_STARS and entitled_tier(s, now) is Tier.FREE:
        status = "expired"
    elif s.cancel_at_period_end:
        status += ", ends"
    until = s.current_period_end.strftime("%Y-%m-%d") if s.current_period_end else "-"
    return (s.tier.value, "Telegram Stars" if s.provider is Provider.TELEGRAM_STARS else "card", status, until)


# /cancel -----------------------------------------------------------------------------------------------
async def cancel(ctx: CommandContext, _: None) -> Doc:
    payments = _payments(ctx)
    user = _user(ctx)
    subs = await payments.subscriptions_of(user)
    scheduled = await payments.cancel_stripe(user)
    stars = [s for s in subs if s.provider is Provider.TELEGRAM_STARS and s.status is SubscriptionStatus.ACTIVE
             and entitled_tier(s, payments.clock.now()) is not Tier.FREE]
    lines = [f"Your {s.tier} card subscription will not renew; you keep it until the end of the paid period."
             for s in scheduled]
    lines += [f"Your {s.tier} Telegram Stars subscription is cancelled in Telegram: Settings > My Stars > "
              "the subscription > Cancel." for s in stars]
    if not lines:
        return Doc(heading="Nothing to cancel", body="You have no renewing subscription.")
    return Doc(heading="Cancellation", body="\n".join(lines), tone="warning")


def _features(ent: Entitlements) -> tuple[tuple[str, str], ...]:
    return (("Signals per month", _count(ent.signals_per_month)),
            ("Analyses per day", _count(ent.requests_per_day)),
            ("Asset classes", ", ".join(sorted(ent.asset_classes))),
            ("Timeframes", ", ".join(t.value for t in Timeframe if t in ent.timeframes)),
            ("Charts", "yes" if ent.charts else "no"),
            ("Extra channels", ", ".join(sorted(ent.channels)) or "-"))


def _count(value: int | None) -> str:
    return "unlimited" if value is None else str(value)


def billing_commands() -> list[Command[Any]]:
    return [
        Command("subscribe", "plans and prices; /subscribe PLAN to buy one", "/subscribe [hobbyist|trader|professional]",
                parse_tier, subscribe),
        Command("subscription", "your plan and subscription", "/subscription", _no_args, show_subscription),
        Command("cancel", "stop renewing your subscription", "/cancel", _no_args, cancel),
    ]
