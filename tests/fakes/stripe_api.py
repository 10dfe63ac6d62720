"""A local Stripe API on 127.0.0.1 for tests, and a webhook sender that signs events as Stripe does.

The official SDK points at it with `base_addresses={"api": fake.api_base}` (settings.stripe_api_base).
It speaks Stripe's wire format: form-encoded requests with bracketed keys (`line_items[0][price]=...`),
`Authorization: Bearer sk_...`, JSON objects with `"object": "checkout.session"` & co, errors as
`{"error": {"type": ..., "message": ..., "param": ..., "code": ...}}`.

What Stripe would do when a customer pays or a card fails is a test helper: `complete_checkout()`,
`fail_renewal()`, `pay_renewal()`, `delete_subscription()` change the fake's objects and return the events
Stripe would send; `WebhookSender` posts them with a real `Stripe-Signature` header:

    t=<unix time>,v1=<hex HMAC-SHA256(endpoint secret, f"{t}.{raw body}")>
"""
from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

API_KEY = "sk_test_fake_4eC39HqLyjWDarjtT1zdp7dc"
WEBHOOK_SECRET = "whsec_test_fake_secret_for_signatures"
API_VERSION = "2025-09-30.clover"
PERIOD = 30 * 24 * 3600


class StripeApiError(Exception):
    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.param:
            err["param"] = self.param
        if self.code:
            err["code"] = self.code
        return {"error": err}


