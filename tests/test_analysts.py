"""LLM analysts through the real openai / anthropic SDKs against local fakes, and the analysis service's
cache, quotas, breaker, timeouts, fallback chain, storage and replay."""
from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from core.clock import FixedClock
from core.resilience import BreakerState, CircuitBreaker
from core.news.analysts import AnalystSlot, NewsAnalysisService, RateLimiter, build_analysis_service
from core.llm import DailyQuota, price_of
from core.news.providers.anthropic import AnthropicAnalyst
from core.news.providers.local import LocalAnalyst
from core.news.providers.openai import OpenAIAnalyst
from core.news.prompts import EVENT_PROMPT, SENTIMENT_PROMPT
from core.news.schema import NewsVerdict
from core.llm import AnalystRateLimitedError, AnalystRefusedError, AnalystTimeoutError, AnalystUnavailableError, InvalidVerdictError
from core.news.sentiment import LABELS, SentimentModel
from core.news.sources import NewsItem
from storage.database import Database
from storage.news import SqlVerdictStore
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.openai_api import FakeOpenAI

UTC = timezone.utc
T0 = datetime(2015, 3, 2, 14, 30, tzinfo=UTC)
GOOD = NewsItem.create(published_at=T0, source="wire", title="Apple beats earnings estimates", tickers=["AAPL"])
BAD = NewsItem.create(published_at=T0, source="wire", title="Boeing plunges after recall", tickers=["BA"])


@pytest.fixture
async def store() -> AsyncIterator[SqlVerdictStore]:
    db = Database("sqlite+aiosqlite:///:memory:")
    await db.upgrade()
    yield SqlVerdictStore(db)
    await db.close()


_services: list[NewsAnalysisService] = []


@pytest.fixture(autouse=True)
async def close_services() -> AsyncIterator[None]:
    yield
    while _services:
        await _services.pop().close()


def gpt(fake: FakeOpenAI, timeout: float = 5.0) -> OpenAIAnalyst:
    return OpenAIAnalyst(api_key="test-openai-key", base_url=fake.base_url + "/v1", model="gpt-4o-mini",
                         timeout=timeout, max_retries=0)


def claude(fake: FakeAnthropic, timeout: float = 5.0) -> AnthropicAnalyst:
    return AnthropicAnalyst(api_key="test-anthropic-key", base_url=fake.base_url, model="claude-haiku-4-5",
                            timeout=timeout, max_retries=0)


class KeywordEncoder:
    """A stand-in text encoder for the real SentimentModel head: 3 dims = (negative, neutral, positive) words."""

    dimension = 3
    batch_size = 8

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self.fail:
            raise RuntimeError("encoder crashed")
        rows = [[float("plunges" in t.lower()), 0.5, float("beats" in t.lower())] for t in texts]
        return np.array(rows, np.float32)


def local(fail: bool = False) -> LocalAnalyst:
    model = SentimentModel(KeywordEncoder(fail), np.eye(3, dtype=np.float32) * 6, np.zeros(3, np.float32),
                           {"name": "test-sentiment", "version": "t1", "labels": list(LABELS)})
    return LocalAnalyst(model)


# ---------------------------------------------------------------- adapters


async def test_openai_structured_output_is_validated(fake_openai: FakeOpenAI) -> None:
    analyst = gpt(fake_openai)
    answer = await analyst.analyze(GOOD, "AAPL")
    assert answer.verdict.sentiment == pytest.approx(0.7) and answer.verdict.event_type == "earnings"
    assert answer.input_tokens > 0 and answer.output_tokens > 0
    sent = fake_openai.bodies[0]
    assert sent["response_format"]["type"] == "json_schema"
    schema = sent["response_format"]["json_schema"]["schema"]
    assert schema["additionalProperties"] is False and "sentiment" in schema["required"]
    assert schema["properties"]["sentiment"]["minimum"] == -1 and "maxLength" not in schema["properties"]["reasoning"]
    assert "AAPL" in sent["messages"][1]["content"] and sent["messages"][0]["content"] == SENTIMENT_PROMPT.system
    await analyst.close()


