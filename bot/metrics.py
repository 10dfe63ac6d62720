"""Prometheus metrics (prometheus-client), served at `GET /metrics` by the HTTP server.

Two kinds: what the process observes as it goes (histograms and counters: signal generation time, every job's
duration and failures, HTTP request durations, delivery latency from issue to send and delivery outcomes per
channel), and what is read from the database and the services when Prometheus scrapes (gauges: active signals,
outbox depth, subscribers per tier, revenue, the strategy breaker, provider and LLM breakers, LLM tokens and cost
today, the champion models' out-of-sample AUC, whether this process leads). Every process exports its own; the
database-wide gauges are the same in each (aggregate them with max, not sum). The alert rules over these
series are in scripts/prometheus/alerts.yml (unit-tested with promtool).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from collections.abc import Callable, Mapping

from core.clock import Clock
from core.domain import Delivery, DeliveryStatus, DeliveryUpdate
from core.resilience import BreakerState

if TYPE_CHECKING:
    from bot.leader import Leader
    from bot.services import Services

log = logging.getLogger(__name__)
CONTENT_TYPE = CONTENT_TYPE_LATEST
BREAKER_VALUE = {BreakerState.CLOSED: 0.0, BreakerState.HALF_OPEN: 1.0, BreakerState.OPEN: 2.0}
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)
SCAN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


@runtime_checkable
class HasBreakers(Protocol):
    """A market-data router (core.market_data.router.Router): one circuit breaker per provider."""

    breakers: dict[str, Any]


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.signal_generation = Histogram(
            "signalbot_signal_generation_seconds", "Time of one scan of every instrument and timeframe",
            buckets=SCAN_BUCKETS, registry=r)
        self.job_duration = Histogram("signalbot_job_duration_seconds", "Duration of one run of a scheduled job",
                                      ["job"], buckets=SCAN_BUCKETS, registry=r)
        self.job_failures = Counter("signalbot_job_failures", "Runs of a scheduled job that failed", ["job"],
                                    registry=r)
        self.http_duration = Histogram("signalbot_http_request_duration_seconds", "HTTP request duration",
                                       ["method", "route", "status"], buckets=HTTP_BUCKETS, registry=r)
        self.delivery_latency = Histogram(
            "signalbot_delivery_latency_seconds", "From a signal's issue (wall clock) to its delivery being sent",
            ["channel", "kind"], buckets=LATENCY_BUCKETS, registry=r)
        self.deliveries = Counter("signalbot_deliveries", "Delivery attempts by outcome", ["channel", "status"],
                                  registry=r)
        self.active_signals = Gauge("signalbot_active_signals", "Signals open now", registry=r)
        self.signals = Gauge("signalbot_signals", "Signals by status", ["status"], registry=r)
        self.outbox_depth = Gauge("signalbot_outbox_depth", "Outbox rows by status", ["status"], registry=r)
        self.subscribers = Gauge("signalbot_subscribers", "Users by tier (active ones)", ["tier"], registry=r)
        self.revenue = Gauge("signalbot_subscription_revenue", "Payments received, in the currency's smallest unit "
                             "(Telegram Stars: stars)", ["provider", "currency"], registry=r)
        self.strategy_paused = Gauge("signalbot_strategy_paused", "1 while a strategy scope's breaker stops it",
                                     ["scope"], registry=r)
        self.breaker_state = Gauge("signalbot_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open",
                                   ["kind", "name"], registry=r)
        self.llm_tokens = Gauge("signalbot_llm_tokens_today", "LLM tokens used today", ["use", "name"], registry=r)
        self.llm_cost = Gauge("signalbot_llm_cost_usd_today", "LLM cost today in USD", ["use", "name"], registry=r)
        self.model_auc = Gauge("signalbot_model_auc", "A champion model's out-of-sample AUC (the voter's measured "
                               "skill: tracked walk-forward, else cross-validation, else holdout)", ["model"],
                               registry=r)
        self.leader = Gauge("signalbot_leader", "1 while this process is the scheduler leader", registry=r)
        self.scrape_errors = Counter("signalbot_metrics_refresh_errors", "Failed reads while refreshing the gauges",
                                     registry=r)

    # -- observed -------------------------------------------------------------------------------------------
    def job_ran(self, name: str, seconds: float, ok: bool) -> None:
        self.job_duration.labels(name).observe(seconds)
        if name == "scan" and ok:
            self.signal_generation.observe(seconds)
        if not ok:
            self.job_failures.labels(name).inc()

    def delivered(self, channel: str, kind: str, status: DeliveryStatus, latency_seconds: float | None) -> None:
        self.deliveries.labels(channel, status.value).inc()
        if status is DeliveryStatus.SENT and latency_seconds is not None:
            self.delivery_latency.labels(channel, kind).observe(max(0.0, latency_seconds))

    # -- read at scrape -------------------------------------------------------------------------------------
    async def refresh(self, services: Services, leader: Leader | None = None) -> None:
        """The gauges read from the database and the services. A read that fails is counted and skipped: the
        other series are still served."""
        for part in (self._signals, self._outbox, self._users, self._revenue, self._strategy):
            try:
                await part(services)
            except Exception:  # noqa: BLE001 - a scrape must answer even when one source fails
                log.exception("metrics: %s failed", part.__name__)
                self.scrape_errors.inc()
        self._breakers_and_llm(services)
        self._models(services)
        if leader is not None:
            self.leader.set(1.0 if leader.is_leader else 0.0)

    async def _signals(self, services: Services) -> None:
        counts = await services.store.admin.signal_counts()
        self.active_signals.set(counts.get("open", 0))
        _replace(self.signals, {(s,): float(n) for s, n in counts.items()})

    async def _outbox(self, services: Services) -> None:
        counts = await services.store.outbox.delivery_counts()
        _replace(self.outbox_depth, {(s.value,): float(counts.get(s, 0)) for s in DeliveryStatus})

    async def _users(self, services: Services) -> None:
        by_tier: dict[tuple[str, ...], float] = {}
        for c in await services.store.admin.user_counts():
            if c.active:
                by_tier[(c.tier,)] = by_tier.get((c.tier,), 0.0) + c.count
        _replace(self.subscribers, by_tier)

    async def _revenue(self, services: Services) -> None:
        _replace(self.revenue, {(p, cur): float(total) for p, cur, total in await services.store.admin.revenue()})

    async def _strategy(self, services: Services) -> None:
        breaker = await services.signal_service.refresh_breaker()
        values = {} if breaker is None else {
            (str(scope),): 1.0 if breaker.state(scope).tripped else 0.0 for scope in breaker.scopes()}
        _replace(self.strategy_paused, values)

    def _breakers_and_llm(self, services: Services) -> None:
        _replace(self.breaker_state, {k: BREAKER_VALUE.get(v, 0.0) for k, v in breaker_states(services).items()})
        tokens: dict[tuple[str, ...], float] = {}
        cost: dict[tuple[str, ...], float] = {}
        for use, slot in llm_slots(services):
            if slot.quota is not None:
                used, usd = slot.quota.usage()
                tokens[(use, slot.name)], cost[(use, slot.name)] = float(used), float(usd)
        _replace(self.llm_tokens, tokens)
        _replace(self.llm_cost, cost)

    def _models(self, services: Services) -> None:
        _replace(self.model_auc, {(k,): v for k, v in model_aucs(services).items()})

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _replace(gauge: Gauge, values: Mapping[Any, float]) -> None:
    """Set a labelled gauge to exactly these series (a series that went away is dropped, not left stale)."""
    gauge.clear()
    for labels, value in values.items():
        gauge.labels(*labels).set(value)


def llm_slots(services: Services) -> list[tuple[str, Any]]:
    """("reasoning" | "news", slot) of every LLM the service calls (each with its breaker and daily quota)."""
    slots: list[tuple[str, Any]] = []
    narrator = services.signal_service.narrator
    if narrator is not None:
        slots += [("reasoning", s) for s in narrator.slots]
    if services.news is not None:
        slots += [("news", s) for s in services.news.analysis.slots]
    return slots


def breaker_states(services: Services) -> dict[tuple[str, str], BreakerState]:
    """(kind, name) -> state of every circuit breaker: market-data providers, then the LLMs."""
    states: dict[tuple[str, str], BreakerState] = {}
    if isinstance(services.market, HasBreakers):
        for name, breaker in services.market.breakers.items():
            states[("provider", str(name))] = breaker.state
    for use, slot in llm_slots(services):
        if slot.breaker is not None:
            states[("llm-" + use, str(slot.name))] = slot.breaker.state
    return states


def model_aucs(services: Services) -> dict[str, float]:
    """Each champion model's measured out-of-sample AUC (tracked walk-forward, else CV, else holdout)."""
    from core.models.voter import ModelVoter

    model = services.signal_service.engine.model
    out: dict[str, float] = {}
    if isinstance(model, ModelVoter):
        for key, m in model.models.items():
            for k in ("tracked_auc", "cv_auc", "holdout_auc"):
                v = m.metrics.get(k)
                if v is not None and v == v:
                    out[str(key)] = float(v)
                    break
    return out


