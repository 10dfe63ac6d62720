"""Thesis updates: when the evidence behind an open signal turns against it (its trend, the market's regime, the
news), the service replies once to the signal's messages with what changed; nothing is told twice, a restart
between storing and queueing loses nothing, and a signal that closed first gets its exit, not a late update."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from bot.delivery.channel import Outgoing
from bot.delivery.notifier import Notifier
from bot.delivery.payloads import seed_payload, webhook_payload
from bot.delivery.setup import recover_fanouts
from bot.delivery.worker import DeliveryWorker
from bot.views.doc import Doc
from bot.views.signals import signals_list_doc, update_doc
from bot.views.text import render_text
from core.clock import FixedClock
from core.domain import (AssetClass, DeliveryKind, DeliveryStatus, Direction, Instrument, Signal, SignalOutcome,
                         SignalStatus, SignalUpdate, Timeframe)
from core.events import EventBus, SignalIssued, SignalUpdated
from core.indicators import default_engine
from core.setups.trend import TrendReading
from core.signals.engine import SignalEngine
from core.signals.ensemble import NewsOpinion
from core.signals.thesis_watch import ThesisWatch
from core.thesis import Thesis, thesis_change
from storage import Database, Stores
from tests.conftest import make_bars, utc

UP = TrendReading(0.75, "long-term uptrend (price above EMA200, EMA50 above EMA200, ADX 22)")
DOWN = TrendReading(-0.75, "long-term downtrend (price below EMA200, EMA50 below EMA200, ADX 22)")
FLAT = TrendReading(0.0, "no clear long-term trend (price above EMA200, EMA50 below EMA200)")
BAD_NEWS = NewsOpinion(-0.6, 3, "3 items, bearish: guidance cut")
START = utc(2023, 1, 2)
ISSUE_BAR = 299  # the signal is issued at this bar's close, in the uptrend


# -- what counts as a change ------------------------------------------------------------------------------
def test_only_what_turned_against_the_side_since_issue_is_a_change():
    assert thesis_change(Direction.LONG, Thesis(UP), Thesis(UP)) == ()
    assert thesis_change(Direction.LONG, Thesis(UP), Thesis(FLAT)) == ()  # weaker, not against
    (trend,) = thesis_change(Direction.LONG, Thesis(UP), Thesis(DOWN))
    assert trend.startswith("the trend turned against it: now a long-term downtrend") and "at issue: long-term uptrend" in trend
    assert thesis_change(Direction.LONG, Thesis(DOWN), Thesis(DOWN)) == ()  # against at issue already: known then
    assert thesis_change(Direction.SHORT, Thesis(DOWN), Thesis(UP))[0].startswith("the trend turned against it")
    assert thesis_change(Direction.SHORT, Thesis(UP), Thesis(DOWN)) == ()  # in its favour
    news = thesis_change(Direction.LONG, Thesis(UP), Thesis(UP, news=BAD_NEWS))
    assert news == ("the news turned against it: 3 items, bearish: guidance cut",)
    assert thesis_change(Direction.LONG, Thesis(UP, news=BAD_NEWS), Thesis(UP, news=BAD_NEWS)) == ()
    assert thesis_change(Direction.SHORT, Thesis(DOWN), Thesis(DOWN, news=BAD_NEWS)) == ()  # bad news helps a short
    regime = thesis_change(Direction.LONG, Thesis(UP, regime=UP, leader="BTC-USDT"),
                           Thesis(UP, regime=DOWN, leader="BTC-USDT"))
    assert regime == ("the market's regime turned: BTC-USDT is now in a " + DOWN.text,)
    both = thesis_change(Direction.LONG, Thesis(UP, regime=UP, leader="BTC-USDT"),
                         Thesis(DOWN, news=BAD_NEWS, regime=DOWN, leader="BTC-USDT"))
    assert [c.split(":")[0] for c in both] == ["the trend turned against it", "the market's regime turned",
                                              "the news turned against it"]


# -- the watch on real indicators, through the store and the delivery worker ------------------------------
def path(up: int, down: int, start: float = 100.0) -> np.ndarray:
    """A steady rise of `up` days then a steady fall of `down` days."""
    rises = start * np.cumprod(np.full(up, 1.004))
    return np.concatenate([rises, rises[-1] * np.cumprod(np.full(down, 0.99))])


class FrameMarket:
    """Bars held in memory; `get_bars` keeps the port's promise: only bars closed by `end`."""

    name = "frames"

    def __init__(self, frames: dict[str, pd.DataFrame], classes: dict[str, AssetClass]) -> None:
        self.frames = frames
        self._instruments = [Instrument(s, classes[s]) for s in frames]

    def instruments(self) -> Sequence[Instrument]:
        return self._instruments

    def timeframes(self, symbol: str) -> Sequence[Timeframe]:
        return (Timeframe.D1,)

    async def get_bars(self, symbol: str, timeframe: Timeframe, *, end: datetime, limit: int | None = None) -> pd.DataFrame:
        f = self.frames[symbol]
        f = f[f.index + timeframe.duration <= end]
        return f if limit is None else f.iloc[-limit:]


