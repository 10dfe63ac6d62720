"""Stripe billing through the official SDK against a local Stripe API (tests/fakes/stripe_api.py), webhooks
signed exactly as Stripe signs them, the HTTP server in the test's event loop; and the subscription rules."""
from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import time
from datetime import datetime, timedelta, timezone

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.app import build_services
from bot.commands.billing import billing_commands, parse_tier
from bot.commands.registry import Caller, dispatch
from bot.http_server import HttpServer, start_http
from bot.payments import Payments
from bot.payments.stripe_billing import StripeBilling, WebhookRejected
from bot.settings import Settings
from core.billing import (
    GRACE_PERIOD, Provider, Subscription, SubscriptionStatus, TierChange, apply_update, effective_tier,
    entitled_tier,
)
from core.clock import FixedClock
from core.domain import Tier
from core.errors import UserInputError
from core.market_data import SimulatedMarket
from storage import billing as _billing_tables  # noqa: F401  (its tables must exist before create_all)
from tests.conftest import utc
from tests.fakes.stripe_api import API_KEY, WEBHOOK_SECRET, FakeStripe, WebhookSender, decode_form

PRICES = {"price_hobbyist_m": 900, "price_trader_m": 2900, "price_pro_m": 9900}
STRIPE_PRICES = "hobbyist=price_hobbyist_m,trader=price_trader_m,professional=price_pro_m"
ANN = Caller("discord", "4242", "4242", "Ann")


def now_utc() -> datetime:
    return datetime.fromtimestamp(int(time.time()), tz=timezone.utc)


@pytest.fixture
async def stripe_api():
    async with FakeStripe(PRICES) as fake:
        yield fake


@pytest.fixture
async def world(stripe_api, tmp_path):
    """Services + Payments + the HTTP server, as the composition root wires them, on a file database (an
    in-memory one shares a single connection, so concurrent requests would share one transaction)."""
    settings = Settings(_env_file=None, database_url=f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}", http_port=0,
                        public_url="https://bot.example.com", stripe_api_base=stripe_api.api_base,
                        stripe_prices=STRIPE_PRICES, **{"STRIPE_API_KEY": API_KEY,
                                                        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET})
    market_clock = FixedClock(utc(2025, 6, 2, 12))
    market = SimulatedMarket(seed=7, start=market_clock.now(), history_days=60, clock=market_clock)
    services = await build_services(settings, market, market_clock)
    told: list[TierChange] = []

    async def notify(change: TierChange) -> None:
        told.append(change)
    billing_clock = FixedClock(now_utc())
    payments = Payments.from_settings(settings, services.store, clock=billing_clock, notify=notify)
    services = dataclasses.replace(services, payments=payments)
    for command in billing_commands():
        if services.registry.get(command.name) is None:
            services.registry.register(command)
    server = await start_http(settings, services, payments=payments)
    assert isinstance(server, HttpServer)
    w = World(services, payments, server, stripe_api, told, billing_clock,
              WebhookSender(f"{server.url}/stripe/webhook"))
    yield w
    await server.stop()
    await payments.close()
    await services.store.close()


class World:
    def __init__(self, services, payments, server, stripe, told, clock, sender) -> None:  # noqa: ANN001
        self.services, self.payments, self.server, self.stripe = services, payments, server, stripe
        self.told, self.clock, self.sender = told, clock, sender

    async def say(self, text: str, caller: Caller = ANN):  # noqa: ANN201
        return await dispatch(self.services.registry, self.services, caller, text)

    async def tier(self, caller: Caller = ANN) -> Tier:
        user = await self.services.store.users.find_user(caller.platform, caller.platform_user_id)
        assert user is not None
        return user.tier

    async def checkout(self, tier: str = "trader") -> str:
        """/start, /subscribe TIER -> the Checkout Session id the fake created."""
        await self.say("/start")
        doc = await self.say(f"/subscribe {tier}")
        assert doc.tone != "error", doc
        [session_id] = [sid for sid, s in self.stripe.sessions.items() if s["url"] in doc.body]
        return session_id

    async def subscribed(self, tier: str = "trader") -> tuple[str, list[dict]]:
        """A paid checkout with its webhooks delivered; (subscription id, the events)."""
        session_id = await self.checkout(tier)
        events = self.stripe.complete_checkout(session_id)
        replies = await self.sender.send_all(events)
        assert [r.status for r in replies] == [200, 200, 200], replies
        return self.stripe.sessions[session_id]["subscription"], events


