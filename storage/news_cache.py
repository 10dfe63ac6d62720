"""The backtests' news-verdict cache: a SQLite verdict file (`--news-db`, by default in the OS cache directory)
opened around core.news.replay, which analyses what is missing with the local model and reads the verdicts back
as the engine's news voter."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from core.news.replay import NewsLoader, replay_index
from core.news.voter import VerdictIndex, VoterConfig
from storage.news import open_verdict_file


def default_news_db() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("signalbot")) / "news-verdicts.sqlite"


async def news_index(db_path: Path, news_dir: Path, symbols: Sequence[str], start: datetime, end: datetime,
                     models_dir: Path, config: VoterConfig | None = None,
                     progress: Callable[[float, str], None] | None = None) -> tuple[VerdictIndex, dict[str, object]]:
    """The engine's news voter for a backtest over (start, end] of `symbols`: the news of `news_dir` analysed
    into the verdict file at `db_path` (only what is missing), then every stored verdict about them published
    in the period (plus the voter's window before it) held in memory. Returns it with a summary."""
    cfg = config or VoterConfig()
    db, store = await open_verdict_file(db_path)
    try:
        index, cache, records = await replay_index(store, news_dir, symbols, start, end, models_dir, cfg, progress)
    finally:
        await db.close()
    summary: dict[str, object] = {
        "news_dir": str(news_dir), "db": str(db_path), "items": cache.items, "pairs": cache.verdicts,
        "analysed_now": cache.analysed, "cache_seconds": round(cache.seconds, 1), "verdicts_loaded": len(records),
        "providers": sorted({r.provider for r in records}), "window_hours": cfg.window.total_seconds() / 3600,
    }
    return index, summary


def news_loader(news_dir: Path, db_path: Path | None, models_dir: Path) -> NewsLoader:
    """`news_index` over one news folder and verdict file (default `default_news_db()`), as core asks for it."""
    path = db_path or default_news_db()

    async def load(symbols: Sequence[str], start: datetime, end: datetime,
                   progress: Callable[[float, str], None] | None = None) -> tuple[VerdictIndex, dict[str, object]]:
        return await news_index(path, news_dir, symbols, start, end, models_dir, progress=progress)

    return load
