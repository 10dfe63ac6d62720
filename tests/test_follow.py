"""What a subscriber does with a signal: feedback stored once per user and signal, the paper portfolio recomputed
from the stored fills (the price when the signal reached the user), and the watchlist admitting signals past
the user's preferences."""
from __future__ import annotations

import dataclasses
import re
from datetime import timedelta
from pathlib import Path

import pytest

from bot.app import build_services
from bot.commands.registry import Caller, dispatch
from bot.delivery.notifier import Notifier
from bot.settings import Settings
from bot.views.signals import signal_doc
from bot.views.text import render_text
from core.clock import FixedClock
from core.domain import (AssetClass, Decision, DeliveryKind, DeliveryStatus, Direction, Preferences, Signal,
                         SignalOutcome, SignalStatus, Tier, Timeframe)
from core.events import SignalIssued
from core.market_data import SimulatedMarket
from core.portfolio import net_return
from core.signals.engine import signal_id
from storage import open_stores
from tests.conftest import MECHANICS_FAMILIES, utc

NOW = utc(2025, 6, 10, 15)
BOB = Caller("telegram", "1001", "1001", "Bob")
ANN = Caller("telegram", "1002", "1002", "Ann")


@pytest.fixture
async def services(tmp_path: Path):
    clock = FixedClock(NOW)
    market = SimulatedMarket(seed=7, start=NOW, history_days=400, clock=clock)
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'f.db'}", backtest_reports_dir="",
                        families=MECHANICS_FAMILIES, _env_file=None)
    svc = await build_services(settings, market, clock)
    yield svc
    await svc.store.close()


async def say(svc, caller: Caller, text: str) -> str:  # noqa: ANN001
    return render_text(await dispatch(svc.registry, svc, caller, text))


def sig(symbol: str = "BTC-USDT", issued=utc(2025, 6, 9), direction: Direction = Direction.LONG,  # noqa: ANN001
        asset_class: AssetClass = AssetClass.CRYPTO, size: float = 0.04) -> Signal:
    return Signal(id=signal_id(symbol, Timeframe.D1, issued, direction), symbol=symbol, asset_class=asset_class,
                  timeframe=Timeframe.D1, direction=direction, entry=100.0, target=110.0, stop=95.0, confidence=70,
                  position_size=size, issued_at=issued, expires_at=issued + timedelta(days=10),
                  reasoning="trend", strategy="trend")


async def close_at(svc, symbol: str, at) -> float:  # noqa: ANN001
    bars = await svc.market.get_bars(symbol, Timeframe.H1, end=at, limit=1)
    return float(bars["close"].iloc[-1])


async def test_feedback_is_stored_once_per_user_and_signal_and_the_fill_is_the_price_when_it_arrived(services):
    svc = services
    s = sig()
    await svc.store.signals.add_signal(s)
    for who in (BOB, ANN):
        await say(svc, who, "/start")
    bob = (await svc.store.users.find_user("telegram", "1001"))
    # the signal reached Bob 20 hours ago (after his quiet hours, say): his fill is the close then
    sent_at = NOW - timedelta(hours=20)
    await svc.store.outbox.enqueue([(s.id, bob.id, DeliveryKind.SIGNAL, "telegram", None, None)])
    [d] = await svc.store.outbox.claim_due("telegram", NOW, 10)
    svc.clock.at = sent_at  # type: ignore[attr-defined]  # the wall and market clocks are this FixedClock
    await svc.store.outbox.mark(d.id, DeliveryStatus.SENT, message_ref="m1")
    svc.clock.at = NOW  # type: ignore[attr-defined]
    assert await svc.store.outbox.first_sent_at(s.id, bob.id) == sent_at

    out = await say(svc, BOB, f"/feedback {s.id} took")
    assert "Recorded" in out, out
    fb = await svc.store.feedback.get(bob.id, s.id)
    assert fb is not None and fb.decision is Decision.TOOK and fb.fill_at == sent_at
    assert fb.fill_price == pytest.approx(await close_at(svc, s.symbol, sent_at))
    assert fb.fill_price != pytest.approx(await close_at(svc, s.symbol, NOW))

    assert "Already recorded" in await say(svc, BOB, f"/feedback {s.id} took")
    assert "kept as first given" in await say(svc, BOB, f"/feedback {s.id} skipped")
    assert await svc.store.feedback.get(bob.id, s.id) == fb
    # Ann never received it: her fill is the close when she tapped
    assert "Recorded" in await say(svc, ANN, f"/feedback {s.id} took")
    ann = await svc.store.users.find_user("telegram", "1002")
    fa = await svc.store.feedback.get(ann.id, s.id)
    assert fa is not None and fa.fill_at == NOW and fa.fill_price == pytest.approx(await close_at(svc, s.symbol, NOW))
    assert await svc.store.feedback.counts([s.id]) == {s.id: {"took": 2}}

    # bad input loses nothing and says why
    assert "not a signal id" in await say(svc, BOB, "/feedback nonsense took")
    assert "took|skipped|closed" in await say(svc, BOB, f"/feedback {s.id} maybe")
    assert "no signal" in (await say(svc, BOB, "/feedback AAPL-1d-20250101-L took")).lower()
    assert "There is no signal" in await say(svc, ANN, f"/feedback {sig('ETH-USDT').id} closed")
    assert "Closed at market in your paper portfolio" in await say(svc, BOB, f"/feedback {s.id} closed")


