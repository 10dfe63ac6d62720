"""Commands through dispatch with the real store, engine and simulated market."""
from __future__ import annotations

from datetime import timedelta

import pytest

from bot.views.doc import Doc
from bot.app import build_services
from bot.commands.registry import Caller, dispatch
from bot.settings import Settings
from bot.views.text import render_text
from core.clock import FixedClock
from core.market_data import SimulatedMarket
from tests.conftest import MECHANICS_FAMILIES, utc

START = utc(2025, 6, 2, 12)
ALICE = Caller("console", "alice", "chat-alice", "Alice")
BOB = Caller("telegram", "1001", "1001", "Bob")


@pytest.fixture
async def services():
    clock = FixedClock(START)
    market = SimulatedMarket(seed=7, start=START, history_days=400, clock=clock)
    svc = await build_services(Settings(database_url="sqlite+aiosqlite:///:memory:", families=MECHANICS_FAMILIES, _env_file=None),
                               market, clock)
    yield svc
    await svc.store.close()


async def say(svc, caller, text) -> str:  # noqa: ANN001
    return render_text(await dispatch(svc.registry, svc, caller, text))


async def test_start_prefs_stop_round_trip(services):
    assert "not subscribed" in await say(services, ALICE, "/prefs")
    assert "Welcome, Alice" in await say(services, ALICE, "/start")
    out = await say(services, ALICE, "/prefs confidence 65")
    assert "Minimum confidence  65" in out
    out = await say(services, ALICE, "/prefs quiet 22:00-07:00 Europe/Berlin")
    assert "22:00-07:00 Europe/Berlin" in out
    out = await say(services, ALICE, "/prefs symbols aapl,btc/usdt")
    assert "AAPL, BTC-USDT" in out
    assert "Unknown symbol 'NOPE'" in await say(services, ALICE, "/prefs symbols NOPE")
    user = await services.store.users.find_user("console", "alice")
    assert user.preferences.min_confidence == 65 and user.preferences.symbols == {"AAPL", "BTC-USDT"}
    assert "Unsubscribed" in await say(services, ALICE, "/stop")
    assert not (await services.store.users.find_user("console", "alice")).active
    assert "Welcome" in await say(services, ALICE, "/start")
    assert (await services.store.users.find_user("console", "alice")).preferences.min_confidence == 65  # kept


async def test_signal_analysis_on_demand(services):
    out = await say(services, BOB, "/signal AAPL")
    assert out.startswith("AAPL 1d:")
    for label in ("Last close", "RSI(14)", "Z-score (20)", "ATR(14)", "Trend", "Levels", "Votes  "):
        assert label in out
    assert "Not investment advice" in out
    assert "trend " in out.split("Votes", 1)[1].splitlines()[0]  # each voter's say, so the vote's sign is explained
    assert (await say(services, BOB, "/signal btc/usdt 4h")).startswith("BTC-USDT 4h:")


async def test_bad_input_gets_a_clear_reply(services):
    assert "Unknown symbol 'AAPLE'. Did you mean AAPL?" in await say(services, BOB, "/signal AAPLE")
    assert "unknown timeframe '7h'" in (await say(services, BOB, "/signal AAPL 7h")).lower()
    assert "15m is not offered: signals and analyses are on 1h, 4h, 1d" in await say(services, BOB, "/signal AAPL 15m")
    assert "1m is not offered" in await say(services, BOB, "/signal BTC-USDT 1m")
    assert "Unknown command /foo" in await say(services, BOB, "/foo")
    assert "Usage: /signal SYMBOL" in await say(services, BOB, "/signal")
    assert "Commands start with '/'" in await say(services, BOB, "hello")
    assert "administrators" not in await say(services, BOB, "/help")


async def test_the_services_risk_manager_counts_the_costs_the_tracker_takes(services):
    assert services.signal_service.risk.config.costs_bps == services.settings.costs_bps == 5.0