# -- the whole path ------------------------------------------------------------------------------------
async def test_checkout_then_signed_webhook_upgrades_the_tier(world):
    await world.say("/start")
    plans = await world.say("/subscribe")
    assert plans.heading == "Plans" and plans.table is not None
    columns = {name: i for i, name in enumerate(plans.table.headers)}
    rows = {r[0]: r for r in plans.table.rows}
    assert rows["price"][columns["trader"]] == "$29.00 / month"  # read from Stripe's price object
    assert rows["signals/month"][columns["trader"]] == "500" and rows["price"][columns["free*"]] == "free"
    assert [b.command for b in plans.buttons][:3] == ["/subscribe hobbyist", "/subscribe trader",
                                                      "/subscribe professional"]

    session_id = await world.checkout("trader")
    user = await world.services.store.users.find_user("discord", "4242")
    created = world.stripe.sessions[session_id]
    assert created["mode"] == "subscription" and created["client_reference_id"] == str(user.id)
    assert created["metadata"] == {"user_id": str(user.id), "tier": "trader"}
    assert created["_subscription_data"]["metadata"] == {"user_id": str(user.id), "tier": "trader"}
    assert created["_line_items"] == [{"price": "price_trader_m", "quantity": "1"}]
    assert created["success_url"] == "https://bot.example.com/billing/success?session_id={CHECKOUT_SESSION_ID}"
    assert created["cancel_url"] == "https://bot.example.com/billing/cancel"
    create_call = next(r for r in world.stripe.requests if r.path == "/v1/checkout/sessions")
    assert create_call.headers["Authorization"] == f"Bearer {API_KEY}" and "Stripe-Version" in create_call.headers
    assert await world.tier() is Tier.FREE  # nothing before Stripe says it is paid
    assert {u.id: u.tier for u in await world.services.store.users.active_users()}[user.id] is Tier.FREE  # (cached)

    events = world.stripe.complete_checkout(session_id)
    replies = await world.sender.send_all(events)
    assert [(r.status, r.body["outcome"]) for r in replies] == [(200, "processed")] * 3
    assert await world.tier() is Tier.TRADER
    assert {u.id: u.tier for u in await world.services.store.users.active_users()}[user.id] is Tier.TRADER  # fan-out sees it
    assert world.told == [TierChange(user.id, Tier.FREE, Tier.TRADER, "Thank you! Your trader subscription is active.")]
    [sub] = await world.payments.billing.subscriptions_of(user.id)
    assert (sub.status, sub.tier, sub.external_id) == (SubscriptionStatus.ACTIVE, Tier.TRADER, created["subscription"])
    assert sub.current_period_end is not None and sub.current_period_end > now_utc() + timedelta(days=29)
    [paid] = await world.payments.billing.payments_of(user.id)
    assert (paid.amount, paid.currency, paid.provider) == (2900, "usd", Provider.STRIPE)
    assert (await world.payments.billing.get_checkout(session_id)).status.value == "complete"
    status = await world.say("/subscription")
    assert status.heading == "Your plan: trader" and status.table.rows[0][:3] == ("trader", "card", "active")


async def test_forged_signature_is_refused_and_changes_nothing(world):
    session_id = await world.checkout("professional")
    events = world.stripe.complete_checkout(session_id)
    wrong_secret = await world.sender.send(events[0], secret="whsec_someone_else")
    assert wrong_secret.status == 400 and "signature" in wrong_secret.body["error"]
    no_header = await world.sender.send(events[0], signature="")
    assert no_header.status == 400
    genuine = WebhookSender.sign('{"id": "x"}', WEBHOOK_SECRET, int(time.time()))
    tampered = await world.sender.send(events[0], signature=genuine)  # a valid signature of another body
    assert tampered.status == 400
    assert await world.tier() is Tier.FREE and world.told == []
    for e in events:
        assert not await world.payments.billing.processed(Provider.STRIPE, e["id"])
    assert await world.payments.billing.subscriptions_of((await world.services.store.users.find_user("discord", "4242")).id) == []


