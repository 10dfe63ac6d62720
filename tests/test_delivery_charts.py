"""A delivered signal carries its chart: for tiers that include charts, drawn once per signal however many
recipients, never on exits, and never at the cost of the message (a failing or late chart leaves the text)."""
from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

import bot.delivery.worker as worker_module
from bot.app import build_services
from bot.delivery.notifier import Notifier
from bot.delivery.setup import start_delivery
from bot.delivery.worker import DeliveryWorker
from bot.settings import Settings
from bot.views.doc import Doc, Image
from bot.views.signal_chart import CHART_BARS, SignalCharts, chart_of_signal
from bot.views.signals import exit_doc, signal_doc
from core.clock import FixedClock
from core.domain import (
    AssetClass, DeliveryStatus, Direction, RiskTolerance, Signal, SignalOutcome, SignalStatus, Tier,
    Timeframe,
)
from core.errors import MarketDataError
from core.events import SignalClosed, SignalIssued
from core.market_data import SimulatedMarket
from storage import Database, Stores
from storage.tables import PREFERENCES, USERS
from tests.conftest import make_bars, utc

NOW = utc(2025, 6, 2, 12)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHART = Image(PNG_MAGIC + b"chart", "AAPL-1d.png", "AAPL 1d: entry 100, target 104, stop 98")
TIERS = tuple(Tier)  # free, hobbyist, trader, professional
RISKS = tuple(RiskTolerance)


def a_signal(sid: str = "AAPL-1d-20250602-L", symbol: str = "AAPL") -> Signal:
    return Signal(id=sid, symbol=symbol, asset_class=AssetClass.EQUITY, timeframe=Timeframe.D1,
                  direction=Direction.LONG, entry=100, target=104, stop=98, confidence=70, position_size=0.05,
                  issued_at=NOW, expires_at=NOW + timedelta(days=14), reasoning="Oversold.", strategy="mean_reversion")


class Recorder:
    """A chat transport that keeps what it was given."""

    name = "telegram"

    def __init__(self) -> None:
        self.sent: list[tuple[str, Doc, str | None]] = []

    async def send(self, chat_id: str, doc: Doc, reply_to: str | None = None) -> str:
        self.sent.append((chat_id, doc, reply_to))
        return f"m{len(self.sent)}"

    def to(self, chat_id: str) -> list[tuple[Doc, str | None]]:
        return [(doc, reply) for chat, doc, reply in self.sent if chat == chat_id]


class Charts:
    """A chart provider that counts its calls, and can fail or be slow."""

    def __init__(self, image: Image | None = CHART, *, fail: Exception | None = None, delay: float = 0.0) -> None:
        self.image, self.fail, self.delay = image, fail, delay
        self.calls: list[str] = []

    async def __call__(self, signal: Signal) -> Image | None:
        self.calls.append(signal.id)
        await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return self.image


async def seeded_store(path, n: int) -> Stores:  # noqa: ANN001
    """n telegram users, tiers and risk tolerances in turn, chat ids "0".."n-1"."""
    db = Database(f"sqlite+aiosqlite:///{path}")
    await db.upgrade()
    store = Stores.over(db, FixedClock(NOW))
    async with db.engine.begin() as conn:
        await conn.execute(USERS.insert(), [
            {"id": i + 1, "platform": "telegram", "platform_user_id": str(i), "chat_id": str(i), "display_name": "",
             "tier": TIERS[i % 4].value, "active": True, "created_at": NOW} for i in range(n)])
        await conn.execute(PREFERENCES.insert(), [
            {"user_id": i + 1, "symbols": "[]", "asset_classes": "[]", "timeframes": "[]", "min_confidence": 50,
             "risk": RISKS[i % 3].value} for i in range(n)])
    store.users.invalidate_users()
    return store


async def drain(worker: DeliveryWorker) -> int:
    total = 0
    while handled := await worker.process_due():
        total += handled
    return total


