"""Account linking: /link gives a one-time code (random, short-lived, single use, stored hashed); /link CODE on
another platform joins the identities so that tier, preferences and the daily allowance are shared."""
from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from bot.app import build_services
from bot.commands.account import LINK_ALPHABET, LINK_CODE_LENGTH, new_link_code
from bot.commands.registry import Caller, dispatch
from bot.settings import Settings
from bot.views.text import render_text
from core.clock import FixedClock
from core.domain import Tier
from core.market_data import SimulatedMarket
from storage.admin import LINK_CODES, users_in_account_of
from storage.tables import USERS
from tests.conftest import utc

START = utc(2025, 6, 2, 13, 30)
TG = Caller("telegram", "1001", "1001", "Bob")
DC = Caller("discord", "2002", "c2002", "Bob")
TG2 = Caller("telegram", "3003", "3003", "Someone else")
DC2 = Caller("discord", "4004", "c4004", "Bob again")


@pytest.fixture
async def services():
    clock = FixedClock(START)
    market = SimulatedMarket(seed=7, start=START, history_days=400, clock=clock)
    svc = await build_services(Settings(database_url="sqlite+aiosqlite:///:memory:", admins="telegram:42",
                                        _env_file=None), market, clock)
    yield svc
    await svc.store.close()


async def say(svc, caller, text) -> str:  # noqa: ANN001
    return render_text(await dispatch(svc.registry, svc, caller, text))


async def link_code(svc, caller) -> str:  # noqa: ANN001
    out = await say(svc, caller, "/link")
    m = re.search(r"Your link code: ([A-Z0-9]+)", out)
    assert m, out
    return m.group(1)


async def user(svc, caller):  # noqa: ANN001
    return await svc.store.users.find_user(caller.platform, caller.platform_user_id)


def test_codes_are_random_and_from_an_unambiguous_alphabet():
    codes = {new_link_code() for _ in range(2000)}
    assert len(codes) == 2000
    assert all(len(c) == LINK_CODE_LENGTH and set(c) <= set(LINK_ALPHABET) for c in codes)
    assert not set("01IO") & set(LINK_ALPHABET)


async def test_linking_shares_tier_and_preferences(services):
    await say(services, TG, "/start")
    await say(services, DC, "/start")
    await say(services, TG, "/prefs confidence 70")
    await services.store.users.set_tier((await user(services, DC)).id, Tier.TRADER)  # the Discord identity pays
    code = await link_code(services, TG)
    out = await say(services, DC, f"/link {code.lower()}")
    assert "Accounts linked" in out and "the trader tier" in out
    tg, dc = await user(services, TG), await user(services, DC)
    assert tg.tier is Tier.TRADER and dc.tier is Tier.TRADER  # the higher tier wins
    assert dc.preferences.min_confidence == 70  # the issuer's preferences are kept
    admins = services.store.admin
    assert await admins.members(tg.id) == await admins.members(dc.id) == sorted([tg.id, dc.id])
    assert await admins.account_of(dc.id) == tg.id  # the issuer's account is kept
    # later changes on either identity reach both
    await say(services, DC, "/prefs confidence 80")
    assert (await user(services, TG)).preferences.min_confidence == 80
    assert "User 1 (telegram:1001) and 1 linked identity: trader -> hobbyist" in await say(
        services, Caller("console", "op", "console"), "/admin grant telegram:1001 hobbyist")
    assert (await user(services, DC)).tier is Tier.HOBBYIST
    assert "discord:2002 (user 2)" in await say(services, Caller("console", "op", "console"), "/admin user 1")
    out = await say(services, DC, "/account")
    assert "Identities      telegram, discord (this one)" in out
    # the storage helper another module can use to update a whole account
    async with services.store.database.engine.connect() as conn:
        ids = sorted(r[0] for r in (await conn.execute(users_in_account_of(dc.id))).all())
        in_account = sa.select(USERS.c.id).where(USERS.c.id.in_(users_in_account_of(tg.id)))
        via_in = sorted(r[0] for r in (await conn.execute(in_account)).all())
        alone = (await conn.execute(users_in_account_of(999))).all()
    assert ids == via_in == sorted([tg.id, dc.id]) and [tuple(r) for r in alone] == [(999,)]


async def test_lower_tier_joiner_gets_the_issuers_tier(services):
    await say(services, TG, "/start")
    await services.store.users.set_tier((await user(services, TG)).id, Tier.PROFESSIONAL)
    code = await link_code(services, TG)
    assert "the professional tier" in await say(services, DC, f"/link {code}")  # DC never sent /start
    dc = await user(services, DC)
    assert dc.active and dc.tier is Tier.PROFESSIONAL


