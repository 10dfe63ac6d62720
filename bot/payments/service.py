"""Payments: orchestration of the providers over the billing store; the rules are core.billing's (see the
package's docstring)."""
from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from bot.commands.caller import Caller
from bot.payments.stripe_billing import CheckoutLink, StripeBilling, WebhookRejected
from bot.settings import Settings
from bot.views.doc import Doc, Invoice
from core.billing import (
    STARS_CURRENCY, STARS_PERIOD, Checkout, Payment, Provider, StarsPayment, StripeUpdate, Subscription, TierChange,
    parse_stars_prices, parse_tier_map, reconcile_stripe, stars_subscription, stripe_user,
)
from core.clock import Clock, SystemClock
from core.domain import Tier, User
from core.errors import UserInputError
from core.ports import BillingRepository, UserRepository
from storage import Stores
from storage.billing import Applied, BillingStore

log = logging.getLogger(__name__)

Notify = Callable[[TierChange], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class WebhookResult:
    outcome: str  # "processed" | "duplicate" | "ignored"
    event_id: str
    event_type: str
    changes: tuple[TierChange, ...] = ()


class Payments:
    def __init__(self, users: UserRepository, billing: BillingRepository, *, stripe: StripeBilling | None,
                 stars_prices: Mapping[Tier, int], clock: Clock | None = None, notify: Notify | None = None) -> None:
        self.users = users
        self.billing = billing
        self.stripe = stripe
        self.stars_prices = dict(stars_prices)
        self.clock: Clock = clock or SystemClock()  # wall time: billing never follows a simulated market clock
        self.notify = notify

    @classmethod
    def from_settings(cls, settings: Settings, store: Stores, *, clock: Clock | None = None,
                      notify: Notify | None = None) -> Payments:
        """Stripe when STRIPE_API_KEY is set (its prices are then required); Stars prices always."""
        # wall time: a caller's clock gets a billing store of its own on the same database
        billing = store.billing if clock is None else BillingStore(store.database, clock,
                                                                   users_changed=store.users.invalidate_users)
        clock = clock or SystemClock()
        stripe: StripeBilling | None = None
        if settings.stripe_api_key is not None:
            prices = parse_tier_map(Settings.pairs(settings.stripe_prices))
            secret = settings.stripe_webhook_secret.get_secret_value() if settings.stripe_webhook_secret else None
            if secret is None:
                log.warning("stripe: STRIPE_WEBHOOK_SECRET is not set; every webhook will be refused")
            stripe = StripeBilling(settings.stripe_api_key.get_secret_value(), webhook_secret=secret, prices=prices,
                                   public_url=settings.public_url, api_base=settings.stripe_api_base)
        stars = parse_stars_prices(Settings.pairs(settings.stars_prices))
        return cls(store.users, billing, stripe=stripe, stars_prices=stars, clock=clock,
                   notify=notify)

    async def close(self) -> None:
        if self.stripe is not None:
            await self.stripe.close()

    # -- Stripe ------------------------------------------------------------------------------------------
    async def stripe_checkout(self, user: User, tier: Tier) -> CheckoutLink:
        if self.stripe is None:
            raise UserInputError("Card payments are not enabled on this server.")
        link = await self.stripe.create_checkout(user.id, tier)
        await self.billing.add_checkout(Checkout(link.session_id, Provider.STRIPE, user.id, tier, url=link.url,
                                                 created_at=self.clock.now()))
        return link

    async def handle_stripe_webhook(self, payload: bytes, signature: str | None) -> WebhookResult:
        """Verify, then apply once. Raises WebhookRejected (answer 400): a refused delivery (signature, timestamp)
        or an event that cannot be applied, recorded as rejected when it has an id (a redelivery is read again,
        refused again and counted; never applied). Other errors mean "retry later" (500)."""
        if self.stripe is None:
            raise WebhookRejected("Stripe is not configured")
        try:
            update = self.stripe.verify_event(payload, signature)
        except WebhookRejected as exc:
            if exc.event_id is not None:
                await self._record_rejected(exc, exc.event_id)
            raise
        if not update.handled:
            return WebhookResult("ignored", update.event_id, update.event_type)
        applied = await self._apply_stripe(update)
        outcome = "duplicate" if applied.duplicate else "processed"
        log.info("stripe: %s %s %s", update.event_type, update.event_id, outcome)
        await self._notify_all(applied.changes)
        return WebhookResult(outcome, update.event_id, update.event_type, applied.changes)

    async def _record_rejected(self, exc: WebhookRejected, event_id: str) -> None:
        """Best effort: the event is refused either way, so a failure to record it is only logged."""
        log.warning("stripe: %s %s rejected: %s", exc.event_type or "event", event_id, exc.reason)
        try:
            await self.billing.reject(Provider.STRIPE, event_id, exc.event_type, exc.reason)
        except Exception:  # noqa: BLE001 - recording must not turn a 400 into a 500 (the log has the reason)
            log.exception("stripe: could not record rejected event %s", event_id)

    async def _apply_stripe(self, u: StripeUpdate) -> Applied:
        stored = await self.billing.find_subscription(Provider.STRIPE, u.subscription_id) if u.subscription_id else None
        checkout = await self.billing.get_checkout(u.checkout_session) if u.checkout_session else None
        user_id = stripe_user(u, stored, checkout)
        if user_id is not None and await self.users.get_user(user_id) is None:
            log.warning("stripe: %s %s names user %s, who does not exist; recorded without effect",
                        u.event_type, u.event_id, user_id)
            user_id = None
        plan = reconcile_stripe(u, stored, checkout, user_id)
        for note in plan.notes:
            log.warning("stripe: %s %s: %s", u.event_type, u.event_id, note)
        return await self.billing.apply(Provider.STRIPE, u.event_id, u.event_type, subscriptions=list(plan.subscriptions),
                                        payment=plan.payment, completed_checkout=plan.completed_checkout)

    async def cancel_stripe(self, user: User) -> list[Subscription]:
        """Schedule the end of the user's live Stripe subscriptions; returns those it scheduled."""
        if self.stripe is None:
            return []
        live = [s for s in await self.billing.subscriptions_of(user.id)
                if s.provider is Provider.STRIPE and s.status.value in ("active", "trialing", "past_due")
                and not s.cancel_at_period_end]
        for sub in live:
            await self.stripe.cancel_at_period_end(sub.external_id)
        return live

    # -- Telegram Stars ----------------------------------------------------------------------------------
    async def stars_invoice(self, user: User, tier: Tier) -> Invoice:
        amount = self.stars_prices.get(tier)
        if amount is None:
            raise UserInputError(f"The {tier} tier cannot be bought with Telegram Stars here.")
        payload = f"sub:{tier.value}:{user.id}:{secrets.token_hex(8)}"
        await self.billing.add_checkout(Checkout(payload, Provider.TELEGRAM_STARS, user.id, tier, amount,
                                                 STARS_CURRENCY, created_at=self.clock.now()))
        return Invoice(title=f"Signalbot {tier.value.title()}", description=f"{tier.value.title()} tier for 30 days, "
                       "renewed monthly until you cancel it in Telegram.", payload=payload, currency=STARS_CURRENCY,
                       amount=amount, label=f"{tier.value.title()} (30 days)",
                       subscription_period=int(STARS_PERIOD.total_seconds()), pay_label=f"Pay ⭐{amount}")

    async def check_stars_checkout(self, caller: Caller, payload: str, currency: str, amount: int) -> str | None:
        """Pre-checkout: None to accept, else the reason shown to the person (Telegram then cancels the payment)."""
        checkout = await self.billing.get_checkout(payload)
        if checkout is None or checkout.provider is not Provider.TELEGRAM_STARS:
            return "This invoice is not known to us. Please send /subscribe again."
        user = await self.users.get_user(checkout.user_id)
        if user is None or user.platform != caller.platform or user.platform_user_id != caller.platform_user_id:
            return "This invoice was made for another account. Please send /subscribe yourself."
        if currency != STARS_CURRENCY or amount != checkout.amount:
            return "The price of this invoice is not valid any more. Please send /subscribe again."
        return None

    async def stars_paid(self, caller: Caller, payment: StarsPayment) -> Doc | None:
        """A successful Stars payment (first or renewal): record it once, grant the tier. None for a duplicate."""
        checkout = await self.billing.get_checkout(payment.invoice_payload)
        if checkout is None or checkout.provider is not Provider.TELEGRAM_STARS:
            log.error("stars: payment %s for unknown payload %r from telegram:%s; refund it by hand",
                      payment.telegram_payment_charge_id, payment.invoice_payload, caller.platform_user_id)
            return Doc.error("We received your payment but could not match it to a plan.",
                             f"Please contact support with this reference: {payment.telegram_payment_charge_id}")
        if payment.currency != STARS_CURRENCY or payment.total_amount != checkout.amount:
            log.warning("stars: payment %s of %s %s for a checkout of %s %s", payment.telegram_payment_charge_id,
                        payment.total_amount, payment.currency, checkout.amount, checkout.currency)
        now = self.clock.now()
        sub = stars_subscription(checkout.user_id, checkout.tier, payment, now)
        record = Payment(Provider.TELEGRAM_STARS, payment.telegram_payment_charge_id, checkout.user_id, checkout.tier,
                         payment.total_amount, payment.currency, now, recurring=payment.is_recurring,
                         provider_charge_id=payment.provider_payment_charge_id or None, period_end=sub.current_period_end)
        applied = await self.billing.apply(Provider.TELEGRAM_STARS, payment.telegram_payment_charge_id,
                                           "successful_payment", subscriptions=[sub], payment=record,
                                           completed_checkout=checkout.id)
        if applied.duplicate:
            log.info("stars: payment %s was already applied", payment.telegram_payment_charge_id)
            return None
        renewal = payment.is_recurring and not payment.is_first_recurring
        until = sub.current_period_end.strftime("%Y-%m-%d") if sub.current_period_end else "?"
        return Doc(heading="Subscription renewed" if renewal else "Payment received, thank you!",
                   body=f"You are on the {checkout.tier} tier until {until}; it renews every 30 days until you "
                        "cancel it in Telegram (Settings > My Stars).",
                   fields=(("Paid", f"{payment.total_amount} ⭐"), ("Reference", payment.telegram_payment_charge_id)),
                   tone="success")

    # -- both --------------------------------------------------------------------------------------------
    async def review(self) -> list[TierChange]:
        """Downgrade users whose grace period or Stars period ended (run it every few minutes)."""
        changes = await self.billing.review(self.clock.now())
        await self._notify_all(changes)
        return changes

    async def subscriptions_of(self, user: User) -> list[Subscription]:
        return await self.billing.subscriptions_of(user.id)

    @property
    def card_tiers(self) -> tuple[Tier, ...]:
        return self.stripe.tiers if self.stripe is not None else ()

    async def _notify_all(self, changes: tuple[TierChange, ...] | list[TierChange]) -> None:
        if self.notify is None:
            for c in changes:
                log.info("billing: user %s %s -> %s (no notifier configured)", c.user_id, c.old, c.new)
            return
        for change in changes:
            try:
                await self.notify(change)
            except Exception:  # a failed notice must not undo or repeat a processed payment
                log.exception("billing: could not tell user %s about %s -> %s", change.user_id, change.old,
                              change.new)


def tier_change_doc(change: TierChange) -> Doc:
    return Doc(heading=f"Your plan: {change.new}", body=change.reason,
               note="Send /subscription to see your subscription.",
               tone="success" if change.upgrade else "warning")
