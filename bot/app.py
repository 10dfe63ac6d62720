"""Composition root: builds every service from the settings and runs them in one asyncio loop."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal as os_signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TextIO

from bot.commands.handlers import build_registry
from bot.commands.registry import Caller, dispatch
from bot.delivery.notifier import Notifier
from bot.delivery.worker import DeliveryWorker
from bot.scheduler import JobScheduler
from bot.services import Services
from bot.settings import Settings
from bot.transports.console import ConsoleTransport
from bot.transports.telegram import TelegramTransport
from bot.views.doc import Doc
from core.clock import AcceleratedClock, Clock
from core.errors import DeliveryError
from core.events import EventBus, SignalClosed, SignalIssued
from core.indicators.pandas_ta_engine import PandasTaEngine
from core.instruments import default_registry
from core.market_data import CsvMarketData, SimulatedMarket
from core.ports import MarketData
from core.risk import RiskManager
from core.signals.engine import SignalEngine
from core.signals.service import SignalService
from core.signals.tracker import LifecycleTracker
from storage import Database, SqlStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunOptions:
    replay: Path | None = None
    speed: float | None = None
    duration: float | None = None  # seconds; None: until SIGINT/SIGTERM
    start: datetime | None = None  # where the offline clock starts (replay default: 400 days into the data;
    # simulation default: now, with 400 days of simulated history before it)


def build_market(settings: Settings, opts: RunOptions) -> tuple[MarketData, Clock]:
    """The offline market: a replay of CSV files, or the built-in simulation (the default)."""
    market: MarketData
    if opts.replay is not None:
        csv = CsvMarketData(opts.replay)
        market = csv
        first, last = csv.data_range(tradable_only=True)
        start = opts.start or min(first + timedelta(days=400), last)
        return market, AcceleratedClock(start, opts.speed or settings.speed or 86_400.0)
    now = opts.start or datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    clock = AcceleratedClock(now, opts.speed or settings.speed or 3_600.0)
    market = SimulatedMarket(seed=settings.sim_seed, start=now, history_days=settings.sim_history_days, clock=clock)
    return market, clock


async def build_services(settings: Settings, market: MarketData, clock: Clock) -> Services:
    db = Database(settings.database_url)
    await db.create_all()
    store = SqlStore(db, clock)
    await store.upsert_instruments(list(market.instruments()))
    bus = EventBus()
    signal_service = SignalService(market, SignalEngine(PandasTaEngine()), store, bus, RiskManager(), clock)
    tracker = LifecycleTracker(market, store, bus, clock, settings.costs_bps)
    return Services(settings, store, market, signal_service, tracker, bus, clock, build_registry(), default_registry())


async def run_service(settings: Settings, opts: RunOptions, stdin: TextIO | None = None,
                      stdout: TextIO | None = None) -> int:
    market, clock = build_market(settings, opts)
    services = await build_services(settings, market, clock)

    async def handle(caller: Caller, text: str) -> Doc:
        return await dispatch(services.registry, services, caller, text)

    console = ConsoleTransport(stdout)
    workers = [DeliveryWorker(console, services.store, clock, poll_seconds=settings.delivery_poll)]
    telegram = await start_telegram(settings, services, handle)
    if telegram is not None:
        workers.append(DeliveryWorker(telegram, services.store, clock, poll_seconds=settings.delivery_poll))
    notifier = Notifier(services.store, clock, {w.channel for w in workers}, wake=lambda: _wake_all(workers))
    services.bus.subscribe(SignalIssued, notifier.on_signal_issued)
    services.bus.subscribe(SignalClosed, notifier.on_signal_closed)
    requeued = await services.store.requeue_stale_sending()
    if requeued:
        log.warning("%d deliveries interrupted by the last stop are queued again", requeued)

    scheduler = JobScheduler()
    scheduler.every(settings.scan_interval, services.signal_service.scan, "scan")
    scheduler.every(settings.track_interval, services.tracker.update, "track")
    stop = asyncio.Event()
    _install_signal_handlers(stop)

    tasks = [asyncio.create_task(w.run(), name=f"delivery-{w.channel}") for w in workers]
    tasks.append(asyncio.create_task(console.serve(handle, stdin), name="console"))
    log.info("signalbot running: market %s, clock at %s, %d instruments", market.name, clock.now().isoformat(),
             len(market.instruments()))
    scheduler.start()
    try:
        if opts.duration is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=opts.duration)
        else:
            await stop.wait()
    finally:
        await scheduler.shutdown()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if telegram is not None:
            await telegram.stop()  # after the workers: a send in flight finishes first
        await services.store.close()
    log.info("signalbot stopped cleanly")
    return 0


async def start_telegram(settings: Settings, services: Services,
                         handle: Callable[[Caller, str], Awaitable[Doc]]) -> TelegramTransport | None:
    """Telegram beside the console when TELEGRAM_TOKEN is set. If it cannot start (token rejected, API
    unreachable) the service runs without it and nothing is queued for its users."""
    if settings.telegram_token is None:
        return None
    transport = TelegramTransport(
        settings.telegram_token.get_secret_value(), base_url=settings.telegram_base_url,
        base_file_url=settings.telegram_base_file_url, messages_per_second=settings.telegram_messages_per_second,
        commands=[(c.name, c.summary) for c in services.registry.visible(False)])
    try:
        await transport.start(handle)
    except DeliveryError as exc:
        log.error("telegram did not start, running without it: %s", exc)
        await transport.stop()
        return None
    return transport


def _wake_all(workers: list[DeliveryWorker]) -> None:
    for w in workers:
        w.wake()


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (os_signal.SIGINT, os_signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
