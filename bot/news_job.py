"""The news job: new items from the configured sources -> analysed through the fallback chain (Claude -> GPT ->
the local model) -> verdicts stored -> the engine's news voter (an in-memory `VerdictIndex`) brought up to date.

Sources (`Settings.news_sources`, comma-separated): `yahoo` (per-symbol news of the equities scanned) and RSS
feeds (`rss:URL`, market-wide; company feeds are tagged by name and cashtag). Offline the default is none, so
no job runs and the engine decides without news, unless the replayed data has news (`--replay DIR` with a
`news` folder in or beside it, or `Settings.news_dir`): then the tweets and headlines are replayed on the
service clock, each item only once its publication time has passed.

The voter reads stored verdicts only. Its skill (the weight it gets) is re-estimated every run from the
closed signals it voted on (`core.news.voter.news_track_record`).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from core.clock import Clock
from core.domain import AssetClass, Instrument, Signal, SignalOutcome
from core.news.analysts import NewsAnalysisService, build_analysis_service
from core.news.sources import (
    Deduplicator,
    NewsDataError,
    NewsItem,
    NewsSource,
    NewsSourceError,
    ReplayNews,
    RssSource,
    TickerTagger,
    YahooNewsSource,
    load_headlines,
    load_tweets,
)
from core.news.voter import NewsTrackRecord, VerdictIndex, news_track_record
from storage.news import SqlVerdictStore

log = logging.getLogger(__name__)

TRACK_WINDOW = timedelta(days=90)


class ClosedSignals(Protocol):
    async def outcomes_since(self, since: datetime) -> list[tuple[Signal, SignalOutcome]]: ...


@dataclass
class NewsRun:
    at: datetime | None = None
    items: int = 0  # new items fetched
    analysed: int = 0  # (item, symbol) pairs that got a verdict
    technical_only: int = 0  # pairs no analyst answered
    errors: list[str] = field(default_factory=list)


class NewsJob:
    def __init__(self, sources: Sequence[NewsSource], analysis: NewsAnalysisService, store: SqlVerdictStore,
                 clock: Clock, symbols: Callable[[], Sequence[str]], signals: ClosedSignals | None = None,
                 index: VerdictIndex | None = None) -> None:
        self.sources = list(sources)
        self.analysis = analysis
        self.store = store
        self.clock = clock
        self.symbols = symbols
        self.signals = signals
        self.index = index or VerdictIndex(skill=0.0)  # shadow until its track record says otherwise
        self.dedup = Deduplicator()
        self.track = NewsTrackRecord(0, 0, 0)
        self.last = NewsRun()
        self._since: datetime | None = None
        self.closers: list[Callable[[], Any]] = []  # what to close at shutdown (HTTP sessions)

    @property
    def window(self) -> timedelta:
        return self.index.config.window

    async def load(self) -> int:
        """The verdicts stored for the vote's window and the news features' lookback (a restart keeps its news)
        into the voter."""
        now = self.clock.now()
        records = await self.store.between([*self.symbols(), ""], now - self.index.lookback,
                                           now + timedelta(microseconds=1))
        added = self.index.add(records)
        self.index.prune(now - 2 * self.window)
        return added

    async def run(self) -> NewsRun:
        now = self.clock.now()
        since = self._since or now - self.window
        wanted = list(self.symbols())
        report = NewsRun(at=now)
        items: list[NewsItem] = []
        for source in self.sources:
            try:
                items += await source.items(as_of=now, since=since, symbols=[*wanted, ""])
            except (NewsSourceError, NewsDataError) as exc:
                report.errors.append(str(exc))
                log.warning("news source %s failed: %s", source.name, exc)
        fresh = self.dedup.filter(items)
        report.items = len(fresh)
        if fresh and not self.analysis.slots:  # no analyst at all: nothing to ask (said once, at start)
            report.technical_only = len(fresh)
        elif fresh:
            assessments = await self.analysis.assess_items(fresh, wanted)
            records = [a.record for a in assessments if a.record is not None]
            report.analysed, report.technical_only = len(records), len(assessments) - len(records)
            self.index.add(records)
        self.index.prune(now - 2 * self.window)
        self._since = now
        await self._update_skill(now)
        self.last = report
        return report

    async def _update_skill(self, now: datetime) -> None:
        if self.signals is None:
            return
        closed = await self.signals.outcomes_since(now - TRACK_WINDOW)
        self.track = news_track_record((s.evidence, s.direction.value, o.net_return) for s, o in closed)
        self.index.skill = self.track.skill()

    async def close(self) -> None:
        await self.analysis.close()
        for close in self.closers:
            await close()


def replay_news_dir(replay: Path | None, news_dir: str | None) -> Path | None:
    """Where offline news comes from: `news_dir` when set, else a `news` folder in or beside the replayed data."""
    if news_dir:
        return Path(news_dir)
    if replay is None:
        return None
    root = replay if replay.is_dir() else replay.parent
    for folder in (root / "news", root.parent / "news"):
        if folder.is_dir() and any(folder.glob("*.csv*")):
            return folder
    return None


def load_replay_sources(folder: Path) -> list[NewsSource]:
    sources: list[NewsSource] = [load_tweets(p) for p in sorted(folder.glob("*tweets*.csv*"))]
    sources += [load_headlines(p) for p in sorted(folder.glob("*headlines*.csv*"))]
    return sources


def live_sources(spec: str, instruments: Sequence[Instrument], yahoo_base_url: str | None
                 ) -> tuple[list[NewsSource], list[Callable[[], Any]]]:
    """Sources named in `spec` ("yahoo", "rss:URL", comma-separated) and the closers of their HTTP session."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        return [], []
    import aiohttp

    session = aiohttp.ClientSession()
    tagger = TickerTagger(frozenset(i.symbol for i in instruments if i.asset_class is AssetClass.EQUITY))
    sources: list[NewsSource] = []
    for name in names:
        if name == "yahoo":
            sources.append(YahooNewsSource(session, base_url=yahoo_base_url or "https://query2.finance.yahoo.com"))
        elif name.startswith("rss:"):
            sources.append(RssSource(session, name[4:], name=f"rss:{name[4:][:40]}", tagger=tagger))
        else:
            log.warning("unknown news source %r (yahoo or rss:URL)", name)
    return sources, [session.close]


