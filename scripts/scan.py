"""`signalbot scan`: the signals the pipeline would issue at one moment, from data up to that moment only."""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from core.books import DEFAULT_FAMILIES, SETUPS, make_books, parse_families
from core.books.ranking import RankingBook
from core.clock import FixedClock
from core.domain import Signal
from core.events import EventBus
from core.indicators import default_engine
from core.market_data import CsvMarketData
from core.market_data.resample import to_utc_ns
from core.ports import MarketData
from core.risk import SERVICE_COSTS_BPS, RiskConfig, RiskManager
from core.signals.engine import SignalEngine
from core.signals.service import ScanReport, SignalService
from storage import Database, Stores


def parse_when(text: str) -> datetime:
    """'2017-06-01' means after that day's close: 2017-06-02 00:00 UTC (a daily bar stamped D closes then).
    A full timestamp is taken as given (UTC when it names no zone)."""
    text = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return datetime.fromisoformat(text).replace(tzinfo=timezone.utc) + timedelta(days=1)
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"'{text}' is not a date (YYYY-MM-DD) or an ISO timestamp") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class ScanResult:
    as_of: datetime
    report: ScanReport
    universe: int
    ranked: list[tuple[str, int, float]] = field(default_factory=list)  # the ranking book's day: symbol, rank, score
    ranked_of: int = 0  # how many stocks it ranked


async def scan_at(market: MarketData, as_of: datetime, database_url: str = "sqlite+aiosqlite:///:memory:",
                  costs_bps: float = SERVICE_COSTS_BPS, families: Sequence[str] = DEFAULT_FAMILIES,
                  top: int = 20) -> ScanResult:
    """One pass of the live signal path at `as_of` with an empty book (no open signals before it), the risk
    manager counting `costs_bps` per side (the service's default), the strategy `families` of the service.
    With the ranking book, also its `top` ranked ideas of the day (it trades them on the first trading day of
    the week; the ranking is the same every day)."""
    families = parse_families(families)
    db = Database(database_url)
    await db.create_all()
    store = Stores.over(db)
    try:
        risk = RiskManager(RiskConfig(costs_bps=costs_bps))
        books = make_books(families, costs_bps, None)
        service = SignalService(market, SignalEngine(default_engine()), store.signals, EventBus(), risk,
                                FixedClock(as_of), books=books, setups=SETUPS in families)
        report = await service.scan()
        ranked: list[tuple[str, int, float]] = []
        for book in books:
            if isinstance(book, RankingBook) and len(book.panel):
                ranked = book.ranked_ideas(int(book.panel.close_ns[book.panel.last_closed(to_utc_ns(as_of))]))
        universe = len(service.scan_targets()) if service.setups else 0
        universe += sum(len(service.book_targets(b)) for b in books)
        return ScanResult(as_of, report, universe, ranked[:top], len(ranked))
    finally:
        await store.close()


def signal_json(s: Signal, with_evidence: bool = True) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": s.id, "symbol": s.symbol, "asset_class": s.asset_class.value, "timeframe": s.timeframe.value,
        "direction": s.direction.value, "entry": s.entry, "target": s.target, "stop": s.stop,
        "risk_reward": round(s.risk_reward, 3), "confidence": s.confidence, "position_size": s.position_size,
        "issued_at": s.issued_at.isoformat(), "expires_at": s.expires_at.isoformat(), "strategy": s.strategy,
        "reasoning": s.reasoning,
    }
    if with_evidence:
        d["evidence"] = s.evidence
    return d


def result_json(r: ScanResult) -> dict[str, Any]:
    return {
        "as_of": r.as_of.isoformat(),
        "universe": r.universe,
        "evaluated": r.report.evaluated,
        "signals": [signal_json(s) for s in r.report.issued],
        "rejected_by_risk": [{"id": i, "reason": why} for i, why in r.report.rejected],
        "exits": [{"id": e.signal_id, "reason": e.reason} for e in r.report.exits],
        "ranked_ideas": {"ranked": r.ranked_of, "top": [{"symbol": sym, "rank": k, "score": round(score, 6)}
                                                         for sym, k, score in r.ranked]},
        "errors": [{"symbol": s, "error": e} for s, e in r.report.errors],
        "not_evaluated": [{"target": t, "reason": why} for t, why in r.report.unread],
    }


def result_text(r: ScanResult) -> str:
    lines = [f"as of {r.as_of.isoformat()}: {r.report.evaluated} of {r.universe} instrument-timeframes evaluated, "
             f"{len(r.report.issued)} signals, {len(r.report.rejected)} rejected by risk"]
    for s in r.report.issued:
        lines.append(f"  {s.id:28s} {s.direction.verb:4s} entry {s.entry:10.4f} target {s.target:10.4f} "
                     f"stop {s.stop:10.4f} R:R {s.risk_reward:4.2f} conf {s.confidence:3d} size {s.position_size * 100:4.1f}% "
                     f"{s.strategy}" + _expected(s))
    for symbol, error in r.report.errors:
        lines.append(f"  error {symbol}: {error}")
    for target, why in r.report.unread[:20]:
        lines.append(f"  not evaluated {target}: {why}")
    if len(r.report.unread) > 20:
        lines.append(f"  ... and {len(r.report.unread) - 20} more not evaluated (see --json)")
    if r.ranked:
        lines.append(f"ranking: the day's {len(r.ranked)} best of {r.ranked_of} stocks (traded on the first trading "
                     "day of the week): " + ", ".join(f"{k}. {sym}" for sym, k, _ in r.ranked))
    return "\n".join(lines)


def _expected(s: Signal) -> str:
    exp, worst = s.evidence.get("expected_return"), s.evidence.get("worst_case")
    if not isinstance(exp, (int, float)) or not isinstance(worst, (int, float)):
        return ""
    return f" expects {exp * 100:+.2f}% (worst 1 in 20: {worst * 100:+.1f}%)"


async def run_scan(data: Path, when: str, as_json: bool, costs_bps: float = SERVICE_COSTS_BPS,
                   families: Sequence[str] = DEFAULT_FAMILIES) -> tuple[str, int]:
    """The report, and the exit code: 1 when nothing could be evaluated (every target without data by then,
    or failing), with the reasons in the text as in the JSON; 0 otherwise."""
    result = await scan_at(CsvMarketData(data), parse_when(when), costs_bps=costs_bps, families=families)
    text = json.dumps(result_json(result), indent=2) if as_json else result_text(result)
    return text, 1 if result.report.evaluated == 0 and (result.universe == 0 or result.report.unread
                                                        or result.report.errors) else 0
