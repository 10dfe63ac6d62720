"""Wiring of the delivery layer for the composition root (bot.app), once the chat transports have started
(the channel commands /email, /webhook, /digest are in the services' registry from the start: build_services):

    delivery = await start_delivery(settings, services, [console, telegram, ...], clock)
    tasks += [asyncio.create_task(w.run(), name=f"delivery-{w.channel}") for w in delivery.workers]
    scheduler.every(300, delivery.send_digests, "digests")
    ...
    await delivery.close()                                  # after the worker tasks are cancelled and awaited
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.delivery.digest import send_digests
from bot.delivery.extra_channels import ExtraDelivery, build_extra_delivery
from bot.delivery.notifier import Notifier
from bot.delivery.worker import DeliveryWorker
from bot.services import Services
from bot.settings import Settings
from bot.transports.base import Transport
from bot.views.signal_chart import SignalCharts
from core.clock import Clock
from core.domain import DeliveryKind
from core.events import SignalClosed, SignalIssued, SignalUpdated
from core.ports import Repositories

log = logging.getLogger(__name__)

CHAT_CONCURRENCY = {"console": 1}  # the console prints in order; platforms get DEFAULT_CHAT_CONCURRENCY
DEFAULT_CHAT_CONCURRENCY = 8  # within PTB's bot-wide rate limiter this keeps 30 messages/s busy
TEXT_ONLY = {"console"}  # chat transports that cannot show a picture: their signals go without a chart


FANOUT_RETRY_AFTER = 60.0  # seconds a fan-out may stay pending before the scheduled retry queues it

@dataclass
class Delivery:
    workers: list[DeliveryWorker]
    notifier: Notifier
    extra: ExtraDelivery
    chat: dict[str, Transport]
    clock: Clock
    services: Services

    def wake(self) -> None:
        for w in self.workers:
            w.wake()

    async def recover_fanouts(self) -> int:
        """The scheduled retry of fan-outs pending for over a minute (a failed queueing)."""
        return await recover_fanouts(self.services.store, self.notifier,
                                     self.clock.now() - timedelta(seconds=FANOUT_RETRY_AFTER))

    async def send_digests(self) -> int:
        return await send_digests(self.services.store, self.services.store.digests, self.chat, self.clock,
                                  self.services.clock)

    async def close(self) -> None:
        await self.extra.close()


async def start_delivery(settings: Settings, services: Services, chat_transports: Sequence[Transport],
                         clock: Clock) -> Delivery:
    """Workers for the chat transports and the extra channels, the notifier on the event bus, and the rows a
    hard stop left SENDING queued again. Run `workers` as tasks. Signals on the chat platforms that show
    pictures carry their chart for the tiers that include charts (email and webhooks stay text / JSON).
    `clock` is the market's; the queue, quiet hours, quotas and digests run on `services.wall`."""
    store, market_clock, clock = services.store, clock, services.wall
    charts = SignalCharts(services.signal_service.on_demand)  # one drawing per signal for every chat worker
    workers = [DeliveryWorker(t, store, clock, poll_seconds=settings.delivery_poll,
                              concurrency=CHAT_CONCURRENCY.get(t.name, DEFAULT_CHAT_CONCURRENCY),
                              chart=None if t.name in TEXT_ONLY else charts, market_clock=market_clock)
               for t in chat_transports]
    extra = build_extra_delivery(settings, store, store.channels, clock, market_clock=market_clock)
    workers.extend(extra.workers)
    delivery: Delivery | None = None

    def wake() -> None:
        if delivery is not None:
            delivery.wake()
    notifier = Notifier(store, clock, {t.name for t in chat_transports}, wake, channel_store=store.channels,
                        extra_channels=extra.channels, market_clock=market_clock, watchlist=store.watchlist)
    delivery = Delivery(workers, notifier, extra, {t.name: t for t in chat_transports}, clock, services)
    services.bus.subscribe(SignalIssued, notifier.on_signal_issued)
    services.bus.subscribe(SignalClosed, notifier.on_signal_closed)
    services.bus.subscribe(SignalUpdated, notifier.on_signal_updated)
    requeued = await store.outbox.requeue_stale_sending()
    if requeued:
        log.warning("%d deliveries interrupted by the last stop are queued again (they may be sent twice)",
                    requeued)
    recovered = await recover_fanouts(store, notifier)
    if recovered:
        log.warning("%d signals and exits stored but not queued before the last stop are queued now", recovered)
    return delivery


async def recover_fanouts(store: Repositories, notifier: Notifier, recorded_before: datetime | None = None) -> int:
    """Queue what a hard stop left stored but not fanned out (core.signals.service stores the signal and its
    pending fan-out in one transaction; the notifier marks it done in the one that queues the deliveries), or
    what a failed queueing left (the database refused the notifier's write: `recorded_before` a minute ago, run
    on a schedule; queueing is idempotent, so one that races the notifier adds nothing). A signal that has
    closed since is not sent any more, nor its update (its exit, if any, follows the receipts)."""
    count = 0
    for signal_id, kind in await store.outbox.pending_fanouts(recorded_before):
        signal, outcome = await store.signals.get_signal(signal_id), await store.signals.get_outcome(signal_id)
        update = (await store.signals.updates([signal_id])).get(signal_id) if kind is DeliveryKind.UPDATE else None
        if signal is None or (kind is DeliveryKind.EXIT) == (outcome is None) \
                or (kind is DeliveryKind.UPDATE and update is None):
            await store.outbox.fanout_done(signal_id, kind)
            continue
        if kind is DeliveryKind.SIGNAL:
            await notifier.on_signal_issued(SignalIssued(signal))
        elif kind is DeliveryKind.UPDATE:
            assert update is not None
            await notifier.on_signal_updated(SignalUpdated(signal, update))
        else:
            assert outcome is not None
            await notifier.on_signal_closed(SignalClosed(signal, outcome))
        count += 1
    return count
