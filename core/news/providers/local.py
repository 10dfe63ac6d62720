"""The local fallback analyst: the shipped offline sentiment model, dressed as a NewsVerdict.

The model reads sentences, not events: it gives sentiment and its confidence only. The other verdict
fields are filled conservatively (event type "other", unknown impacts, mid novelty, credibility by source
kind) and the reasoning says so, so the voter never mistakes them for an LLM's judgement.
"""
from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from core.news.schema import AnalystAnswer, NewsVerdict, Provider
from core.news.sentiment import SentimentModel, SentimentVerdict, latest_model_dir
from core.news.sources import NewsItem

LOCAL_PROMPT_VERSION = "local-v1"  # the local model has no prompt; the version names the verdict mapping
SOCIAL_SOURCES = ("twitter", "stocktwits", "reddit")


class LocalAnalyst:
    provider = Provider.LOCAL
    prompt_version = LOCAL_PROMPT_VERSION

    def __init__(self, model: SentimentModel) -> None:
        self._model = model
        self.model = f"local:{model.manifest.get('name', 'sentiment')}-{model.manifest.get('version', 'unknown')}"

    @classmethod
    def from_store(cls, models_dir: Path | str, threads: int = 1) -> LocalAnalyst:
        return cls(SentimentModel.load(latest_model_dir(models_dir), threads=threads))

    async def analyze(self, item: NewsItem, symbol: str) -> AnalystAnswer:
        return (await asyncio.to_thread(self.analyze_batch, [item]))[0]

    def analyze_batch(self, items: Sequence[NewsItem]) -> list[AnalystAnswer]:
        """Synchronous and batched: the fast path for replays and evaluations."""
        predictions = self._model.predict([_text(item) for item in items])
        return [AnalystAnswer(self.verdict(item, p), self.model) for item, p in zip(items, predictions)]

    def verdict(self, item: NewsItem, prediction: SentimentVerdict) -> NewsVerdict:
        confidence = max(prediction.probabilities.values(), default=0.0)
        social = item.source.split(":")[0] in SOCIAL_SOURCES
        return NewsVerdict(
            event_type="market_commentary" if item.market_wide else "other",
            severity=1 + round(2 * abs(prediction.score)),
            time_horizon="days",
            company_specific=not item.market_wide,
            revenue_impact="unknown",
            earnings_impact="unknown",
            credibility=0.3 if social else 0.6,
            novelty=0.5,
            sentiment=max(-1.0, min(1.0, prediction.score)),
            reasoning=(f"Local sentiment model: {prediction.label} (p={confidence:.2f}) from the text alone; "
                       "event type, impact and novelty not assessed."),
        )


def _text(item: NewsItem) -> str:
    return item.title if item.text == item.title else f"{item.title}. {item.text}"
