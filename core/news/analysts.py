"""NewsAnalysisService: asks the analysts in a fallback chain, within budgets, and stores every verdict.

Chain (by default): Anthropic (event analysis) -> OpenAI (sentiment) -> the local model -> technical only
(an `Assessment` without a record). For one (item, symbol):

1. Cache: a verdict already made for this item and symbol by any analyst in the chain, under that
   analyst's model and prompt version (memory first, then the `VerdictStore`), is returned without a call.
   Cache key = (prompt version, model, item id, symbol).
2. Otherwise each analyst in turn, skipped when its circuit breaker is open, it is paused after a 429
   (for Retry-After), its daily token or cost quota is used up, or its rate limit has no slot within
   `max_wait`. A call is bounded by `timeout`; its failure moves on to the next analyst.
3. A verdict is stored with its time, provider, model, prompt version, tokens and cost.

Breaker (`core.market_data.router.CircuitBreaker`, reused): only errors saying the provider is unhealthy
count (unavailable, timeout, invalid answers); a 429, a refusal or a quota skip does not.

`mode="replay"`: backtests. Only stored verdicts are used (in chain preference); nothing is ever called.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal, Protocol

from core.clock import Clock, SystemClock
from core.resilience import BreakerState, CircuitBreaker
from core.news.schema import AnalysisRecord, AnalystAnswer, VerdictStore
from core.llm import AnalystError, AnalystRateLimitedError, DailyQuota, price_of
from core.news.sources import NewsItem

logger = logging.getLogger(__name__)

Mode = Literal["live", "replay"]


class NewsAnalyst(Protocol):
    @property
    def provider(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def prompt_version(self) -> str: ...

    async def analyze(self, item: NewsItem, symbol: str) -> AnalystAnswer: ...


class RateLimiter:
    """Token bucket: `per_minute` calls a minute, bursts of `burst`. `acquire` waits up to `max_wait`."""

    def __init__(self, per_minute: float, burst: int = 1, monotonic: Callable[[], float] = time.monotonic) -> None:
        if per_minute <= 0 or burst < 1:
            raise ValueError("per_minute must be > 0 and burst >= 1")
        self.rate = per_minute / 60.0
        self.burst = burst
        self._tokens = float(burst)
        self._monotonic = monotonic
        self._last = monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self, max_wait: float) -> bool:
        async with self._lock:
            now = self._monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens < 1:
                wait = (1 - self._tokens) / self.rate
                if wait > max_wait:
                    return False
                await asyncio.sleep(wait)
                self._tokens, self._last = 1.0, self._monotonic()
            self._tokens -= 1
            return True


@dataclass
class ProviderStats:
    calls: int = 0
    successes: int = 0
    failures: int = 0
    cache_hits: int = 0
    skipped: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms_total: float = 0.0
    last_error: str = ""

    @property
    def mean_latency_ms(self) -> float:
        return self.latency_ms_total / self.successes if self.successes else 0.0


@dataclass
class AnalystSlot:
    """One analyst in the chain with its guards."""

    analyst: NewsAnalyst
    quota: DailyQuota | None = None
    limiter: RateLimiter | None = None
    breaker: CircuitBreaker | None = None
    timeout: float = 20.0
    estimated_tokens: int = 800  # per call, for the quota pre-check
    stats: ProviderStats = field(default_factory=ProviderStats)
    paused_until: datetime | None = None

    @property
    def name(self) -> str:
        return str(self.analyst.provider)


@dataclass(frozen=True, slots=True)
class Assessment:
    """The outcome for one (item, symbol). `record` None: no analyst answered -> technical only."""

    item_id: str
    symbol: str
    record: AnalysisRecord | None
    origin: Literal["live", "cache", "store", "none"]
    notes: tuple[str, ...] = ()  # why each analyst before the answering one was skipped or failed

    @property
    def technical_only(self) -> bool:
        return self.record is None


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    provider: str
    model: str
    breaker: str
    calls: int
    failures: int
    cache_hits: int
    mean_latency_ms: float
    tokens_today: int
    cost_today_usd: float
    last_error: str
    successes: int = 0
    skipped: int = 0  # breaker open, paused, quota used up or no rate-limit slot
    tokens_quota: int | None = None  # per UTC day; None: no quota (the local model)
    cost_quota_usd: float | None = None
    tokens_total: int = 0  # since the service started
    cost_total_usd: float = 0.0


class NewsAnalysisService:
    def __init__(self, slots: Sequence[AnalystSlot], *, store: VerdictStore | None = None,
                 clock: Clock | None = None, mode: Mode = "live", max_wait: float = 2.0,
                 default_pause: timedelta = timedelta(seconds=30), concurrency: int = 4,
                 cache_size: int = 50_000) -> None:
        if mode not in ("live", "replay"):
            raise ValueError(f"unknown mode {mode!r}")
        if mode == "replay" and store is None:
            raise ValueError("replay mode needs a verdict store")
        self.slots = list(slots)
        self.store = store
        self.clock = clock or SystemClock()
        self.mode = mode
        self.max_wait = max_wait
        self.default_pause = default_pause
        self._cache: OrderedDict[tuple[str, str, str, str], AnalysisRecord] = OrderedDict()
        self.cache_size = cache_size
        self._semaphore = asyncio.Semaphore(concurrency)
        for slot in self.slots:
            if slot.breaker is None:
                slot.breaker = CircuitBreaker(slot.name, clock=self.clock)

    async def assess_many(self, pairs: Sequence[tuple[NewsItem, str]]) -> list[Assessment]:
        async def one(item: NewsItem, symbol: str) -> Assessment:
            async with self._semaphore:
                return await self.assess(item, symbol)
        return list(await asyncio.gather(*(one(i, s) for i, s in pairs)))

    async def assess_items(self, items: Sequence[NewsItem], symbols: Sequence[str] | None = None) -> list[Assessment]:
        """Each item about each of its tickers (limited to `symbols` when given); market-wide items once, as ""."""
        wanted = set(symbols) if symbols is not None else None
        pairs = [(item, symbol) for item in items
                 for symbol in (("",) if item.market_wide else item.tickers)
                 if wanted is None or symbol == "" or symbol in wanted]
        return await self.assess_many(pairs)

    async def assess(self, item: NewsItem, symbol: str) -> Assessment:
        """The verdict for `item` about `symbol` ("" for a market-wide item)."""
        if self.mode == "replay":
            return await self._replay(item, symbol)
        cached = await self._cached(item, symbol)
        if cached is not None:
            return cached
        notes: list[str] = []
        for slot in self.slots:
            record = await self._try(slot, item, symbol, notes)
            if record is not None:
                return Assessment(item.id, symbol, record, "live", tuple(notes))
        logger.warning("news item %s (%s): no analyst answered (%s); technical only", item.id, symbol or "market",
                       "; ".join(notes))
        return Assessment(item.id, symbol, None, "none", tuple(notes))

    async def _replay(self, item: NewsItem, symbol: str) -> Assessment:
        assert self.store is not None
        records = await self.store.find(item.id, symbol)
        names = [slot.name for slot in self.slots]
        names += [p for p in ("anthropic", "openai", "local") if p not in names]  # the default chain's order
        order = {name: i for i, name in enumerate(names)}
        records = sorted(records, key=lambda r: order.get(r.provider, len(order)))
        if records:
            return Assessment(item.id, symbol, records[0], "store")
        return Assessment(item.id, symbol, None, "none", ("replay: no stored verdict",))

    async def _cached(self, item: NewsItem, symbol: str) -> Assessment | None:
        for slot in self.slots:
            key = (slot.analyst.prompt_version, slot.analyst.model, item.id, symbol)
            record = self._cache.get(key)
            origin: Literal["cache", "store"] = "cache"
            if record is None and self.store is not None:
                found = await self.store.find(item.id, symbol, model=slot.analyst.model,
                                              prompt_version=slot.analyst.prompt_version)
                record, origin = (found[0] if found else None), "store"
                if record is not None:
                    self._remember(key, record)
            if record is not None:
                slot.stats.cache_hits += 1
                return Assessment(item.id, symbol, record, origin)
        return None

    async def _try(self, slot: AnalystSlot, item: NewsItem, symbol: str, notes: list[str]) -> AnalysisRecord | None:
        now = self.clock.now()
        breaker = slot.breaker
        assert breaker is not None
        reason = None
        if slot.paused_until is not None and now < slot.paused_until:
            reason = f"rate limited until {slot.paused_until:%H:%M:%S}"
        elif slot.quota is not None and not slot.quota.allows(slot.estimated_tokens):
            reason = "daily quota used up"
        elif not breaker.allow():
            reason = "circuit open"
        elif slot.limiter is not None and not await slot.limiter.acquire(self.max_wait):
            breaker.release()
            reason = "local rate limit"
        if reason is not None:
            slot.stats.skipped += 1
            notes.append(f"{slot.name}: {reason}")
            return None
        slot.stats.calls += 1
        started = time.perf_counter()
        try:
            answer = await asyncio.wait_for(slot.analyst.analyze(item, symbol), slot.timeout)
        except asyncio.CancelledError:
            breaker.release()
            raise
        except Exception as exc:  # noqa: BLE001 - an analyst's unexpected error is a failure, not a crash
            self._failed(slot, exc, notes)
            return None
        latency_ms = (time.perf_counter() - started) * 1000
        breaker.record_success()
        return await self._record(slot, item, symbol, answer, latency_ms)

    def _failed(self, slot: AnalystSlot, exc: BaseException, notes: list[str]) -> None:
        assert slot.breaker is not None
        if isinstance(exc, TimeoutError):
            message = f"timed out after {slot.timeout:g}s"
        elif isinstance(exc, AnalystError):
            message = str(exc)
        else:
            message = f"unexpected {type(exc).__name__}: {exc}"
        slot.stats.failures += 1
        slot.stats.last_error = message
        notes.append(f"{slot.name}: {message}")
        if isinstance(exc, AnalystRateLimitedError):
            pause = timedelta(seconds=exc.retry_after) if exc.retry_after else self.default_pause
            slot.paused_until = self.clock.now() + pause
        if not isinstance(exc, AnalystError) or exc.counts_against_provider:
            slot.breaker.record_failure()
        else:
            slot.breaker.release()
        logger.warning("analyst %s failed: %s", slot.name, message)

    async def _record(self, slot: AnalystSlot, item: NewsItem, symbol: str, answer: AnalystAnswer,
                      latency_ms: float) -> AnalysisRecord:
        cost = price_of(answer.model).cost(answer.input_tokens, answer.output_tokens)
        tokens = answer.input_tokens + answer.output_tokens
        if slot.quota is not None:
            slot.quota.charge(tokens, cost)
        stats = slot.stats
        stats.successes += 1
        stats.input_tokens += answer.input_tokens
        stats.output_tokens += answer.output_tokens
        stats.cost_usd += cost
        stats.latency_ms_total += latency_ms
        record = AnalysisRecord(
            item_id=item.id, symbol=symbol, published_at=item.published_at, analysed_at=self.clock.now(),
            provider=slot.name, model=slot.analyst.model, prompt_version=slot.analyst.prompt_version,
            verdict=answer.verdict, market_wide=item.market_wide, title=item.title[:300],
            input_tokens=answer.input_tokens, output_tokens=answer.output_tokens, cost_usd=cost,
            latency_ms=latency_ms)
        # cached under the configured model name (what the cache lookup uses); the answering model is
        # the same name or a dated variant of it
        self._remember((record.prompt_version, record.model, item.id, symbol), record)
        if self.store is not None:
            await self.store.save(record)
        return record

    def _remember(self, key: tuple[str, str, str, str], record: AnalysisRecord) -> None:
        self._cache[key] = record
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    async def close(self) -> None:
        """Close the analysts' HTTP clients (those that have any)."""
        for slot in self.slots:
            close = getattr(slot.analyst, "close", None)
            if close is not None:
                await close()

    def health(self) -> list[ProviderHealth]:
        out = []
        for slot in self.slots:
            breaker = slot.breaker
            tokens_today, cost_today = slot.quota.usage() if slot.quota else (0, 0.0)
            out.append(ProviderHealth(
                provider=slot.name, model=slot.analyst.model,
                breaker=str(breaker.state) if breaker else str(BreakerState.CLOSED),
                calls=slot.stats.calls, failures=slot.stats.failures, cache_hits=slot.stats.cache_hits,
                mean_latency_ms=slot.stats.mean_latency_ms,
                tokens_today=tokens_today, cost_today_usd=cost_today, last_error=slot.stats.last_error,
                successes=slot.stats.successes, skipped=slot.stats.skipped,
                tokens_quota=slot.quota.tokens if slot.quota else None,
                cost_quota_usd=slot.quota.cost_usd if slot.quota else None,
                tokens_total=slot.stats.input_tokens + slot.stats.output_tokens, cost_total_usd=slot.stats.cost_usd))
        return out


