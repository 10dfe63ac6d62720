"""The news vote for (symbol, as_of): stored verdicts of items published in a window before as_of,
aggregated into a score in [-1, 1] with a short text naming the evidence; None when there is no news.

Each verdict weighs  recency (half-life decay) x credibility x severity x novelty. The company part is the
weighted mean sentiment shrunk towards 0 when the evidence is thin (mass / (mass + shrink)); market-wide
headlines add a small component (`market_weight`). Items published after as_of are never used. When one
item has verdicts from several analysts, the preferred provider's verdict is used (Anthropic, OpenAI,
then the local model).
"""
from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

import numpy as np

from core.features.news import COVERAGE_DAYS, AnalysedItem, NewsFeed
from core.news.schema import AnalysisRecord
from core.signals.ensemble import NewsOpinion

PROVIDER_PREFERENCE = ("anthropic", "openai", "local")
_RANK = {p: i for i, p in enumerate(PROVIDER_PREFERENCE)}
FEATURE_LOOKBACK = timedelta(days=COVERAGE_DAYS + 1)  # what the models' news features read before a decision


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


def preferred(records: Iterable[AnalysisRecord]) -> list[AnalysisRecord]:
    """One verdict per (item, symbol): the preferred provider's."""
    rank = _RANK
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
    usable = preferred(r for r in records if start < r.published_at <= as_of and r.symbol in (symbol, ""))
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


def analysed_item(record: AnalysisRecord) -> AnalysedItem:
    """A stored verdict as the models' news features read it (core.features.news): weighted by credibility x
    severity x novelty as the vote weighs it (without decay: the features' windows do the ageing); a market-wide
    item under the symbol ""."""
    return AnalysedItem("" if record.market_wide else record.symbol, _ns(record.published_at),
                        float(record.verdict.sentiment), record_weight(record, record.published_at, timedelta(hours=1)))


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _ns(when: datetime) -> int:
    """Exact int64 UTC nanoseconds of a tz-aware datetime (no float rounding at the decision boundary)."""
    return (when - _EPOCH) // timedelta(microseconds=1) * 1000


def news_feed(records: Iterable[AnalysisRecord]) -> NewsFeed:
    """The news features' source over `records` (one verdict per item and symbol: the preferred provider's)."""
    return NewsFeed(analysed_item(r) for r in preferred(records))


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