@pytest.mark.parametrize("fault", ["malformed", "invalid"])
async def test_openai_repairs_once_then_gives_up(fake_openai: FakeOpenAI, fault: str) -> None:
    analyst = gpt(fake_openai)
    fake_openai.faults.add(fault)
    answer = await analyst.analyze(BAD, "BA")  # bad answer, then the repair turn answers well
    assert answer.verdict.sentiment == pytest.approx(-0.7)
    assert len(fake_openai.bodies) == 2
    assert "did not match the required schema" in fake_openai.bodies[1]["messages"][-1]["content"]
    assert answer.input_tokens > 0
    fake_openai.faults.add(fault, times=2)
    with pytest.raises(InvalidVerdictError, match="failed validation twice"):
        await analyst.analyze(BAD, "BA")
    await analyst.close()


async def test_openai_errors_are_translated(fake_openai: FakeOpenAI) -> None:
    analyst = gpt(fake_openai, timeout=0.3)
    fake_openai.faults.add("rate_limit", retry_after=7)
    with pytest.raises(AnalystRateLimitedError) as info:
        await analyst.analyze(GOOD, "AAPL")
    assert info.value.retry_after == 7
    fake_openai.faults.add("status", status=500)
    with pytest.raises(AnalystUnavailableError, match="HTTP 500"):
        await analyst.analyze(GOOD, "AAPL")
    fake_openai.faults.add("refusal")
    with pytest.raises(AnalystRefusedError):
        await analyst.analyze(GOOD, "AAPL")
    fake_openai.faults.add("timeout", delay=2.0)
    with pytest.raises(AnalystTimeoutError):
        await analyst.analyze(GOOD, "AAPL")
    await analyst.close()


async def test_openai_sdk_retry_honours_retry_after(fake_openai: FakeOpenAI) -> None:
    analyst = OpenAIAnalyst(api_key="test-openai-key", base_url=fake_openai.base_url + "/v1", model="gpt-4o-mini",
                            max_retries=1)
    fake_openai.faults.add("rate_limit", retry_after=0)
    answer = await analyst.analyze(GOOD, "AAPL")  # the SDK's own single retry, not ours
    assert answer.verdict.sentiment > 0 and fake_openai.count("/chat/completions") == 2
    await analyst.close()


async def test_anthropic_tool_use_is_validated(fake_anthropic: FakeAnthropic) -> None:
    analyst = claude(fake_anthropic)
    answer = await analyst.analyze(BAD, "BA")
    assert answer.verdict.sentiment == pytest.approx(-0.7) and answer.input_tokens > 0
    sent = fake_anthropic.bodies[0]
    assert sent["tool_choice"] == {"type": "tool", "name": "record_news_verdict"}
    assert sent["tools"][0]["input_schema"]["additionalProperties"] is False
    assert sent["system"] == EVENT_PROMPT.system
    await analyst.close()


async def test_anthropic_repair_turn_and_errors(fake_anthropic: FakeAnthropic) -> None:
    analyst = claude(fake_anthropic)
    fake_anthropic.faults.add("invalid")
    answer = await analyst.analyze(GOOD, "AAPL")
    repair = fake_anthropic.bodies[1]["messages"]
    assert repair[1]["role"] == "assistant" and repair[2]["content"][0]["type"] == "tool_result"
    assert repair[2]["content"][0]["is_error"] is True and answer.verdict.sentiment > 0
    fake_anthropic.faults.add("malformed", times=2)
    with pytest.raises(InvalidVerdictError, match="no record_news_verdict tool call"):
        await analyst.analyze(GOOD, "AAPL")
    fake_anthropic.faults.add("status", status=529)
    with pytest.raises(AnalystUnavailableError, match="overloaded"):
        await analyst.analyze(GOOD, "AAPL")
    fake_anthropic.faults.add("rate_limit", retry_after=3)
    with pytest.raises(AnalystRateLimitedError):
        await analyst.analyze(GOOD, "AAPL")
    fake_anthropic.faults.add("refusal")
    with pytest.raises(AnalystRefusedError):
        await analyst.analyze(GOOD, "AAPL")
    await analyst.close()


