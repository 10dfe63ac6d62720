"""Entitlements enforced in dispatch: daily request quotas per tier, feature and tier gates, admins exempt;
and the /admin argument parser under arbitrary input."""
from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.app import build_services
from bot.commands.admin import SUBCOMMANDS, AdminRequest, parse_admin_args
from bot.commands.parsing import PLATFORMS, UserRef, parse_user_ref
from bot.commands.registry import Caller, Command, CommandRegistry, dispatch
from bot.settings import Settings
from bot.views.doc import Doc
from bot.views.text import render_text
from core.clock import FixedClock
from core.domain import Tier
from core.errors import UserInputError
from core.market_data import SimulatedMarket
from core.tiers import ENTITLEMENTS, entitlements, has_feature, lowest_tier_with, more_requests_than, next_utc_midnight
from tests.conftest import utc

START = utc(2025, 6, 2, 13, 30)
BOB = Caller("telegram", "1001", "1001", "Bob")
ADMIN = Caller("telegram", "42", "42", "Ada")
STRANGER = Caller("discord", "777", "c777", "Stranger")  # never sent /start


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


def test_seed_limits():
    assert [(e.signals_per_month, e.requests_per_day) for e in ENTITLEMENTS.values()] == [
        (20, 10), (100, 50), (500, 300), (None, None)]
    assert more_requests_than(Tier.FREE) is Tier.HOBBYIST and more_requests_than(Tier.TRADER) is Tier.PROFESSIONAL
    assert more_requests_than(Tier.PROFESSIONAL) is None
    assert lowest_tier_with("charts") is Tier.HOBBYIST and lowest_tier_with("webhook") is Tier.PROFESSIONAL
    assert not has_feature(Tier.FREE, "charts") and has_feature(Tier.TRADER, "email")
    with pytest.raises(ValueError, match="unknown feature"):
        has_feature(Tier.FREE, "teleport")
    assert next_utc_midnight(utc(2025, 6, 2, 23, 59)) == utc(2025, 6, 3)


async def test_quota_reached_replies_and_resets_next_utc_day(services):
    await say(services, BOB, "/start")
    limit = entitlements(Tier.FREE).requests_per_day
    assert limit == 10
    for i in range(limit):
        assert (await say(services, BOB, "/signal AAPL")).startswith("AAPL 1d:"), i
    refused = await say(services, BOB, "/signal AAPL")
    assert "You have used all 10 on-demand analyses of your free tier for today" in refused
    assert "resets at 2025-06-03 00:00 UTC (in 10 h 30 min)" in refused
    assert "The hobbyist tier has 50 per day" in refused
    assert "/subscribe hobbyist" in refused  # the service registers /subscribe
    user = await services.store.users.find_user("telegram", "1001")
    day = START.date()
    assert await services.store.admin.requests_used(f"account:{user.id}", day) == limit  # the refusal did not count
    services.clock.advance(timedelta(hours=10, minutes=29))  # 23:59 the same day: still used up
    assert "used all 10" in await say(services, BOB, "/signal AAPL")
    services.clock.advance(timedelta(minutes=1))  # 00:00 UTC the next day
    assert (await say(services, BOB, "/signal AAPL")).startswith("AAPL 1d:")
    assert await services.store.admin.requests_used(f"account:{user.id}", START.date() + timedelta(days=1)) == 1


async def test_failed_requests_do_not_count_and_other_commands_are_free(services):
    await say(services, BOB, "/start")
    assert "Unknown symbol" in await say(services, BOB, "/signal AAPLE")  # the handler refused it
    assert "not offered" in await say(services, BOB, "/signal AAPL 15m")  # refused before anything is analysed
    assert "Usage" in await say(services, BOB, "/signal")  # never parsed
    for _ in range(12):
        await say(services, BOB, "/signals")
    user = await services.store.users.find_user("telegram", "1001")
    assert await services.store.admin.requests_used(f"account:{user.id}", START.date()) == 0


