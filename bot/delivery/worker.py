"""Delivery worker: sends what the outbox holds for one channel, records every attempt."""
from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from bot.transports.base import Transport
from bot.views.doc import Doc
from bot.views.signals import exit_doc, signal_doc
from core.clock import Clock
from core.domain import Delivery, DeliveryKind, DeliveryStatus
from core.errors import DeliveryError

log = logging.getLogger(__name__)


class DeliveryWorker:
    def __init__(self, transport: Transport, store, clock: Clock, *, batch: int = 50, max_attempts: int = 5,  # noqa: ANN001
                 poll_seconds: float = 1.0) -> None:
        self.transport = transport
        self.store = store
        self.clock = clock
        self.batch = batch
        self.max_attempts = max_attempts
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()

    @property
    def channel(self) -> str:
        return self.transport.name

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled. A message being sent when cancellation comes is finished and recorded first."""
        while True:
            sent = await self.process_due()
            if sent == 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
                except TimeoutError:
                    pass

    async def process_due(self) -> int:
        due = await self.store.claim_due(self.channel, self.clock.now(), self.batch)
        for d in due:
            # A shutdown in the middle of a send still records what happened to that message; rows not
            # reached yet stay SENDING and requeue_stale_sending returns them to the queue at the next start.
            in_flight = asyncio.ensure_future(self._deliver(d))
            try:
                await asyncio.shield(in_flight)
            except asyncio.CancelledError:
                await in_flight
                raise
        return len(due)

    async def _deliver(self, d: Delivery) -> None:
        try:
            doc, user_chat = await self._compose(d)
        except _Skip as skip:
            await self.store.mark(d.id, DeliveryStatus.SKIPPED, error=str(skip))
            return
        try:
            ref = await self.transport.send(user_chat, doc, reply_to=d.reply_to)
        except DeliveryError as exc:
            await self._failed(d, exc)
            return
        except Exception as exc:  # a transport bug: record it, keep the worker alive
            log.exception("transport %s crashed on delivery %s", self.channel, d.id)
            await self._failed(d, DeliveryError(f"{type(exc).__name__}: {exc}"))
            return
        await self.store.mark(d.id, DeliveryStatus.SENT, message_ref=ref, sent_at=self.clock.now())

    async def _compose(self, d: Delivery) -> tuple[Doc, str]:
        user = await self.store.get_user(d.user_id)
        if user is None or not user.active:
            raise _Skip("user inactive")
        signal = await self.store.get_signal(d.signal_id)
        if signal is None:
            raise _Skip("signal missing")
        if d.kind is DeliveryKind.EXIT:
            outcome = await self.store.get_outcome(d.signal_id)
            if outcome is None:
                raise _Skip("no outcome recorded")
            return exit_doc(signal, outcome), user.chat_id
        if await self.store.get_outcome(d.signal_id) is not None:
            raise _Skip("signal closed before it could be delivered (quiet hours)")
        return signal_doc(signal, user.preferences.risk), user.chat_id

    async def _failed(self, d: Delivery, exc: DeliveryError) -> None:
        if exc.permanent:
            await self.store.mark(d.id, DeliveryStatus.FAILED, error=str(exc))
            await self.store.set_active(d.user_id, False)  # e.g. the user blocked the bot
            return
        if d.attempts >= self.max_attempts:
            await self.store.mark(d.id, DeliveryStatus.FAILED, error=str(exc))
            return
        delay = exc.retry_after if exc.retry_after is not None else min(300.0, 2.0 ** d.attempts)
        await self.store.mark(d.id, DeliveryStatus.PENDING, error=str(exc),
                              not_before=self.clock.now() + timedelta(seconds=delay))


class _Skip(Exception):
    pass