# ---------------------------------------------------------------- the service


def chain(fake_anthropic: FakeAnthropic, fake_openai: FakeOpenAI, clock: FixedClock, *,
          store: SqlVerdictStore | None = None, claude_tokens: int = 100_000, timeout: float = 5.0,
          threshold: int = 3, local_analyst: LocalAnalyst | None = None) -> NewsAnalysisService:
    slots = [
        AnalystSlot(claude(fake_anthropic), DailyQuota(tokens=claude_tokens, cost_usd=1.0, clock=clock),
                    RateLimiter(6000, burst=10), CircuitBreaker("anthropic", failure_threshold=threshold,
                                                                cooldown=timedelta(seconds=60), clock=clock),
                    timeout=timeout, estimated_tokens=100),
        AnalystSlot(gpt(fake_openai), DailyQuota(tokens=100_000, cost_usd=1.0, clock=clock), timeout=timeout,
                    estimated_tokens=100),
        AnalystSlot(local_analyst or local()),
    ]
    service = NewsAnalysisService(slots, store=store, clock=clock)
    _services.append(service)
    return service


async def test_chain_prefers_claude_and_stores_the_verdict(fake_anthropic: FakeAnthropic, fake_openai: FakeOpenAI,
                                                           store: SqlVerdictStore) -> None:
    clock = FixedClock(T0 + timedelta(minutes=5))
    service = chain(fake_anthropic, fake_openai, clock, store=store)
    result = await service.assess(GOOD, "AAPL")
    assert result.record is not None and result.origin == "live"
    assert result.record.provider == "anthropic" and result.record.prompt_version == EVENT_PROMPT.version
    assert result.record.cost_usd == pytest.approx(price_of("claude-haiku-4-5").cost(
        result.record.input_tokens, result.record.output_tokens)) and result.record.cost_usd > 0
    stored = await store.find(GOOD.id, "AAPL")
    assert [r.model for r in stored] == ["claude-haiku-4-5"]
    assert stored[0].analysed_at == clock.now() and stored[0].published_at == T0
    assert stored[0].verdict == result.record.verdict
    assert fake_openai.count("/v1/") == 0


async def test_cache_hit_does_not_call_again(fake_anthropic: FakeAnthropic, fake_openai: FakeOpenAI,
                                             store: SqlVerdictStore) -> None:
    clock = FixedClock(T0)
    service = chain(fake_anthropic, fake_openai, clock, store=store)
    first = await service.assess(GOOD, "AAPL")
    again = await service.assess(GOOD, "AAPL")
    assert again.origin == "cache" and again.record == first.record
    fresh = chain(fake_anthropic, fake_openai, clock, store=store)  # a new process: the store is the cache
    from_store = await fresh.assess(GOOD, "AAPL")
    assert from_store.origin == "store" and from_store.record is not None
    assert from_store.record.verdict == first.record.verdict if first.record else False
    assert fake_anthropic.count("/v1/messages") == 1
    other_symbol = await service.assess(GOOD, "MSFT")
    assert other_symbol.origin == "live" and fake_anthropic.count("/v1/messages") == 2


async def test_exhausted_quota_moves_to_the_next_provider(fake_anthropic: FakeAnthropic,
                                                          fake_openai: FakeOpenAI) -> None:
    clock = FixedClock(T0)
    service = chain(fake_anthropic, fake_openai, clock, claude_tokens=300)
    first = await service.assess(GOOD, "AAPL")
    assert first.record is not None and first.record.provider == "anthropic"
    used = service.slots[0].quota.used_tokens if service.slots[0].quota else 0
    assert used > 100
    second = await service.assess(BAD, "BA")  # used + estimate > 300 tokens: Claude is skipped
    assert second.record is not None and second.record.provider == "openai"
    assert "anthropic: daily quota used up" in second.notes
    assert fake_anthropic.count("/v1/messages") == 1
    clock.advance(timedelta(days=1))  # a new UTC day: the quota is back
    third = await service.assess(NewsItem.create(published_at=T0, source="w", title="X surges"), "X")
    assert third.record is not None and third.record.provider == "anthropic"


