"""Published backtest reports: the latest `signalbot backtest` report per scope, kept in one directory where the
service finds them (Settings.backtest_reports_dir) and shows them in /performance, always apart from live figures.

A scope is the set of asset classes the backtest issued signals in ("equity", "crypto", "crypto+equity"); a newer
report of a scope replaces the older one. Each file `<scope>.json` holds `{"scope", "run_at", "report"}`, where
`report` is the report exactly as `--report` wrote it. A bare report dropped into the directory is read too (its
scope from its content, its run date from the file's modification time). Files are written whole (a temporary
file renamed over the old one), so the service never reads half a report.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_SCOPE = re.compile(r"^[a-z0-9+_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class PublishedBacktest:
    """What /performance shows of one published report; None where the report has no value."""

    scope: str
    run_at: datetime
    start: date | None
    end: date | None
    signals: int | None
    closed: int | None
    hit_rate: float | None
    profit_factor: float | None
    avg_return: float | None
    cagr: float | None
    max_drawdown: float | None
    benchmark: str | None
    benchmark_cagr: float | None
    excess_cagr: float | None
    costs_bps: float | None
    model: str  # "rules" or "walk-forward models"
    sharpe: float | None = None  # from the report's evaluation (reports from before it have none)
    alpha_annual: float | None = None  # beta-hedged, against beta x benchmark + (1 - beta) x cash
    information_ratio: float | None = None
    families: str = ""  # e.g. "trend" or "ranking"

    @classmethod
    def of(cls, report: Mapping[str, Any], scope: str, run_at: datetime) -> PublishedBacktest:
        period = _mapping(report.get("period"))
        portfolio = _mapping(report.get("portfolio"))
        bench = _mapping(report.get("benchmark"))
        kind = str(_mapping(report.get("model")).get("kind", "rules"))
        evaluation = _mapping(report.get("evaluation"))
        book = _mapping(evaluation.get("book"))
        families = sorted(map(str, _mapping(evaluation.get("by_family")))) or report.get("families")
        return cls(
            scope=scope, run_at=run_at, start=_day(period.get("start")), end=_day(period.get("end")),
            signals=_int(report.get("signals")), closed=_int(report.get("closed")),
            hit_rate=_float(report.get("hit_rate")), profit_factor=_float(report.get("profit_factor")),
            avg_return=_float(report.get("avg_return")), cagr=_float(portfolio.get("cagr")),
            max_drawdown=_float(portfolio.get("max_drawdown")),
            benchmark=str(bench["symbol"]) if bench.get("symbol") else None,
            benchmark_cagr=_float(bench.get("cagr")), excess_cagr=_float(report.get("excess_cagr")),
            costs_bps=_float(report.get("costs_bps")),
            model="walk-forward models" if "walk-forward" in kind.lower() else "rules",
            sharpe=_float(book.get("sharpe")), alpha_annual=_float(book.get("alpha_annual")),
            information_ratio=_float(book.get("information_ratio")),
            families=",".join(map(str, families)) if isinstance(families, list) else str(families or ""))


def report_scope(report: Mapping[str, Any]) -> str:
    """The asset classes the report's signals were in, e.g. "equity" or "crypto+equity" ("none" without any)."""
    classes = sorted(str(k).lower() for k in _mapping(report.get("by_asset_class")))
    scope = "+".join(classes) or "none"
    return scope if _SCOPE.match(scope) else "other"


def publish_report(report: Mapping[str, Any], directory: Path, run_at: datetime | None = None,
                   scope: str | None = None) -> Path:
    """Keep `report` as the latest of its scope in `directory`; returns the file written."""
    scope = scope or report_scope(report)
    if not _SCOPE.match(scope):
        raise ValueError(f"a scope is 1-64 of a-z 0-9 + _ -, not {scope!r}")
    when = (run_at or datetime.now(timezone.utc)).astimezone(timezone.utc)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{scope}.json"
    text = json.dumps({"scope": scope, "run_at": when.isoformat(), "report": report}, indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{scope}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o644)  # readable like any shipped file (mkstemp makes it owner-only)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def published_reports(directory: Path) -> list[PublishedBacktest]:
    """The reports in `directory`, one per scope (the newest run wins), by scope. Unreadable files are logged and
    skipped; a missing directory is no reports."""
    if not directory.is_dir():
        return []
    latest: dict[str, PublishedBacktest] = {}
    for path in sorted(directory.glob("*.json")):
        found = _read(path)
        if found is not None and (found.scope not in latest or found.run_at > latest[found.scope].run_at):
            latest[found.scope] = found
    return [latest[k] for k in sorted(latest)]


def _read(path: Path) -> PublishedBacktest | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if isinstance(data.get("report"), dict):
            report = data["report"]
            scope = str(data.get("scope") or report_scope(report))
            run_at = _instant(data.get("run_at")) or _mtime(path)
        else:
            report, scope, run_at = data, report_scope(data), _mtime(path)
        if "period" not in report:
            raise ValueError("no period: not a backtest report")
        return PublishedBacktest.of(report, scope, run_at)
    except (OSError, ValueError, TypeError) as exc:
        log.warning("backtest report %s skipped: %s", path, exc)
        return None


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _int(value: Any) -> int | None:
    number = _float(value)
    return int(number) if number is not None else None


def _day(value: Any) -> date | None:
    try:
        return date.fromisoformat(str(value)[:10]) if value else None
    except ValueError:
        return None


def _instant(value: Any) -> datetime | None:
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when
