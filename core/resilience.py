"""Resilience shared by every adapter that calls out (market data, LLMs): the circuit breaker, the Retry-After
header, and one vocabulary of failures that says what a caller may do about them.

- `Unavailable`: transient (a timeout, a connection failure, a 5xx): worth trying again later, or elsewhere.
- `RateLimited`: the provider asked us to slow down (429); `retry_after` in seconds when it said.
- `BadRequest`: the request itself is wrong (another 4xx): trying again cannot help.

The domain errors are these as well as their own family (core.market_data.retry's `ProviderUnavailableError` is a
`MarketDataError` and `Unavailable`; core.llm's `AnalystRateLimitedError` an `AnalystError` and `RateLimited`), so
a caller that knows the domain catches the domain's class and code that only cares whether to retry tests the
vocabulary. Retry policies stay with their callers: around one request, in the adapter
(core.market_data.retry.RetryPolicy), and between persisted delivery attempts (bot.delivery.retry.RetryPolicy):
one waits in-process for seconds and honours Retry-After, the other schedules a stored row's next attempt minutes
away; both back off exponentially with jitter.
"""
from __future__ import annotations

import enum
import logging
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

from core.clock import Clock, SystemClock

logger = logging.getLogger(__name__)


class Unavailable(Exception):
    """A transient failure: retryable."""


class RateLimited(Unavailable):
    """Asked to slow down. `retry_after` (seconds) when the provider said how long."""

    retry_after: float | None = None


class BadRequest(Exception):
    """The request itself was refused: not retryable."""


def backoff(attempt: int, base: float, ceiling: float) -> float:
    """Exponential back-off before jitter: `base` after the first failed attempt, doubling, at most `ceiling`."""
    return min(ceiling, base * 2.0 ** max(attempt - 1, 0))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None if absent/invalid."""
    if value is None or not str(value).strip():
        return None
    text = str(value).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """Consecutive-failure circuit breaker with a timed half-open probe."""

    def __init__(self, name: str, *, failure_threshold: int = 3, cooldown: timedelta = timedelta(seconds=60),
                 clock: Clock | None = None) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        self.name = name
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self.clock = clock or SystemClock()
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened_at: datetime | None = None
        self._probing = False

    def allow(self) -> bool:
        """May a call go to the provider now? Moves open -> half-open once the cool-down is over."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            assert self.opened_at is not None
            if self.clock.now() - self.opened_at < self.cooldown:
                return False
            self.state = BreakerState.HALF_OPEN
            logger.info("breaker %s: half-open, probing", self.name)
        if self._probing:
            return False  # one probe at a time
        self._probing = True
        return True

    def record_success(self) -> None:
        if self.state is not BreakerState.CLOSED:
            logger.info("breaker %s: closed (probe succeeded)", self.name)
        self.state, self.failures, self.opened_at, self._probing = BreakerState.CLOSED, 0, None, False

    def record_failure(self) -> None:
        self._probing = False
        if self.state is BreakerState.HALF_OPEN:
            self._open("probe failed")
            return
        self.failures += 1
        if self.failures >= self.failure_threshold and self.state is BreakerState.CLOSED:
            self._open(f"{self.failures} consecutive failures")

    def release(self) -> None:
        """The call ended without a verdict (cancelled): let the next call probe."""
        self._probing = False

    def _open(self, why: str) -> None:
        self.state, self.opened_at = BreakerState.OPEN, self.clock.now()
        logger.warning("breaker %s: open (%s); next probe after %s", self.name, why, self.cooldown)
