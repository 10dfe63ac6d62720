"""What every LLM call shares, whether it analyses news (core.news.analysts) or writes a signal's reasoning
(core.signals.narrative): the errors a provider adapter raises, list prices, and the daily token and dollar
quota. The adapters themselves (Anthropic, OpenAI, the local model) are in core.news."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import ValidationError

from core.clock import Clock
from core.errors import SignalBotError
from core.resilience import BadRequest, RateLimited, Unavailable, parse_retry_after


class AnalystError(SignalBotError):
    """An analyst could not produce a verdict. `counts_against_provider`: the breaker should count it."""

    counts_against_provider = True


class AnalystUnavailableError(AnalystError, Unavailable):
    """The provider is down, overloaded or unreachable (5xx, 529, connection errors)."""


class AnalystTimeoutError(AnalystError, Unavailable):
    """The call took longer than its time limit."""


class AnalystRateLimitedError(AnalystError, RateLimited):
    """The provider said 429. `retry_after` (seconds) when it said how long to wait."""

    counts_against_provider = False

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InvalidVerdictError(AnalystError):
    """The answer did not validate against NewsVerdict, even after the repair retry."""


class AnalystRefusedError(AnalystError):
    """The model declined to answer (a refusal): not a health problem of the provider."""

    counts_against_provider = False


class AnalystRequestError(AnalystError, BadRequest):
    """The provider rejected the request itself (4xx other than 429: bad key, bad model name)."""


@dataclass(frozen=True, slots=True)
class Pricing:
    """USD per million tokens."""

    input_per_million: float = 0.0
    output_per_million: float = 0.0

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_million + output_tokens * self.output_per_million) / 1e6


# List prices as of writing; unknown models are priced high on purpose so a quota errs on the safe side.
PRICES: dict[str, Pricing] = {
    "gpt-4o-mini": Pricing(0.15, 0.60),
    "gpt-4o": Pricing(2.50, 10.0),
    "gpt-4.1-mini": Pricing(0.40, 1.60),
    "claude-3-5-haiku": Pricing(0.80, 4.0),
    "claude-haiku-4-5": Pricing(1.0, 5.0),
    "claude-3-5-sonnet": Pricing(3.0, 15.0),
    "claude-sonnet-4": Pricing(3.0, 15.0),
}
UNKNOWN_MODEL_PRICE = Pricing(5.0, 25.0)


def price_of(model: str) -> Pricing:
    if model.startswith("local:"):
        return Pricing()
    best = max((name for name in PRICES if model.startswith(name)), key=len, default=None)
    return PRICES[best] if best else UNKNOWN_MODEL_PRICE


class DailyQuota:
    """Tokens and dollars one provider may use per UTC day (0 = no allowance at all)."""

    def __init__(self, *, tokens: int, cost_usd: float, clock: Clock) -> None:
        self.tokens, self.cost_usd, self.clock = tokens, cost_usd, clock
        self._day: date | None = None
        self.used_tokens = 0
        self.used_cost = 0.0

    def _roll(self) -> None:
        today = self.clock.now().date()
        if today != self._day:
            self._day, self.used_tokens, self.used_cost = today, 0, 0.0

    def allows(self, estimated_tokens: int = 0) -> bool:
        self._roll()
        return (self.used_tokens + estimated_tokens <= self.tokens and self.used_cost < self.cost_usd
                and self.tokens > 0)

    def usage(self) -> tuple[int, float]:
        """(tokens, cost) used today (zero after midnight UTC, before the day's first call)."""
        self._roll()
        return self.used_tokens, self.used_cost

    def charge(self, tokens: int, cost_usd: float) -> None:
        self._roll()
        self.used_tokens += tokens
        self.used_cost += cost_usd


# ---------------------------------------------------------------------- what the vendor adapters share

def error_message(body: Any, default: str) -> str:
    """The provider's own message from an error body ({"error": {"message": ...}} or {"message": ...}), cut to 200
    characters; `default` when it has none."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"][:200]
    return default


def header_retry_after(headers: object) -> float | None:
    """Seconds from a response's Retry-After header (seconds or an HTTP date), None when absent or unreadable."""
    getter = getattr(headers, "get", None)
    value = getter("retry-after") if getter else None
    return parse_retry_after(value) if isinstance(value, str) else None


def validation_summary(exc: ValidationError) -> str:
    """The first five problems of an answer that did not validate, for the repair prompt and the log."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}" for e in exc.errors()[:5])
