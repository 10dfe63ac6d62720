"""The reasoning-writer chain from configuration: Claude, then GPT, each only when its key is set.

The writers reuse the analyst adapters (`AnthropicAnalyst`, `OpenAIAnalyst`: the one module per vendor
SDK) through their `complete_text`; each gets its own circuit breaker and daily token/cost cap (the news
analysts keep theirs). No key: no narrator, the template text stays.
"""
from __future__ import annotations

from core.clock import Clock, SystemClock
from core.llm import DailyQuota
from core.signals.narrative import LLMReasoningWriter, Narrator, WriterSlot


def build_narrator(
    *,
    anthropic_api_key: str | None, anthropic_base_url: str | None, anthropic_model: str,
    openai_api_key: str | None, openai_base_url: str | None, openai_model: str,
    daily_tokens: int, daily_cost_usd: float, timeout: float = 8.0, budget: float = 8.0,
    clock: Clock | None = None, max_retries: int = 0,
) -> Narrator | None:
    """A Narrator over the configured LLMs (in order Anthropic -> OpenAI), or None when no key is set.
    A call never waits longer than `budget` (the whole batch's time), whatever `timeout` says."""
    clock = clock or SystemClock()
    call_timeout = min(timeout, budget)
    slots: list[WriterSlot] = []

    def quota() -> DailyQuota:
        return DailyQuota(tokens=daily_tokens, cost_usd=daily_cost_usd, clock=clock)

    if anthropic_api_key:
        from core.news.providers.anthropic import AnthropicAnalyst
        slots.append(WriterSlot(LLMReasoningWriter(AnthropicAnalyst(
            api_key=anthropic_api_key, base_url=anthropic_base_url, model=anthropic_model, timeout=call_timeout,
            max_retries=max_retries)), quota()))
    if openai_api_key:
        from core.news.providers.openai import OpenAIAnalyst
        slots.append(WriterSlot(LLMReasoningWriter(OpenAIAnalyst(
            api_key=openai_api_key, base_url=openai_base_url, model=openai_model, timeout=call_timeout,
            max_retries=max_retries)), quota()))
    return Narrator(slots, budget=budget, clock=clock) if slots else None
