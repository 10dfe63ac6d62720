"""Stripe through its official SDK: the one module that imports `stripe`.

- `create_checkout()`: a Checkout Session in subscription mode for one paid tier (price ids from
  settings.stripe_prices), `client_reference_id` = our user id, the user and tier in the session's and the
  subscription's metadata (so every later subscription event names its user), success/cancel pages under
  settings.public_url.
- `verify_event()`: the webhook body -> a `StripeUpdate` (our own value), after stripe.WebhookSignature checked
  the Stripe-Signature header (HMAC-SHA256 with the endpoint secret, timestamp not older than `tolerance`) and
  we checked that the timestamp is not later than `tolerance` either (the SDK checks only the past).
- `cancel_at_period_end()`: schedules a subscription's end; Stripe then sends customer.subscription.updated
  now and customer.subscription.deleted at the period end.

Stripe errors become `CheckoutFailed` (a UserInputError whose message is safe to show; details are logged)
and `WebhookRejected` (the HTTP server answers 400). The API base can point at a local fake (tests).

Webhook bodies are read strictly: a signed body that is not an event object, or a field of the wrong kind (an
object that is not one, a time that is not a Unix time from 1970 to 2999, an amount that is not a whole
number), is rejected with the reason, never half-read or left to fail later (a 500 that Stripe would retry).
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

import aiohttp
import stripe

from core.billing import InvoiceInfo, StripeUpdate, SubscriptionStatus, parse_status
from core.domain import Tier
from core.errors import UserInputError

log = logging.getLogger(__name__)

MAX_TIMESTAMP = 32_503_680_000  # 3000-01-01T00:00:00Z: a later "time" is not one Stripe sends
MAX_ID_LENGTH = 255  # Stripe ids are about 30 characters
_MAX_INT = 2**63 - 1  # what a database integer column holds


class WebhookRejected(Exception):
    """A webhook answered with 400: not delivered by Stripe now (signature, timestamp; `event_id` is None), or
    an event that cannot be applied (`event_id`, and `event_type` when known, name it)."""

    def __init__(self, reason: str, *, event_id: str | None = None, event_type: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.event_id = event_id
        self.event_type = event_type


class CheckoutFailed(UserInputError):
    """Stripe did not create the Checkout Session; the message is safe to show."""


@dataclass(frozen=True, slots=True)
class CheckoutLink:
    session_id: str
    url: str


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
        try:
            return _period_end(sub.to_dict())
        except ValueError as exc:  # scheduled all the same; only the date is unknown
            log.warning("stripe: subscription %s reports no usable period end: %s", subscription_id, exc)
            return None

    # -- webhooks ----------------------------------------------------------------------------------
    def verify_event(self, payload: bytes, signature: str | None) -> StripeUpdate:
        """Check the signature and that its timestamp is within `tolerance` of now (past or future), then read
        the event. Raises WebhookRejected."""
        if not self._secret:
            raise WebhookRejected("no webhook secret configured")
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise WebhookRejected("malformed event: the body is not UTF-8 text") from None
        try:
            stripe.WebhookSignature.verify_header(text, signature, self._secret, self._tolerance)
        except stripe.SignatureVerificationError as exc:
            raise WebhookRejected(f"signature verification failed: {exc.user_message or exc}") from None
        signed_at = _signed_at(signature or "")
        if signed_at > time.time() + self._tolerance:
            raise WebhookRejected(f"signature verification failed: timestamp {signed_at} is more than "
                                  f"{self._tolerance} s in the future")
        try:
            event = json.loads(text)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply to parse
            raise WebhookRejected(f"malformed event: not JSON ({type(exc).__name__})") from None
        return self.read_event(event)  # `created` is not compared with now: simulated clocks date events ahead

    def read_event(self, event: Any) -> StripeUpdate:
        """A parsed event body -> StripeUpdate. Raises WebhookRejected, naming the event once its id is read."""
        if not isinstance(event, Mapping):
            raise WebhookRejected(f"malformed event: the body is {_kind(event)}, not an event object")
        event_id, event_type = event.get("id"), event.get("type")
        if not isinstance(event_id, str) or not 0 < len(event_id) <= MAX_ID_LENGTH:
            raise WebhookRejected("malformed event: no usable id")
        if not isinstance(event_type, str) or not event_type:
            raise WebhookRejected("malformed event: no type", event_id=event_id)
        try:
            return self._read(event_id, event_type, event)
        except KeyError as exc:
            reason = f"missing {exc}"
        except (TypeError, ValueError) as exc:
            reason = str(exc)
        raise WebhookRejected(f"malformed {event_type}: {reason}", event_id=event_id, event_type=event_type)

    def _read(self, event_id: str, event_type: str, event: Mapping[str, Any]) -> StripeUpdate:
        if event.get("object", "event") != "event":  # e.g. a thin event notification ("v2.core.event")
            raise ValueError(f"object is {_short(event.get('object'))}, not an event")
        created = _time(event.get("created"), "created")
        if created is None:
            raise ValueError("no created time")
        obj = _map(event.get("data"), "data").get("object")
        if not isinstance(obj, Mapping):
            raise ValueError(f"data.object is {_kind(obj)}, not an object")
        base = StripeUpdate(event_id, event_type, created)
        if event_type == "checkout.session.completed":
            return self._checkout_completed(base, obj)
        if event_type.startswith("customer.subscription."):
            return self._subscription(base, obj)
        if event_type in ("invoice.paid", "invoice.payment_failed"):
            return _invoice(base, obj)
        return base

    def _checkout_completed(self, base: StripeUpdate, s: Mapping[str, Any]) -> StripeUpdate:
        session_id = _need_id(s, "checkout session")
        if s.get("mode") != "subscription":
            return _replace(base, checkout_session=session_id)
        paid = s.get("payment_status") in ("paid", "no_payment_required")
        meta = _map(s.get("metadata"), "metadata")
        return _replace(base, checkout_session=session_id, subscription_id=_id(s.get("subscription")),
                        customer_id=_id(s.get("customer")), status=SubscriptionStatus.ACTIVE if paid else None,
                        tier=_tier(meta.get("tier")), user_id=_user_id(s.get("client_reference_id") or
                                                                      meta.get("user_id")))

    def _subscription(self, base: StripeUpdate, s: Mapping[str, Any]) -> StripeUpdate:
        meta = _map(s.get("metadata"), "metadata")
        item = _first(_map(s.get("items"), "items").get("data"), "items.data")
        price = _id((item.get("price") if item else None) or s.get("plan"))
        tier = self._tier_of_price.get(price or "") or _tier(meta.get("tier"))
        status = SubscriptionStatus.CANCELED if base.event_type.endswith(".deleted") else parse_status(str(s["status"]))
        return _replace(base, subscription_id=_need_id(s, "subscription"), customer_id=_id(s.get("customer")),
                        status=status, tier=tier, user_id=_user_id(meta.get("user_id")), period_end=_period_end(s),
                        cancel_at_period_end=bool(s.get("cancel_at_period_end")))


# -- reading Stripe objects (ValueError for a field of the wrong kind) --------------------------------------
def _invoice(base: StripeUpdate, inv: Mapping[str, Any]) -> StripeUpdate:
    details = _map(_map(inv.get("parent"), "parent").get("subscription_details"),
                   "parent.subscription_details")  # API 2025-03-31 and later
    sub = inv.get("subscription") or details.get("subscription")  # top-level before 2025-03-31
    meta = _map(details.get("metadata") or _map(inv.get("subscription_details"),
                                                "subscription_details").get("metadata"), "metadata")
    paid = base.event_type == "invoice.paid"
    amount = _amount(inv.get("amount_paid" if paid else "amount_due"))
    line = _first(_map(inv.get("lines"), "lines").get("data"), "lines.data")
    period_end = _time(_map(line.get("period"), "period").get("end"), "period end") if line else None
    currency = inv.get("currency") or ""
    if not isinstance(currency, str):
        raise ValueError(f"currency is {_kind(currency)}, not text")
    return _replace(base, subscription_id=_id(sub), customer_id=_id(inv.get("customer")),
                    user_id=_user_id(meta.get("user_id")), tier=_tier(meta.get("tier")),
                    status=SubscriptionStatus.ACTIVE if paid else SubscriptionStatus.PAST_DUE,
                    period_end=period_end if paid else None,
                    invoice=InvoiceInfo(_need_id(inv, "invoice"), amount, currency))


def _period_end(sub: Mapping[str, Any]) -> datetime | None:
    end = sub.get("current_period_end")
    if end is None:  # API 2025-03-31 and later: per item
        item = _first(_map(sub.get("items"), "items").get("data"), "items.data")
        end = item.get("current_period_end") if item else None
    return _time(end, "current_period_end")


def _signed_at(header: str) -> int:
    """The `t=` of a Stripe-Signature header, read as stripe.WebhookSignature reads it (call after it accepted
    the header)."""
    items = [i.split("=", 2) for i in header.split(",")]
    return int([i[1] for i in items if i[0] == "t"][0])


def _time(value: Any, name: str) -> datetime | None:
    """A Unix time in whole seconds from 1970 to MAX_TIMESTAMP; None stays None."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} is {_kind(value)}, not a Unix time")
    if not 0 <= value <= MAX_TIMESTAMP:
        raise ValueError(f"{name} {_short(value)} is not a Unix time from 1970 to 2999")
    return datetime.fromtimestamp(value, tz=timezone.utc)


