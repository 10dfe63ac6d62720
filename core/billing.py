"""Subscriptions and the tier they entitle a user to: pure rules, no I/O.

A user may hold several subscriptions (a Stripe one, a Telegram Stars one); the tier they are
entitled to is the highest tier any of them grants at a given moment.

The life of a subscription (`status`, as Stripe names it; Stars use ACTIVE and EXPIRED):

    trialing, active  -> its tier (Stars: only until `current_period_end`; a renewal moves it on)
    past_due          -> its tier for GRACE_PERIOD after the first failed payment (`past_due_since`),
                         then free until an invoice is paid (Stripe keeps retrying the card meanwhile and
                         finally cancels or marks the subscription unpaid)
    canceled, unpaid, incomplete, incomplete_expired, paused, expired -> free

A subscription whose cancellation is scheduled (`cancel_at_period_end`) stays active until Stripe ends it
(customer.subscription.deleted). Telegram sends nothing when a Stars subscription lapses: the period end
decides, which is why a periodic sweep re-evaluates tiers (see `needs_review_at`).
"""
from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from core.domain import Tier

GRACE_PERIOD = timedelta(days=3)
STARS_PERIOD = timedelta(seconds=2_592_000)  # 30 days: the only period Telegram allows for Stars subscriptions
STARS_CURRENCY = "XTR"
PAID_TIERS = (Tier.HOBBYIST, Tier.TRADER, Tier.PROFESSIONAL)


class Provider(enum.StrEnum):
    STRIPE = "stripe"
    TELEGRAM_STARS = "telegram_stars"


class SubscriptionStatus(enum.StrEnum):
    INCOMPLETE = "incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired"
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    CANCELED = "canceled"
    UNPAID = "unpaid"
    PAUSED = "paused"
    EXPIRED = "expired"  # Stars: the period ended without a renewal


_ENTITLED = frozenset({SubscriptionStatus.TRIALING, SubscriptionStatus.ACTIVE})


@dataclass(frozen=True, slots=True)
class Subscription:
    user_id: int
    provider: Provider
    external_id: str  # Stripe subscription id; Stars: the invoice payload the subscription was bought with
    tier: Tier
    status: SubscriptionStatus
    current_period_end: datetime | None = None
    past_due_since: datetime | None = None
    cancel_at_period_end: bool = False
    customer_id: str | None = None  # Stripe customer
    status_at: datetime | None = None  # when the provider reported this state (older reports are ignored)


@dataclass(frozen=True, slots=True)
class TierChange:
    """A user's tier moved; `reason` is a short sentence for the person."""

    user_id: int
    old: Tier
    new: Tier
    reason: str

    @property
    def upgrade(self) -> bool:
        return self.new.rank > self.old.rank


@dataclass(frozen=True, slots=True)
class StarsPayment:
    """message.successful_payment of a Telegram Stars payment, as the transport read it."""

    telegram_payment_charge_id: str
    provider_payment_charge_id: str
    invoice_payload: str
    currency: str
    total_amount: int
    is_recurring: bool = False
    is_first_recurring: bool = False
    subscription_expiration_date: datetime | None = None


def parse_status(text: str) -> SubscriptionStatus:
    try:
        return SubscriptionStatus(text)
    except ValueError:
        raise ValueError(f"unknown subscription status {text!r}") from None


def entitled_tier(sub: Subscription, now: datetime) -> Tier:
    """The tier this one subscription grants at `now` (see the module docstring)."""
    if sub.status in _ENTITLED:
        if sub.provider is Provider.TELEGRAM_STARS and sub.current_period_end is not None \
                and now >= sub.current_period_end:
            return Tier.FREE
        return sub.tier
    if sub.status is SubscriptionStatus.PAST_DUE:
        since = sub.past_due_since or sub.status_at
        if since is None or now < since + GRACE_PERIOD:
            return sub.tier
    return Tier.FREE


def effective_tier(subs: Iterable[Subscription], now: datetime) -> Tier:
    """The highest tier any of the user's subscriptions grants at `now`; free without one."""
    best = Tier.FREE
    for sub in subs:
        tier = entitled_tier(sub, now)
        if tier.rank > best.rank:
            best = tier
    return best


def needs_review_at(sub: Subscription) -> datetime | None:
    """When this subscription's tier may change without any message from the provider (grace end, Stars expiry)."""
    if sub.status is SubscriptionStatus.PAST_DUE:
        since = sub.past_due_since or sub.status_at
        return since + GRACE_PERIOD if since is not None else None
    if sub.status in _ENTITLED and sub.provider is Provider.TELEGRAM_STARS:
        return sub.current_period_end
    return None


