"""Stored news verdicts for backtests: the replayed news files analysed once by the LOCAL model and kept in a
verdict store (storage.news_cache opens it: `--news-db`, by default in the OS cache directory), then read back
as the engine's news voter. A backtest never asks an LLM: verdicts already in the store (from any analyst, e.g.
ones a live service stored) are used as they are, in the voter's provider preference; only (item, symbol) pairs
without a local verdict are analysed, so the second run analyses nothing.

Items: the tweets (`stocknet_tweets_*.csv*`) and market headlines (`market_headlines_*.csv*`) of a news
folder laid out like ../shared/data/news, de-duplicated in publication order as the live news job does.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from core.news.schema import AnalysisRecord
from core.news.sources import Deduplicator, NewsItem, ReplayNews, load_headlines, load_tweets
from core.news.voter import VerdictIndex, VoterConfig

log = logging.getLogger(__name__)

CHUNK = 512


def news_folder(data: Path) -> Path | None:
    """The news folder of a data path: `data/news`, or `news` beside a data file or folder."""
    root = data if data.is_dir() else data.parent
    for folder in (root / "news", root.parent / "news"):
        if folder.is_dir() and any(folder.glob("*.csv*")):
            return folder
    return None


def load_news(folder: Path, symbols: Sequence[str] | None = None) -> list[NewsItem]:
    """Tweets about `symbols` (all when None) and every market headline, de-duplicated, oldest first."""
    sources: list[ReplayNews] = []
    for path in sorted(folder.glob("*tweets*.csv*")):
        sources.append(load_tweets(path))
    for path in sorted(folder.glob("*headlines*.csv*")):
        sources.append(load_headlines(path))
    if not sources:
        raise ValueError(f"no tweets or headlines files in {folder}")
    wanted = set(symbols) if symbols is not None else None
    items = [i for src in sources for i in src
             if i.market_wide or wanted is None or wanted.intersection(i.tickers)]
    return Deduplicator().filter(items)


def _pairs(item: NewsItem, wanted: set[str] | None) -> list[str]:
    if item.market_wide:
        return [""]
    return [t for t in item.tickers if wanted is None or t in wanted]


@dataclass(frozen=True, slots=True)
class CacheReport:
    items: int
    verdicts: int  # (item, symbol) pairs wanted
    analysed: int  # items analysed now (the rest were in the cache)
    seconds: float


async def ensure_local_verdicts(store: "VerdictFile", items: Sequence[NewsItem], models_dir: Path,
                                symbols: Sequence[str] | None = None,
                                progress: Callable[[float, str], None] | None = None) -> CacheReport:
    """Local verdicts for every (item, symbol) pair missing from the store, analysed in batches and saved."""
    from core.news.providers.local import LOCAL_PROMPT_VERSION, LocalAnalyst

    started = time.perf_counter()
    wanted = set(symbols) if symbols is not None else None
    analyst = await asyncio.to_thread(LocalAnalyst.from_store, models_dir)
    have = await store.keys(provider="local", model=analyst.model, prompt_version=LOCAL_PROMPT_VERSION)
    todo = [(i, [s for s in _pairs(i, wanted) if (i.id, s) not in have]) for i in items]
    todo = [(i, syms) for i, syms in todo if syms]
    total_pairs = sum(len(_pairs(i, wanted)) for i in items)
    now = datetime.now(timezone.utc)
    for start in range(0, len(todo), CHUNK):
        chunk = todo[start:start + CHUNK]
        answers = await asyncio.to_thread(analyst.analyze_batch, [i for i, _ in chunk])
        records = [AnalysisRecord(item_id=i.id, symbol=s, published_at=i.published_at, analysed_at=now,
                                  provider="local", model=answer.model, prompt_version=LOCAL_PROMPT_VERSION,
                                  verdict=answer.verdict, market_wide=i.market_wide, title=i.title[:300])
                   for (i, syms), answer in zip(chunk, answers, strict=True) for s in syms]
        await store.save_many(records)
        if progress is not None:
            progress(min(1.0, (start + len(chunk)) / len(todo)), "news")
    return CacheReport(len(items), total_pairs, len(todo), time.perf_counter() - started)


class VerdictFile(Protocol):
    """The storage port this module needs (storage.news.SqlVerdictStore)."""

    async def keys(self, *, provider: str, model: str, prompt_version: str) -> set[tuple[str, str]]: ...

    async def save_many(self, records: Sequence[AnalysisRecord]) -> None: ...

    async def between(self, symbols: Sequence[str], start: datetime, end: datetime) -> list[AnalysisRecord]: ...


async def replay_index(store: VerdictFile, news_dir: Path, symbols: Sequence[str], start: datetime, end: datetime,
                       models_dir: Path, config: VoterConfig | None = None,
                       progress: Callable[[float, str], None] | None = None,
                       ) -> tuple[VerdictIndex, CacheReport, list[AnalysisRecord]]:
    """The engine's news voter for a backtest over (start, end] of `symbols`: the news of `news_dir` analysed
    into `store` (only what is missing), then every stored verdict about them published in the period (plus the
    voter's window before it) held in memory. Returns it with what the cache did and the verdicts read."""
    cfg = config or VoterConfig()
    items = await asyncio.to_thread(load_news, news_dir, symbols)
    cache = await ensure_local_verdicts(store, items, models_dir, symbols, progress)
    records = await store.between([*symbols, ""], start - cfg.window, end)
    return VerdictIndex(records, cfg), cache, records


class NewsLoader(Protocol):
    """What a backtest or a training run asks for its news: the voter over (start, end] of `symbols`, with a
    summary for the report (storage.news_cache.news_loader builds one over a verdict file)."""

    def __call__(self, symbols: Sequence[str], start: datetime, end: datetime,
                 progress: Callable[[float, str], None] | None = None,
                 ) -> Awaitable[tuple[VerdictIndex, dict[str, object]]]: ...
