"""Stripe through its official SDK: the one module that imports `stripe`.

- `create_checkout()`: a Checkout Session in subscription mode for one paid tier (price ids from
  settings.stripe_prices), `client_reference_id` = our user id, the user and tier in the session's and the
  subscription's metadata (so every later subscription event names its user), success/cancel pages under
  settings.public_url.
- `verify_event()`: the webhook body -> a `StripeUpdate` (our own value), after stripe.Webhook.construct_event
  checked the Stripe-Signature header (HMAC-SHA256 with the endpoint secret, timestamp within `tolerance`).
- `cancel_at_period_end()`: schedules a subscription's end; Stripe then sends customer.subscription.updated
  now and customer.subscription.deleted at the period end.

Stripe errors become `CheckoutFailed` (a UserInputError whose message is safe to show; details are logged)
and `WebhookRejected` (the HTTP server answers 400). The API base can point at a local fake (tests).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

import aiohttp
import stripe

from core.billing import SubscriptionStatus, parse_status
from core.domain import Tier
from core.errors import UserInputError

log = logging.getLogger(__name__)

HANDLED_EVENTS = frozenset({
    "checkout.session.completed", "customer.subscription.created", "customer.subscription.updated",
    "customer.subscription.deleted", "invoice.paid", "invoice.payment_failed",
})


class WebhookRejected(Exception):
    """The webhook is not from Stripe (signature, timestamp) or not an event; answered with 400."""


class CheckoutFailed(UserInputError):
    """Stripe did not create the Checkout Session; the message is safe to show."""


@dataclass(frozen=True, slots=True)
class CheckoutLink:
    session_id: str
    url: str


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
        return self.event_type in HANDLED_EVENTS


class StripeBilling:
    def __init__(self, api_key: str, *, webhook_secret: str | None, prices: Mapping[Tier, str], public_url: str,
                 api_base: str | None = None, tolerance: int = 300, max_network_retries: int = 2,
                 timeout: float = 30.0) -> None:
        if not prices:
            raise ValueError("no Stripe prices configured (SIGNALBOT_STRIPE_PRICES=hobbyist=price_...,...)")
        self._prices = dict(prices)
        self._tier_of_price = {price: tier for tier, price in prices.items()}
        self._secret = webhook_secret
        self._tolerance = tolerance
        self._public_url = public_url.rstrip("/")
        self._labels: dict[Tier, str] | None = None
        self._http = stripe.AIOHTTPClient(timeout=aiohttp.ClientTimeout(total=timeout))
        base = {"api": api_base.rstrip("/")} if api_base else None
        self._client = stripe.StripeClient(api_key, base_addresses=base,  # type: ignore[arg-type]
                                           max_network_retries=max_network_retries, http_client=self._http)

    @property
    def tiers(self) -> tuple[Tier, ...]:
        return tuple(t for t in Tier if t in self._prices)

    async def price_labels(self) -> dict[Tier, str]:
        """"$29.00 / month" per tier, read from Stripe once (a price Stripe cannot give is left out)."""
        if self._labels is None:
            labels: dict[Tier, str] = {}
            for tier, price_id in self._prices.items():
                try:
                    price = await self._client.v1.prices.retrieve_async(price_id)
                except stripe.StripeError as exc:
                    log.warning("stripe: price %s of %s unavailable: %s", price_id, tier, _describe(exc))
                    return labels  # not cached: try again next time
                labels[tier] = _price_label(price.unit_amount, price.currency,
                                            price.recurring.interval if price.recurring else None)
            self._labels = labels
        return dict(self._labels)

    async def close(self) -> None:
        await self._http.close_async()

    # -- checkout ----------------------------------------------------------------------------------
    async def create_checkout(self, user_id: int, tier: Tier) -> CheckoutLink:
        price = self._prices.get(tier)
        if price is None:
            raise CheckoutFailed(f"The {tier} tier cannot be bought by card here.")
        meta = {"user_id": str(user_id), "tier": tier.value}
        params: dict[str, Any] = {
            "mode": "subscription",
            "line_items": [{"price": price, "quantity": 1}],
            "client_reference_id": str(user_id),
            "metadata": meta,
            "subscription_data": {"metadata": meta},
            "success_url": f"{self._public_url}/billing/success?session_id={{CHECKOUT_SESSION_ID}}",
            "cancel_url": f"{self._public_url}/billing/cancel",
        }
        try:
            session = await self._client.v1.checkout.sessions.create_async(params)  # type: ignore[arg-type]
        except stripe.StripeError as exc:
            log.error("stripe: checkout session for user %s failed: %s", user_id, _describe(exc))
            raise CheckoutFailed("Card payments are unavailable right now; please try again later.") from exc
        if not session.url:
            raise CheckoutFailed("Stripe returned no checkout page; please try again later.")
        return CheckoutLink(session.id, session.url)

    async def cancel_at_period_end(self, subscription_id: str) -> datetime | None:
        """Schedule the end; returns the period end Stripe reports (when access stops)."""
        try:
            sub = await self._client.v1.subscriptions.update_async(
                subscription_id, {"cancel_at_period_end": True})
        except stripe.StripeError as exc:
            log.error("stripe: cancelling %s failed: %s", subscription_id, _describe(exc))
            raise CheckoutFailed("Stripe could not cancel the subscription now; please try again later.") from exc
        return _period_end(sub.to_dict())

    # -- webhooks ----------------------------------------------------------------------------------
    def verify_event(self, payload: bytes, signature: str | None) -> StripeUpdate:
        """Check the signature and read the event. Raises WebhookRejected."""
        if not self._secret:
            raise WebhookRejected("no webhook secret configured")
        try:
            # StripeClient.construct_event = stripe.Webhook.construct_event with this client's options (no globals)
            event = self._client.construct_event(payload, signature, self._secret, tolerance=self._tolerance)
        except stripe.SignatureVerificationError as exc:
            raise WebhookRejected(f"signature verification failed: {exc.user_message or exc}") from None
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise WebhookRejected(f"malformed event: {type(exc).__name__}") from None
        return self.read_event(event.to_dict())

    def read_event(self, event: Mapping[str, Any]) -> StripeUpdate:
        try:
            event_id, event_type = str(event["id"]), str(event["type"])
            created = _time(event["created"])
            obj = event["data"]["object"]
        except (KeyError, TypeError, ValueError) as exc:
            raise WebhookRejected(f"malformed event: missing {exc}") from None
        if not isinstance(obj, Mapping) or created is None:
            raise WebhookRejected("malformed event: no data.object")
        base = StripeUpdate(event_id, event_type, created)
        try:
            if event_type == "checkout.session.completed":
                return self._checkout_completed(base, obj)
            if event_type.startswith("customer.subscription."):
                return self._subscription(base, obj)
            if event_type in ("invoice.paid", "invoice.payment_failed"):
                return _invoice(base, obj)
        except (KeyError, TypeError, ValueError) as exc:
            raise WebhookRejected(f"malformed {event_type}: {exc}") from None
        return base

    def _checkout_completed(self, base: StripeUpdate, s: Mapping[str, Any]) -> StripeUpdate:
        if s.get("mode") != "subscription":
            return _replace(base, checkout_session=str(s["id"]))
        paid = s.get("payment_status") in ("paid", "no_payment_required")
        meta = s.get("metadata") or {}
        return _replace(base, checkout_session=str(s["id"]), subscription_id=_id(s.get("subscription")),
                        customer_id=_id(s.get("customer")), status=SubscriptionStatus.ACTIVE if paid else None,
                        tier=_tier(meta.get("tier")), user_id=_user_id(s.get("client_reference_id") or
                                                                      meta.get("user_id")))

    def _subscription(self, base: StripeUpdate, s: Mapping[str, Any]) -> StripeUpdate:
        meta = s.get("metadata") or {}
        items = (s.get("items") or {}).get("data") or []
        price = _id((items[0].get("price") if items else None) or s.get("plan"))
        tier = self._tier_of_price.get(price or "") or _tier(meta.get("tier"))
        status = SubscriptionStatus.CANCELED if base.event_type.endswith(".deleted") else parse_status(str(s["status"]))
        return _replace(base, subscription_id=str(s["id"]), customer_id=_id(s.get("customer")), status=status,
                        tier=tier, user_id=_user_id(meta.get("user_id")), period_end=_period_end(s),
                        cancel_at_period_end=bool(s.get("cancel_at_period_end")))


# -- reading Stripe objects --------------------------------------------------------------------------------
def _invoice(base: StripeUpdate, inv: Mapping[str, Any]) -> StripeUpdate:
    details = ((inv.get("parent") or {}).get("subscription_details") or {})  # API 2025-03-31 and later
    sub = inv.get("subscription") or details.get("subscription")  # top-level before 2025-03-31
    meta = details.get("metadata") or (inv.get("subscription_details") or {}).get("metadata") or {}
    paid = base.event_type == "invoice.paid"
    amount = inv.get("amount_paid" if paid else "amount_due") or 0
    lines = (inv.get("lines") or {}).get("data") or []
    period_end = _time(((lines[0].get("period") or {}).get("end")) if lines else None)
    return _replace(base, subscription_id=_id(sub), customer_id=_id(inv.get("customer")),
                    user_id=_user_id(meta.get("user_id")), tier=_tier(meta.get("tier")),
                    status=SubscriptionStatus.ACTIVE if paid else SubscriptionStatus.PAST_DUE,
                    period_end=period_end if paid else None,
                    invoice=InvoiceInfo(str(inv["id"]), int(amount), str(inv.get("currency") or "")))


def _period_end(sub: Mapping[str, Any]) -> datetime | None:
    end = sub.get("current_period_end")
    if end is None:  # API 2025-03-31 and later: per item
        items = (sub.get("items") or {}).get("data") or []
        end = items[0].get("current_period_end") if items else None
    return _time(end)


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    return datetime.fromtimestamp(int(value), tz=timezone.utc)


def _id(value: Any) -> str | None:
    """An expandable field: the id string, or the expanded object's id."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return str(value["id"]) if value.get("id") else None
    return str(value)


def _tier(value: Any) -> Tier | None:
    try:
        return Tier(str(value)) if value else None
    except ValueError:
        return None


def _user_id(value: Any) -> int | None:
    try:
        return int(str(value)) if value not in (None, "") else None
    except ValueError:
        return None


def _replace(base: StripeUpdate, **changes: Any) -> StripeUpdate:
    return replace(base, **changes)


def _price_label(unit_amount: int | None, currency: str, interval: str | None) -> str:
    if unit_amount is None:
        return "see checkout"
    zero_decimal = currency.lower() in ("jpy", "krw", "vnd", "clp", "isk", "ugx", "xaf", "xof")
    amount = f"{unit_amount}" if zero_decimal else f"{unit_amount / 100:.2f}"
    symbol = {"usd": "$", "eur": "€", "gbp": "£"}.get(currency.lower())
    text = f"{symbol}{amount}" if symbol else f"{amount} {currency.upper()}"
    return f"{text} / {interval}" if interval else text


def _describe(exc: stripe.StripeError) -> str:
    """Type, HTTP status and Stripe's message; never the key."""
    return f"{type(exc).__name__} (HTTP {exc.http_status}): {exc.user_message or 'no message'}"