async def test_higher_tier_has_a_larger_allowance(services):
    await say(services, BOB, "/start")
    user = await services.store.users.find_user("telegram", "1001")
    await services.store.users.set_tier(user.id, Tier.HOBBYIST)
    store = services.store.admin
    # 49 counted already today: the 50th passes, the 51st is refused and points at the trader tier
    for _ in range(49):
        assert await store.consume_request(f"account:{user.id}", START.date(), 50) is not None
    assert (await say(services, BOB, "/signal MSFT")).startswith("MSFT 1d:")
    refused = await say(services, BOB, "/signal MSFT")
    assert "all 50 on-demand analyses of your hobbyist tier" in refused and "The trader tier has 300" in refused
    await services.store.users.set_tier(user.id, Tier.PROFESSIONAL)  # unlimited
    assert (await say(services, BOB, "/signal MSFT")).startswith("MSFT 1d:")


async def test_unsubscribed_callers_are_counted_by_identity(services):
    for _ in range(10):
        assert (await say(services, STRANGER, "/signal AAPL")).startswith("AAPL 1d:")
    assert "used all 10" in await say(services, STRANGER, "/signal AAPL")
    assert await services.store.admin.requests_used("discord:777", START.date()) == 10
    assert (await say(services, BOB, "/signal AAPL")).startswith("AAPL 1d:")  # someone else


async def test_admins_are_exempt(services):
    await say(services, ADMIN, "/start")
    console = Caller("console", "operator", "console")
    for _ in range(12):
        assert (await say(services, ADMIN, "/signal AAPL")).startswith("AAPL 1d:")
        assert (await say(services, console, "/signal AAPL")).startswith("AAPL 1d:")
    user = await services.store.users.find_user("telegram", "42")
    assert await services.store.admin.requests_used(f"account:{user.id}", START.date()) == 0


async def test_concurrent_requests_never_exceed_the_quota(tmp_path):
    # a file database: each request has its own connection, as in the service (in-memory SQLite shares one)
    clock = FixedClock(START)
    market = SimulatedMarket(seed=7, start=START, history_days=400, clock=clock)
    svc = await build_services(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'q.db'}", _env_file=None),
                               market, clock)
    try:
        await say(svc, BOB, "/start")
        replies = await asyncio.gather(*(say(svc, BOB, "/signal AAPL") for _ in range(16)))
        assert sum(r.startswith("AAPL 1d:") for r in replies) == 10
        assert sum("used all 10" in r for r in replies) == 6
    finally:
        await svc.store.close()


async def _echo(_ctx, _args) -> Doc:  # noqa: ANN001
    return Doc(heading="done")


def _gated_registry(with_subscribe: bool) -> CommandRegistry:
    r = CommandRegistry()
    r.register(Command("chart", "a chart", "/chart", lambda a: None, _echo, needs_user=False, requires="charts"))
    r.register(Command("pro", "trader things", "/pro", lambda a: None, _echo, min_tier=Tier.TRADER))
    if with_subscribe:
        r.register(Command("subscribe", "plans", "/subscribe", lambda a: None, _echo))
    return r


@pytest.mark.parametrize("with_subscribe", [False, True])
async def test_feature_and_tier_gates(services, with_subscribe):
    registry = _gated_registry(with_subscribe)
    await say(services, BOB, "/start")

    async def run(caller: Caller, text: str) -> str:
        return render_text(await dispatch(registry, services, caller, text))

    refused = await run(BOB, "/chart")
    assert "/chart needs charts, which is part of the hobbyist tier and above; you are on the free tier" in refused
    assert ("/subscribe hobbyist" in refused) is with_subscribe
    assert "/pro is for the trader tier and above" in await run(BOB, "/pro")
    assert "/chart needs charts" in await run(STRANGER, "/chart")  # not subscribed: free
    user = await services.store.users.find_user("telegram", "1001")
    await services.store.users.set_tier(user.id, Tier.HOBBYIST)
    assert "done" in await run(BOB, "/chart")
    assert "trader tier" in await run(BOB, "/pro")
    await services.store.users.set_tier(user.id, Tier.TRADER)
    assert "done" in await run(BOB, "/pro")
    await say(services, ADMIN, "/start")
    await services.store.users.set_tier((await services.store.users.find_user("telegram", "42")).id, Tier.FREE)
    assert "done" in await run(ADMIN, "/chart") and "done" in await run(ADMIN, "/pro")  # admins are exempt


