"""Composition root: builds every service from the settings and runs them in one asyncio loop."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal as os_signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from bot.alerts import ChatAlerts, admin_notifier
from bot.commands.billing import billing_commands
from bot.commands.handlers import build_registry
from bot.commands.registry import Caller, dispatch
from bot.delivery.commands import channel_commands
from bot.delivery.setup import start_delivery
from bot.health import Health
from bot.api.public import PublicRecord
from bot.api.routes import Api
from bot.api.stream import Stream
from bot.web.app import Web
from bot.http_server import HttpServer, start_http
from bot.metrics import Metrics, MetricsEndpoint, delivery_observer
from bot.leader import LOCK_NAME as LEADER_LOCK, Leader
from bot.notices import Notices
from bot.payments import Payments, tier_change_doc
from bot.scheduler import JobScheduler
from bot.services import Services
from bot.settings import Settings
from bot.transports.base import Transport
from bot.transports.console import ConsoleTransport
from bot.transports.discord import start_discord
from bot.transports.telegram import TelegramTransport
from bot.views.doc import Doc
from bot.markets import MarketSetup, live_market, offline_market
from bot.news_job import NewsJob, build_news_job
from core.clock import Clock, SystemClock
from core.domain import Timeframe
from core.errors import DeliveryError
from core.billing import TierChange
from core.breaker import SERVICE_LIMITS
from core.events import EventBus, StrategyPaused
from core.indicators import default_engine
from core.instruments import default_registry
from core.models.live import ModelUpkeep
from core.news.reasoning_writers import build_narrator
from core.ports import MarketData
from core.risk import RiskConfig, RiskManager
from core.books import SETUPS, make_books, parse_families
from core.signals.engine import SignalEngine
from core.signals.narrative import Narrator
from core.signals.service import SignalService
from core.signals.thesis_watch import ThesisWatch
from core.signals.tracker import LifecycleTracker
from storage import Stores, open_stores
from storage.leadership import lock_for

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunOptions:
    replay: Path | None = None
    speed: float | None = None
    duration: float | None = None  # seconds; None: until SIGINT/SIGTERM
    start: datetime | None = None  # where the offline clock starts (replay default: 400 days into the data;
    # simulation default: now, with 400 days of simulated history before it)


async def build_services(settings: Settings, market: MarketData, clock: Clock, *, store: Stores | None = None,
                         on_demand: MarketData | None = None, wall: Clock | None = None,
                         news: NewsJob | None = None) -> Services:
    """Every service, finished: `clock` is the market's; `wall` people's time (default: the same; see Services);
    `news`: the news job, whose verdicts the engine's news voter reads (None: the engine decides without news)."""
    wall = wall or clock
    store = store or await open_stores(settings.database_url, wall)
    await store.bars.upsert_instruments(list(market.instruments()))
    bus = EventBus()
    families = parse_families(settings.families)
    engine = SignalEngine(default_engine())
    if news is not None:
        engine.news = news.index
    signal_service = SignalService(market, engine, store.signals, bus,
                                   RiskManager(RiskConfig(costs_bps=settings.costs_bps)), clock,
                                   on_demand=on_demand, narrator=reasoning_narrator(settings, clock),
                                   books=make_books(families, settings.costs_bps, None), setups=SETUPS in families,
                                   breaker=SERVICE_LIMITS if settings.breaker else None)
    tracker = LifecycleTracker(market, store.signals, bus, clock, settings.costs_bps)
    # the LightGBM champions in models_dir vote in the engine (loaded at start; none: the rules decide alone);
    # live, new versions are trained on a schedule and promoted only when better
    upkeep = ModelUpkeep(Path(settings.models_dir), market, clock, engine, costs_bps=settings.costs_bps)
    if news is not None:  # the models' news features read the verdicts the news job holds
        upkeep.use_news(news.index)
    notices = Notices(store.users)

    async def tell_tier_change(change: TierChange) -> None:
        await notices.to_user(change.user_id, tier_change_doc(change))

    return Services(settings, store, market, signal_service, tracker, bus, clock, wall,
                    build_registry([*billing_commands(), *channel_commands(store.channels, digest_store=store.digests)]),
                    default_registry(), notices, upkeep,
                    payments=Payments.from_settings(settings, store, notify=tell_tier_change), news=news,
                    # offline markets are simulated or replayed: nothing there to train a champion on
                    retrain=upkeep.retrain if settings.market == "live" else None,
                    thesis=ThesisWatch(market, engine, store.signals, bus, clock))