def build_analysis_service(
    *,
    anthropic_api_key: str | None, anthropic_base_url: str | None, anthropic_model: str,
    openai_api_key: str | None, openai_base_url: str | None, openai_model: str,
    daily_tokens: int, daily_cost_usd: float, timeout: float, models_dir: Path | str | None,
    store: VerdictStore | None, clock: Clock | None = None, mode: Mode = "live",
    requests_per_minute: float = 60.0, max_retries: int = 2,
) -> NewsAnalysisService:
    """The default chain from configuration: each LLM only when its key is set; the local model when a
    sentiment model is found under `models_dir`. Secrets are passed in as plain strings and never logged."""
    clock = clock or SystemClock()
    slots: list[AnalystSlot] = []

    def guarded(analyst: NewsAnalyst) -> AnalystSlot:
        return AnalystSlot(analyst, DailyQuota(tokens=daily_tokens, cost_usd=daily_cost_usd, clock=clock),
                           RateLimiter(requests_per_minute, burst=5), timeout=timeout)

    if anthropic_api_key and mode == "live":
        from core.news.providers.anthropic import AnthropicAnalyst
        slots.append(guarded(AnthropicAnalyst(api_key=anthropic_api_key, base_url=anthropic_base_url,
                                              model=anthropic_model, timeout=timeout, max_retries=max_retries)))
    if openai_api_key and mode == "live":
        from core.news.providers.openai import OpenAIAnalyst
        slots.append(guarded(OpenAIAnalyst(api_key=openai_api_key, base_url=openai_base_url, model=openai_model,
                                           timeout=timeout, max_retries=max_retries)))
    if models_dir is not None:
        from core.news.providers.local import LocalAnalyst
        from core.errors import SentimentModelError
        try:
            slots.append(AnalystSlot(LocalAnalyst.from_store(models_dir), timeout=max(timeout, 30.0)))
        except SentimentModelError as exc:
            logger.warning("no local news analyst: %s", exc)
    return NewsAnalysisService(slots, store=store, clock=clock, mode=mode)