# -- the worker ---------------------------------------------------------------------------------------
async def test_signals_carry_the_chart_for_tiers_with_charts_exits_never(tmp_path):
    store = await seeded_store(tmp_path / "a.db", 24)
    clock = FixedClock(NOW)
    transport, charts = Recorder(), Charts()
    worker = DeliveryWorker(transport, store, clock, batch=5, concurrency=4, chart=charts)  # five batches
    notifier = Notifier(store, clock, {"telegram"}, wake=worker.wake)
    s = a_signal()
    await store.signals.add_signal(s)
    await notifier.on_signal_issued(SignalIssued(s))
    assert await drain(worker) == 24
    assert charts.calls == [s.id]  # asked once for 24 recipients over five batches
    for i in range(24):
        [(doc, reply)] = transport.to(str(i))
        tier, risk = TIERS[i % 4], RISKS[i % 3]
        assert doc.image is (None if tier is Tier.FREE else CHART), (i, tier)  # the same Image: nothing copied
        text = signal_doc(s, risk)
        assert (doc.heading, doc.fields, doc.body, doc.buttons) == (text.heading, text.fields, text.body, text.buttons)
        assert reply is None

    outcome = SignalOutcome(s.id, SignalStatus.TARGET, 100.5, NOW, 104, NOW + timedelta(days=2), 0.035, 0.034, 0.04,
                            -0.01, 2)
    await store.signals.record_outcome(outcome)
    await notifier.on_signal_closed(SignalClosed(s, outcome))
    assert await drain(worker) == 24
    for i in range(24):
        (_, _), (exit_message, reply) = transport.to(str(i))
        assert exit_message == exit_doc(s, outcome) and exit_message.image is None  # exits: no chart
        assert reply == f"m{[c for c, _, _ in transport.sent].index(str(i)) + 1}"  # a reply to its signal
    assert charts.calls == [s.id]
    assert await store.outbox.delivery_counts("telegram") == {DeliveryStatus.SENT: 48}
    await store.close()


async def test_each_signal_is_drawn_once_and_the_workers_memory_is_bounded(tmp_path, monkeypatch):
    store = await seeded_store(tmp_path / "b.db", 8)
    clock = FixedClock(NOW)
    signals = [a_signal(f"SIG-{k}", symbol) for k, symbol in enumerate(("AAPL", "MSFT", "NVDA", "AMZN", "TSLA"))]
    await store.signals.add_signals(signals)
    transport, charts = Recorder(), Charts()
    worker = DeliveryWorker(transport, store, clock, batch=3, chart=charts)
    notifier = Notifier(store, clock, {"telegram"}, wake=worker.wake)
    for s in signals[:3]:
        await notifier.on_signal_issued(SignalIssued(s))
    assert await drain(worker) == 24  # three signals' rows mixed in batches of 3: each signal asked for once
    assert sorted(charts.calls) == ["SIG-0", "SIG-1", "SIG-2"]
    free = [doc for chat, doc, _ in transport.sent if int(chat) % 4 == 0]
    assert len(free) == 6 and all(doc.image is None for doc in free)

    monkeypatch.setattr(worker_module, "CHART_CACHE", 3)
    for s in signals[3:]:
        await notifier.on_signal_issued(SignalIssued(s))
        await drain(worker)
    assert len(worker._charts) == 3 and list(worker._charts)[1:] == ["SIG-3", "SIG-4"]  # the oldest forgotten
    await store.close()


async def test_a_failing_chart_leaves_the_text_and_is_not_asked_again(tmp_path, caplog):
    store = await seeded_store(tmp_path / "c.db", 8)
    clock = FixedClock(NOW)
    transport, charts = Recorder(), Charts(fail=MarketDataError("AAPL: the provider is down"))
    worker = DeliveryWorker(transport, store, clock, batch=3, chart=charts)
    s = a_signal()
    await store.signals.add_signal(s)
    await Notifier(store, clock, {"telegram"}, wake=worker.wake).on_signal_issued(SignalIssued(s))
    with caplog.at_level(logging.WARNING, logger="bot.delivery.worker"):
        assert await drain(worker) == 8
    assert await store.outbox.delivery_counts("telegram") == {DeliveryStatus.SENT: 8}  # nobody lost the signal
    assert all(doc.image is None and doc.heading.startswith("BUY AAPL") for _, doc, _ in transport.sent)
    assert charts.calls == [s.id]  # the failure is remembered: later batches are not held up again
    [warning] = [r for r in caplog.records if "no chart" in r.getMessage()]
    assert s.id in warning.getMessage() and "provider is down" in warning.getMessage()
    await store.close()


async def test_a_late_chart_does_not_delay_the_signal(tmp_path):
    store = await seeded_store(tmp_path / "d.db", 4)
    clock = FixedClock(NOW)
    transport = Recorder()
    worker = DeliveryWorker(transport, store, clock, chart=Charts(delay=30.0), chart_timeout=0.1)
    s = a_signal()
    await store.signals.add_signal(s)
    await Notifier(store, clock, {"telegram"}, wake=worker.wake).on_signal_issued(SignalIssued(s))
    begin = time.monotonic()
    assert await worker.process_due() == 4
    assert time.monotonic() - begin < 5
    assert len(transport.sent) == 4 and all(doc.image is None for _, doc, _ in transport.sent)
    await store.close()