class MetricsEndpoint:
    """What `GET /metrics` serves: the gauges refreshed, then every series. With `token` set, the scrape must
    send `Authorization: Bearer <token>` (the series include revenue and subscriber counts)."""

    def __init__(self, metrics: Metrics, services: Services, token: str | None = None) -> None:
        self.metrics, self.services, self.token = metrics, services, token
        self.leader: Leader | None = None

    def allowed(self, authorization: str | None) -> bool:
        if not self.token:
            return True
        import hmac

        return authorization is not None and hmac.compare_digest(authorization, f"Bearer {self.token}")

    async def render(self) -> bytes:
        await self.metrics.refresh(self.services, self.leader)
        return self.metrics.exposition()


def delivery_observer(metrics: Metrics, channel: str, wall: Clock) -> Callable[[Delivery, DeliveryUpdate], None]:
    """The delivery worker's hook: each result counted; a send's latency from the row being queued (at the
    signal's issue or exit, by the notifier) to the send."""

    def observe(delivery: Delivery, update: DeliveryUpdate) -> None:
        latency = None
        if update.status is DeliveryStatus.SENT and delivery.created_at is not None:
            latency = ((update.sent_at or wall.now()) - delivery.created_at).total_seconds()
        metrics.delivered(channel, delivery.kind.value, update.status, latency)

    return observe
