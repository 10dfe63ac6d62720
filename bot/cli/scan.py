"""`signalbot scan`: the signals the pipeline would issue at one moment, from data up to that moment only
(core.signals.moment), as text or JSON."""
from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.cli.options import SCRATCH_DATABASE, add_costs_argument, add_data_argument, scratch_signals
from core.dates import parse_when
from core.risk import SERVICE_COSTS_BPS

if TYPE_CHECKING:
    from bot.settings import Settings
    from core.domain import Signal
    from core.ports import MarketData
    from core.signals.moment import ScanResult

NAME = "scan"
HELP = "the signals the pipeline would issue at a moment, from data up to it"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_argument(p)
    p.add_argument("--as-of", required=True, help="YYYY-MM-DD (after that day's close) or an ISO timestamp")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_costs_argument(p, SERVICE_COSTS_BPS, "the service's own, core.risk.SERVICE_COSTS_BPS, since a scan shows "
                       "what the service would issue", " the risk manager counts")
    p.add_argument("--families", default="trend,ranking",
                   help="strategy families: trend, ranking, setups, comma-separated (default trend,ranking)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    text, code = asyncio.run(run_scan(args.data, args.as_of, args.json, args.costs_bps, args.families))
    print(text)
    return code


async def scan_at(market: MarketData, as_of: datetime, database_url: str = SCRATCH_DATABASE,
                  costs_bps: float = SERVICE_COSTS_BPS, families: Sequence[str] | None = None,
                  top: int = 20) -> ScanResult:
    """core.signals.moment.scan_at with a fresh store at `database_url` (in memory by default); `families`:
    the service's (core.books.DEFAULT_FAMILIES) when not given."""
    from core.books import DEFAULT_FAMILIES
    from core.signals.moment import scan_at as scan_moment

    async with scratch_signals(database_url) as signals:
        return await scan_moment(market, as_of, signals, costs_bps, families or DEFAULT_FAMILIES, top)


async def run_scan(data: Path, when: str, as_json: bool, costs_bps: float = SERVICE_COSTS_BPS,
                   families: Sequence[str] | None = None) -> tuple[str, int]:
    """The report, and the exit code: 1 when nothing could be evaluated (every target without data by then,
    or failing), with the reasons in the text as in the JSON; 0 otherwise."""
    from core.market_data import CsvMarketData

    result = await scan_at(CsvMarketData(data), parse_when(when), costs_bps=costs_bps, families=families)
    text = json.dumps(result_json(result), indent=2) if as_json else result_text(result)
    return text, 1 if result.report.evaluated == 0 and (result.universe == 0 or result.report.unread
                                                        or result.report.errors) else 0


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