async def test_help_is_a_line_a_command_that_wraps_on_a_phone(services):
    doc = await dispatch(services.registry, services, BOB, "/help")
    assert doc.table is None  # a monospaced table as wide as its longest usage would scroll sideways
    lines = doc.body.splitlines()
    visible = services.registry.visible(False)
    assert len(lines) == len(visible)
    for line, command in zip(lines, visible):
        assert line == f"{command.usage} \N{EM DASH} {command.summary}"


async def test_scan_issues_persists_and_commands_show_it(services):
    clock = services.clock
    issued = []
    for _ in range(24 * 20):  # twenty simulated days, hour by hour
        clock.advance(timedelta(hours=1))
        issued += (await services.signal_service.scan()).issued
        await services.tracker.update()
        if len(issued) >= 3:
            break
    assert issued, "the simulated market should produce setups within twenty days"
    stored = await services.store.signals.get_signal(issued[0].id)
    assert stored == issued[0]
    assert stored.evidence["setup"]["criteria"] and stored.evidence["indicators"]["atr_14"] > 0
    out = await say(services, BOB, "/signals")
    still_open = await services.store.signals.open_signals()
    assert out.startswith(f"{len(still_open)} active signal") or (not still_open and "No active signals" in out)
    assert all(f"{s.symbol}  " in out for s in still_open)
    assert "Track record" in await say(services, BOB, "/performance")
    assert "Track record, last 30 days" in await say(services, BOB, "/performance 30d")


async def test_instruments_search(services):
    out = await say(services, BOB, "/instruments bank")
    for sym in ("JPM", "BAC", "C"):
        assert f"\n  {sym} " in out
    assert "Showing the first 25" in out  # 31 banks and asset managers match
    assert "instruments" in await say(services, BOB, "/instruments")
    assert "No instrument matches" in await say(services, BOB, "/instruments zzzzqqq")


async def test_signal_and_performance_carry_charts_for_tiers_that_include_them(services):
    from core.domain import Tier

    await dispatch(services.registry, services, BOB, "/start")  # free tier: no charts
    free = await dispatch(services.registry, services, BOB, "/signal AAPL")
    assert free.image is None
    user = await services.store.users.find_user("telegram", "1001")
    await services.store.users.set_tier(user.id, Tier.HOBBYIST)
    doc = await dispatch(services.registry, services, BOB, "/signal AAPL")
    assert doc.image is not None and doc.image.data.startswith(b"\x89PNG\r\n\x1a\n")
    assert doc.image.filename == "AAPL-1d.png" and "entry" in doc.image.caption
    assert doc.heading.startswith("AAPL 1d:")  # the text answer is unchanged beside the picture

    assert (await dispatch(services.registry, services, BOB, "/performance 30d")).image is None  # nothing closed yet
    clock = services.clock
    for _ in range(24 * 40):  # until some signals have closed
        clock.advance(timedelta(hours=1))
        await services.signal_service.scan()
        await services.tracker.update()
        if len(await services.store.signals.outcomes_since(START)) >= 2:
            break
    perf = await dispatch(services.registry, services, BOB, "/performance all")
    assert perf.image is not None and perf.image.data.startswith(b"\x89PNG") and perf.image.filename == "equity.png"


def test_equity_curve_compounds_each_closed_signal_at_its_size():
    from types import SimpleNamespace as NS

    from bot.commands.handlers import equity_curve

    t = [START + timedelta(days=d) for d in range(4)]
    pairs = [(NS(position_size=0.5), NS(fill_time=t[0], exit_time=t[2], net_return=0.10)),
             (NS(position_size=0.25), NS(fill_time=t[1], exit_time=t[3], net_return=-0.04)),
             (NS(position_size=0.1), NS(fill_time=t[1], exit_time=t[1], net_return=0.0))]
    curve = equity_curve(pairs)
    assert list(curve.index) == [t[0], t[1], t[2], t[3]]
    assert curve.tolist() == pytest.approx([1.0, 1.0, 1.05, 1.05 * 0.99])


