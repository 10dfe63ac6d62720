"""The OpenAI sentiment analyst: the one module that imports `openai`.

Chat Completions with structured output (`response_format` = the NewsVerdict JSON schema, strict). The
answer is validated; when it does not validate, the model is asked once more with the validation error
(one repair retry), then `InvalidVerdictError`. Vendor errors leave as the `core.news.schema` analyst
errors. The SDK's own retries (`max_retries`) are the only retries.
"""
from __future__ import annotations

from typing import Any

import openai
from pydantic import ValidationError

from core.news.prompts import REPAIR_INSTRUCTION, SENTIMENT_PROMPT, PromptTemplate
from core.news.schema import AnalystAnswer, NewsVerdict, Provider, verdict_json_schema
from core.llm import (AnalystError, AnalystRateLimitedError, AnalystRefusedError, AnalystRequestError,
                      AnalystTimeoutError, AnalystUnavailableError, InvalidVerdictError, error_message,
                      header_retry_after, validation_summary)
from core.news.sources import NewsItem


class OpenAIAnalyst:
    provider = Provider.OPENAI

    def __init__(self, *, api_key: str, model: str, base_url: str | None = None, timeout: float = 20.0,
                 max_retries: int = 2, prompt: PromptTemplate = SENTIMENT_PROMPT, max_tokens: int = 400) -> None:
        self.model = model
        self.prompt = prompt
        self.max_tokens = max_tokens
        self._schema = openai_strict_schema()
        self._client = openai.AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout,
                                          max_retries=max_retries)

    @property
    def prompt_version(self) -> str:
        return self.prompt.version

    async def close(self) -> None:
        await self._client.close()

    async def analyze(self, item: NewsItem, symbol: str) -> AnalystAnswer:
        system, user = self.prompt.render(item, symbol)
        messages: list[dict[str, str]] = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        tokens_in = tokens_out = 0
        for attempt in range(2):
            content, used_in, used_out, model = await self._complete(messages)
            tokens_in, tokens_out = tokens_in + used_in, tokens_out + used_out
            try:
                verdict = NewsVerdict.model_validate_json(content)
            except ValidationError as exc:
                if attempt == 1:
                    raise InvalidVerdictError(f"openai {self.model}: answer failed validation twice: "
                                              f"{validation_summary(exc)}") from exc
                messages += [{"role": "assistant", "content": content},
                             {"role": "user", "content": REPAIR_INSTRUCTION.format(error=validation_summary(exc))}]
                continue
            return AnalystAnswer(verdict, model or self.model, tokens_in, tokens_out)
        raise AssertionError("unreachable")

    async def complete_text(self, system: str, user: str, *, max_tokens: int) -> tuple[str, str, int, int]:
        """A free-text answer (no response format): (text, model, input tokens, output tokens), for the
        reasoning writer (core.signals.narrative); vendor errors leave as the analyst errors, a refusal too."""
        try:
            response = await self._client.chat.completions.create(
                model=self.model, messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
                temperature=0.2, max_completion_tokens=max_tokens)
        except openai.APIError as exc:
            raise translate_error(exc) from exc
        message = self._message(response)
        text = (message.content or "").strip()
        if not text:
            raise InvalidVerdictError(f"openai {self.model}: answer without text")
        usage = response.usage
        return (text, response.model or self.model, usage.prompt_tokens if usage else 0,
                usage.completion_tokens if usage else 0)

    def _message(self, response: Any) -> Any:
        """The answer's message; no choice at all, or a refusal, is an analyst error."""
        if not response.choices:
            raise InvalidVerdictError(f"openai {self.model}: answer without choices")
        message = response.choices[0].message
        if message.refusal:
            raise AnalystRefusedError(f"openai {self.model} refused: {message.refusal[:200]}")
        return message

    async def _complete(self, messages: list[dict[str, str]]) -> tuple[str, int, int, str]:
        try:
            response = await self._client.chat.completions.create(  # type: ignore[call-overload]
                model=self.model, messages=messages,
                response_format={"type": "json_schema",
                                 "json_schema": {"name": "news_verdict", "strict": True,
                                                 "schema": self._schema}},
                temperature=0, max_completion_tokens=self.max_tokens)
        except openai.APIError as exc:
            raise translate_error(exc) from exc
        message = self._message(response)
        usage = response.usage
        return (message.content or "", usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0,
                response.model)


def openai_strict_schema() -> dict[str, Any]:
    """The verdict schema without keywords strict Structured Outputs does not accept (string maxLength);
    the answer is still validated against the full NewsVerdict model here."""
    schema = verdict_json_schema()
    for prop in schema["properties"].values():
        prop.pop("maxLength", None)
    return schema


def translate_error(exc: openai.APIError) -> AnalystError:
    name = "openai"
    if isinstance(exc, openai.APITimeoutError):
        return AnalystTimeoutError(f"{name}: request timed out")
    if isinstance(exc, openai.APIConnectionError):
        return AnalystUnavailableError(f"{name}: connection failed: {type(exc).__name__}")
    if isinstance(exc, openai.RateLimitError):
        return AnalystRateLimitedError(f"{name}: rate limited (429)", header_retry_after(exc.response.headers))
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500:
            return AnalystUnavailableError(f"{name}: HTTP {exc.status_code}")
        return AnalystRequestError(f"{name}: HTTP {exc.status_code}: {error_message(exc.body, type(exc).__name__)}")
    return AnalystUnavailableError(f"{name}: {type(exc).__name__}")