def bar_close(i: int) -> datetime:
    return START + timedelta(days=i + 1)


def long_signal(symbol: str, asset: AssetClass, entry: float) -> Signal:
    issued = bar_close(ISSUE_BAR)
    return Signal(id=f"{symbol}-1d-L", symbol=symbol, asset_class=asset, timeframe=Timeframe.D1,
                  direction=Direction.LONG, entry=entry, target=entry * 1.08, stop=entry * 0.7, confidence=60,
                  position_size=0.05, issued_at=issued, expires_at=issued + timedelta(days=400), reasoning="trend",
                  strategy="trend")


class Chat:
    name = "console"

    def __init__(self) -> None:
        self.sent: list[tuple[str, Doc, str | None]] = []

    async def send(self, chat_id: str, doc: Doc, reply_to: str | None = None) -> str:
        self.sent.append((chat_id, doc, reply_to))
        return f"m{len(self.sent)}"


async def open_stores(url: str) -> Stores:
    db = Database(url)
    await db.upgrade()
    return Stores.over(db)


async def test_the_watch_replies_once_to_each_recipient_when_the_trend_turns(db_url):
    closes = path(ISSUE_BAR + 1, 260)
    market = FrameMarket({"AAPL": make_bars(closes, start=START)}, {"AAPL": AssetClass.EQUITY})
    store = await open_stores(db_url("thesis"))
    clock = FixedClock(bar_close(ISSUE_BAR))
    bus = EventBus()
    chat = Chat()
    worker = DeliveryWorker(chat, store, clock)
    notifier = Notifier(store, clock, {"console"}, wake=worker.wake)
    bus.subscribe(SignalUpdated, notifier.on_signal_updated)
    for i in range(2):
        await store.users.upsert_user("console", f"u{i}", f"chat{i}", f"user {i}")
    s = long_signal("AAPL", AssetClass.EQUITY, float(closes[ISSUE_BAR]))
    await store.signals.add_signals([s], fan_out=[s.id])
    await notifier.on_signal_issued(SignalIssued(s))
    await worker.process_due()
    refs = {chat_id: f"m{k + 1}" for k, (chat_id, _, _) in enumerate(chat.sent)}
    assert sorted(refs) == ["chat0", "chat1"]
    watch = ThesisWatch(market, SignalEngine(default_engine()), store.signals, bus, clock)

    assert await watch.check() == []  # no bar has closed since its own
    clock.at = bar_close(ISSUE_BAR + 20)
    assert await watch.check() == []  # still rising: the thesis holds
    clock.at = bar_close(ISSUE_BAR + 240)  # EMA50 under EMA200, price under both
    (update,) = await watch.check()
    assert update.signal_id == s.id and update.at == clock.now()
    assert update.changes[0].startswith("the trend turned against it: now a long-term downtrend (price below EMA200, "
                                        "EMA50 below EMA200") and "at issue: long-term uptrend" in update.changes[0]
    assert await store.signals.updates([s.id]) == {s.id: update}
    listed = render_text(signals_list_doc([s], None, await store.signals.updates([s.id])))
    assert "AAPL 1d BUY: thesis changed" in listed and "the trend turned against it" in listed  # /signals
    await worker.process_due()
    replies = chat.sent[2:]
    assert sorted((c, r) for c, _, r in replies) == sorted(refs.items())  # each a reply to that user's message
    doc = replies[0][1]
    assert doc.heading == "Thesis changed: BUY AAPL (1d)" and doc.buttons[0].command == f"/feedback {s.id} closed"
    assert "the trend turned against it" in render_text(doc)

    clock.at = bar_close(ISSUE_BAR + 250)
    assert await watch.check() == []  # told once
    fresh = ThesisWatch(market, SignalEngine(default_engine()), store.signals, bus, clock)
    assert await fresh.check() == []  # a restarted watch knows it was told
    assert not await store.signals.record_update(SignalUpdate(s.id, clock.now(), ("again",)), fan_out=True)
    await worker.process_due()
    assert len(chat.sent) == 4
    assert await store.outbox.pending_fanouts() == []
    await store.close()


