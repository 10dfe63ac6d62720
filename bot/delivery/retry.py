"""When to try a failed delivery again: exponential backoff with jitter (core.resilience.backoff), and when to give
up. (Not core.market_data.retry.RetryPolicy: that one waits in-process around one request; this one schedules a
stored row's next attempt.)"""
from __future__ import annotations

import random
from dataclasses import dataclass

from core.resilience import backoff


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5  # attempts that reached the platform (a RetryAfter pause is not one)
    base_seconds: float = 2.0  # the delay after the first failed attempt, before jitter
    max_seconds: float = 300.0
    jitter: float = 0.5  # the delay is drawn from [(1 - jitter) * d, d]: retries of a burst spread out

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_seconds < 0 or self.max_seconds < self.base_seconds:
            raise ValueError("need 0 <= base_seconds <= max_seconds")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be within [0, 1]")

    def gives_up(self, attempts: int) -> bool:
        return attempts >= self.max_attempts

    def delay(self, attempts: int, rng: random.Random) -> float:
        """Seconds to wait after the `attempts`-th failed attempt (1, 2, ...)."""
        ceiling = backoff(attempts, self.base_seconds, self.max_seconds)
        return ceiling * (1.0 - self.jitter * rng.random())