def apply_update(current: Subscription | None, update: Subscription) -> Subscription:
    """Merge a provider report into what we hold. A report older than the stored one is ignored (webhooks arrive
    out of order; Stripe's `created` has one-second resolution); `past_due_since` keeps the first failure while
    the subscription stays past due."""
    if current is None:
        if update.status is SubscriptionStatus.PAST_DUE and update.past_due_since is None:
            return replace(update, past_due_since=update.status_at)
        return update
    if current.status_at is not None and update.status_at is not None:
        if update.status_at < current.status_at:
            return current
        # Stripe creates a subscription "incomplete" and activates it within the same second; the two events may
        # arrive in either order, so at equal times "incomplete" never replaces a later stage
        if update.status_at == current.status_at and update.status is SubscriptionStatus.INCOMPLETE \
                and current.status is not SubscriptionStatus.INCOMPLETE:
            return current
    past_due_since: datetime | None = None
    if update.status is SubscriptionStatus.PAST_DUE:
        past_due_since = current.past_due_since if current.status is SubscriptionStatus.PAST_DUE else None
        past_due_since = past_due_since or update.past_due_since or update.status_at
    return Subscription(
        user_id=current.user_id, provider=current.provider, external_id=current.external_id,
        tier=update.tier, status=update.status,
        current_period_end=update.current_period_end or current.current_period_end,
        past_due_since=past_due_since, cancel_at_period_end=update.cancel_at_period_end,
        customer_id=update.customer_id or current.customer_id, status_at=update.status_at or current.status_at)


def stars_subscription(user_id: int, tier: Tier, payment: StarsPayment, paid_at: datetime) -> Subscription:
    """A Stars payment (first or renewal) -> the subscription it pays for, active until its expiration date."""
    end = payment.subscription_expiration_date or paid_at + STARS_PERIOD
    return Subscription(user_id=user_id, provider=Provider.TELEGRAM_STARS, external_id=payment.invoice_payload,
                        tier=tier, status=SubscriptionStatus.ACTIVE, current_period_end=end, status_at=paid_at)


def change_reason(old: Tier, new: Tier, subs: Iterable[Subscription], now: datetime) -> str:
    """A sentence for the person whose tier moved from `old` to `new`."""
    if new.rank > old.rank:
        return f"Thank you! Your {new} subscription is active."
    if new is Tier.FREE:
        states = {s.status for s in subs}
        if SubscriptionStatus.PAST_DUE in states:
            return "Your payment failed and the grace period has ended: you are on the free tier until it is paid."
        if any(s.provider is Provider.TELEGRAM_STARS and s.current_period_end is not None
               and s.current_period_end <= now for s in subs):
            return "Your Telegram Stars subscription has expired: you are on the free tier."
        return "Your subscription has ended: you are on the free tier."
    return f"Your subscription changed: you are on the {new} tier."


def parse_tier_map(pairs: Mapping[str, str]) -> dict[Tier, str]:
    """settings.stripe_prices / stars_prices pairs -> {paid tier: value}. Free or unknown tiers are an error."""
    out: dict[Tier, str] = {}
    for name, value in pairs.items():
        try:
            tier = Tier(name.strip().lower())
        except ValueError:
            raise ValueError(f"unknown tier {name!r} (expected one of {', '.join(PAID_TIERS)})") from None
        if tier not in PAID_TIERS:
            raise ValueError(f"{tier} is not a paid tier")
        out[tier] = value
    return out


def parse_stars_prices(pairs: Mapping[str, str]) -> dict[Tier, int]:
    out: dict[Tier, int] = {}
    for tier, value in parse_tier_map(pairs).items():
        try:
            amount = int(value)
        except ValueError:
            raise ValueError(f"Stars price of {tier} must be a whole number, got {value!r}") from None
        if not 1 <= amount <= 10_000:  # Telegram's bounds for a Stars subscription price
            raise ValueError(f"Stars price of {tier} must be between 1 and 10000, got {amount}")
        out[tier] = amount
    return out



class CheckoutStatus(enum.StrEnum):
    OPEN = "open"
    COMPLETE = "complete"


