"""Strategy breaker: a scope whose closed signals cross a preset limit stops issuing until its shadow signals recover.

A scope is a string key, `scope_of(strategy, asset_class)` ("trend/crypto"). Per scope:

- Equity is compounded from live (delivered) closed signals only: `equity *= 1 + weight * net_return`, from 1
  (floored at 0), where `weight` is the signal's position size. It is what a follower holding each signal at its
  suggested size would have made or lost on this scope alone. `drawdown = equity / peak - 1` (<= 0).
- It trips after a live record when `drawdown <= -max_drawdown` (a 1e-12 tolerance lets an exact hit count), or,
  once at least `window` live signals closed, when the mean net return of the last `window` is below
  `min_expectancy`. Drawdown is tested first; the reason names the one that tripped it.
- While tripped, its candidates are followed as shadow signals: tracked, never delivered, never in the track
  record's money figures. Live signals issued before the trip may still close: they count in equity (and the
  window) but neither re-trip nor resume it. It resumes after a shadow record when at least `resume_after` shadow
  signals closed since the trip and their mean net return exceeds `resume_expectancy`. On resume the peak resets to
  the current equity (an old drawdown cannot re-trip at once), the window is cleared and the shadow tally reset.
- Shadow records that arrive while it is not tripped are ignored (counted in `ignored_shadow` only).

Pure and deterministic: no I/O, no clock; every call carries its time. `record` is O(window), `allows` O(1).

No look-ahead: the breaker knows only what has been recorded. Before asking `allows(scope, t)` a caller must
record, in closed_at order, every close of that scope at or before t (a signal closing at t is known at t), and
nothing after t. `record` raises ValueError on a close older than the scope's last one; `allows(scope, at)` raises
when `at` is older than it (the answer would use a close from the future).
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

_EPS = 1e-12
Cause = Literal["drawdown", "expectancy", "recovery"]


def scope_of(strategy: str, asset_class: str) -> str:
    """The breaker's key for a strategy family on an asset class: "trend/crypto"."""
    return f"{strategy}/{asset_class}"


@dataclass(frozen=True, slots=True)
class BreakerLimits:
    """Limits set in advance. `min_expectancy=-math.inf` turns the expectancy test off."""

    max_drawdown: float = 0.15  # trips when equity falls this fraction from its peak
    window: int = 30  # rolling expectancy over the last `window` live closes
    min_expectancy: float = 0.0  # trips when that mean net return is below this (once `window` closed)
    resume_after: int = 10  # shadow closes needed since the trip before it can resume
    resume_expectancy: float = 0.0  # ...and their mean net return must be above this

    def __post_init__(self) -> None:
        if not 0 < self.max_drawdown <= 1:
            raise ValueError(f"max_drawdown must be in (0, 1], not {self.max_drawdown}")
        if self.window < 1 or self.resume_after < 1:
            raise ValueError("window and resume_after must be at least 1")


SERVICE_LIMITS = BreakerLimits(max_drawdown=0.15, window=50, min_expectancy=0.0, resume_after=10)
"""The limits the service and its backtests use, set before any run: a scope pauses when a follower of its
signals alone is 15 % below their peak, or when its last 50 closed signals lost on average after costs; it
resumes when 10 shadow signals since the pause made money on average."""


@dataclass(frozen=True, slots=True)
class BreakerState:
    scope: str
    tripped: bool
    since: datetime | None  # when it tripped (None: issuing)
    reason: str  # plain words for a subscriber
    equity: float
    peak: float
    drawdown: float  # equity / peak - 1, <= 0
    rolling_expectancy: float | None  # mean net return of the last `window` live closes (fewer if fewer; None: none)
    live_closed: int
    shadow_closed: int  # since the trip
    shadow_mean: float | None
    ignored_shadow: int  # shadow records received while issuing


@dataclass(frozen=True, slots=True)
class BreakerEvent:
    """A trip or a resume, with the figures that decided it (before a resume resets them)."""

    scope: str
    at: datetime
    kind: Literal["trip", "resume"]
    cause: Cause
    reason: str
    equity: float
    drawdown: float
    rolling_expectancy: float | None
    shadow_closed: int
    shadow_mean: float | None


@dataclass(slots=True)
class _Book:
    limits: BreakerLimits
    recent: deque[float]
    equity: float = 1.0
    peak: float = 1.0
    live_closed: int = 0
    last: datetime | None = None
    since: datetime | None = None
    reason: str = "issuing"
    shadow_closed: int = 0
    shadow_sum: float = 0.0
    ignored_shadow: int = 0

    @property
    def drawdown(self) -> float:
        return self.equity / self.peak - 1.0 if self.peak > 0 else 0.0

    @property
    def rolling(self) -> float | None:
        return math.fsum(self.recent) / len(self.recent) if self.recent else None

    @property
    def shadow_mean(self) -> float | None:
        return self.shadow_sum / self.shadow_closed if self.shadow_closed else None


