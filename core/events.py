"""In-process domain events. Events are frozen; a failing handler never stops the others."""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.domain import Signal, SignalOutcome, SignalUpdate

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SignalIssued:
    signal: Signal


@dataclass(frozen=True, slots=True)
class SignalClosed:
    signal: Signal
    outcome: SignalOutcome


@dataclass(frozen=True, slots=True)
class SignalUpdated:
    """The evidence behind an open signal changed (core.thesis); stored before it is published."""

    signal: Signal
    update: SignalUpdate


@dataclass(frozen=True, slots=True)
class StrategyPaused:
    """A scope's strategy breaker tripped ("pause") or resumed ("resume"); `reason` is in plain words."""

    scope: str
    asset_class: str
    kind: str  # "trip" or "resume"
    reason: str
    at: datetime


Handler = Callable[[Any], Awaitable[object]]


class EventBus:
    def __init__(self) -> None:
        self._handlers: dict[type, list[Handler]] = defaultdict(list)

    def subscribe(self, event_type: type, handler: Handler) -> None:
        self._handlers[event_type].append(handler)

    async def publish(self, event: object) -> None:
        for handler in list(self._handlers[type(event)]):
            try:
                await handler(event)
            except Exception:  # isolation: one subscriber's bug must not starve the others
                log.exception("event handler %s failed on %s", getattr(handler, "__qualname__", handler), type(event).__name__)
