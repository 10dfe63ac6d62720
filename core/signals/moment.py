"""The scan at one moment: the signals the live pipeline would issue at `as_of`, from data up to it only, with an
empty book (`signalbot scan`; the command line opens the store and renders the result)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from core.books import DEFAULT_FAMILIES, SETUPS, make_books, parse_families
from core.books.ranking import RankingBook
from core.clock import FixedClock
from core.events import EventBus
from core.indicators import default_engine
from core.market_data.resample import to_utc_ns
from core.ports import MarketData, SignalRepository
from core.risk import SERVICE_COSTS_BPS, RiskConfig, RiskManager
from core.signals.engine import SignalEngine
from core.signals.service import ScanReport, SignalService


@dataclass(frozen=True, slots=True)
class ScanResult:
    as_of: datetime
    report: ScanReport
    universe: int
    ranked: list[tuple[str, int, float]] = field(default_factory=list)  # the ranking book's day: symbol, rank, score
    ranked_of: int = 0  # how many stocks it ranked


async def scan_at(market: MarketData, as_of: datetime, signals: SignalRepository,
                  costs_bps: float = SERVICE_COSTS_BPS, families: Sequence[str] = DEFAULT_FAMILIES,
                  top: int = 20) -> ScanResult:
    """One pass of the live signal path at `as_of` with an empty book (no open signals before it), the risk
    manager counting `costs_bps` per side (the service's default), the strategy `families` of the service.
    With the ranking book, also its `top` ranked ideas of the day (it trades them on the first trading day of
    the week; the ranking is the same every day). `signals`: where the issued signals go (an empty store)."""
    families = parse_families(families)
    risk = RiskManager(RiskConfig(costs_bps=costs_bps))
    books = make_books(families, costs_bps, None)
    service = SignalService(market, SignalEngine(default_engine()), signals, EventBus(), risk,
                            FixedClock(as_of), books=books, setups=SETUPS in families)
    report = await service.scan()
    ranked: list[tuple[str, int, float]] = []
    for book in books:
        if isinstance(book, RankingBook) and len(book.panel):
            ranked = book.ranked_ideas(int(book.panel.close_ns[book.panel.last_closed(to_utc_ns(as_of))]))
    universe = len(service.scan_targets()) if service.setups else 0
    universe += sum(len(service.book_targets(b)) for b in books)
    return ScanResult(as_of, report, universe, ranked[:top], len(ranked))