async def test_replayed_event_has_no_second_effect(world):
    sub_id, events = await world.subscribed("trader")
    user = await world.services.store.users.find_user("discord", "4242")
    replays = await world.sender.send_all(events)
    assert [(r.status, r.body["outcome"]) for r in replays] == [(200, "duplicate")] * 3
    assert len(await world.payments.billing.payments_of(user.id)) == 1
    assert len(world.told) == 1 and await world.tier() is Tier.TRADER
    # a replay of an old event after the subscription ended must not bring the tier back
    await world.sender.send_all(world.stripe.delete_subscription(sub_id))
    assert await world.tier() is Tier.FREE
    again = await world.sender.send(events[1])  # customer.subscription.created, replayed
    assert again.status == 200 and again.body["outcome"] == "duplicate" and await world.tier() is Tier.FREE


async def test_stale_timestamp_is_rejected(world):
    session_id = await world.checkout("trader")
    [completed, *_] = world.stripe.complete_checkout(session_id)
    stale = await world.sender.send(completed, timestamp=int(time.time()) - 600)  # tolerance is 300 s
    assert stale.status == 400 and await world.tier() is Tier.FREE
    fresh = await world.sender.send(completed)  # the same event, signed now: accepted once
    assert fresh.status == 200 and fresh.body["outcome"] == "processed"


async def test_malformed_bodies_get_400(world):
    for body in ("not json", '{"object": "event"}', '{"id": "evt_1", "object": "event", "type": "invoice.paid"}'):
        reply = await world.sender.send(body)
        assert reply.status == 400, body


# -- signed bodies that cannot be applied: 400 with the reason, recorded as rejected, never applied ----------
DEEP = "[" * 100_000 + "]" * 100_000  # json.loads raises RecursionError


@pytest.mark.parametrize("body", ["[]", "null", '"x"', "{}", "5", '{"id": 5, "type": "invoice.paid"}', DEEP],
                         ids=["list", "null", "text", "empty", "number", "numeric-id", "deep"])
async def test_signed_body_that_is_not_an_event_gets_400(world, caplog, body):
    await world.say("/start")
    with caplog.at_level(logging.WARNING, logger="bot.http_server"):
        reply = await world.sender.send(body)  # correctly signed
    assert reply.status == 400 and reply.body["error"].startswith("malformed event"), reply
    assert await world.tier() is Tier.FREE
    assert any("stripe webhook refused: malformed event" in r.getMessage() for r in caplog.records)  # no id: logged


def _completed_with(event: dict, path: str, value: object) -> dict:
    """A copy of `event` with the field at the dotted `path` set to `value`."""
    event = copy.deepcopy(event)
    *parents, last = path.split(".")
    node = event
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[last] = value
    return event


@pytest.mark.parametrize(("index", "path", "value", "reason"), [
    (0, "created", 10**20, "created 100000000000000000000 is not a Unix time"),
    (0, "created", 10**19, "created 10000000000000000000 is not a Unix time"),
    (0, "created", -1, "created -1 is not a Unix time"),
    (0, "created", "1750000000", "created is the text '1750000000', not a Unix time"),
    (0, "created", True, "created is the boolean true, not a Unix time"),
    (0, "data.object", "cs_123", "data.object is the text 'cs_123', not an object"),
    (0, "data", [], "data is a list, not an object"),
    (0, "data.object.metadata", ["trader"], "metadata is a list, not an object"),
    (0, "type", None, "malformed event: no type"),
    (2, "data.object.lines.data.0.period.end", 10**19, "period end 10000000000000000000 is not a Unix time"),
    (2, "data.object.amount_paid", 10**30, "is not a whole number of minor units"),
], ids=["created-1e20", "created-1e19", "created-negative", "created-text", "created-bool", "object-text",
        "data-list", "metadata-list", "no-type", "invoice-period-end", "amount-huge"])
