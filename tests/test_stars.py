"""Telegram Stars subscriptions through the real python-telegram-bot against the local Bot API: invoice link in
XTR with a 30-day period, pre-checkout answered at once, the tier granted on the successful payment only."""
from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timedelta, timezone

import pytest

from bot.app import build_services
from bot.commands.billing import billing_commands
from bot.commands.registry import Caller, dispatch
from bot.payments import Payments
from core.billing import TierChange
from bot.settings import Settings
from bot.transports.telegram import TelegramTransport
from bot.views.doc import Doc
from core.billing import Provider, SubscriptionStatus
from core.clock import FixedClock
from core.domain import Tier
from core.market_data import SimulatedMarket
from storage import billing as _billing_tables  # noqa: F401  (its tables must exist before create_all)
from tests.conftest import utc
from tests.fakes.telegram_bot_api import STARS_SUBSCRIPTION_PERIOD, FakeBotApi

ALICE, BOB = 1001, 1002


@pytest.fixture
async def fake():
    async with FakeBotApi() as api:
        yield api


@pytest.fixture
async def world(fake):
    settings = Settings(_env_file=None, database_url="sqlite+aiosqlite:///:memory:",
                        stars_prices="hobbyist=250,trader=750,professional=2000")
    market_clock = FixedClock(utc(2025, 6, 2, 12))
    market = SimulatedMarket(seed=7, start=market_clock.now(), history_days=60, clock=market_clock)
    services = await build_services(settings, market, market_clock)
    told: list[TierChange] = []

    async def notify(change: TierChange) -> None:
        told.append(change)
    clock = FixedClock(datetime.fromtimestamp(int(time.time()), tz=timezone.utc))
    payments = Payments.from_settings(settings, services.store, clock=clock, notify=notify)
    services = dataclasses.replace(services, payments=payments)
    for command in billing_commands():
        if services.registry.get(command.name) is None:
            services.registry.register(command)
    transport = TelegramTransport(fake.token, base_url=fake.base_url, base_file_url=fake.base_file_url,
                                  poll_timeout=1.0, payments=payments,
                                  commands=[(c.name, c.summary) for c in services.registry.visible(False)])

    async def handle(caller: Caller, text: str) -> Doc:
        return await dispatch(services.registry, services, caller, text)
    await transport.start(handle)
    yield services, payments, clock, told
    await transport.stop()
    await payments.close()
    await services.store.close()


async def tier_of(services, user_id: int) -> Tier:  # noqa: ANN001
    user = await services.store.users.find_user("telegram", str(user_id))
    assert user is not None
    return user.tier


async def subscribe(fake: FakeBotApi, user_id: int, tier: str = "trader"):  # noqa: ANN201
    """/start then /subscribe TIER in Telegram; (the offer message, the invoice Telegram made)."""
    fake.command("/start", user_id=user_id)
    await fake.wait_for_messages(1, chat_id=user_id)
    fake.command(f"/subscribe {tier}", user_id=user_id)
    offer = (await fake.wait_for_messages(2, chat_id=user_id))[-1]
    return offer, fake.invoice_by_link(offer.reply_markup["inline_keyboard"][0][0]["url"])


async def test_subscribe_pay_with_stars_and_get_the_tier(fake, world):
    services, payments, clock, told = world
    offer, invoice = await subscribe(fake, ALICE)
    assert offer.text.startswith("Trader: 750 ⭐ per 30 days")
    assert offer.reply_markup["inline_keyboard"][0][0]["text"] == "Pay ⭐750"
    assert invoice.method == "createinvoicelink" and invoice.currency == "XTR"
    assert invoice.prices == [{"label": "Trader (30 days)", "amount": 750}]
    assert invoice.subscription_period == STARS_SUBSCRIPTION_PERIOD == 2592000
    assert await tier_of(services, ALICE) is Tier.FREE

    query_id = fake.pre_checkout(invoice.payload, user_id=ALICE, total_amount=750)
    assert await fake.wait_for_pre_checkout_answer(query_id) == {"ok": True, "error_message": None}
    assert await tier_of(services, ALICE) is Tier.FREE  # no tier before the successful payment

    expires = int(time.time()) + STARS_SUBSCRIPTION_PERIOD
    fake.successful_payment(invoice.payload, user_id=ALICE, total_amount=750, charge_id="stxCHARGE1",
                            is_recurring=True, is_first_recurring=True, subscription_expiration_date=expires)
    thanks = (await fake.wait_for_messages(3, chat_id=ALICE))[-1]
    assert thanks.text.startswith("Payment received") and "trader tier until" in thanks.text
    assert "stxCHARGE1" in thanks.text
    assert await tier_of(services, ALICE) is Tier.TRADER
    user = await services.store.users.find_user("telegram", str(ALICE))
    [sub] = await payments.billing.subscriptions_of(user.id)
    assert (sub.provider, sub.status, sub.tier) == (Provider.TELEGRAM_STARS, SubscriptionStatus.ACTIVE, Tier.TRADER)
    assert sub.current_period_end == datetime.fromtimestamp(expires, tz=timezone.utc)
    [paid] = await payments.billing.payments_of(user.id)
    assert (paid.charge_id, paid.amount, paid.currency, paid.recurring) == ("stxCHARGE1", 750, "XTR", True)
    assert told == []  # the reply in the chat is the notice

    fake.command("/subscription", user_id=ALICE)
    status = (await fake.wait_for_messages(4, chat_id=ALICE))[-1]
    assert status.text.startswith("Your plan: trader") and "Telegram Stars" in status.text


