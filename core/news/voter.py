"""The news vote for (symbol, as_of): stored verdicts of items published in a window before as_of,
aggregated into a score in [-1, 1] with a short text naming the evidence; None when there is no news.

Each verdict weighs  recency (half-life decay) x credibility x severity x novelty. The company part is the
weighted mean sentiment shrunk towards 0 when the evidence is thin (mass / (mass + shrink)); market-wide
headlines add a small component (`market_weight`). Items published after as_of are never used. When one
item has verdicts from several analysts, the preferred provider's verdict is used (Anthropic, OpenAI,
then the local model).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from core.news.schema import AnalysisRecord

PROVIDER_PREFERENCE = ("anthropic", "openai", "local")


@dataclass(frozen=True, slots=True)
class VoterConfig:
    window: timedelta = timedelta(days=1)
    half_life: timedelta = timedelta(hours=8)
    market_weight: float = 0.2  # share of the score from market-wide headlines (all of it when alone)
    shrink: float = 0.5  # evidence mass at which the company score is halved towards 0

    def __post_init__(self) -> None:
        if self.window <= timedelta(0) or self.half_life <= timedelta(0):
            raise ValueError("window and half_life must be positive")
        if not 0 <= self.market_weight <= 1 or self.shrink < 0:
            raise ValueError("market_weight must be in [0, 1] and shrink >= 0")


@dataclass(frozen=True, slots=True)
class NewsVote:
    symbol: str
    as_of: datetime
    score: float  # [-1, 1]
    items: int  # company items used
    market_items: int
    text: str


def record_weight(record: AnalysisRecord, as_of: datetime, half_life: timedelta) -> float:
    v = record.verdict
    age = max(0.0, (as_of - record.published_at) / half_life)
    severity = 0.4 + 0.6 * (v.severity - 1) / 4
    return 0.5 ** age * v.credibility * severity * (0.5 + 0.5 * v.novelty)


def _preferred(records: Iterable[AnalysisRecord]) -> list[AnalysisRecord]:
    rank = {p: i for i, p in enumerate(PROVIDER_PREFERENCE)}
    best: dict[tuple[str, str], AnalysisRecord] = {}
    for r in records:
        key = (r.item_id, r.symbol)
        if key not in best or rank.get(r.provider, 99) < rank.get(best[key].provider, 99):
            best[key] = r
    return list(best.values())


def _part(records: Sequence[AnalysisRecord], as_of: datetime, cfg: VoterConfig) -> tuple[float, float]:
    """(weighted mean sentiment, evidence mass)."""
    weights = [record_weight(r, as_of, cfg.half_life) for r in records]
    mass = sum(weights)
    if mass <= 0:
        return 0.0, 0.0
    return sum(w * r.verdict.sentiment for w, r in zip(weights, records)) / mass, mass


def news_vote(symbol: str, as_of: datetime, records: Iterable[AnalysisRecord],
              config: VoterConfig | None = None) -> NewsVote | None:
    """Aggregate `records` (about `symbol`, and market-wide ones with symbol "") into the vote at as_of."""
    cfg = config or VoterConfig()
    if as_of.tzinfo is None:
        raise ValueError("as_of must be tz-aware")
    start = as_of - cfg.window
    usable = _preferred(r for r in records if start < r.published_at <= as_of and r.symbol in (symbol, ""))
    company = [r for r in usable if r.symbol == symbol and not r.market_wide]
    market = [r for r in usable if r.symbol == "" or r.market_wide]
    if not company and not market:
        return None
    c_mean, c_mass = _part(company, as_of, cfg)
    m_mean, m_mass = _part(market, as_of, cfg)
    c_score = c_mean * c_mass / (c_mass + cfg.shrink) if c_mass else 0.0
    m_score = m_mean * m_mass / (m_mass + cfg.shrink) if m_mass else 0.0
    if company and market:
        score = (1 - cfg.market_weight) * c_score + cfg.market_weight * m_score
    else:
        score = c_score if company else cfg.market_weight * m_score
    score = max(-1.0, min(1.0, score))
    return NewsVote(symbol, as_of, score, len(company), len(market), _describe(score, company, market, as_of, cfg))


def _describe(score: float, company: Sequence[AnalysisRecord], market: Sequence[AnalysisRecord],
              as_of: datetime, cfg: VoterConfig) -> str:
    hours = cfg.window.total_seconds() / 3600
    parts = [f"news {score:+.2f} over {hours:g}h"]
    if company:
        pos = sum(r.verdict.sentiment > 0.1 for r in company)
        neg = sum(r.verdict.sentiment < -0.1 for r in company)
        top = max(company, key=lambda r: record_weight(r, as_of, cfg.half_life) * abs(r.verdict.sentiment))
        title = (top.title[:80] + "...") if len(top.title) > 80 else top.title
        parts.append(f"{len(company)} items ({pos} positive, {neg} negative); strongest: "
                     f"\"{title}\" ({top.verdict.sentiment:+.2f}, {top.provider})")
    if market:
        mean = sum(r.verdict.sentiment for r in market) / len(market)
        parts.append(f"market headlines: {len(market)} (mean {mean:+.2f})")
    return "; ".join(parts)


class VerdictHistory(Protocol):
    async def between(self, symbols: Sequence[str], start: datetime, end: datetime) -> list[AnalysisRecord]: ...


class NewsVoter:
    """Votes from stored verdicts (live: what the analysis service stored; backtest: the replayed ones)."""

    name = "news"

    def __init__(self, history: VerdictHistory, config: VoterConfig | None = None) -> None:
        self.history = history
        self.config = config or VoterConfig()

    async def vote(self, symbol: str, as_of: datetime) -> NewsVote | None:
        return (await self.votes([symbol], as_of))[symbol]

    async def votes(self, symbols: Sequence[str], as_of: datetime) -> dict[str, NewsVote | None]:
        """Every symbol's vote at as_of with one history query (for a scan over the universe)."""
        start = as_of - self.config.window
        records = await self.history.between([*symbols, ""], start, as_of + timedelta(microseconds=1))
        by_symbol: dict[str, list[AnalysisRecord]] = {}
        for r in records:
            by_symbol.setdefault(r.symbol, []).append(r)
        market = by_symbol.get("", [])
        return {s: news_vote(s, as_of, by_symbol.get(s, []) + market, self.config) for s in symbols}