async def test_code_is_single_use_and_stored_hashed(services):
    await say(services, TG, "/start")
    code = await link_code(services, TG)
    async with services.store.database.engine.connect() as conn:
        stored = [r[0] for r in (await conn.execute(sa.select(LINK_CODES.c.code_hash))).all()]
    assert stored == [hashlib.sha256(code.encode()).hexdigest()] and code not in stored[0]
    assert "Accounts linked" in await say(services, DC, f"/link {code}")
    assert "has been used already" in await say(services, DC2, f"/link {code}")
    assert await services.store.admin.members((await user(services, DC2)).id) == [(await user(services, DC2)).id]


async def test_code_expires_and_a_new_code_replaces_the_old(services):
    await say(services, TG, "/start")
    old = await link_code(services, TG)
    new = await link_code(services, TG)
    assert "not valid" in await say(services, DC, f"/link {old}")  # replaced
    services.clock.advance(timedelta(minutes=10))
    assert "has expired" in await say(services, DC, f"/link {new}")
    fresh = await link_code(services, TG)
    services.clock.advance(timedelta(minutes=9, seconds=59))
    assert "Accounts linked" in await say(services, DC, f"/link {fresh}")


async def test_wrong_codes_are_refused_and_limited(services):
    await say(services, TG, "/start")
    code = await link_code(services, TG)
    assert "A link code is 8 letters" in await say(services, DC, "/link 1234")
    wrong = "".join(LINK_ALPHABET[(LINK_ALPHABET.index(c) + 1) % len(LINK_ALPHABET)] for c in code)
    for _ in range(10):
        assert "That link code is not valid" in await say(services, DC, f"/link {wrong}")
    assert "Too many wrong link codes today" in await say(services, DC, f"/link {code}")  # even the right one
    assert "Accounts linked" in await say(services, DC2, f"/link {code}")  # another identity is not blocked
    services.clock.advance(timedelta(days=1))
    code = await link_code(services, TG)
    assert "one per platform" in await say(services, DC, f"/link {code}")  # the account has a discord identity


async def test_one_identity_per_platform_and_already_linked(services):
    await say(services, TG, "/start")
    await say(services, DC, "/start")
    await say(services, TG2, "/start")
    await services.store.users.set_tier((await user(services, TG2)).id, Tier.PROFESSIONAL)
    assert "Accounts linked" in await say(services, DC, f"/link {await link_code(services, TG)}")
    out = await say(services, TG2, f"/link {await link_code(services, TG)}")
    assert "already has a telegram identity" in out
    assert (await user(services, TG)).tier is Tier.FREE  # nothing changed
    assert "Already linked" in await say(services, DC, f"/link {await link_code(services, TG)}")
    assert "/start first" in await say(services, Caller("telegram", "9", "9"), "/link")


async def test_linked_identities_share_the_daily_allowance(services):
    await say(services, TG, "/start")
    assert "Accounts linked" in await say(services, DC, f"/link {await link_code(services, TG)}")
    for i in range(10):
        caller = TG if i % 2 else DC
        assert (await say(services, caller, "/signal AAPL")).startswith("AAPL 1d:")
    assert "used all 10" in await say(services, TG, "/signal AAPL")
    assert "used all 10" in await say(services, DC, "/signal AAPL")
    assert "Analyses today  0 of 10 left" in await say(services, DC, "/account")


async def test_a_paid_subscription_upgrades_every_linked_identity(services):
    from core.billing import Provider, Subscription, SubscriptionStatus
    from storage.billing import BillingStore

    await say(services, TG, "/start")
    await say(services, DC, "/start")
    out = await say(services, DC, f"/link {await link_code(services, TG)}")
    assert "linked" in out.lower(), out
    tg = await user(services, TG)
    billing = BillingStore(services.store.database, services.clock)
    sub = Subscription(tg.id, Provider.STRIPE, "sub_1", Tier.TRADER, SubscriptionStatus.ACTIVE,
                       current_period_end=START + timedelta(days=30), status_at=START)
    await billing.apply(Provider.STRIPE, "evt_1", "customer.subscription.created", subscriptions=[sub])
    assert (await user(services, TG)).tier is Tier.TRADER
    assert (await user(services, DC)).tier is Tier.TRADER
    assert (await user(services, TG2)) is None  # nobody else touched
