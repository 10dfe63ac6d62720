"""Books: strategy families that hold positions across the universe (see core.books.base), and the families a
service or a backtest runs."""
from __future__ import annotations

from collections.abc import Sequence

from core.books.base import Book
from core.books.ranking import RankingBook, RankingConfig
from core.books.trend import TrendBook, TrendConfig
from core.domain import Timeframe

SETUPS = "setups"  # the per-bar setups of the engine: pullbacks and the oversold detector
FAMILIES = ("trend", "ranking", SETUPS)
DEFAULT_FAMILIES = ("trend", "ranking")


def parse_families(wanted: Sequence[str] | str) -> tuple[str, ...]:
    items = [w.strip().lower() for w in (wanted.split(",") if isinstance(wanted, str) else wanted) if w.strip()]
    unknown = [w for w in items if w not in FAMILIES]
    if unknown or not items:
        raise ValueError(f"unknown families {', '.join(unknown) or '(none given)'}: use {', '.join(FAMILIES)}")
    return tuple(dict.fromkeys(items))


def make_books(families: Sequence[str], costs_bps: float, timeframes: Sequence[Timeframe | str] | None) -> list[Book]:
    """The books of `families`, on `timeframes` when given (a book keeps only those it trades)."""
    keep = {Timeframe.parse(str(t)) for t in timeframes} if timeframes else None
    books: list[Book] = []
    if "trend" in families:
        book = TrendBook(TrendConfig(costs_bps=costs_bps))
        if keep is not None:
            book.timeframes = {c: tuple(tf for tf in tfs if tf in keep) for c, tfs in book.timeframes.items()}
        books.append(book)
    if "ranking" in families and (keep is None or Timeframe.D1 in keep):
        books.append(RankingBook(RankingConfig(costs_bps=costs_bps)))
    return books
