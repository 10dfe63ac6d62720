"""Clocks. Everything that asks "what time is it" asks a Clock, so a replay or a test controls time."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, tz-aware UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class AcceleratedClock:
    """Starts at `start` and runs `speed` times faster than the wall clock (speed 3600: an hour a second)."""

    def __init__(self, start: datetime, speed: float = 1.0) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be tz-aware")
        if speed <= 0:
            raise ValueError("speed must be positive")
        self._start = start.astimezone(timezone.utc)
        self._speed = speed
        self._wall0 = time.monotonic()

    @property
    def speed(self) -> float:
        return self._speed

    def now(self) -> datetime:
        return self._start + timedelta(seconds=(time.monotonic() - self._wall0) * self._speed)


class FixedClock:
    """A clock for tests: stays where it is put."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at

    def advance(self, delta: timedelta) -> None:
        self.at = self.at + delta