async def test_signed_event_that_cannot_be_applied_gets_400_and_is_recorded(world, index, path, value, reason):
    session_id = await world.checkout("trader")
    genuine = world.stripe.complete_checkout(session_id)[index]
    bad = _completed_with(genuine, path, value)
    reply = await world.sender.send(bad)
    assert reply.status == 400 and reason in reply.body["error"], reply
    assert await world.tier() is Tier.FREE and world.told == []
    billing = world.payments.billing
    assert not await billing.processed(Provider.STRIPE, bad["id"])
    rejected = await billing.rejected(Provider.STRIPE, bad["id"])
    assert rejected is not None and rejected.reason == reply.body["error"] and rejected.deliveries == 1
    assert rejected.event_type == (bad["type"] if isinstance(bad["type"], str) else None)
    again = await world.sender.send(bad)  # Stripe redelivers it: read again, refused again, counted
    assert again.status == 400 and again.body == reply.body
    assert (await billing.rejected(Provider.STRIPE, bad["id"])).deliveries == 2
    assert await world.tier() is Tier.FREE and not await billing.processed(Provider.STRIPE, bad["id"])


async def test_subscription_update_with_an_impossible_period_end_is_rejected(world):
    sub_id, _ = await world.subscribed("trader")
    user = await world.services.store.users.find_user("discord", "4242")
    [before] = await world.payments.billing.subscriptions_of(user.id)
    changed = copy.deepcopy(world.stripe.subscriptions[sub_id])
    changed["status"] = "unpaid"  # would downgrade at once if applied
    changed["items"]["data"][0]["current_period_end"] = 10**19
    event = world.stripe.event("customer.subscription.updated", changed, previous={"status": "active"})
    reply = await world.sender.send(event)
    assert reply.status == 400, reply
    assert "current_period_end 10000000000000000000 is not a Unix time" in reply.body["error"]
    assert await world.tier() is Tier.TRADER and len(world.told) == 1
    assert await world.payments.billing.subscriptions_of(user.id) == [before]
    rejected = await world.payments.billing.rejected(Provider.STRIPE, event["id"])
    assert rejected is not None and rejected.event_type == "customer.subscription.updated"
    assert rejected.reason == reply.body["error"]


async def test_signature_timestamp_in_the_future_is_rejected(world):
    session_id = await world.checkout("trader")
    [completed, *_] = world.stripe.complete_checkout(session_id)
    future = await world.sender.send(completed, timestamp=int(time.time()) + 3600)  # tolerance is 300 s
    assert future.status == 400 and "in the future" in future.body["error"], future
    assert await world.tier() is Tier.FREE
    assert not await world.payments.billing.processed(Provider.STRIPE, completed["id"])
    # a refused delivery, not a refused event: not recorded, and the next delivery is applied
    assert await world.payments.billing.rejected(Provider.STRIPE, completed["id"]) is None
    skewed = await world.sender.send(completed, timestamp=int(time.time()) + 60)  # within the tolerance
    assert skewed.status == 200 and skewed.body["outcome"] == "processed" and await world.tier() is Tier.TRADER


async def test_a_rejection_that_cannot_be_recorded_still_answers_400(world, monkeypatch):
    session_id = await world.checkout("trader")
    bad = _completed_with(world.stripe.complete_checkout(session_id)[0], "created", 10**20)

    async def broken(*args, **kwargs):  # noqa: ANN002, ANN003
        raise RuntimeError("database is locked")
    monkeypatch.setattr(world.payments.billing, "reject", broken)
    reply = await world.sender.send(bad)
    assert reply.status == 400 and "created" in reply.body["error"] and await world.tier() is Tier.FREE


@pytest.mark.parametrize("created", [10**19, 10**20, -5, 1.7e9, "1700000000", None, [1], float("inf")])
def test_read_event_refuses_times_that_are_not_unix_times(created):
    billing = StripeBilling("sk_test_x", webhook_secret="whsec_x", prices={Tier.TRADER: "price_t"},
                            public_url="https://x")
    with pytest.raises(WebhookRejected) as caught:
        billing.read_event({"id": "evt_1", "type": "customer.created", "created": created,
                            "data": {"object": {"id": "cus_1"}}})
    assert (caught.value.event_id, caught.value.event_type) == ("evt_1", "customer.created")
    assert "created" in caught.value.reason