async def test_paper_portfolio_is_recomputed_from_the_stored_fills(services):
    svc = services
    await say(svc, BOB, "/start")
    bob = await svc.store.users.find_user("telegram", "1001")
    closed_by_me, by_target, still_open, skipped = (sig("BTC-USDT"), sig("ETH-USDT", direction=Direction.SHORT),
                                                    sig("SOL-USDT", size=0.02), sig("XRP-USDT"))
    for s in (closed_by_me, by_target, still_open, skipped):
        await svc.store.signals.add_signal(s)
    svc.clock.at = NOW - timedelta(hours=6)  # type: ignore[attr-defined]
    for s in (closed_by_me, by_target, still_open):
        assert "Recorded" in await say(svc, BOB, f"/feedback {s.id} took")
    assert "Recorded" in await say(svc, BOB, f"/feedback {skipped.id} skipped")
    svc.clock.at = NOW - timedelta(hours=2)  # type: ignore[attr-defined]
    assert "Closed at market" in await say(svc, BOB, f"/feedback {closed_by_me.id} closed")
    assert "already closed it" in await say(svc, BOB, f"/feedback {closed_by_me.id} closed")
    assert "nothing to close" in await say(svc, BOB, f"/feedback {skipped.id} closed")
    t_exit = NOW - timedelta(hours=1)
    target_price = (await svc.store.feedback.get(bob.id, by_target.id)).fill_price * 0.95
    await svc.store.signals.record_outcome(SignalOutcome(by_target.id, SignalStatus.TARGET, 100.0, by_target.issued_at,
                                                         target_price, t_exit, 0.05, 0.049, 0.05, -0.01, 2))
    svc.clock.at = NOW  # type: ignore[attr-defined]
    assert "already closed" in await say(svc, BOB, f"/feedback {by_target.id} closed")
    await say(svc, ANN, "/start")
    assert "nothing left to take" in await say(svc, ANN, f"/feedback {by_target.id} took")

    out = await say(svc, BOB, "/portfolio")
    fills = {f.signal_id: f for f in await svc.store.feedback.of_user(bob.id)}
    costs = svc.settings.costs_bps
    mine = fills[closed_by_me.id]
    r1 = net_return(Direction.LONG, mine.fill_price, mine.closed_price, costs)
    r2 = net_return(Direction.SHORT, fills[by_target.id].fill_price, target_price, costs)
    r3 = net_return(Direction.LONG, fills[still_open.id].fill_price, await close_at(svc, "SOL-USDT", NOW), costs)
    assert mine.closed_price == pytest.approx(await close_at(svc, "BTC-USDT", NOW - timedelta(hours=2)))
    realised, unrealised = 0.04 * r1 + 0.04 * r2, 0.02 * r3
    def field(name: str) -> str:
        found = re.search(rf"^\s*{name}\s+(.+)$", out, re.MULTILINE)
        assert found, out
        return found.group(1)

    assert field("Realised") == f"{realised * 100:+.2f}% from 2 closed (2 won)", out
    assert field("Unrealised") == f"{unrealised * 100:+.2f}%"
    assert field("Total") == f"{(realised + unrealised) * 100:+.2f}%"
    assert field("Skipped") == "1" and field("Open") == "1 positions, 2.0% of equity"
    assert "closed by you" in out and "target" in out