def test_unknown_feature_is_refused_at_registration():
    with pytest.raises(ValueError, match="unknown feature 'teleport'"):
        Command("x", "x", "/x", lambda a: None, _echo, requires="teleport")


# ---------------------------------------------------------------------- /admin argument parsing

_token = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0"),
                 min_size=1, max_size=30)


@given(st.lists(_token, max_size=8))
def test_admin_parser_never_fails_unexpectedly(tokens):
    try:
        req = parse_admin_args(tokens)
    except UserInputError as exc:
        assert str(exc)
        return
    assert isinstance(req, AdminRequest)
    assert req.action == "help" if not tokens else req.action == tokens[0].lower()
    assert req.action in (*SUBCOMMANDS, "help")


@given(st.integers(0, 10**12 - 1), st.sampled_from(list(Tier)), st.sampled_from(["", "upper", "title"]))
def test_admin_grant_by_user_id(user_id, tier, case):
    name = {"": tier.value, "upper": tier.value.upper(), "title": tier.value.title()}[case]
    req = parse_admin_args(["grant", str(user_id), name])
    assert req == AdminRequest("grant", user=UserRef(user_id=user_id), tier=tier)


@given(st.sampled_from(PLATFORMS), st.from_regex(r"[A-Za-z0-9_.\-]{1,64}", fullmatch=True))
def test_user_ref_round_trip(platform, pid):
    ref = parse_user_ref(f"{platform}:{pid}")
    assert ref == UserRef(platform=platform, platform_user_id=pid)
    assert parse_user_ref(str(ref)) == ref
    assert parse_admin_args(["user", str(ref)]).user == ref


@given(st.lists(_token, min_size=1, max_size=20))
def test_admin_broadcast_keeps_the_words(words):
    text = " ".join(words)
    if len(text) > 900:
        with pytest.raises(UserInputError, match="at most 900"):
            parse_admin_args(["broadcast", *words])
        return
    assert parse_admin_args(["broadcast", *words]).text == text


@given(st.lists(st.sampled_from(["AAPL", "msft", "btc/usdt", "ETHUSDT", "EURUSD", ","]), max_size=6))
def test_admin_generate_symbols(symbols):
    req = parse_admin_args(["generate", *symbols])
    expected = [s.upper().replace("/", "-") for s in symbols if s != ","]
    expected = [s[:-4] + "-USDT" if s.endswith("USDT") and "-" not in s else s for s in expected]
    assert req.symbols == tuple(dict.fromkeys(expected))


@pytest.mark.parametrize("args, message", [
    (["launch"], "Unknown admin command 'launch'"),
    (["stats", "now"], "takes no arguments"),
    (["grant", "42"], "Give a user and a tier"),
    (["grant", "42", "gold"], "Unknown tier 'gold'"),
    (["grant", "slack:1", "trader"], "is not a user"),
    (["user"], "Give one user"),
    (["broadcast"], "Give the text"),
    (["generate", "$$$"], "does not look like a symbol"),
    (["generate", *["AAPL%d" % i for i in range(21)]], "At most 20 symbols"),
])
def test_admin_parser_errors(args, message):
    with pytest.raises(UserInputError, match=message):
        parse_admin_args(args)


async def test_a_failure_on_our_side_does_not_cost_a_request(services):
    async def broken(_ctx, _args) -> Doc:  # noqa: ANN001
        raise RuntimeError("boom")

    registry = CommandRegistry()
    registry.register(Command("analyse", "x", "/analyse", lambda a: None, broken, needs_user=False, metered=True))
    out = render_text(await dispatch(registry, services, STRANGER, "/analyse"))
    assert "Something went wrong on our side" in out and "boom" not in out
    assert await services.store.admin.requests_used("discord:777", START.date()) == 0