async def test_subscription_deleted_downgrades(world):
    sub_id, _ = await world.subscribed("hobbyist")
    assert await world.tier() is Tier.HOBBYIST
    [deleted] = world.stripe.delete_subscription(sub_id)
    assert (await world.sender.send(deleted)).status == 200
    assert await world.tier() is Tier.FREE
    assert [(c.old, c.new) for c in world.told] == [(Tier.FREE, Tier.HOBBYIST), (Tier.HOBBYIST, Tier.FREE)]
    assert "ended" in world.told[-1].reason


async def test_past_due_keeps_the_tier_for_the_grace_period_then_downgrades(world):
    sub_id, _ = await world.subscribed("trader")
    failed = world.stripe.fail_renewal(sub_id)
    assert [(await world.sender.send(e)).status for e in failed] == [200, 200]
    assert await world.tier() is Tier.TRADER  # grace
    assert await world.payments.review() == []
    world.clock.advance(GRACE_PERIOD - timedelta(minutes=1))
    assert await world.payments.review() == [] and await world.tier() is Tier.TRADER
    world.clock.advance(timedelta(minutes=2))
    [change] = await world.payments.review()
    assert (change.old, change.new) == (Tier.TRADER, Tier.FREE) and "grace period" in change.reason
    assert await world.tier() is Tier.FREE and world.told[-1] == change
    status = await world.say("/subscription")
    assert status.table.rows[0][2] == "past due (access paused)"
    assert await world.payments.review() == []  # told once
    paid = world.stripe.pay_renewal(sub_id, at=int(world.clock.now().timestamp()))
    assert [(await world.sender.send(e)).status for e in paid] == [200, 200]
    assert await world.tier() is Tier.TRADER


async def test_cancel_schedules_the_end_at_stripe(world):
    sub_id, _ = await world.subscribed("trader")
    doc = await world.say("/cancel")
    assert "will not renew" in doc.body
    assert world.stripe.subscriptions[sub_id]["cancel_at_period_end"] is True
    assert await world.tier() is Tier.TRADER  # until the period ends


async def test_healthz_and_pages(world):
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{world.server.url}/healthz") as r:
            body = await r.json()
            assert r.status == 200 and body["ok"] is True and body["db"] is True and body["uptime_s"] >= 0
        for path, words in (("/billing/success", "Thank you"), ("/billing/cancel", "Nothing was charged")):
            async with http.get(f"{world.server.url}{path}") as r:
                assert r.status == 200 and r.content_type == "text/html" and words in await r.text()


async def test_stripe_errors_become_a_friendly_reply(world):
    await world.say("/start")
    world.stripe.prices.pop("price_trader_m")  # Stripe says "No such price"
    doc = await world.say("/subscribe trader")
    assert doc.tone == "error" and "unavailable" in doc.body and API_KEY not in doc.body


async def test_no_server_without_port_or_stripe():
    assert await start_http(Settings(_env_file=None, database_url="sqlite+aiosqlite:///:memory:"), None) is None


# -- the rules, without I/O ----------------------------------------------------------------------------
T0 = utc(2026, 1, 1)


def sub(status: str, tier: Tier = Tier.TRADER, provider: Provider = Provider.STRIPE, **kw) -> Subscription:  # noqa: ANN003
    return Subscription(1, provider, "sub_1", tier, SubscriptionStatus(status), status_at=T0, **kw)


