"""What a news analyst answers, what is stored of it, and the errors analysts raise.

`NewsVerdict` is the structured output every analyst (OpenAI, Anthropic, the local model) must produce;
the LLM adapters validate vendor output against it. `AnalysisRecord` is one verdict with its provenance
(time, provider, model, prompt version, tokens, cost): the unit stored and replayed by backtests.
`VerdictStore` is the port storage implements (core never imports storage).
"""
from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field


EventType = Literal[
    "earnings", "guidance", "analyst_rating", "m_and_a", "product", "legal_regulatory", "management",
    "macro", "market_commentary", "capital_return", "other",
]
TimeHorizon = Literal["intraday", "days", "weeks", "months", "long_term"]
Impact = Literal["negative", "none", "positive", "unknown"]


class NewsVerdict(BaseModel):
    """One analyst's reading of one news item for one symbol (or the market when market-wide)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_type: EventType
    severity: int = Field(ge=1, le=5, description="1 = trivial, 5 = company-changing")
    time_horizon: TimeHorizon
    company_specific: bool
    revenue_impact: Impact
    earnings_impact: Impact
    credibility: float = Field(ge=0.0, le=1.0, description="how trustworthy the source and claim are")
    novelty: float = Field(ge=0.0, le=1.0, description="1 = new information, 0 = already known / repeated")
    sentiment: float = Field(ge=-1.0, le=1.0, description="-1 very negative .. 1 very positive for the price")
    reasoning: str = Field(max_length=1200, description="two or three sentences naming the evidence")


def verdict_json_schema() -> dict[str, Any]:
    """NewsVerdict as a strict JSON schema (every property required, no extra ones), for vendor APIs."""
    schema = NewsVerdict.model_json_schema()
    schema["additionalProperties"] = False
    schema["required"] = sorted(schema["properties"])
    schema.pop("title", None)
    for prop in schema["properties"].values():
        prop.pop("title", None)
    return schema


class Provider(enum.StrEnum):
    ANTHROPIC = "anthropic"
    OPENAI = "openai"
    LOCAL = "local"


@dataclass(frozen=True, slots=True)
class AnalystAnswer:
    """What an analyst adapter returns for one call: the verdict and what the call used."""

    verdict: NewsVerdict
    model: str
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, slots=True)
class AnalysisRecord:
    """A stored verdict: which item, about which symbol ("" for market-wide), by whom, when."""

    item_id: str
    symbol: str
    published_at: datetime
    analysed_at: datetime
    provider: str
    model: str
    prompt_version: str
    verdict: NewsVerdict
    market_wide: bool = False
    title: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0

    def verdict_json(self) -> str:
        return self.verdict.model_dump_json()

    @staticmethod
    def parse_verdict(text: str) -> NewsVerdict:
        return NewsVerdict.model_validate(json.loads(text))


class VerdictStore(Protocol):
    """Persistence of analysis records (implemented in storage.news)."""

    async def save(self, record: AnalysisRecord) -> None: ...

    async def find(self, item_id: str, symbol: str, *, model: str | None = None,
                   prompt_version: str | None = None) -> list[AnalysisRecord]:
        """Records of this item and symbol, newest first; filtered by model / prompt version when given."""
        ...

    async def between(self, symbols: Sequence[str], start: datetime, end: datetime) -> list[AnalysisRecord]:
        """Records whose item was published in [start, end) about these symbols ("" = market-wide)."""
        ...