def _amount(value: Any) -> int:
    """An amount in minor units (None: 0)."""
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_INT:
        raise ValueError(f"amount {_short(value)} is not a whole number of minor units")
    return value


def _map(value: Any, name: str) -> Mapping[str, Any]:
    """An object field; None (absent) reads as empty."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} is {_kind(value)}, not an object")
    return value


def _first(value: Any, name: str) -> Mapping[str, Any] | None:
    """The first object of a list field; None when the list is absent or empty."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise ValueError(f"{name} is {_kind(value)}, not a list")
    return _map(value[0], f"{name}[0]") if value else None


def _id(value: Any) -> str | None:
    """An expandable field: the id string, or the expanded object's id; None when absent."""
    if isinstance(value, Mapping):
        value = value.get("id")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_ID_LENGTH:
        raise ValueError(f"id {_short(value)} is not a Stripe id")
    return value


def _need_id(obj: Mapping[str, Any], name: str) -> str:
    found = _id(obj["id"])
    if found is None:
        raise ValueError(f"the {name} has no id")
    return found


def _kind(value: Any) -> str:
    """What a JSON value is, for a reason: "null", "a list", "the number 5"..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {_short(value)}"
    if isinstance(value, str):
        return f"the text {_short(value)}"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, Mapping) else type(value).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _tier(value: Any) -> Tier | None:
    try:
        return Tier(str(value)) if value else None
    except ValueError:
        return None


def _user_id(value: Any) -> int | None:
    """Our user id from metadata; None when absent or not a database id (recorded without effect)."""
    if value in (None, "") or isinstance(value, bool):
        return None
    try:
        user_id = int(str(value))
    except ValueError:
        return None
    return user_id if 0 < user_id <= _MAX_INT else None


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