async def test_signal_says_whether_the_risk_manager_would_issue_the_setup_it_shows(services):
    """A setup on /signal is not yet a signal: the risk manager's check of the idea itself (levels, costs,
    expected value) is shown beside it, so "BUY setup" with no signal following explains itself."""
    checked = 0
    for inst in services.market.instruments():
        for tf in ("1d", "4h", "1h"):
            out = await say(services, BOB, f"/signal {inst.symbol} {tf}")
            if ": no trade" in out.splitlines()[0] or out.startswith("Sorry"):
                assert "Risk check" not in out
                continue
            assert ("Risk check" in out) != ("Active signal" in out)
            checked += "Risk check" in out
    assert checked >= 1


def _trend_signal(sid: str, issued_at, shadow: bool = False):  # noqa: ANN001, ANN202
    from core.domain import AssetClass, Direction, Signal, Timeframe

    evidence = {"shadow": {"scope": "trend/crypto", "since": None, "reason": "paused"}} if shadow else {}
    return Signal(id=sid, symbol="BTC-USDT", asset_class=AssetClass.CRYPTO, timeframe=Timeframe.D1,
                  direction=Direction.LONG, entry=100.0, target=130.0, stop=90.0, confidence=40, position_size=1.0,
                  issued_at=issued_at, expires_at=issued_at + timedelta(days=60), reasoning="trend", strategy="trend",
                  evidence=evidence)


def _loss(sid: str, at, net: float):  # noqa: ANN001, ANN202
    from core.domain import SignalOutcome, SignalStatus

    return SignalOutcome(sid, SignalStatus.STOP, 100.0, at, 100.0 * (1 + net), at + timedelta(days=3), net, net,
                         0.0, net, 3)


async def test_a_tripped_breaker_keeps_shadows_out_of_every_view_and_says_why(services):
    from bot.app import pause_announcer
    from core.events import StrategyPaused

    svc = services
    t0 = START - timedelta(days=30)
    await svc.store.signals.add_signals([_trend_signal("TREND-LIVE", t0), _trend_signal("TREND-SHADOW", t0 + timedelta(days=5),
                                                                                        shadow=True),
                                 _trend_signal("TREND-SHADOW-OPEN", START - timedelta(days=1), shadow=True)])
    await svc.store.signals.record_outcome(_loss("TREND-LIVE", t0 + timedelta(days=1), -0.2))  # a 20 % fall: trips
    await svc.store.signals.record_outcome(_loss("TREND-SHADOW", t0 + timedelta(days=6), -0.05))
    await svc.signal_service.refresh_breaker()
    paused = svc.signal_service.paused()
    assert [p.scope for p in paused] == ["trend/crypto"] and paused[0].shadow_closed == 1

    await say(svc, ALICE, "/start")
    perf = await say(svc, ALICE, "/performance all")
    assert "trend/crypto: paused since" in perf and "fell 20.0 % from their peak" in perf
    history = await say(svc, ALICE, "/history")
    assert "Last 1 closed signals" in history and "-20.00%" in history and "-5.00%" not in history
    from bot.commands.admin import breaker_line

    line = await breaker_line(svc.signal_service)
    assert line.startswith("trend/crypto paused since") and "drawdown -20.0%" in line and "(1 closed)" in line
    listed = await say(svc, ALICE, "/signals")
    assert "TREND-SHADOW-OPEN" not in listed and "trend/crypto: paused since" in listed

    sent: list[tuple[str, str]] = []

    class Console:  # the console users' platform, recording the announcements
        name = "console"

        async def send(self, chat_id: str, doc: Doc, reply_to: str | None = None) -> str:
            sent.append((chat_id, doc.body))
            return str(len(sent))

    svc.notices.add(Console())
    await say(svc, BOB, "/start")
    await say(svc, BOB, "/prefs assets equity")  # Bob does not receive crypto
    await pause_announcer(svc)(StrategyPaused("trend/crypto", "crypto", "trip", paused[0].reason, START))
    alice = await svc.store.users.find_user("console", "alice")
    assert [chat for chat, _ in sent] == [alice.chat_id]
    assert sent[0][1].startswith("Trend signals on crypto: paused since") and "followed in shadow, not sent" in sent[0][1]