async def build_news_job(settings: Any, store: SqlVerdictStore, clock: Clock, instruments: Sequence[Instrument],
                         signals: ClosedSignals | None, replay: Path | None) -> NewsJob | None:
    """The news job from the settings, or None when no source is configured (the engine then has no news voter).
    The chain: each LLM whose key is set (live market only), then the local model."""
    closers: list[Callable[[], Any]] = []
    if settings.market == "live":
        sources, closers = live_sources(getattr(settings, "news_sources", ""), instruments, settings.yahoo_base_url)
    else:
        folder = replay_news_dir(replay, settings.news_dir)
        sources = await asyncio.to_thread(load_replay_sources, folder) if folder is not None else []
    if not sources:
        return None
    key = settings.anthropic_api_key, settings.openai_api_key
    analysis = await asyncio.to_thread(
        build_analysis_service,
        anthropic_api_key=key[0].get_secret_value() if key[0] and settings.market == "live" else None,
        anthropic_base_url=settings.anthropic_base_url, anthropic_model=settings.anthropic_model,
        openai_api_key=key[1].get_secret_value() if key[1] and settings.market == "live" else None,
        openai_base_url=settings.openai_base_url, openai_model=settings.openai_model,
        daily_tokens=settings.llm_daily_token_budget, daily_cost_usd=settings.llm_daily_cost_budget_usd,
        timeout=settings.llm_timeout, models_dir=settings.models_dir, store=store, clock=clock)
    equities = [i.symbol for i in instruments if i.asset_class is AssetClass.EQUITY]
    if not analysis.slots:
        log.warning("news: no analyst in the chain (no LLM key, no local model in %s): only verdicts stored "
                    "before vote", settings.models_dir)
    job = NewsJob(sources, analysis, store, clock, lambda: equities, signals)
    job.closers = closers
    await job.load()
    log.info("news job: %d sources (%s), analysts %s, %d stored verdicts in the window", len(sources),
             ", ".join(s.name for s in sources), " -> ".join(s.name for s in analysis.slots) or "none",
             len(job.index))
    return job


__all__ = ["NewsJob", "NewsRun", "ReplayNews", "build_news_job", "replay_news_dir"]
