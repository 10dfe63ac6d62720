"""The alert rules of scripts/prometheus/alerts.yml, raised to the admins in chat as well (a leader-only job,
every minute): slow signal generation, a job failing again and again, a circuit breaker open for long, an outbox
backlog, a champion model whose measured skill fell below the threshold, no leader is moot here (the job runs on
the leader). Each condition is told once when it starts and once when it clears, to every configured admin
(`SIGNALBOT_ADMINS`) who has used the bot, and logged at WARNING either way.
"""
from __future__ import annotations

import logging
import statistics
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bot.metrics import breaker_states, model_aucs
from bot.views.doc import Doc
from core.clock import Clock
from core.domain import DeliveryStatus
from core.resilience import BreakerState

if TYPE_CHECKING:
    from bot.services import Services

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Limits:
    """The same thresholds as alerts.yml."""

    slow_scan_seconds: float = 5.0  # 95th percentile of the last scans (the seed: generation under 5 s)
    job_failures: int = 3  # consecutive failed runs of one job
    breaker_open: timedelta = timedelta(minutes=10)
    backlog_rows: int = 5000
    backlog_age: timedelta = timedelta(minutes=15)  # the oldest due row
    min_auc: float = 0.52


class ChatAlerts:
    def __init__(self, services: Services, notify: Callable[[Doc], Awaitable[int]], clock: Clock,
                 limits: Limits | None = None) -> None:
        """`notify(doc)`: sends to the admins, returns how many got it. `clock`: wall time."""
        self.services, self._notify, self.clock = services, notify, clock
        self.limits = limits or Limits()
        self._scans: deque[float] = deque(maxlen=20)
        self._failures: dict[str, int] = {}
        self._open_since: dict[tuple[str, str], datetime] = {}
        self.firing: dict[str, str] = {}  # condition -> what was said

    def job_ran(self, name: str, seconds: float, ok: bool) -> None:
        """The scheduler's observer (beside the metrics)."""
        if name == "scan" and ok:
            self._scans.append(seconds)
        self._failures[name] = 0 if ok else self._failures.get(name, 0) + 1

    async def conditions(self) -> dict[str, str]:
        """Every condition that holds now -> its description."""
        now, lim, out = self.clock.now(), self.limits, {}
        if len(self._scans) >= 5:
            p95 = statistics.quantiles(self._scans, n=20, method="inclusive")[18]
            if p95 > lim.slow_scan_seconds:
                out["slow-scans"] = (f"signal generation is slow: 95 % of the last {len(self._scans)} scans took up "
                                     f"to {p95:.1f} s (limit {lim.slow_scan_seconds:.0f} s)")
        for job, n in sorted(self._failures.items()):
            if n >= lim.job_failures:
                out[f"job-{job}"] = f"the {job} job failed {n} times in a row"
        states = breaker_states(self.services)
        for key, state in states.items():
            if state is BreakerState.OPEN:
                since = self._open_since.setdefault(key, now)
                if now - since >= lim.breaker_open:
                    out[f"breaker-{key[0]}-{key[1]}"] = (f"{key[0]} {key[1]}: circuit breaker open for "
                                                         f"{(now - since).total_seconds() / 60:.0f} minutes")
            else:
                self._open_since.pop(key, None)
        count, oldest = await self.services.store.outbox.outbox_backlog(now)
        pending = (await self.services.store.outbox.delivery_counts()).get(DeliveryStatus.PENDING, 0)
        age = (now - oldest) if oldest is not None else timedelta(0)
        if pending > lim.backlog_rows or age > lim.backlog_age:
            out["outbox-backlog"] = (f"outbox backlog: {pending:,} deliveries pending, {count:,} due, the oldest "
                                     f"waiting {age.total_seconds() / 60:.0f} minutes")
        for model, auc in sorted(model_aucs(self.services).items()):
            if auc < lim.min_auc:
                out[f"model-{model}"] = f"model {model} votes with an out-of-sample AUC of {auc:.3f} (below {lim.min_auc})"
        return out

    async def check(self) -> list[str]:
        """Tell the admins what started and what cleared since the last check; the messages sent."""
        now = await self.conditions()
        said: list[str] = []
        for key, text in now.items():
            if key not in self.firing:
                said.append(f"Alert: {text}")
        for key, text in self.firing.items():
            if key not in now:
                said.append(f"Resolved: {text}")
        self.firing = now
        for text in said:
            log.warning("alert for the admins: %s", text)
            await self._notify(Doc(heading="Service alert", body=text))
        return said


def admin_notifier(services: Services) -> Callable[[Doc], Awaitable[int]]:
    """Sends a notice to every configured admin who is a known user (SIGNALBOT_ADMINS: `telegram:123,...`)."""

    async def notify(doc: Doc) -> int:
        sent = 0
        for admin in sorted(services.settings.admin_ids):
            platform, _, platform_id = admin.partition(":")
            user = await services.store.users.find_user(platform, platform_id)
            if user is not None and user.active:
                sent += await services.notices.send(user, doc)
        return sent

    return notify
