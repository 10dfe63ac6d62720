"""Versioned prompt templates for the LLM analysts.

A template's `version` goes into every stored verdict and into the response-cache key, so changing the
wording means bumping the version: old verdicts stay attributable to the prompt that produced them.
"""
from __future__ import annotations

from dataclasses import dataclass

from core.news.sources import NewsItem

_MAX_TEXT = 2000


@dataclass(frozen=True, slots=True)
class PromptTemplate:
    name: str
    version: str
    system: str
    user: str  # str.format fields: subject, published, source, title, text

    def render(self, item: NewsItem, symbol: str) -> tuple[str, str]:
        """(system, user) messages for one item about `symbol` ("" = the market as a whole)."""
        subject = f"the stock {symbol}" if symbol else "the US stock market as a whole"
        text = item.text if item.text != item.title else ""
        user = self.user.format(subject=subject, published=item.published_at.isoformat(timespec="minutes"),
                                source=item.source, title=item.title[:_MAX_TEXT], text=text[:_MAX_TEXT] or "(none)")
        return self.system, user


_FIELDS = (
    "event_type (earnings, guidance, analyst_rating, m_and_a, product, legal_regulatory, management, macro, "
    "market_commentary, capital_return, other); severity 1-5 (1 trivial, 5 company-changing); time_horizon "
    "(intraday, days, weeks, months, long_term); company_specific (true when it concerns this company rather "
    "than its sector or the market); revenue_impact and earnings_impact (negative, none, positive, unknown); "
    "credibility 0-1 (rumour and anonymous social posts low, filings and major wires high); novelty 0-1 "
    "(0 = repeats known information); sentiment -1..1 for the subject's price over the time horizon; "
    "reasoning: at most three sentences naming the evidence in the text."
)

_USER = ("Subject: {subject}\nPublished: {published} (source: {source})\nHeadline: {title}\nBody: {text}\n\n"
         "Assess this item for the subject. Use only the text above; do not assume facts it does not state.")

SENTIMENT_PROMPT = PromptTemplate(
    name="sentiment",
    version="sentiment-v1",
    system=("You are a careful financial news analyst. You read one news item or social-media post and rate "
            "what it means for the subject's share price. Spam, promotions and posts without information "
            "get sentiment near 0, low credibility and severity 1. Answer with the requested JSON only. "
            "Fields: " + _FIELDS),
    user=_USER,
)

EVENT_PROMPT = PromptTemplate(
    name="event",
    version="event-v1",
    system=("You are a fundamental equity analyst. You classify one news item as a corporate or market event "
            "and judge its likely effect on revenue, earnings and the share price of the subject. Distinguish "
            "facts from opinion and rumour; rate credibility accordingly. Record your assessment with the "
            "provided tool. Fields: " + _FIELDS),
    user=_USER,
)

REPAIR_INSTRUCTION = ("Your previous answer did not match the required schema: {error}. "
                      "Answer again with a corrected, complete answer and nothing else.")