async def test_pre_checkout_refuses_wrong_amount_unknown_payload_and_other_users(fake, world):
    services, payments, *_ = world
    _, invoice = await subscribe(fake, ALICE, "professional")
    cases = [
        (fake.pre_checkout(invoice.payload, user_id=ALICE, total_amount=1), "price"),
        (fake.pre_checkout("sub:professional:1:forged", user_id=ALICE, total_amount=2000), "not known"),
        (fake.pre_checkout(invoice.payload, user_id=BOB, total_amount=2000), "another account"),
        (fake.pre_checkout(invoice.payload, user_id=ALICE, total_amount=2000, currency="USD"), "price"),
    ]
    for query_id, words in cases:
        answer = await fake.wait_for_pre_checkout_answer(query_id)
        assert answer["ok"] is False and words in answer["error_message"], answer
    answer, payment = await fake.pay(invoice, user_id=ALICE, total_amount=1999)  # Telegram stops here
    assert answer["ok"] is False and payment is None
    assert await tier_of(services, ALICE) is Tier.FREE
    user = await services.store.users.find_user("telegram", str(ALICE))
    assert await payments.billing.payments_of(user.id) == []


async def test_duplicate_payment_update_is_applied_once(fake, world):
    services, payments, *_ = world
    _, invoice = await subscribe(fake, ALICE, "hobbyist")
    answer, message = await fake.pay(invoice, user_id=ALICE)
    assert answer["ok"] and message is not None
    await fake.wait_for_messages(3, chat_id=ALICE)
    charge = message["successful_payment"]["telegram_payment_charge_id"]
    fake.successful_payment(invoice.payload, user_id=ALICE, total_amount=250, charge_id=charge, is_recurring=True,
                            subscription_expiration_date=message["successful_payment"]["subscription_expiration_date"])
    await fake.wait_until_consumed()
    fake.command("/subscription", user_id=ALICE)  # handled after the duplicate (one chat, in order)
    last = (await fake.wait_for_messages(4, chat_id=ALICE))[-1]
    assert last.text.startswith("Your plan: hobbyist")  # no second confirmation before it
    user = await services.store.users.find_user("telegram", str(ALICE))
    assert len(await payments.billing.payments_of(user.id)) == 1
    assert len(fake.messages_to(ALICE)) == 4


async def test_stars_period_ends_without_renewal_then_a_renewal_restores(fake, world):
    services, payments, clock, told = world
    _, invoice = await subscribe(fake, ALICE, "trader")
    await fake.pay(invoice, user_id=ALICE)
    await fake.wait_for_messages(3, chat_id=ALICE)
    assert await tier_of(services, ALICE) is Tier.TRADER
    clock.advance(timedelta(days=29))
    assert await payments.review() == []
    clock.advance(timedelta(days=1, minutes=1))
    [change] = await payments.review()
    assert (change.old, change.new) == (Tier.TRADER, Tier.FREE) and "expired" in change.reason
    assert told == [change] and await tier_of(services, ALICE) is Tier.FREE
    user = await services.store.users.find_user("telegram", str(ALICE))
    assert [s.status for s in await payments.billing.subscriptions_of(user.id)] == [SubscriptionStatus.EXPIRED]
    assert await payments.review() == []  # told once

    renewal_end = int(clock.now().timestamp()) + STARS_SUBSCRIPTION_PERIOD
    fake.successful_payment(invoice.payload, user_id=ALICE, total_amount=750, charge_id="stxRENEWAL2",
                            is_recurring=True, subscription_expiration_date=renewal_end)
    renewed = (await fake.wait_for_messages(4, chat_id=ALICE))[-1]
    assert renewed.text.startswith("Subscription renewed")
    assert await tier_of(services, ALICE) is Tier.TRADER


async def test_plans_in_telegram_are_priced_in_stars(fake, world):
    fake.command("/start", user_id=ALICE)
    await fake.wait_for_messages(1, chat_id=ALICE)
    fake.command("/subscribe", user_id=ALICE)
    plans = (await fake.wait_for_messages(2, chat_id=ALICE))[-1]
    assert "Prices in Telegram Stars per 30 days" in plans.text and "750⭐" in plans.text
    assert [label for label, _ in plans.buttons][:3] == ["Hobbyist", "Trader", "Professional"]
    fake.callback(plans.buttons[1][1], user_id=ALICE, message_id=plans.message_id)  # press "Trader"
    offer = (await fake.wait_for_messages(3, chat_id=ALICE))[-1]
    assert offer.text.startswith("Trader: 750 ⭐") and fake.invoices[-1].total_amount == 750


async def test_an_invoice_telegram_refuses_becomes_an_apology(fake, world):
    fake.command("/start", user_id=ALICE)
    await fake.wait_for_messages(1, chat_id=ALICE)
    fake.fail(400, "Bad Request: STARS_INVOICE_INVALID", method="createinvoicelink")
    fake.command("/subscribe trader", user_id=ALICE)
    reply = (await fake.wait_for_messages(2, chat_id=ALICE))[-1]
    assert "could not create the invoice" in reply.text and reply.reply_markup is None