def bar_reactor(services: Services, leads: Callable[[], bool]
                ) -> tuple[Callable[[str, Timeframe], None], Callable[[], Coroutine[Any, Any, None]]]:
    """(tell, run): `tell` is called for each streamed bar that closed; `run` (a task) has the leader scan and
    track at once. Bars that close together (every pair's hour) are one scan: the scan reads whatever is fresh."""
    closed = asyncio.Event()

    def tell(symbol: str, timeframe: Timeframe) -> None:
        closed.set()

    async def run() -> None:
        while True:
            await closed.wait()
            closed.clear()
            if not leads():
                continue
            try:
                await services.signal_service.scan()
                await services.tracker.update()
            except Exception:  # the scheduled scan runs anyway; the next closed bar tries again
                log.exception("scan on a streamed bar failed")

    return tell, run


def pause_announcer(services: Services) -> Callable[[StrategyPaused], Awaitable[int]]:
    """Tells the active users who receive that asset class, in plain words, when a strategy scope pauses or
    resumes (the strategy breaker, SignalService.refresh_breaker)."""

    async def announce(event: StrategyPaused) -> int:
        family, _, asset = event.scope.partition("/")
        text = f"{family.capitalize()} signals on {asset}: {event.reason}."
        if event.kind == "trip":
            text += " Signals already sent stay tracked to their exits; new ones are followed in shadow, not sent."
        users = [u for u in await services.store.users.active_users()
                 if not u.preferences.asset_classes or asset in {a.value for a in u.preferences.asset_classes}]
        return await services.notices.broadcast(users, text)

    return announce


def reasoning_narrator(settings: Settings, clock: Clock) -> Narrator | None:
    """LLM-written signal reasoning when SIGNALBOT_LLM_REASONING is on and an LLM key is set (else None:
    the engine's template text)."""
    if not settings.llm_reasoning:
        return None
    return build_narrator(
        anthropic_api_key=settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else None,
        anthropic_base_url=settings.anthropic_base_url, anthropic_model=settings.anthropic_model,
        openai_api_key=settings.openai_api_key.get_secret_value() if settings.openai_api_key else None,
        openai_base_url=settings.openai_base_url, openai_model=settings.openai_model,
        daily_tokens=settings.llm_daily_token_budget, daily_cost_usd=settings.llm_daily_cost_budget_usd,
        timeout=settings.llm_timeout, budget=settings.llm_reasoning_budget, clock=clock)