async def test_a_crypto_signal_hears_when_the_leader_turns_and_when_news_turns(db_url):
    btc = path(ISSUE_BAR + 1, 260)
    eth = path(ISSUE_BAR + 261, 0)  # ETH itself keeps rising
    market = FrameMarket({"BTC-USDT": make_bars(btc, start=START), "ETH-USDT": make_bars(eth, start=START)},
                         {"BTC-USDT": AssetClass.CRYPTO, "ETH-USDT": AssetClass.CRYPTO})

    class News:
        name = "news"

        def opinions(self, requests: Sequence[tuple[str, datetime]]) -> list[NewsOpinion | None]:
            return [BAD_NEWS if at > bar_close(ISSUE_BAR + 100) else None for _, at in requests]

    engine = SignalEngine(default_engine(), news=News())
    store = await open_stores(db_url("regime"))
    clock = FixedClock(bar_close(ISSUE_BAR + 240))
    s = long_signal("ETH-USDT", AssetClass.CRYPTO, float(eth[ISSUE_BAR]))
    await store.signals.add_signal(s)
    (update,) = await ThesisWatch(market, engine, store.signals, EventBus(), clock).check()
    assert [c.split(":")[0] for c in update.changes] == ["the market's regime turned", "the news turned against it"]
    assert update.changes[0].startswith("the market's regime turned: BTC-USDT is now in a long-term downtrend")
    assert await store.outbox.pending_fanouts() == [(s.id, DeliveryKind.UPDATE)]  # stored with its fan-out
    await store.close()


async def test_an_update_stored_but_not_queued_is_queued_at_the_next_start_unless_the_signal_closed(db_url):
    store = await open_stores(db_url("recover"))
    clock = FixedClock(bar_close(ISSUE_BAR + 5))
    chat = Chat()
    worker = DeliveryWorker(chat, store, clock)
    notifier = Notifier(store, clock, {"console"}, wake=worker.wake)
    await store.users.upsert_user("console", "u0", "chat0", "user 0")
    a, b = long_signal("AAPL", AssetClass.EQUITY, 100.0), long_signal("MSFT", AssetClass.EQUITY, 100.0)
    await store.signals.add_signals([a, b], fan_out=[a.id, b.id])
    await recover_fanouts(store, notifier)
    await worker.process_due()
    assert len(chat.sent) == 2
    for sig in (a, b):  # stored, then the process died before the notifier queued the replies
        assert await store.signals.record_update(SignalUpdate(sig.id, clock.now(), ("the trend turned",)), fan_out=True)
    outcome = SignalOutcome(b.id, SignalStatus.STOP, 100.0, a.issued_at, 70.0, clock.now(), -0.3, -0.302, 0.0, -0.3, 5)
    await store.signals.record_outcome(outcome)  # b closed before the restart: its exit speaks, not its update
    assert sorted(await store.outbox.pending_fanouts()) == [(a.id, DeliveryKind.UPDATE), (b.id, DeliveryKind.UPDATE)]
    assert await recover_fanouts(store, notifier) == 1
    assert await store.outbox.pending_fanouts() == []
    await worker.process_due()
    (reply,) = chat.sent[2:]
    assert reply[1].heading == "Thesis changed: BUY AAPL (1d)" and reply[2] == "m1"

    # an update queued, then its signal closed before the worker reached it: skipped, the exit follows
    c = long_signal("NVDA", AssetClass.EQUITY, 100.0)
    await store.signals.add_signals([c], fan_out=[c.id])
    await recover_fanouts(store, notifier)
    await worker.process_due()
    update = SignalUpdate(c.id, clock.now(), ("the news turned against it: x",))
    await store.signals.record_update(update, fan_out=True)
    await notifier.on_signal_updated(SignalUpdated(c, update))
    await store.signals.record_outcome(SignalOutcome(c.id, SignalStatus.TARGET, 100.0, c.issued_at, 108.0,
                                                     clock.now(), 0.08, 0.078, 0.08, 0.0, 5))
    sent = len(chat.sent)
    await worker.process_due()
    assert len(chat.sent) == sent
    assert await store.outbox.count(DeliveryStatus.SKIPPED) == 1  # the update row, with its reason
    await store.close()


def test_webhooks_name_the_update_and_carry_its_changes():
    s = long_signal("AAPL", AssetClass.EQUITY, 100.0)
    u = SignalUpdate(s.id, utc(2024, 1, 5), ("the trend turned against it: now a long-term downtrend",
                                              "the news turned against it: 3 items, bearish"))
    message = Outgoing(7, DeliveryKind.UPDATE, s, None, update_doc(s, u), "m1", update=u)
    body = webhook_payload(message, utc(2024, 1, 5, 0, 1))
    assert body["event"] == "signal.update" and body["signal"]["id"] == s.id
    assert body["update"] == {"at": "2024-01-05T00:00:00+00:00", "changes": list(u.changes)}
    seed = seed_payload(message, utc(2024, 1, 5, 0, 1))
    assert seed["event"] == "signal_update" and seed["changes"] == list(u.changes)
    assert seed["update_time"] == "2024-01-05T00:00:00+00:00"
