"""Provider failures and the one retry policy every market-data adapter shares (the failure vocabulary, the
breaker and Retry-After parsing are core.resilience's).

Adapters translate their vendor's errors at the edge into the classes below (all MarketDataError):

- `ProviderUnavailableError`: worth retrying: a timeout, a connection failure, an HTTP 5xx.
- `RateLimitedError`: HTTP 429 (or the vendor's equivalent); retried after ``retry_after`` seconds
  when the server said how long (Retry-After), else after the policy's back-off.
- `ProviderRequestError`: the request itself is wrong (other 4xx): retrying cannot help.
- `DataValidationError` (core.errors): a malformed payload: retrying the same request returns the
  same bytes, so it is not retried either.

`RetryPolicy.run` retries only the first two, with capped exponential back-off and jitter. It sits
around one network request inside an adapter, where the SDK has no retries of its own (yfinance's
and ccxt's are left at their default of none), so retries are never stacked. The router above the
adapters does not retry: it fails over to the next provider.
"""
from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from core.errors import MarketDataError
from core.resilience import BadRequest, RateLimited, Unavailable, backoff, parse_retry_after

logger = logging.getLogger(__name__)
T = TypeVar("T")


class ProviderUnavailableError(MarketDataError, Unavailable):
    """A transient failure: timeout, connection refused or reset, HTTP 5xx. Retryable."""


class RateLimitedError(ProviderUnavailableError, RateLimited):
    """The provider asked us to slow down (HTTP 429). `retry_after` in seconds when it said."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProviderRequestError(MarketDataError, BadRequest):
    """The provider refused the request (HTTP 4xx other than 429). Not retryable."""


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, ProviderUnavailableError)


def error_for_status(status: int, message: str, retry_after: str | None = None) -> MarketDataError:
    """The error class for an HTTP failure status."""
    if status == 429:
        return RateLimitedError(f"rate limited (HTTP 429): {message}", parse_retry_after(retry_after))
    if status >= 500 or status == 408:
        return ProviderUnavailableError(f"HTTP {status}: {message}")
    return ProviderRequestError(f"HTTP {status}: {message}")


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """Retry transient provider failures: at most `max_attempts` tries in all.

    Delay before try n+1 is ``min(max_delay, base_delay * 2**(n-1))`` with +/- `jitter` (a fraction),
    or the server's Retry-After when it gave one. A Retry-After longer than `max_retry_after` is not
    waited for: the error is raised at once so the router can fail over instead of stalling."""

    max_attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 30.0
    jitter: float = 0.1
    sleep: Callable[[float], Awaitable[None]] = field(default=_sleep, compare=False)

    def delay_for(self, exc: BaseException, attempt: int) -> float | None:
        """Seconds to wait after failed try number `attempt` (1-based), or None: do not retry."""
        if not is_retryable(exc) or attempt >= self.max_attempts:
            return None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return float(retry_after) if retry_after <= self.max_retry_after else None
        delay = backoff(attempt, self.base_delay, self.max_delay)
        return max(0.0, delay * (1 + random.uniform(-self.jitter, self.jitter)))

    async def run(self, call: Callable[[], Awaitable[T]], *, what: str = "request") -> T:
        """Await `call()` until it succeeds, the error is not retryable, or the tries run out."""
        attempt = 1
        while True:
            try:
                return await call()
            except MarketDataError as exc:
                delay = self.delay_for(exc, attempt)
                if delay is None:
                    raise
                logger.warning("%s failed (try %d of %d): %s; retrying in %.2fs", what, attempt,
                               self.max_attempts, exc, delay)
                await self.sleep(delay)
                attempt += 1


NO_RETRY = RetryPolicy(max_attempts=1)