@dataclass
class Price:
    id: str
    unit_amount: int
    currency: str = "usd"
    interval: str = "month"

    def json(self) -> dict[str, Any]:
        return {"id": self.id, "object": "price", "active": True, "currency": self.currency, "livemode": False,
                "product": f"prod_{self.id}", "type": "recurring", "unit_amount": self.unit_amount,
                "recurring": {"interval": self.interval, "interval_count": 1, "usage_type": "licensed"},
                "billing_scheme": "per_unit", "created": int(time.time()), "metadata": {}}


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class FakeStripe:
    def __init__(self, prices: Mapping[str, int] | None = None, *, api_key: str = API_KEY) -> None:
        """`prices`: price id -> monthly amount in cents."""
        self.api_key = api_key
        self.prices = {pid: Price(pid, amount) for pid, amount in (prices or {}).items()}
        self.sessions: dict[str, dict[str, Any]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.invoices: dict[str, dict[str, Any]] = {}
        self.requests: list[Request] = []
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeStripe:
        app = web.Application()
        app.router.add_post("/v1/checkout/sessions", self._create_session)
        app.router.add_get("/v1/checkout/sessions/{id}", self._get_session)
        app.router.add_get("/v1/prices/{id}", self._get_price)
        app.router.add_get("/v1/subscriptions/{id}", self._get_subscription)
        app.router.add_post("/v1/subscriptions/{id}", self._update_subscription)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeStripe:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _id(self, prefix: str) -> str:
        return f"{prefix}_test_{next(self._ids):04d}{secrets.token_hex(6)}"

    # -- HTTP --------------------------------------------------------------------------------------
    async def _call(self, request: web.Request, handler: Any) -> web.Response:
        params = decode_form(list((await request.post()).items())) if request.method == "POST" else dict(request.query)
        self.requests.append(Request(request.method, request.path, params, dict(request.headers)))
        try:
            auth = request.headers.get("Authorization", "")
            if auth != f"Bearer {self.api_key}":
                shown = auth.removeprefix("Bearer ")[:8]
                raise StripeApiError(401, f"Invalid API Key provided: {shown}****")
            return web.json_response(handler(request, params))
        except StripeApiError as exc:
            return web.json_response(exc.body(), status=exc.status)

    async def _create_session(self, request: web.Request) -> web.Response:
        return await self._call(request, self._session_create)

    async def _get_session(self, request: web.Request) -> web.Response:
        return await self._call(request, lambda r, p: self._lookup(self.sessions, r.match_info["id"], "checkout.session"))

    async def _get_price(self, request: web.Request) -> web.Response:
        def get(r: web.Request, p: dict[str, Any]) -> dict[str, Any]:
            price = self.prices.get(r.match_info["id"])
            if price is None:
                raise StripeApiError(404, f"No such price: '{r.match_info['id']}'", param="id", code="resource_missing")
            return price.json()
        return await self._call(request, get)

    async def _get_subscription(self, request: web.Request) -> web.Response:
        return await self._call(request, lambda r, p: self._lookup(self.subscriptions, r.match_info["id"],
                                                                   "subscription"))

    async def _update_subscription(self, request: web.Request) -> web.Response:
        def update(r: web.Request, p: dict[str, Any]) -> dict[str, Any]:
            sub = self._lookup(self.subscriptions, r.match_info["id"], "subscription")
            if "cancel_at_period_end" in p:
                sub["cancel_at_period_end"] = p["cancel_at_period_end"] == "true"
            return sub
        return await self._call(request, update)

    async def _not_found(self, request: web.Request) -> web.Response:
        def unknown(r: web.Request, p: dict[str, Any]) -> dict[str, Any]:
            raise StripeApiError(404, f"Unrecognized request URL ({r.method}: {r.path}).")
        return await self._call(request, unknown)

    def _lookup(self, table: dict[str, dict[str, Any]], key: str, kind: str) -> dict[str, Any]:
        if key not in table:
            raise StripeApiError(404, f"No such {kind}: '{key}'", param="id", code="resource_missing")
        return table[key]

    def _session_create(self, request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
        for required in ("success_url", "mode"):
            if not p.get(required):
                raise StripeApiError(400, f"Missing required param: {required}.", param=required,
                                     code="parameter_missing")
        if p["mode"] != "subscription":
            raise StripeApiError(400, "this fake only speaks mode=subscription", param="mode")
        items = p.get("line_items") or []
        if not items:
            raise StripeApiError(400, "line_items is required in subscription mode", param="line_items")
        amount = 0
        for i, item in enumerate(items):
            price = self.prices.get(str(item.get("price")))
            if price is None:
                raise StripeApiError(400, f"No such price: '{item.get('price')}'", param=f"line_items[{i}][price]",
                                     code="resource_missing")
            amount += price.unit_amount * int(item.get("quantity") or 1)
        sid = "cs_test_" + secrets.token_hex(24)
        now = int(time.time())
        session = {
            "id": sid, "object": "checkout.session", "mode": "subscription", "status": "open",
            "payment_status": "unpaid", "amount_subtotal": amount, "amount_total": amount, "currency": "usd",
            "client_reference_id": p.get("client_reference_id"), "customer": None, "customer_email": None,
            "metadata": p.get("metadata") or {}, "subscription": None, "success_url": p["success_url"],
            "cancel_url": p.get("cancel_url"), "created": now, "expires_at": now + 24 * 3600, "livemode": False,
            "url": f"https://checkout.stripe.com/c/pay/{sid}#fid{secrets.token_hex(8)}",
            "_line_items": items, "_subscription_data": p.get("subscription_data") or {},
        }
        self.sessions[sid] = session
        return _public(session)

    # -- what Stripe does after the customer acts (test helpers) --------------------------------------
    def complete_checkout(self, session_id: str, *, at: int | None = None) -> list[dict[str, Any]]:
        """The customer paid: a customer, a subscription and a paid invoice exist; the three events Stripe sends."""
        at = at or int(time.time())
        s = self.sessions[session_id]
        customer = self._id("cus")
        price = self.prices[str(s["_line_items"][0]["price"])]
        sub_id = self._id("sub")
        sub = {
            "id": sub_id, "object": "subscription", "customer": customer, "status": "active",
            "cancel_at_period_end": False, "created": at, "start_date": at, "livemode": False,
            "metadata": dict((s["_subscription_data"].get("metadata") or {})),
            "items": {"object": "list", "data": [{"id": self._id("si"), "object": "subscription_item",
                                                  "price": price.json(), "quantity": 1,
                                                  "current_period_start": at, "current_period_end": at + PERIOD}]},
        }
        self.subscriptions[sub_id] = sub
        s.update(status="complete", payment_status="paid", customer=customer, subscription=sub_id)
        invoice = self._invoice(sub, "paid", at)
        return [self.event("checkout.session.completed", _public(s), at),
                self.event("customer.subscription.created", sub, at),
                self.event("invoice.paid", invoice, at)]

    def fail_renewal(self, sub_id: str, *, at: int | None = None) -> list[dict[str, Any]]:
        at = at or int(time.time())
        sub = self.subscriptions[sub_id]
        sub["status"] = "past_due"
        return [self.event("invoice.payment_failed", self._invoice(sub, "open", at), at),
                self.event("customer.subscription.updated", sub, at, previous={"status": "active"})]

    def pay_renewal(self, sub_id: str, *, at: int | None = None) -> list[dict[str, Any]]:
        at = at or int(time.time())
        sub = self.subscriptions[sub_id]
        previous = sub["status"]
        sub["status"] = "active"
        item = sub["items"]["data"][0]
        item["current_period_start"], item["current_period_end"] = at, at + PERIOD
        return [self.event("invoice.paid", self._invoice(sub, "paid", at), at),
                self.event("customer.subscription.updated", sub, at, previous={"status": previous})]

    def delete_subscription(self, sub_id: str, *, at: int | None = None) -> list[dict[str, Any]]:
        at = at or int(time.time())
        sub = self.subscriptions[sub_id]
        sub.update(status="canceled", canceled_at=at, ended_at=at)
        return [self.event("customer.subscription.deleted", sub, at)]

    def _invoice(self, sub: dict[str, Any], status: str, at: int) -> dict[str, Any]:
        item = sub["items"]["data"][0]
        amount = int(item["price"]["unit_amount"])
        inv = {"id": self._id("in"), "object": "invoice", "customer": sub["customer"], "status": status,
               "currency": "usd", "amount_due": amount, "amount_paid": amount if status == "paid" else 0,
               "attempt_count": 1, "billing_reason": "subscription_cycle", "created": at, "livemode": False,
               "parent": {"type": "subscription_details",
                          "subscription_details": {"subscription": sub["id"], "metadata": sub["metadata"]}},
               "lines": {"object": "list", "data": [{"id": self._id("il"), "object": "line_item", "amount": amount,
                                                     "period": {"start": item["current_period_start"],
                                                                "end": item["current_period_end"]}}]}}
        self.invoices[inv["id"]] = inv
        return inv

    def event(self, type_: str, obj: dict[str, Any], at: int | None = None,
              previous: dict[str, Any] | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"object": json.loads(json.dumps(obj))}
        if previous:
            data["previous_attributes"] = previous
        return {"id": self._id("evt"), "object": "event", "api_version": API_VERSION,
                "created": at or int(time.time()), "data": data, "livemode": False, "pending_webhooks": 1,
                "request": {"id": None, "idempotency_key": None}, "type": type_}


@dataclass(frozen=True)
class WebhookReply:
    status: int
    body: dict[str, Any]


class WebhookSender:
    """Posts events to a webhook URL the way Stripe does: raw JSON body, Stripe-Signature header."""

    def __init__(self, url: str, secret: str = WEBHOOK_SECRET) -> None:
        self.url = url
        self.secret = secret

    @staticmethod
    def sign(payload: str, secret: str, timestamp: int) -> str:
        mac = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256).hexdigest()
        return f"t={timestamp},v1={mac}"

    async def send(self, event: dict[str, Any] | str, *, secret: str | None = None, timestamp: int | None = None,
                   signature: str | None = None) -> WebhookReply:
        payload = event if isinstance(event, str) else json.dumps(event, indent=2)  # Stripe pretty-prints
        t = int(time.time()) if timestamp is None else timestamp
        header = signature if signature is not None else self.sign(payload, secret or self.secret, t)
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"}
        if header:
            headers["Stripe-Signature"] = header
        async with aiohttp.ClientSession() as session:
            async with session.post(self.url, data=payload.encode(), headers=headers) as response:
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = {"text": await response.text()}
                return WebhookReply(response.status, body if isinstance(body, dict) else {"body": body})

    async def send_all(self, events: list[dict[str, Any]]) -> list[WebhookReply]:
        return [await self.send(e) for e in events]


# -- form decoding -------------------------------------------------------------------------------------------
_KEY_PART = re.compile(r"\[([^\]]*)\]")


def decode_form(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Stripe's bracketed form keys -> nested dicts and lists: a[b][0][c]=1 -> {"a": {"b": [{"c": "1"}]}}."""
    root: dict[str, Any] = {}
    for raw_key, value in pairs:
        head = raw_key.split("[", 1)[0]
        path = [head, *_KEY_PART.findall(raw_key[len(head):])]
        node: Any = root
        for i, part in enumerate(path):
            last = i == len(path) - 1
            nxt = None if last else path[i + 1]
            child_default: Any = [] if nxt is not None and (nxt.isdigit() or nxt == "") else {}
            if isinstance(node, list):
                index = int(part) if part.isdigit() else len(node)
                while len(node) <= index:
                    node.append(None)
                if last:
                    node[index] = str(value)
                else:
                    if node[index] is None:
                        node[index] = child_default
                    node = node[index]
            else:
                if last:
                    node[part] = str(value)
                else:
                    node = node.setdefault(part, child_default)
    return root


def _public(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if not k.startswith("_")}