async def test_breaker_opens_after_failures_and_probes_after_cooldown(fake_anthropic: FakeAnthropic,
                                                                      fake_openai: FakeOpenAI) -> None:
    clock = FixedClock(T0)
    service = chain(fake_anthropic, fake_openai, clock, threshold=2)
    fake_anthropic.faults.add("status", status=500, times=2)
    items = [NewsItem.create(published_at=T0, source="w", title=f"Item {i} beats") for i in range(4)]
    for item in items[:2]:
        result = await service.assess(item, "AAPL")
        assert result.record is not None and result.record.provider == "openai"
    assert service.slots[0].breaker and service.slots[0].breaker.state is BreakerState.OPEN
    result = await service.assess(items[2], "AAPL")  # open: Claude not even asked
    assert "anthropic: circuit open" in result.notes and fake_anthropic.count("/v1/messages") == 2
    clock.advance(timedelta(seconds=61))
    result = await service.assess(items[3], "AAPL")  # half-open probe succeeds -> closed
    assert result.record is not None and result.record.provider == "anthropic"
    assert service.slots[0].breaker.state is BreakerState.CLOSED
    health = {h.provider: h for h in service.health()}
    assert health["anthropic"].failures == 2 and health["anthropic"].breaker == "closed"


async def test_rate_limit_pauses_the_provider_without_opening_the_breaker(
        fake_anthropic: FakeAnthropic, fake_openai: FakeOpenAI) -> None:
    clock = FixedClock(T0)
    service = chain(fake_anthropic, fake_openai, clock, threshold=1)
    fake_anthropic.faults.add("rate_limit", retry_after=30)
    first = await service.assess(GOOD, "AAPL")
    assert first.record is not None and first.record.provider == "openai"
    assert service.slots[0].breaker and service.slots[0].breaker.state is BreakerState.CLOSED
    second = await service.assess(BAD, "BA")
    assert any("rate limited until" in n for n in second.notes) and fake_anthropic.count("/v1/messages") == 1
    clock.advance(timedelta(seconds=31))
    third = await service.assess(NewsItem.create(published_at=T0, source="w", title="Z beats"), "Z")
    assert third.record is not None and third.record.provider == "anthropic"


async def test_timeout_falls_back(fake_anthropic: FakeAnthropic, fake_openai: FakeOpenAI) -> None:
    clock = FixedClock(T0)
    service = chain(fake_anthropic, fake_openai, clock, timeout=0.4)
    fake_anthropic.faults.add("timeout", delay=3.0)
    result = await service.assess(GOOD, "AAPL")
    assert result.record is not None and result.record.provider == "openai"
    assert any(n.startswith("anthropic:") and "timed out" in n for n in result.notes)


async def test_all_providers_down_local_then_technical_only(fake_anthropic: FakeAnthropic,
                                                             fake_openai: FakeOpenAI) -> None:
    clock = FixedClock(T0)
    service = chain(fake_anthropic, fake_openai, clock)
    fake_anthropic.faults.add("status", status=529, times=-1)
    fake_openai.faults.add("status", status=503, times=-1)
    result = await service.assess(GOOD, "AAPL")
    assert result.record is not None and result.record.provider == "local"
    assert result.record.model == "local:test-sentiment-t1" and result.record.verdict.sentiment > 0.9
    assert len(result.notes) == 2
    broken = chain(fake_anthropic, fake_openai, clock, local_analyst=local(fail=True))
    result = await broken.assess(BAD, "BA")
    assert result.technical_only and result.origin == "none"
    assert any("local: unexpected RuntimeError" in n for n in result.notes)


