"""News features of a setup (feature set fs-3): how much the symbol is in the news and what the analysed news
says, read only from items published at or before the decision time.

The features are built from analysed items (what `core.news.voter` turns stored verdicts into: the symbol, the
publication time, the sentiment -1..1 and the weight of the verdict, i.e. credibility x severity x novelty),
held per symbol as cumulative sums so that a window's count and weighted sentiment are two binary searches:

news_count_1d     log(1 + company items in the last day)
news_attention    log(1 + items in the last day) - log(1 + the mean daily items of the last 30 days): unusual attention
news_sent_1d      the weighted mean sentiment of the last day's items, shrunk towards 0 when the evidence is thin
                  (sum w*s / (sum w + SHRINK)); 0 with no items
news_sent_5d      the same over five days
market_news_3d    the same over three days of market-wide headlines

A symbol no source has covered in the last 30 days has NaN company features (unknown, not "no news"): on the
shared data only 87 stocks have tweets. The sentiment features are signed by the setup's side in
`core.features.sets` (bullish news reads as agreement for a long, disagreement for a short)."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

NEWS_FEATURES: tuple[str, ...] = ("news_count_1d", "news_attention", "news_sent_1d", "news_sent_5d", "market_news_3d")
NEWS_SIGNED = frozenset({"news_sent_1d", "news_sent_5d", "market_news_3d"})
DAY_NS = 86_400 * 10**9
COVERAGE_DAYS = 30
SHRINK = 0.5  # evidence weight at which a window's mean sentiment is halved towards 0 (as the news vote's)


@runtime_checkable
class NewsFeatureSource(Protocol):
    """What the models' news features read: (len(symbols), len(NEWS_FEATURES)) for each symbol at its time
    (int64 UTC ns), from items published at or before that time only; unsigned (`core.features.sets` signs
    them by the side)."""

    def news_features(self, symbols: np.ndarray, as_of_ns: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class AnalysedItem:
    symbol: str  # "" for a market-wide item
    published_ns: int
    sentiment: float  # -1..1
    weight: float  # > 0: how much the verdict counts (credibility x severity x novelty)


@dataclass(frozen=True, slots=True)
class _Track:
    """One symbol's items by publication time with running totals (index 0 = nothing)."""

    times: np.ndarray  # int64, ascending
    count: np.ndarray  # (n + 1,)
    weight: np.ndarray
    weighted: np.ndarray  # running sum of weight * sentiment

    @classmethod
    def build(cls, items: list[AnalysedItem]) -> _Track:
        items = sorted(items, key=lambda i: i.published_ns)
        w = np.array([i.weight for i in items], dtype=np.float64)
        s = np.array([i.sentiment for i in items], dtype=np.float64)
        zero = np.zeros(1)
        return cls(np.array([i.published_ns for i in items], dtype=np.int64), np.arange(len(items) + 1, dtype=np.float64),
                   np.concatenate([zero, np.cumsum(w)]), np.concatenate([zero, np.cumsum(w * s)]))

    def window(self, as_of_ns: np.ndarray, days: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(count, weight, weight x sentiment) of the items published in (as_of - days, as_of]."""
        hi = np.searchsorted(self.times, as_of_ns, side="right")
        lo = np.searchsorted(self.times, as_of_ns - int(days * DAY_NS), side="right")
        return self.count[hi] - self.count[lo], self.weight[hi] - self.weight[lo], self.weighted[hi] - self.weighted[lo]

    def sentiment(self, as_of_ns: np.ndarray, days: float) -> np.ndarray:
        _, w, ws = self.window(as_of_ns, days)
        return ws / (w + SHRINK)


class NewsFeed:
    """Analysed items held for feature reads (a `NewsFeatureSource`)."""

    def __init__(self, items: Iterable[AnalysedItem]) -> None:
        by_symbol: dict[str, list[AnalysedItem]] = {}
        for item in items:
            if item.weight > 0 and item.sentiment == item.sentiment:
                by_symbol.setdefault(item.symbol, []).append(item)
        self.market = _Track.build(by_symbol.pop("", []))
        self.tracks = {symbol: _Track.build(v) for symbol, v in by_symbol.items()}

    def __len__(self) -> int:
        return len(self.market.times) + sum(len(t.times) for t in self.tracks.values())

    def news_features(self, symbols: np.ndarray, as_of_ns: np.ndarray) -> np.ndarray:
        symbols = np.asarray(symbols, dtype=object).reshape(-1)
        as_of = np.asarray(as_of_ns, dtype=np.int64).reshape(-1)
        out = np.full((len(symbols), len(NEWS_FEATURES)), np.nan)
        if len(self.market.times):
            seen, _, _ = self.market.window(as_of, COVERAGE_DAYS)
            out[:, 4] = np.where(seen > 0, self.market.sentiment(as_of, 3), np.nan)
        for symbol in set(symbols.tolist()):
            track = self.tracks.get(symbol)
            if track is None:
                continue
            rows = np.flatnonzero(symbols == symbol)
            t = as_of[rows]
            n30, _, _ = track.window(t, COVERAGE_DAYS)
            n1, _, _ = track.window(t, 1)
            covered = n30 > 0
            values = np.column_stack([np.log1p(n1), np.log1p(n1) - np.log1p(n30 / COVERAGE_DAYS),
                                      track.sentiment(t, 1), track.sentiment(t, 5)])
            out[rows, :4] = np.where(covered[:, None], values, np.nan)
        return out

    @classmethod
    def empty(cls) -> NewsFeed:
        return cls(())
