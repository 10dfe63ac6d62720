"""Delivery worker: sends what the outbox holds for one channel, records every attempt.

Per batch: claim due rows (higher tiers first), load their users, signals and outcomes in bulk, send with up to
`concurrency` messages in flight, and record each result as soon as it is known (results that arrive while a
write is running are written together: a group commit, one transaction per group).

Failures (core.errors.DeliveryError):
  retry_after set  -> the whole channel pauses that long (the platform's flood limit is bot-wide); the row waits
                      for the pause and the attempt is not counted
  permanent        -> FAILED; the channel is told the address is unreachable (a chat user who blocked the bot is
                      unsubscribed and their pending rows cancelled; an email/webhook address is removed)
  anything else    -> PENDING again at now + backoff with jitter (stored in not_before), FAILED ("gave up")
                      after the policy's max attempts

Exactly once: a row is SENDING from its claim until its result is written. Cancelling the worker lets every
send in flight finish and be recorded, and returns the rows not started yet to the queue. A result whose write
fails (the database locked, read-only, full) is kept and written before the worker claims anything new. Only a
hard stop (the process killed) between a send and its write, or while such results wait, leaves a SENDING row
whose message may have gone out; `requeue_stale_sending()` at the next start sends it again. That window is the send
in flight plus one group commit, and cannot be closed: chat platforms take no idempotency key.

Messages in parts (a chart, then the text; a long text in several messages): a transport that stops part-way
says how many parts went out (DeliveryError.parts_sent, first_ref); that is recorded with the attempt's result
(storage's delivery_parts, same transaction) and the retry sends only the parts after them, answering with the
first part's reference. The split is recorded too: a retry whose chart cannot be had this time (a restart, a
failing provider) no longer splits like the first attempt, so it sends every part rather than skip by count
(the text arrives; the chart's caption may repeat), and one whose first parts went out as text stays text. Only
a hard stop between a part and the record, or a platform that took a part but answered after the client's read
timeout, can double that part.

Charts: given a `chart` provider (bot.views.signal_chart.SignalCharts for the chat transports), a signal goes
out with its chart to users whose tier includes charts (core.tiers.has_feature(tier, "charts")); exits never
carry one. The provider is asked once per signal (the answer, an Image or None, is kept for the last
CHART_CACHE signals) and at most `chart_timeout` seconds; a provider that fails or is late costs a warning and
the message goes out as text (the failure is kept as None too: that signal's later rows are not held up again).
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.delivery.channel import Address, Channel, ChatChannel, Outgoing
from bot.delivery.retry import RetryPolicy
from bot.transports.base import Resume, Transport
from bot.views.doc import Doc, Image
from bot.views.signals import exit_doc, signal_doc, update_doc
from core.clock import Clock
from core.domain import (Delivery, DeliveryKind, DeliveryStatus, DeliveryUpdate, RiskTolerance, Signal, SignalOutcome,
                         SignalStatus, User)
from core.errors import DeliveryError
from core.tiers import has_feature
from core.ports import Repositories

log = logging.getLogger(__name__)

ChartProvider = Callable[[Signal], Awaitable[Image | None]]
CHART_CACHE = 256  # signals whose chart (or its absence) a worker keeps


@dataclass(frozen=True, slots=True)
class _Planned:
    delivery: Delivery
    user: User
    address: Address
    message: Outgoing


class DeliveryWorker:
    def __init__(self, transport: Transport | Channel, store: Repositories, clock: Clock, *, batch: int = 50,
                 max_attempts: int = 5, poll_seconds: float = 1.0, concurrency: int = 1,
                 retry: RetryPolicy | None = None, rng: random.Random | None = None,
                 chart: ChartProvider | None = None, chart_timeout: float = 10.0,
                 market_clock: Clock | None = None) -> None:
        """`transport`: a chat transport (console, Telegram, Discord) or a Channel (email, webhook). `chart`: the
        image a signal is sent with to tiers that include charts (None: text only). `clock` is wall time (the
        queue: claims, back-off, the platform's pauses, sent_at); `market_clock` the signals' (whether one has
        expired; default: the same)."""
        if batch < 1 or concurrency < 1:
            raise ValueError("batch and concurrency must be at least 1")
        self.channel_impl: Channel = transport if isinstance(transport, Channel) else ChatChannel(transport, store)
        self.store = store
        self.clock = clock
        self.market_clock = market_clock or clock
        self.batch = batch
        self.retry = retry or RetryPolicy(max_attempts=max_attempts)
        self.poll_seconds = poll_seconds
        self.concurrency = concurrency
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._paused_until: datetime | None = None
        self._stopping = False
        self.on_result: Callable[[Delivery, DeliveryUpdate], None] | None = None  # metrics (bot/metrics.py)
        self._pending_writes: list[DeliveryUpdate] = []
        self._unrecorded: list[DeliveryUpdate] = []  # results whose write failed: written before anything new
        self._write_lock = asyncio.Lock()
        self.chart = chart
        self.chart_timeout = chart_timeout
        self._charts: OrderedDict[str, Image | None] = OrderedDict()

    @property
    def channel(self) -> str:
        return self.channel_impl.name

    @property
    def paused_until(self) -> datetime | None:
        """While the platform's RetryAfter lasts, the moment it ends; otherwise None."""
        if self._paused_until is not None and self._paused_until <= self.clock.now():
            self._paused_until = None
        return self._paused_until

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled. Messages being sent when cancellation comes are finished and recorded first."""
        try:
            await self._loop()
        except asyncio.CancelledError:
            if self._unrecorded:  # a last try: written now, those rows are not sent again at the next start
                with contextlib.suppress(Exception):
                    await self.store.outbox.record_attempts(list(self._unrecorded))
                    self._unrecorded.clear()
            raise

    async def _loop(self) -> None:
        while True:
            try:
                handled = await self.process_due()
            except Exception:  # the database failed: keep the worker alive, try again after a poll
                log.exception("delivery worker %s: processing the outbox failed", self.channel)
                handled = 0
            if handled:
                continue
            self._wake.clear()
            paused = self.paused_until
            if paused is not None:  # a wake-up cannot end the platform's pause; the clock may be a test's or sped up
                await asyncio.sleep(min(self.poll_seconds, max(0.0, (paused - self.clock.now()).total_seconds())))
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
            except TimeoutError:
                pass

    async def process_due(self) -> int:
        """Claim one batch of due rows and deliver it; the number of rows claimed (0 while paused).

        Cancelled at any point, it still finishes the batch's bookkeeping: sends in flight complete and are
        recorded, claimed rows not sent yet go back to the queue with their attempt refunded."""
        self._stopping = False
        batch = asyncio.ensure_future(self._process_batch())
        try:
            return await asyncio.shield(batch)
        except asyncio.CancelledError:
            self._stopping = True
            with contextlib.suppress(Exception):
                await batch
            raise

    async def _process_batch(self) -> int:
        if self._unrecorded:  # the database failed while recording: nothing new is claimed until they are written
            group = list(self._unrecorded)
            await self.store.outbox.record_attempts(group)
            del self._unrecorded[:len(group)]
            log.warning("delivery worker %s: %d results recorded late (the database had failed)", self.channel,
                        len(group))
        if self.paused_until is not None:
            return 0
        due = await self.store.outbox.claim_due(self.channel, self.clock.now(), self.batch)
        if not due:
            return 0
        try:
            planned = await self._plan(due)
        except Exception:  # nothing was sent: give the batch back rather than leave it SENDING until a restart
            back = [DeliveryUpdate(d.id, DeliveryStatus.PENDING, refund_attempt=True) for d in due]
            try:
                await self.store.outbox.record_attempts(back)
            except Exception:  # the database is down: written before anything new is claimed
                self._unrecorded.extend(back)
            raise
        slots = asyncio.Semaphore(self.concurrency)
        results = await asyncio.gather(*(self._attempt(p, slots) for p in planned), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result  # recording failed: those rows stay SENDING until requeue_stale_sending()
        return len(due)

    # -- one batch ------------------------------------------------------------------------------------
    async def _plan(self, due: Sequence[Delivery]) -> list[_Planned]:
        """Load what the batch needs in bulk; rows that cannot be sent are recorded SKIPPED here."""
        users = await self.store.users.users_by_ids({d.user_id for d in due})
        signals: dict[str, Signal | None] = {}
        outcomes: dict[str, SignalOutcome | None] = {}
        for signal_id in sorted({d.signal_id for d in due}):
            signals[signal_id] = await self.store.signals.get_signal(signal_id)
            outcomes[signal_id] = await self.store.signals.get_outcome(signal_id)
        updated = sorted({d.signal_id for d in due if d.kind is DeliveryKind.UPDATE})
        updates = await self.store.signals.updates(updated) if updated else {}
        ruled = [i for i, o in outcomes.items() if o is not None and o.status is SignalStatus.EXIT]
        reasons = {i: why for i, (_, why) in (await self.store.signals.exit_requests(ruled)).items()} if ruled else {}
        active = [u for u in users.values() if u.active]
        addresses = await self.channel_impl.addresses(active) if active else {}
        now = self.market_clock.now()
        sendable: list[tuple[Delivery, User, Signal, SignalOutcome | None, bool]] = []
        skipped: list[DeliveryUpdate] = []
        for d in due:
            user, signal, outcome = users.get(d.user_id), signals[d.signal_id], outcomes[d.signal_id]
            reason = _skip_reason(d, user, signal, outcome, addresses.get(d.user_id), now,
                                  d.signal_id in updates)
            if reason is not None:
                skipped.append(DeliveryUpdate(d.id, DeliveryStatus.SKIPPED, error=reason))
                continue
            assert user is not None and signal is not None
            charted = self.chart is not None and d.kind is DeliveryKind.SIGNAL and has_feature(user.tier, "charts")
            sendable.append((d, user, signal, outcome, charted))
        images = await self._charts_of({s.id: s for _, _, s, _, charted in sendable if charted})
        retried = [d.id for d, *_ in sendable if d.error is not None]  # every failed attempt leaves its error
        parts = await self.store.outbox.delivery_parts(retried) if retried else {}
        docs: dict[tuple[str, DeliveryKind, RiskTolerance, bool], Doc] = {}
        planned: list[_Planned] = []
        for d, user, signal, outcome, charted in sendable:
            progress = parts.get(d.id)
            image = images.get(signal.id) if charted else None
            if progress is not None and progress[2].startswith("text"):
                image = None  # its first parts went out as text: the rest follows in that shape, not re-split
            key = (signal.id, d.kind, user.preferences.risk, image is not None)
            doc = docs.get(key)
            if doc is None:
                if d.kind is DeliveryKind.EXIT and outcome is not None:
                    doc = exit_doc(signal, outcome, reasons.get(signal.id))
                elif d.kind is DeliveryKind.UPDATE:
                    doc = update_doc(signal, updates[signal.id])
                else:
                    doc = signal_doc(signal, user.preferences.risk)
                docs[key] = doc = doc if image is None else dataclasses.replace(doc, image=image)
            message = Outgoing(d.id, d.kind, signal, outcome if d.kind is DeliveryKind.EXIT else None, doc, d.reply_to,
                               user.preferences.risk, Resume(*progress) if progress else None,
                               updates.get(signal.id) if d.kind is DeliveryKind.UPDATE else None)
            planned.append(_Planned(d, user, addresses[d.user_id], message))
        if skipped:
            await self.store.outbox.record_attempts(skipped)
        return planned

    async def _charts_of(self, wanted: dict[str, Signal]) -> dict[str, Image | None]:
        """Each wanted signal's chart (None: none could be had), from the worker's cache or the provider (the
        signals the cache lacks asked at once)."""
        found: dict[str, Image | None] = {}
        missing: list[Signal] = []
        for signal_id, signal in wanted.items():
            if signal_id in self._charts:
                self._charts.move_to_end(signal_id)
                found[signal_id] = self._charts[signal_id]
            else:
                missing.append(signal)
        if missing:
            for signal, image in zip(missing, await asyncio.gather(*(self._ask_chart(s) for s in missing)),
                                     strict=True):
                found[signal.id] = self._charts[signal.id] = image
            while len(self._charts) > CHART_CACHE:
                self._charts.popitem(last=False)
        return found

    async def _ask_chart(self, signal: Signal) -> Image | None:
        assert self.chart is not None
        try:
            async with asyncio.timeout(self.chart_timeout):
                return await self.chart(signal)
        except Exception as exc:  # a chart is a nicety: the signal goes out without it, at once
            log.warning("delivery worker %s: no chart for signal %s, sending the text alone (%s: %s)",
                        self.channel, signal.id, type(exc).__name__, exc)
            return None

    async def _attempt(self, p: _Planned, slots: asyncio.Semaphore) -> None:
        async with slots:
            paused = self.paused_until
            if self._stopping or paused is not None:  # not sent: back to the queue, the attempt not counted
                update = DeliveryUpdate(p.delivery.id, DeliveryStatus.PENDING, not_before=paused, refund_attempt=True)
            else:
                update = await self._send(p)
        if self.on_result is not None:
            self.on_result(p.delivery, update)
        await self._record(update)

    async def _send(self, p: _Planned) -> DeliveryUpdate:
        d = p.delivery
        try:
            ref = await self.channel_impl.deliver(p.address, p.message)
        except DeliveryError as exc:
            update = await self._failed(p, exc)
            if exc.parts_sent > 0:  # part of it went out: recorded with the result, the retry sends the rest
                update = dataclasses.replace(update, parts_sent=exc.parts_sent, first_ref=exc.first_ref,
                                             layout=exc.layout)
            return update
        except Exception as exc:  # a transport bug: record it as a transient failure, keep the worker alive
            log.exception("channel %s crashed on delivery %s", self.channel, d.id)
            return await self._failed(p, DeliveryError(f"{type(exc).__name__}: {exc}"))
        return DeliveryUpdate(d.id, DeliveryStatus.SENT, message_ref=ref, sent_at=self.clock.now())

    async def _failed(self, p: _Planned, exc: DeliveryError) -> DeliveryUpdate:
        d, now, error = p.delivery, self.clock.now(), str(exc)
        if exc.retry_after is not None:
            until = now + timedelta(seconds=max(exc.retry_after, 0.0))
            if self._paused_until is None or until > self._paused_until:
                self._paused_until = until
                log.warning("channel %s paused for %.1f s (the platform asked: %s)", self.channel, exc.retry_after,
                            error)
            return DeliveryUpdate(d.id, DeliveryStatus.PENDING, error=error, not_before=until, refund_attempt=True)
        if exc.permanent:
            log.info("channel %s: user %s unreachable (%s)", self.channel, d.user_id, error)
            await self.channel_impl.unreachable(p.user, error)
            return DeliveryUpdate(d.id, DeliveryStatus.FAILED, error=error)
        if self.retry.gives_up(d.attempts):
            log.warning("channel %s: gave up on delivery %s after %d attempts: %s", self.channel, d.id, d.attempts,
                        error)
            return DeliveryUpdate(d.id, DeliveryStatus.FAILED, error=f"gave up after {d.attempts} attempts: {error}")
        retry_at = now + timedelta(seconds=self.retry.delay(d.attempts, self._rng))
        return DeliveryUpdate(d.id, DeliveryStatus.PENDING, error=error, not_before=retry_at)

    async def _record(self, update: DeliveryUpdate) -> None:
        """Group commit: whoever gets the lock writes every result waiting, its own included."""
        self._pending_writes.append(update)
        async with self._write_lock:
            if not self._pending_writes:
                return  # an earlier writer took ours along
            group, self._pending_writes = self._pending_writes, []
            try:
                await self.store.outbox.record_attempts(group)
            except Exception:  # kept, and written at the next batch: the rows are not sent again after a restart
                self._unrecorded.extend(group)
                raise


def _skip_reason(d: Delivery, user: User | None, signal: Signal | None, outcome: SignalOutcome | None,
                 address: Address | None, now: datetime, has_update: bool) -> str | None:
    if user is None or not user.active:
        return "user inactive"
    if signal is None:
        return "signal missing"
    if d.kind is DeliveryKind.EXIT:
        if outcome is None:
            return "no outcome recorded"
    elif d.kind is DeliveryKind.UPDATE and not has_update:
        return "no update recorded"
    elif d.kind is DeliveryKind.UPDATE and outcome is not None:
        return "signal closed before its update could be sent (its exit says how)"
    elif outcome is not None:
        return "signal closed before it could be delivered (quiet hours)"
    elif signal.expires_at <= now:
        return "signal expired before it could be delivered"
    if address is None:
        return f"no {d.channel} address"
    return None