@dataclass(frozen=True, slots=True)
class Checkout:
    """A purchase we started: a Stripe Checkout Session or a Stars invoice (id = the invoice payload)."""

    id: str
    provider: Provider
    user_id: int
    tier: Tier
    amount: int | None = None  # minor units (Stars: whole stars); Stripe: from the price, not known here
    currency: str | None = None
    status: CheckoutStatus = CheckoutStatus.OPEN
    url: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Payment:
    """Money received. (provider, charge_id) is unique: a payment reported twice is recorded once."""

    provider: Provider
    charge_id: str  # Stars: telegram_payment_charge_id; Stripe: the invoice id
    user_id: int
    tier: Tier
    amount: int
    currency: str
    paid_at: datetime
    recurring: bool = False
    provider_charge_id: str | None = None
    period_end: datetime | None = None


# ---------------------------------------------------------------------- Stripe events

STRIPE_EVENTS = frozenset({
    "checkout.session.completed", "customer.subscription.created", "customer.subscription.updated",
    "customer.subscription.deleted", "invoice.paid", "invoice.payment_failed",
})  # the event types that can change a subscription; others are acknowledged and ignored


@dataclass(frozen=True, slots=True)
class InvoiceInfo:
    id: str
    amount: int  # minor units
    currency: str


@dataclass(frozen=True, slots=True)
class StripeUpdate:
    """What one Stripe event says about a subscription. None: the event does not say."""

    event_id: str
    event_type: str
    created: datetime
    subscription_id: str | None = None
    customer_id: str | None = None
    status: SubscriptionStatus | None = None
    tier: Tier | None = None
    user_id: int | None = None
    period_end: datetime | None = None
    cancel_at_period_end: bool | None = None
    checkout_session: str | None = None
    invoice: InvoiceInfo | None = None

    @property
    def handled(self) -> bool:
        return self.event_type in STRIPE_EVENTS


@dataclass(frozen=True, slots=True)
class Reconciled:
    """What to record for one Stripe event: the subscription as it now stands, the payment it reports, the
    checkout it completes, and why parts of it had no effect (for the log)."""

    subscriptions: tuple[Subscription, ...] = ()
    payment: Payment | None = None
    completed_checkout: str | None = None
    notes: tuple[str, ...] = ()


def stripe_user(u: StripeUpdate, stored: Subscription | None, checkout: Checkout | None) -> int | None:
    """Whose subscription a Stripe event is about: the event says, else the stored subscription, else the checkout
    that started it."""
    return u.user_id or (stored.user_id if stored else None) or (checkout.user_id if checkout else None)


def reconcile_stripe(u: StripeUpdate, stored: Subscription | None, checkout: Checkout | None,
                     user_id: int | None) -> Reconciled:
    """A Stripe event against what is stored: its subscription (`stored`, by subscription id) and the checkout
    that started it (by session id). `user_id`: `stripe_user()` when that user exists, else None. The tier comes
    from the event, else the stored subscription, else the checkout; an invoice keeps the tier of the subscription
    as stored (its metadata keeps the tier of the checkout, while the subscription's price says the tier it has
    now)."""
    notes: list[str] = []
    if stored is not None and u.invoice is not None:
        tier: Tier | None = stored.tier
    else:
        tier = u.tier or (stored.tier if stored else None) or (checkout.tier if checkout else None)
    subs: list[Subscription] = []
    if u.subscription_id and u.status is not None and user_id is not None and tier is not None:
        cancel = u.cancel_at_period_end if u.cancel_at_period_end is not None else (
            stored.cancel_at_period_end if stored else False)
        subs.append(Subscription(user_id, Provider.STRIPE, u.subscription_id, tier, u.status,
                                 current_period_end=u.period_end, cancel_at_period_end=cancel,
                                 customer_id=u.customer_id, status_at=u.created))
    elif u.subscription_id or u.checkout_session:
        notes.append(f"no user or tier known for subscription {u.subscription_id}; recorded without effect")
    payment = None
    if u.invoice is not None and u.event_type == "invoice.paid" and user_id is not None and tier is not None:
        payment = Payment(Provider.STRIPE, u.invoice.id, user_id, tier, u.invoice.amount, u.invoice.currency,
                          paid_at=u.created, recurring=True, period_end=u.period_end)
    return Reconciled(tuple(subs), payment, checkout.id if checkout is not None else None, tuple(notes))


# ---------------------------------------------------------------------- what the billing store reports

@dataclass(frozen=True, slots=True)
class Applied:
    """What `apply()` did: `duplicate` when the event had been processed before (nothing changed)."""

    duplicate: bool
    changes: tuple[TierChange, ...] = ()


@dataclass(frozen=True, slots=True)
class RejectedEvent:
    """A provider event refused because it cannot be applied; `deliveries` counts how often it came."""

    provider: Provider
    event_id: str
    event_type: str | None
    reason: str
    deliveries: int
    first_received_at: datetime
    last_received_at: datetime