async def run_service(settings: Settings, opts: RunOptions, stdin: TextIO | None = None,
                      stdout: TextIO | None = None) -> int:
    stop = asyncio.Event()
    _install_signal_handlers(stop)  # first: a SIGTERM while starting up still ends in a clean stop
    setup, services = await compose(settings, opts)
    market, clock = setup.scan, setup.clock
    health = Health(services.store.outbox, services.wall)
    metrics = Metrics()
    token = settings.metrics_token.get_secret_value() if settings.metrics_token is not None else None
    endpoint = MetricsEndpoint(metrics, services, token=token)
    api = Api(services, health)
    http: HttpServer | None = await start_http(settings, services, payments=services.payments, health=health,
                                               metrics=endpoint,
                                               routers=[api.router, Stream(api).router, PublicRecord(services).router,
                                                        Web(services).router])
    if http is not None:
        api.start_flushing()

    async def handle(caller: Caller, text: str) -> Doc:
        return await dispatch(services.registry, services, caller, text)

    console = ConsoleTransport(stdout)
    telegram = await start_telegram(settings, services, handle, poll=False)
    discord = await start_discord(settings, services, handle)
    transports: list[Transport] = [console]
    pollers: list[Leader] = []
    if telegram is not None:
        transports.append(telegram)
        health.watch_transport("telegram", telegram.connection)
        pollers.append(telegram_poller(settings, services, telegram))
        await pollers[-1].step()  # a lone process polls from the start
    if discord is not None:
        transports.append(discord)
        health.watch_transport("discord", discord.connection)
    for transport in transports:  # broadcasts and plan changes reach users on the transports that started
        services.notices.add(transport)
    payments = services.payments
    services.bus.subscribe(StrategyPaused, pause_announcer(services))
    delivery = await start_delivery(settings, services, transports, clock)
    health.channels = frozenset(w.channel for w in delivery.workers)  # rows of unserved channels wait by design
    for worker in delivery.workers:
        worker.on_result = delivery_observer(metrics, worker.channel, services.wall)

    upkeep, news = services.upkeep, services.news
    try:
        await upkeep.load()
    except Exception:  # a broken model store must not keep the service down: the rules decide alone
        log.exception("models in %s not loaded; the rules decide alone", settings.models_dir)


    # one leader among the processes on this database does the scheduled work; every process delivers
    leader = Leader(lock_for(services.store.database, LEADER_LOCK), every=settings.leader_interval)
    alerts = ChatAlerts(services, admin_notifier(services), services.wall)

    def observe(job: str, seconds: float, ok: bool) -> None:
        metrics.job_ran(job, seconds, ok)
        alerts.job_ran(job, seconds, ok)

    scheduler = JobScheduler(leads=lambda: leader.is_leader, observe=observe)
    endpoint.leader = leader
    leader.on_elected(scheduler.run_leader_jobs_now)
    health.watch_jobs(scheduler.jobs)
    health.leader = leader
    if news is not None:
        scheduler.every(settings.news_interval, news.run, "news", leader_only=True)
    scheduler.every(86_400, upkeep.refresh_context, "model-context")  # each process's own models
    if services.retrain is not None:
        scheduler.every(settings.retrain_interval_hours * 3600, services.retrain, "retrain", leader_only=True)
    scheduler.every(settings.scan_interval, services.signal_service.scan, "scan", leader_only=True)
    scheduler.every(settings.track_interval, services.tracker.update, "track", leader_only=True)
    if services.thesis is not None:  # after a bar closes, like the tracker: what turned against an open signal
        scheduler.every(settings.track_interval, services.thesis.check, "thesis", leader_only=True)
    if payments is not None:  # grace periods ending, Stars expiring
        scheduler.every(300, payments.review, "billing-review", leader_only=True)
    if setup.update is not None:
        scheduler.every(settings.update_interval, setup.update, "update-bars", leader_only=True)
    scheduler.every(300, delivery.send_digests, "digests", leader_only=True)
    # a fan-out whose queueing failed
    scheduler.every(60, delivery.recover_fanouts, "fanout-retry", leader_only=True)
    scheduler.every(60, alerts.check, "alerts", leader_only=True)
    scheduler.every(60, requeue_lost_claims(services), "requeue-stale", leader_only=True)  # alerts.yml's conditions, to the admins in chat
    await leader.step()  # the first try before the jobs start: a lone process leads from its first scan

    outbox = services.store.outbox
    await outbox.heartbeat(outbox.process)  # before any claim: other processes see this one alive
    tasks = [asyncio.create_task(w.run(), name=f"delivery-{w.channel}") for w in delivery.workers]
    tasks.append(asyncio.create_task(heartbeats(services, settings.leader_interval), name="heartbeat"))
    tasks.append(asyncio.create_task(leader.run(), name="leader"))
    if setup.stream is not None:  # live crypto bars as they close, each scanned at once by the leader
        tell, react = bar_reactor(services, lambda: leader.is_leader)
        setup.bar_closed.append(tell)
        tasks += [asyncio.create_task(setup.stream(), name="bar-stream"),
                  asyncio.create_task(react(), name="bar-reactor")]
    tasks += [asyncio.create_task(p.run(), name="telegram-poller") for p in pollers]
    tasks.append(asyncio.create_task(console.serve(handle, stdin), name="console"))
    died = supervise(tasks, stop)
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
        await leader.close()  # after the scheduled work finished: a follower takes over at its next try
        for poller in pollers:
            await poller.close()
        await delivery.close()
        if telegram is not None:
            await telegram.stop()  # after the workers: a send in flight finishes first
        if discord is not None:
            await discord.stop()
        if http is not None:
            await http.stop()
        await api.close()  # after the server: the last requests' usage is counted
        if payments is not None:
            await payments.close()
        await setup.close()
        if news is not None:
            await news.close()
        await services.signal_service.close()
        await services.store.close()
    if died:
        log.error("signalbot stopped because a task died: %s", ", ".join(died))
        return 1
    log.info("signalbot stopped cleanly")
    return 0


async def heartbeats(services: Services, every: float) -> None:
    """This process's heartbeat row, every `every` seconds: the outbox leaves the rows a live process claimed
    alone (storage.outbox.requeue_stale_sending). A failed beat is logged; the next one tries again."""
    outbox = services.store.outbox
    while True:
        await asyncio.sleep(every)
        try:
            await outbox.heartbeat(outbox.process)
        except Exception as exc:  # noqa: BLE001 - the database is down: readiness says so
            log.warning("heartbeat not written: %s: %s", type(exc).__name__, str(exc)[:200])