async def test_a_provider_with_no_chart_and_a_worker_without_one_send_text(tmp_path):
    store = await seeded_store(tmp_path / "e.db", 4)
    clock = FixedClock(NOW)
    s = a_signal()
    await store.signals.add_signal(s)
    for chart in (Charts(image=None), None):
        transport = Recorder()
        worker = DeliveryWorker(transport, store, clock, chart=chart)
        await Notifier(store, clock, {"telegram"}, wake=worker.wake).on_signal_issued(SignalIssued(s))
        assert await worker.process_due() == 4
        assert [doc.image for _, doc, _ in transport.sent] == [None] * 4
        s = a_signal(f"{s.id}-again")
        await store.signals.add_signal(s)
    await store.close()


# -- the provider -------------------------------------------------------------------------------------
class Bars:
    """A market that serves one frame and counts its reads."""

    name = "bars"

    def __init__(self, frame: pd.DataFrame, fail: int = 0) -> None:
        self.frame, self.fail, self.reads = frame, fail, []

    async def get_bars(self, symbol: str, timeframe: Timeframe, *, end, limit=None) -> pd.DataFrame:  # noqa: ANN001
        self.reads.append((symbol, timeframe, end, limit))
        await asyncio.sleep(0.01)
        if self.fail:
            self.fail -= 1
            raise MarketDataError(f"{symbol}: timed out")
        return self.frame.iloc[-limit:] if limit else self.frame


async def test_signal_charts_draw_once_for_concurrent_workers_and_retry_after_a_failure():
    closes = 100 * np.exp(np.cumsum(np.random.default_rng(5).normal(0, 0.01, 200)))
    market = Bars(make_bars(closes, volume=np.random.default_rng(6).uniform(1e5, 1e6, 200)), fail=1)
    charts = SignalCharts(market, capacity=2)  # type: ignore[arg-type]
    s = a_signal()
    with pytest.raises(MarketDataError):
        await charts(s)
    assert charts.drawn == 0 and not charts._done  # a failure is not kept
    images = await asyncio.gather(*(charts(s) for _ in range(5)))  # e.g. the Telegram and Discord workers
    assert charts.drawn == 1 and len(market.reads) == 2 and all(i is images[0] for i in images)
    image = images[0]
    assert image.data.startswith(PNG_MAGIC) and image.filename == "AAPL-1d.png"
    assert image.caption == "AAPL 1d: entry 100, target 104, stop 98"
    assert market.reads[-1] == ("AAPL", Timeframe.D1, s.issued_at, CHART_BARS)  # the bars it was issued on
    assert await charts(s) is image and charts.drawn == 1
    for sid in ("B", "C"):
        await charts(a_signal(sid))
    assert list(charts._done) == ["B", "C"]  # bounded
    assert await charts(s) is not image and charts.drawn == 4


async def test_chart_of_signal_on_the_simulated_market():
    market = SimulatedMarket(seed=7, start=NOW, history_days=400, clock=FixedClock(NOW))
    image = await chart_of_signal(market, a_signal())
    assert image.data.startswith(PNG_MAGIC) and image.filename == "AAPL-1d.png"


# -- the wiring ---------------------------------------------------------------------------------------
class Named(Recorder):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


async def test_start_delivery_gives_the_chat_platforms_one_shared_chart_provider():
    settings = Settings(_env_file=None, database_url="sqlite+aiosqlite:///:memory:")
    clock = FixedClock(NOW)
    services = await build_services(settings, SimulatedMarket(seed=7, start=NOW, history_days=60, clock=clock), clock)
    try:
        delivery = await start_delivery(settings, services, [Named("console"), Named("telegram"),
                                                                     Named("discord")], clock)
        charts = {w.channel: w.chart for w in delivery.workers}
        assert charts["console"] is None and charts["webhook"] is None  # text (console), JSON (webhooks)
        assert isinstance(charts["telegram"], SignalCharts) and charts["telegram"] is charts["discord"]
        assert charts["telegram"].market is services.signal_service.on_demand
        await delivery.close()
    finally:
        await services.store.close()


async def test_users_upgraded_between_batches_get_the_chart_from_then_on(tmp_path):
    store = await seeded_store(tmp_path / "f.db", 1)  # one free user
    clock = FixedClock(NOW)
    transport, charts = Recorder(), Charts()
    worker = DeliveryWorker(transport, store, clock, chart=charts)
    notifier = Notifier(store, clock, {"telegram"}, wake=worker.wake)
    first, second = a_signal("SIG-1"), a_signal("SIG-2")
    await store.signals.add_signal(first)
    await notifier.on_signal_issued(SignalIssued(first))
    await worker.process_due()
    await store.users.set_tier(1, Tier.HOBBYIST)
    await store.signals.add_signal(second)
    await notifier.on_signal_issued(SignalIssued(second))
    await worker.process_due()
    assert [(doc.image, doc.fields[-1][1]) for doc, _ in transport.to("0")] == [(None, "SIG-1"), (CHART, "SIG-2")]
    assert charts.calls == ["SIG-2"]  # a free user's signal needs no chart: none was asked for
    await store.close()