async def test_a_signal_carries_the_feedback_buttons():
    s = sig()
    commands = [b.command for b in signal_doc(s).buttons]
    assert f"/feedback {s.id} took" in commands and f"/feedback {s.id} skipped" in commands


async def test_watchlist_add_remove_and_its_alerts_pass_the_preferences(services):
    svc = services
    await say(svc, BOB, "/start")
    await say(svc, ANN, "/start")
    assert "empty" in await say(svc, BOB, "/watchlist")
    out = await say(svc, BOB, "/watchlist add nvda, btc/usdt")
    assert "Added NVDA, BTC-USDT" in out and "NVDA" in out, out
    assert "Already on your watchlist" in await say(svc, BOB, "/watchlist add NVDA")
    assert "NOPE" in await say(svc, BOB, "/watchlist add NOPE") and await svc.store.watchlist.symbols_of(
        (await svc.store.users.find_user("telegram", "1001")).id) == ["BTC-USDT", "NVDA"]  # same moment: by symbol
    assert "Usage" in await say(svc, BOB, "/watchlist sort")

    # Bob and Ann both want only AAPL; Bob watches NVDA: a signal on NVDA reaches him and not her
    for who in ("1001", "1002"):
        u = await svc.store.users.find_user("telegram", who)
        await svc.store.users.set_preferences(u.id, Preferences(symbols=frozenset({"AAPL"})))
        await svc.store.users.set_tier(u.id, Tier.PROFESSIONAL)
    bob = await svc.store.users.find_user("telegram", "1001")
    nvda = dataclasses.replace(sig("NVDA", asset_class=AssetClass.EQUITY), expires_at=NOW + timedelta(days=5))
    notifier = Notifier(svc.store, svc.clock, {"telegram"}, lambda: None, watchlist=svc.store.watchlist)
    rows = await notifier.recipients(SignalIssued(nvda))
    assert [r[1] for r in rows] == [bob.id]
    assert "Removed NVDA" in await say(svc, BOB, "/watchlist remove NVDA")
    assert await notifier.recipients(SignalIssued(nvda)) == []


async def test_feedback_and_watchlist_stores_on_both_databases(db_url):
    clock = FixedClock(NOW)
    store = await open_stores(db_url(), clock)
    try:
        user = await store.users.upsert_user("telegram", "7", "7", "Cy")
        s = sig()
        await store.signals.add_signal(s)
        first, stored = await store.feedback.decide(user.id, s.id, Decision.TOOK, fill_price=101.0, fill_at=NOW)
        again, stored_again = await store.feedback.decide(user.id, s.id, Decision.SKIPPED)
        assert stored and not stored_again and again == first and first.fill_price == 101.0
        closed = await store.feedback.close(user.id, s.id, 104.0, NOW + timedelta(hours=1))
        assert closed is not None and closed.closed_price == 104.0
        assert await store.feedback.close(user.id, s.id, 99.0, NOW + timedelta(hours=2)) is None
        assert await store.watchlist.add(user.id, ["AAPL", "AAPL", "NVDA"]) == ["AAPL", "NVDA"]
        assert await store.watchlist.watchers("AAPL") == {user.id}
        assert await store.watchlist.remove(user.id, ["AAPL", "MSFT"]) == ["AAPL"]
        assert await store.watchlist.watchers("AAPL") == frozenset()
    finally:
        await store.close()


async def test_weekly_report_on_demand_counts_every_closed_signal(services):
    svc = services
    await say(svc, BOB, "/start")
    assert "Nothing was issued or closed" in await say(svc, BOB, "/weekly")
    win, loss = sig("BTC-USDT"), sig("ETH-USDT")
    for s, ret in ((win, 0.03), (loss, -0.02)):
        await svc.store.signals.add_signal(s)
        await svc.store.signals.record_outcome(SignalOutcome(s.id, SignalStatus.TARGET if ret > 0 else SignalStatus.STOP,
                                                             100.0, s.issued_at, 100 * (1 + ret), NOW - timedelta(hours=3),
                                                             ret + 0.001, ret, max(ret, 0), min(ret, 0), 1))
    out = await say(svc, BOB, "/weekly")
    assert "0 received, 0 closed" in out and "2 closed, 1 won (50%), average +0.50%" in out, out
    assert "profit factor 1.50" in out and "worst -2.00%" in out