async def test_replay_mode_uses_stored_verdicts_and_never_calls(fake_anthropic: FakeAnthropic,
                                                                 fake_openai: FakeOpenAI,
                                                                 store: SqlVerdictStore) -> None:
    clock = FixedClock(T0)
    live = chain(fake_anthropic, fake_openai, clock, store=store)
    recorded = await live.assess(GOOD, "AAPL")
    calls = (fake_anthropic.count("/v1/"), fake_openai.count("/v1/"))
    replay = NewsAnalysisService(live.slots, store=store, clock=clock, mode="replay")
    replayed = await replay.assess(GOOD, "AAPL")
    assert replayed.origin == "store" and replayed.record == recorded.record
    missing = await replay.assess(BAD, "BA")
    assert missing.technical_only and missing.notes == ("replay: no stored verdict",)
    assert (fake_anthropic.count("/v1/"), fake_openai.count("/v1/")) == calls
    with pytest.raises(ValueError, match="replay mode needs a verdict store"):
        NewsAnalysisService([], mode="replay")


async def test_assess_many_and_store_window(fake_anthropic: FakeAnthropic, fake_openai: FakeOpenAI,
                                            store: SqlVerdictStore) -> None:
    clock = FixedClock(T0)
    service = chain(fake_anthropic, fake_openai, clock, store=store)
    items = [NewsItem.create(published_at=T0 + timedelta(hours=h), source="w", title=f"Acme beats {h}",
                             tickers=["ACME"]) for h in range(5)]
    results = await service.assess_items(items + [NewsItem.create(published_at=T0, source="h", title="Stocks beat",
                                                                   market_wide=True)], symbols=["ACME"])
    assert [r.symbol for r in results] == ["ACME"] * 5 + [""]
    assert all(r.record is not None for r in results)
    window = await store.between(["ACME"], T0 + timedelta(hours=1), T0 + timedelta(hours=3))
    assert [r.published_at for r in window] == [T0 + timedelta(hours=1), T0 + timedelta(hours=2)]
    assert await store.count() == 6


def test_quota_rejects_zero_budget_and_verdict_schema_bounds() -> None:
    clock = FixedClock(T0)
    assert not DailyQuota(tokens=0, cost_usd=1.0, clock=clock).allows()
    quota = DailyQuota(tokens=1000, cost_usd=0.01, clock=clock)
    quota.charge(10, 0.02)
    assert not quota.allows()  # cost budget spent
    with pytest.raises(ValueError):
        NewsVerdict(event_type="other", severity=6, time_horizon="days", company_specific=True,
                    revenue_impact="none", earnings_impact="none", credibility=0.5, novelty=0.5, sentiment=0.0,
                    reasoning="")
    assert price_of("some-new-model").input_per_million > price_of("gpt-4o-mini").input_per_million


async def test_build_from_configuration(fake_anthropic: FakeAnthropic, fake_openai: FakeOpenAI,
                                        store: SqlVerdictStore, tmp_path: object,
                                        caplog: pytest.LogCaptureFixture) -> None:
    service = build_analysis_service(
        anthropic_api_key="test-anthropic-key", anthropic_base_url=fake_anthropic.base_url,
        anthropic_model="claude-haiku-4-5", openai_api_key="test-openai-key",
        openai_base_url=fake_openai.base_url + "/v1", openai_model="gpt-4o-mini", daily_tokens=10_000,
        daily_cost_usd=1.0, timeout=5.0, models_dir=str(tmp_path), store=store, max_retries=0)
    _services.append(service)
    assert [s.name for s in service.slots] == ["anthropic", "openai"]  # no model in tmp_path: no local slot
    assert "no local news analyst" in caplog.text
    result = await service.assess(GOOD, "AAPL")
    assert result.record is not None and result.record.provider == "anthropic"
    assert "test-anthropic-key" not in caplog.text and "test-openai-key" not in caplog.text
    without_keys = build_analysis_service(
        anthropic_api_key=None, anthropic_base_url=None, anthropic_model="m", openai_api_key=None,
        openai_base_url=None, openai_model="m", daily_tokens=1, daily_cost_usd=1.0, timeout=1.0, models_dir=None,
        store=None)
    assert without_keys.slots == [] and (await without_keys.assess(GOOD, "AAPL")).technical_only