class StrategyBreaker:
    def __init__(self, limits: BreakerLimits | Mapping[str, BreakerLimits] | None = None) -> None:
        """One set of limits for every scope, or a mapping by scope whose "*" entry is the default."""
        if limits is None or isinstance(limits, BreakerLimits):
            self._limits: dict[str, BreakerLimits] = {"*": limits or BreakerLimits()}
        else:
            if "*" not in limits:
                raise ValueError('per-scope limits need a "*" default')
            self._limits = dict(limits)
        self._books: dict[str, _Book] = {}
        self._history: list[BreakerEvent] = []

    def limits(self, scope: str) -> BreakerLimits:
        return self._limits.get(scope, self._limits["*"])

    def record(self, scope: str, closed_at: datetime, net_return: float, weight: float, shadow: bool) -> None:
        """A signal of the scope closed with `net_return` (fraction, after costs) at position size `weight`."""
        if not (math.isfinite(net_return) and math.isfinite(weight) and weight >= 0):
            raise ValueError(f"net_return and weight must be finite, weight >= 0 (got {net_return}, {weight})")
        b = self._book(scope)
        if b.last is not None and closed_at < b.last:
            raise ValueError(f"{scope}: close at {closed_at} is older than the last recorded one ({b.last})")
        b.last = closed_at
        lim = b.limits
        if shadow:
            if b.since is None:
                b.ignored_shadow += 1
                return
            b.shadow_closed += 1
            b.shadow_sum += net_return
            mean = b.shadow_sum / b.shadow_closed
            if b.shadow_closed >= lim.resume_after and mean > lim.resume_expectancy:
                reason = (f"resumed on {closed_at.date()}: since the pause on {b.since.date()}, {b.shadow_closed} of "
                          f"{_label(scope)}, followed as shadows, averaged {_pct(mean)} after costs")
                self._event(scope, b, closed_at, "resume", "recovery", reason)
                b.since, b.reason, b.peak = None, "issuing", b.equity
                b.recent.clear()
                b.shadow_closed, b.shadow_sum = 0, 0.0
            return
        b.equity = max(0.0, b.equity * (1.0 + weight * net_return))
        b.peak = max(b.peak, b.equity)
        b.live_closed += 1
        b.recent.append(net_return)
        if b.since is not None:
            return
        if b.drawdown <= -lim.max_drawdown + _EPS:
            why = f"{_label(scope)} fell {-b.drawdown * 100:.1f} % from their peak"
            self._trip(scope, b, closed_at, "drawdown", why)
        elif len(b.recent) >= lim.window and (m := math.fsum(b.recent) / len(b.recent)) < lim.min_expectancy:
            why = (f"{_label(scope)} averaged {_pct(m)} after costs over their last {lim.window} closes "
                   f"(the floor is {_pct(lim.min_expectancy)})")
            self._trip(scope, b, closed_at, "expectancy", why)

    def state(self, scope: str) -> BreakerState:
        b = self._books.get(scope) or self._new(scope)
        return BreakerState(scope, b.since is not None, b.since, b.reason, b.equity, b.peak, b.drawdown, b.rolling,
                            b.live_closed, b.shadow_closed, b.shadow_mean, b.ignored_shadow)

    def allows(self, scope: str, at: datetime | None = None) -> bool:
        """Whether the scope may issue at `at`, given every close recorded so far (see the module's note)."""
        b = self._books.get(scope)
        if b is None:
            return True
        if at is not None and b.last is not None and at < b.last:
            raise ValueError(f"{scope}: asked at {at}, but a close at {b.last} is already recorded (look-ahead)")
        return b.since is None

    def scopes(self) -> list[str]:
        """Every scope recorded so far."""
        return sorted(self._books)

    def history(self) -> list[BreakerEvent]:
        """Every trip and resume, in the order they happened."""
        return list(self._history)

    def _book(self, scope: str) -> _Book:
        if (b := self._books.get(scope)) is None:
            b = self._books[scope] = self._new(scope)
        return b

    def _new(self, scope: str) -> _Book:
        lim = self.limits(scope)
        return _Book(lim, deque(maxlen=lim.window))

    def _trip(self, scope: str, b: _Book, at: datetime, cause: Cause, why: str) -> None:
        lim = b.limits
        above = lim.resume_expectancy
        floor = "a positive average" if above == 0 else f"an average above {_pct(above)}"
        b.since = at
        b.reason = (f"paused since {at.date()}: {why}; it resumes when {lim.resume_after} shadow signals show "
                    f"{floor} after costs")
        self._event(scope, b, at, "trip", cause, b.reason)

    def _event(self, scope: str, b: _Book, at: datetime, kind: Literal["trip", "resume"], cause: Cause,
               reason: str) -> None:
        self._history.append(BreakerEvent(scope, at, kind, cause, reason, b.equity, b.drawdown, b.rolling,
                                          b.shadow_closed, b.shadow_mean))


def _label(scope: str) -> str:
    """ "trend/crypto" -> "the trend family's crypto signals"."""
    strategy, _, asset = scope.partition("/")
    strategy = strategy.replace("_", " ")
    return f"the {strategy} family's {asset} signals" if asset else f"the {strategy} signals"


def _pct(x: float) -> str:
    return f"{x * 100:+.2f} %"