class VerdictIndex:
    """Stored verdicts held in memory by symbol and publication time: the engine's news voter
    (`core.signals.ensemble.NewsOpinions`). Synchronous and thread-safe: the news job adds verdicts on the event
    loop while the engine reads them in a worker thread.

    An opinion about (symbol, as_of) reads only verdicts on items published in (as_of - window, as_of]: an item
    published later changes nothing. It needs company news (market headlines alone are no opinion about a
    stock, and say nothing about crypto or FX). `skill` (0..1) scales the vote's weight; the news job sets it
    from the voter's track record.

    It is also the models' news-feature source (core.features.news.NewsFeatureSource): for that it keeps a
    compact form of each verdict (one per item and symbol, the preferred provider's) for FEATURE_LOOKBACK, longer
    than the vote's window."""

    name = "news"

    def __init__(self, records: Iterable[AnalysisRecord] = (), config: VoterConfig | None = None,
                 skill: float = 1.0) -> None:
        self.config = config or VoterConfig()
        self.skill = skill
        self._lock = threading.Lock()
        self._times: dict[str, list[datetime]] = {}
        self._records: dict[str, list[AnalysisRecord]] = {}
        self._items: dict[tuple[str, str], tuple[int, AnalysedItem]] = {}  # (item, symbol) -> (provider rank, item)
        self._feed: NewsFeed | None = None
        self.add(records)

    @property
    def lookback(self) -> timedelta:
        """How far back the verdicts it needs reach: the vote's window or the news features' lookback."""
        return max(self.config.window, FEATURE_LOOKBACK)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._records.values())

    def add(self, records: Iterable[AnalysisRecord]) -> int:
        """Adds verdicts (any order); returns how many."""
        by_symbol: dict[str, list[AnalysisRecord]] = {}
        for r in records:
            by_symbol.setdefault("" if r.market_wide else r.symbol, []).append(r)
        with self._lock:
            for symbol, new in by_symbol.items():
                merged = sorted([*self._records.get(symbol, []), *new], key=lambda r: r.published_at)
                self._records[symbol] = merged
                self._times[symbol] = [r.published_at for r in merged]
                for r in new:
                    key, rank = (r.item_id, symbol), _RANK.get(r.provider, len(_RANK))
                    if key not in self._items or rank < self._items[key][0]:
                        self._items[key] = (rank, analysed_item(r))
            self._feed = None
        return sum(len(v) for v in by_symbol.values())

    def prune(self, before: datetime, features_before: datetime | None = None) -> None:
        """Forgets verdicts on items published before `before` (a live service keeps only its window), and their
        compact form for the news features before `features_before` (default: FEATURE_LOOKBACK before `before`)."""
        cut_ns = _ns(features_before or before - FEATURE_LOOKBACK)
        with self._lock:
            self._feed = None
            for symbol, times in self._times.items():
                cut = bisect.bisect_left(times, before)
                if cut:
                    self._times[symbol], self._records[symbol] = times[cut:], self._records[symbol][cut:]
            self._items = {k: v for k, v in self._items.items() if v[1].published_ns >= cut_ns}

    def _window(self, symbol: str, as_of: datetime) -> list[AnalysisRecord]:
        times = self._times.get(symbol)
        if not times:
            return []
        lo = bisect.bisect_right(times, as_of - self.config.window)
        hi = bisect.bisect_right(times, as_of)
        return self._records[symbol][lo:hi]

    def vote(self, symbol: str, as_of: datetime) -> NewsVote | None:
        with self._lock:
            company, market = self._window(symbol, as_of), self._window("", as_of)
        if not company:
            return None
        return news_vote(symbol, as_of, company + market, self.config)

    def news_features(self, symbols: np.ndarray, as_of_ns: np.ndarray) -> np.ndarray:
        """The models' news features (core.features.news.NewsFeatureSource) from the verdicts held now."""
        with self._lock:
            feed = self._feed
            if feed is None:
                feed = self._feed = NewsFeed(item for _, item in self._items.values())
        return feed.news_features(symbols, as_of_ns)

    def opinions(self, requests: Sequence[tuple[str, datetime]]) -> list[NewsOpinion | None]:
        out: list[NewsOpinion | None] = []
        for symbol, as_of in requests:
            vote = self.vote(symbol, as_of)
            out.append(None if vote is None or vote.items == 0 else
                       NewsOpinion(vote.score, vote.items, vote.text, self.skill))
        return out


@dataclass(frozen=True, slots=True)
class NewsTrackRecord:
    """How the news vote did on closed signals it voted on. A call is right when the news leaned with the
    signal's side and it won after costs, or leaned against it and it lost; neutral votes (|score| < 0.05) are
    not calls."""

    voted: int  # closed signals the news voted on
    calls: int  # of them, with a leaning vote
    right: int

    @property
    def hit_rate(self) -> float | None:
        return self.right / self.calls if self.calls else None

    def skill(self, min_calls: int = 30) -> float:
        """0..1 for the vote weight: 0 until `min_calls` calls are known (an unproven voter runs in shadow: its
        opinion is stored with each signal and scored when the signal closes, but it moves nothing; on the shared
        tweets the local-model news vote showed no edge, see README), then 0 at a hit rate of 45 % or less,
        rising to 1 at 55 % or more."""
        rate = self.hit_rate
        if rate is None or self.calls < min_calls:
            return 0.0
        return max(0.0, min(1.0, (rate - 0.45) / 0.10))


def news_track_record(closed: Iterable[tuple[Mapping[str, Any], str, float]]) -> NewsTrackRecord:
    """From (signal evidence, signal direction value "long"/"short", net return) of closed signals."""
    voted = calls = right = 0
    for evidence, direction, net in closed:
        news = evidence.get("news")
        if not isinstance(news, Mapping) or "score" not in news:
            continue
        voted += 1
        lean = float(news["score"]) * (1.0 if direction == "long" else -1.0)
        if abs(lean) < 0.05:
            continue
        calls += 1
        right += (lean > 0) == (net > 0)
    return NewsTrackRecord(voted, calls, right)