def requeue_lost_claims(services: Services) -> Callable[[], Awaitable[None]]:
    async def requeue() -> None:
        n = await services.store.outbox.requeue_stale_sending()
        if n:
            log.warning("%d deliveries left SENDING by a process that stopped (or a lost claim) are queued again "
                        "(they may be sent twice)", n)
    return requeue


def supervise(tasks: list[asyncio.Task[None]], stop: asyncio.Event) -> list[str]:
    """Watch long-running tasks: one that ends with an exception is logged with its traceback and stops the
    service (the run then exits non-zero, so a supervisor such as systemd restarts it) rather than leaving the
    process up without it. Returns the list the names of dead tasks are appended to. A task that simply ends
    (the console at the end of its input) or is cancelled at shutdown is not a death."""
    died: list[str] = []

    def watch(task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log.error("task %s died; stopping the service", task.get_name(), exc_info=exc)
        died.append(task.get_name())
        stop.set()

    for task in tasks:
        task.add_done_callback(watch)
    return died


async def compose(settings: Settings, opts: RunOptions) -> tuple[MarketSetup, Services]:
    """The market, then the store, the news job and the services on them, each finished when it is built."""
    if settings.market == "live":
        if opts.replay is not None:
            raise ValueError("--replay is an offline market; it cannot be combined with SIGNALBOT_MARKET=live")
        store = await open_stores(settings.database_url, SystemClock())
        setup = live_market(settings, default_registry(), store)
        news = await start_news(settings, store, setup.clock, setup.scan, None)
        return setup, await build_services(settings, setup.scan, setup.clock, store=store, on_demand=setup.on_demand,
                                           news=news)
    setup = offline_market(settings, opts.replay, opts.speed, opts.start)
    # the market runs fast; people's time (link codes, quotas, audit, quiet hours, digests, the outbox) does not
    wall = SystemClock()
    store = await open_stores(settings.database_url, wall)
    news = await start_news(settings, store, setup.clock, setup.scan, opts.replay)
    return setup, await build_services(settings, setup.scan, setup.clock, store=store, wall=wall, news=news)


async def start_news(settings: Settings, store: Stores, clock: Clock, market: MarketData,
                     replay: Path | None) -> NewsJob | None:
    """The news job, when a news source is configured (none: the engine decides without news). A failure here
    leaves the service running without news."""
    try:
        return await build_news_job(settings, store.news, clock, market.instruments(), store.signals, replay)
    except Exception:
        log.exception("news not started; the engine decides without news")
        return None


async def start_telegram(settings: Settings, services: Services,
                         handle: Callable[[Caller, str], Awaitable[Doc]], *,
                         poll: bool = True) -> TelegramTransport | None:
    """Telegram beside the console when TELEGRAM_TOKEN is set. If it cannot start (token rejected, API
    unreachable) the service runs without it and nothing is queued for its users. `poll=False`: it sends, and
    polls only once `start_polling()` is called (run_service: by the process holding the bot's poller lock)."""
    if settings.telegram_token is None:
        return None
    transport = TelegramTransport(
        settings.telegram_token.get_secret_value(), base_url=settings.telegram_base_url,
        base_file_url=settings.telegram_base_file_url, messages_per_second=settings.telegram_messages_per_second,
        commands=[(c.name, c.summary) for c in services.registry.visible(False)], payments=services.payments)
    try:
        await transport.start(handle, poll=poll)
    except DeliveryError as exc:
        log.error("telegram did not start, running without it: %s", exc)
        await transport.stop()
        return None
    return transport


def telegram_poller(settings: Settings, services: Services, transport: TelegramTransport) -> Leader:
    """One getUpdates poller per bot token among the processes on the database: whoever holds the token's lock
    polls (every process sends)."""
    assert settings.telegram_token is not None
    token = hashlib.sha256(settings.telegram_token.get_secret_value().encode()).hexdigest()[:16]
    poller = Leader(lock_for(services.store.database, f"telegram-poller-{token}"), every=settings.leader_interval)
    poller.on_elected(transport.start_polling)
    poller.on_deposed(transport.stop_polling)
    return poller


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (os_signal.SIGINT, os_signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