def test_entitlement_by_status():
    assert entitled_tier(sub("active"), T0) is Tier.TRADER
    assert entitled_tier(sub("trialing"), T0) is Tier.TRADER
    for status in ("canceled", "unpaid", "incomplete", "incomplete_expired", "paused"):
        assert entitled_tier(sub(status), T0) is Tier.FREE, status
    past_due = sub("past_due", past_due_since=T0)
    assert entitled_tier(past_due, T0 + GRACE_PERIOD - timedelta(seconds=1)) is Tier.TRADER
    assert entitled_tier(past_due, T0 + GRACE_PERIOD) is Tier.FREE
    stars = sub("active", provider=Provider.TELEGRAM_STARS, current_period_end=T0 + timedelta(days=30))
    assert entitled_tier(stars, T0 + timedelta(days=29)) is Tier.TRADER
    assert entitled_tier(stars, T0 + timedelta(days=30)) is Tier.FREE
    assert effective_tier([sub("active", Tier.HOBBYIST), stars], T0) is Tier.TRADER
    assert effective_tier([], T0) is Tier.FREE


def test_updates_apply_in_event_order_and_keep_the_first_failure():
    active = sub("active")
    late_old = Subscription(1, Provider.STRIPE, "sub_1", Tier.TRADER, SubscriptionStatus.PAST_DUE,
                            status_at=T0 - timedelta(minutes=5))
    assert apply_update(active, late_old) is active  # an older report arriving late is ignored
    first = apply_update(active, Subscription(1, Provider.STRIPE, "sub_1", Tier.TRADER, SubscriptionStatus.PAST_DUE,
                                              status_at=T0 + timedelta(days=1)))
    again = apply_update(first, Subscription(1, Provider.STRIPE, "sub_1", Tier.TRADER, SubscriptionStatus.PAST_DUE,
                                             status_at=T0 + timedelta(days=2)))
    assert first.past_due_since == again.past_due_since == T0 + timedelta(days=1)
    recovered = apply_update(again, Subscription(1, Provider.STRIPE, "sub_1", Tier.TRADER,
                                                 SubscriptionStatus.ACTIVE, status_at=T0 + timedelta(days=3)))
    assert recovered.past_due_since is None and recovered.status is SubscriptionStatus.ACTIVE
    created_late = Subscription(1, Provider.STRIPE, "sub_1", Tier.TRADER, SubscriptionStatus.INCOMPLETE,
                                status_at=recovered.status_at)  # same second, delivered after the activation
    assert apply_update(recovered, created_late) is recovered


def test_old_api_version_invoice_and_form_decoding():
    billing = StripeBilling("sk_test_x", webhook_secret="whsec_x", prices={Tier.TRADER: "price_t"},
                            public_url="https://x")
    update = billing.read_event({"id": "evt_1", "type": "invoice.payment_failed", "created": 1_700_000_000,
                                 "data": {"object": {"id": "in_1", "subscription": "sub_9", "customer": "cus_1",
                                                     "amount_due": 2900, "currency": "usd"}}})
    assert (update.subscription_id, update.status) == ("sub_9", SubscriptionStatus.PAST_DUE)
    with pytest.raises(WebhookRejected):
        billing.verify_event(b"{}", "t=1,v1=00")
    assert decode_form([("line_items[0][price]", "p"), ("line_items[0][quantity]", "1"), ("metadata[a]", "b"),
                        ("mode", "subscription")]) == {"line_items": [{"price": "p", "quantity": "1"}],
                                                        "metadata": {"a": "b"}, "mode": "subscription"}


async def test_no_second_subscription_for_a_tier_already_paid(world):
    await world.subscribed("trader")
    again = await world.say("/subscribe trader")
    assert again.heading == "You already have trader" and "card" in again.body
    sessions = len(world.stripe.sessions)
    upgrade = await world.say("/subscribe professional")
    assert upgrade.tone != "error" and len(world.stripe.sessions) == sessions + 1


async def test_without_stripe_card_payments_are_refused_politely():
    settings = Settings(_env_file=None, database_url="sqlite+aiosqlite:///:memory:")
    clock = FixedClock(utc(2025, 6, 2, 12))
    services = await build_services(settings, SimulatedMarket(seed=7, start=clock.now(), history_days=60,
                                                              clock=clock), clock)
    try:
        services = dataclasses.replace(services, payments=Payments.from_settings(settings, services.store))
        for command in billing_commands():
            if services.registry.get(command.name) is None:
                services.registry.register(command)
        console = Caller("console", "local", "console")
        await dispatch(services.registry, services, console, "/start")
        doc = await dispatch(services.registry, services, console, "/subscribe trader")
        assert doc.tone == "error" and "not enabled" in doc.body
        plans = await dispatch(services.registry, services, console, "/subscribe")
        assert plans.table is not None and plans.note == "Payments are not configured."
    finally:
        await services.store.close()


