"""The Anthropic fundamental / event analyst: the one module that imports `anthropic`.

Messages API with a single tool whose input schema is NewsVerdict, forced with `tool_choice`; the tool
input is validated. When it does not validate, the model gets the validation error back as an error
`tool_result` and one more turn (one repair retry), then `InvalidVerdictError`. Vendor errors (429,
529 overloaded, 5xx, timeouts) leave as the `core.news.schema` analyst errors.
"""
from __future__ import annotations

from typing import Any

import anthropic
from pydantic import ValidationError

from core.news.prompts import EVENT_PROMPT, REPAIR_INSTRUCTION, PromptTemplate
from core.news.schema import AnalystAnswer, NewsVerdict, Provider, verdict_json_schema
from core.llm import (AnalystError, AnalystRateLimitedError, AnalystRefusedError, AnalystRequestError,
                      AnalystTimeoutError, AnalystUnavailableError, InvalidVerdictError, error_message,
                      header_retry_after, validation_summary)
from core.news.sources import NewsItem

TOOL_NAME = "record_news_verdict"


class AnthropicAnalyst:
    provider = Provider.ANTHROPIC

    def __init__(self, *, api_key: str, model: str, base_url: str | None = None, timeout: float = 20.0,
                 max_retries: int = 2, prompt: PromptTemplate = EVENT_PROMPT, max_tokens: int = 600) -> None:
        self.model = model
        self.prompt = prompt
        self.max_tokens = max_tokens
        self._client = anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url, timeout=timeout,
                                                max_retries=max_retries)
        self._tool: dict[str, Any] = {"name": TOOL_NAME, "input_schema": verdict_json_schema(),
                                      "description": "Record the assessment of the news item."}

    @property
    def prompt_version(self) -> str:
        return self.prompt.version

    async def close(self) -> None:
        await self._client.close()

    async def analyze(self, item: NewsItem, symbol: str) -> AnalystAnswer:
        system, user = self.prompt.render(item, symbol)
        messages: list[dict[str, Any]] = [{"role": "user", "content": user}]
        tokens_in = tokens_out = 0
        for attempt in range(2):
            response = await self._create(system, messages)
            tokens_in += response.usage.input_tokens
            tokens_out += response.usage.output_tokens
            if response.stop_reason == "refusal":
                raise AnalystRefusedError(f"anthropic {self.model} refused to answer")
            tool_use = next((b for b in response.content if b.type == "tool_use" and b.name == TOOL_NAME), None)
            if tool_use is None:
                error, tool_id = f"no {TOOL_NAME} tool call in the answer", None
            else:
                try:
                    verdict = NewsVerdict.model_validate(tool_use.input)
                    return AnalystAnswer(verdict, response.model or self.model, tokens_in, tokens_out)
                except ValidationError as exc:
                    error, tool_id = validation_summary(exc), tool_use.id
            if attempt == 1:
                raise InvalidVerdictError(f"anthropic {self.model}: answer failed validation twice: {error}")
            messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in response.content]})
            repair = REPAIR_INSTRUCTION.format(error=error)
            messages.append({"role": "user", "content": (
                [{"type": "tool_result", "tool_use_id": tool_id, "is_error": True, "content": repair}]
                if tool_id else repair)})
        raise AssertionError("unreachable")

    async def complete_text(self, system: str, user: str, *, max_tokens: int) -> tuple[str, str, int, int]:
        """A free-text answer (no tool): (text, model, input tokens, output tokens), for the reasoning
        writer (core.signals.narrative); vendor errors leave as the analyst errors, a refusal too."""
        try:
            response = await self._client.messages.create(
                model=self.model, max_tokens=max_tokens, system=system,
                messages=[{"role": "user", "content": user}])
        except anthropic.APIError as exc:
            raise translate_error(exc) from exc
        if response.stop_reason == "refusal":
            raise AnalystRefusedError(f"anthropic {self.model} refused to answer")
        text = " ".join(b.text for b in response.content if b.type == "text").strip()
        if not text:
            raise InvalidVerdictError(f"anthropic {self.model}: answer without text")
        return text, response.model or self.model, response.usage.input_tokens, response.usage.output_tokens

    async def _create(self, system: str, messages: list[dict[str, Any]]) -> Any:
        try:
            return await self._client.messages.create(  # type: ignore[call-overload]
                model=self.model, max_tokens=self.max_tokens, system=system, messages=messages,
                tools=[self._tool], tool_choice={"type": "tool", "name": TOOL_NAME})
        except anthropic.APIError as exc:
            raise translate_error(exc) from exc


def translate_error(exc: anthropic.APIError) -> AnalystError:
    name = "anthropic"
    if isinstance(exc, anthropic.APITimeoutError):
        return AnalystTimeoutError(f"{name}: request timed out")
    if isinstance(exc, anthropic.APIConnectionError):
        return AnalystUnavailableError(f"{name}: connection failed: {type(exc).__name__}")
    if isinstance(exc, anthropic.RateLimitError):
        return AnalystRateLimitedError(f"{name}: rate limited (429)", header_retry_after(exc.response.headers))
    if isinstance(exc, anthropic.APIStatusError):
        if exc.status_code >= 500:
            kind = "overloaded" if exc.status_code == 529 else f"HTTP {exc.status_code}"
            return AnalystUnavailableError(f"{name}: {kind}")
        return AnalystRequestError(f"{name}: HTTP {exc.status_code}: {error_message(exc.body, type(exc).__name__)}")
    return AnalystUnavailableError(f"{name}: {type(exc).__name__}")