async def test_concurrent_deliveries_of_one_event_apply_once(world):
    session_id = await world.checkout("trader")
    events = world.stripe.complete_checkout(session_id)
    replies = await asyncio.gather(*(world.sender.send(events[0]) for _ in range(5)))
    assert sorted(r.body["outcome"] for r in replies) == ["duplicate"] * 4 + ["processed"]
    assert await world.tier() is Tier.TRADER and len(world.told) == 1


async def test_a_failure_while_applying_answers_500_and_the_retry_applies_in_full(world, monkeypatch):
    session_id = await world.checkout("trader")
    [completed, *_] = world.stripe.complete_checkout(session_id)
    real_apply = world.payments.billing.apply

    async def broken(*args, **kwargs):  # noqa: ANN002, ANN003
        raise RuntimeError("database is locked")
    monkeypatch.setattr(world.payments.billing, "apply", broken)
    assert (await world.sender.send(completed)).status == 500
    assert not await world.payments.billing.processed(Provider.STRIPE, completed["id"])
    monkeypatch.setattr(world.payments.billing, "apply", real_apply)
    retry = await world.sender.send(completed)  # Stripe retries the same event
    assert retry.status == 200 and retry.body["outcome"] == "processed" and await world.tier() is Tier.TRADER


@given(st.lists(st.text(max_size=30), max_size=3))
def test_parse_tier_accepts_paid_tiers_and_refuses_anything_else(words):
    try:
        tier = parse_tier(words)
    except UserInputError as exc:
        assert str(exc)
        return
    assert tier is None and words == [] or tier in (Tier.HOBBYIST, Tier.TRADER, Tier.PROFESSIONAL)


def test_reconcile_stripe_takes_user_and_tier_from_the_event_then_the_store_then_the_checkout():
    from core.billing import Checkout, InvoiceInfo, StripeUpdate, reconcile_stripe, stripe_user

    at = utc(2025, 6, 2, 12)
    checkout = Checkout("cs_1", Provider.STRIPE, 7, Tier.TRADER)
    created = StripeUpdate("evt_1", "customer.subscription.created", at, subscription_id="sub_1",
                           status=SubscriptionStatus.ACTIVE, checkout_session="cs_1", period_end=at + timedelta(days=30))
    assert stripe_user(created, None, checkout) == 7
    plan = reconcile_stripe(created, None, checkout, 7)
    [sub] = plan.subscriptions
    assert (sub.user_id, sub.tier, sub.status, sub.cancel_at_period_end) == (7, Tier.TRADER, SubscriptionStatus.ACTIVE,
                                                                           False)
    assert plan.completed_checkout == "cs_1" and plan.payment is None and not plan.notes
    # an invoice keeps the stored subscription's tier (the event's metadata says the tier of the first checkout)
    stored = dataclasses.replace(sub, tier=Tier.PROFESSIONAL, cancel_at_period_end=True)
    paid = StripeUpdate("evt_2", "invoice.paid", at, subscription_id="sub_1", status=SubscriptionStatus.ACTIVE,
                        tier=Tier.TRADER, invoice=InvoiceInfo("in_1", 4900, "usd"))
    plan = reconcile_stripe(paid, stored, None, stripe_user(paid, stored, None))
    assert plan.subscriptions[0].tier is Tier.PROFESSIONAL and plan.subscriptions[0].cancel_at_period_end
    assert plan.payment is not None and (plan.payment.amount, plan.payment.tier, plan.payment.user_id) == (
        4900, Tier.PROFESSIONAL, 7)
    # a user who does not exist (the caller passes None): recorded without effect, and said so
    plan = reconcile_stripe(created, None, checkout, None)
    assert plan.subscriptions == () and plan.payment is None and plan.notes and "without effect" in plan.notes[0]
