"""Docs for the track record beyond live statistics: the published backtests beside the live figures, and how
setups similar to a signal ended."""
from __future__ import annotations

from collections.abc import Sequence

from bot.views.doc import Button, Doc, Table
from bot.views.formatting import pct
from core.performance import PerformanceSummary
from core.similar import SimilarSetups
from storage.backtest_reports import PublishedBacktest

Fields = tuple[tuple[str, str], ...]

BACKTEST_LABEL = "Backtest (simulated)"
BACKTEST_NOTE = ("Backtest: the live signal path replayed on history, after costs; simulated, shown apart and never "
                 "counted in the live figures.")
EXAMPLES = 5


# /performance: the backtest section -----------------------------------------------------------------
def backtest_section(reports: Sequence[PublishedBacktest]) -> tuple[Fields, Table | None]:
    """A field that opens the section, and the table of the latest report per scope (None without reports)."""
    if not reports:
        return ((BACKTEST_LABEL, "no backtest report has been published yet"),), None
    intro = (f"{len(reports)} report{'s' if len(reports) != 1 else ''} (the latest per scope), "
             "simulated on history through the live signal path, after costs")
    rows = (
        ("period", *(_period(r) for r in reports)),
        ("strategy", *(r.families or r.model for r in reports)),
        ("signals", *(_signals(r) for r in reports)),
        ("hit rate", *(_rate(r.hit_rate) for r in reports)),
        ("profit factor", *("n/a" if r.profit_factor is None else f"{r.profit_factor:.2f}" for r in reports)),
        ("CAGR", *(_pct1(r.cagr) for r in reports)),
        ("max drawdown", *(_pct1(r.max_drawdown) for r in reports)),
        ("Sharpe", *("n/a" if r.sharpe is None else f"{r.sharpe:.2f}" for r in reports)),
        ("vs benchmark", *(_excess(r) for r in reports)),
        ("hedged alpha", *("n/a" if r.alpha_annual is None else f"{r.alpha_annual * 100:+.1f}%/yr (IR "
                           + ("n/a" if r.information_ratio is None else f"{r.information_ratio:.2f}") + ")"
                           for r in reports)),
        ("costs", *("n/a" if r.costs_bps is None else f"{r.costs_bps:g} bps/side" for r in reports)),
        ("run", *(f"{r.run_at:%Y-%m-%d}" for r in reports)),
    )
    return ((BACKTEST_LABEL, intro),), Table(("backtest", *(r.scope for r in reports)), rows)


def live_line(summary: PerformanceSummary | None) -> str:
    if summary is None:
        return "no signal closed"
    pf = "n/a" if summary.profit_factor is None else f"{summary.profit_factor:.2f}"
    return (f"{summary.count} closed, hit rate {summary.hit_rate * 100:.0f}%, average {pct(summary.avg_return)}, "
            f"profit factor {pf}")


def track_record_doc(periods: Sequence[tuple[str, PerformanceSummary | None]],
                     reports: Sequence[PublishedBacktest]) -> Doc:
    """/performance: live signals over each period, then the published backtests, each clearly labelled."""
    bt_fields, bt_table = backtest_section(reports)
    return Doc(heading="Track record (after costs)",
               fields=(*((f"Live, {label}", live_line(s)) for label, s in periods), *bt_fields),
               table=bt_table,
               note="Live: every closed signal counts; nothing is removed. " + BACKTEST_NOTE
                    + " /performance 30d for details.")


def _period(r: PublishedBacktest) -> str:
    if r.start is None or r.end is None:
        return "n/a"
    return f"{r.start:%Y-%m-%d}..{r.end:%Y-%m-%d}"


def _signals(r: PublishedBacktest) -> str:
    if r.signals is None:
        return "n/a"
    return f"{r.signals:,}" + (f" ({r.closed:,} closed)" if r.closed is not None and r.closed != r.signals else "")


def _rate(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.1f}%"


def _pct1(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.1f}%"


def _excess(r: PublishedBacktest) -> str:
    if r.excess_cagr is None or r.benchmark is None:
        return "n/a (no benchmark)"
    return f"{r.excess_cagr * 100:+.1f}%/yr vs {r.benchmark}"


# /similar SIGNAL_ID ---------------------------------------------------------------------------------
FEATURE_WORDS = (("setup_score", "setup score {:.2f}"), ("rsi_14", "RSI {:.1f}"), ("zscore_20", "z-score {:+.2f}"),
                 ("dist_sma20_atr", "{:+.2f} ATR from SMA20"), ("volume_pct_50", "volume percentile {:.2f}"))
SIMILAR_NOTE = ("Similar: same direction and timeframe, nearest by setup score, RSI, z-score, distance from SMA20 and "
                "volume percentile; only signals that had closed before this one was issued. Past setups are no "
                "promise.")


def similar_doc(r: SimilarSetups) -> Doc:
    s = r.signal
    heading = f"Setups like {s.direction.verb} {s.symbol} ({s.timeframe}) of {s.issued_at:%Y-%m-%d}"
    buttons = (Button("Track record", "/performance"),)
    if not r.features:
        return Doc(heading=heading, body="This signal carries no setup evidence to compare with.",
                   buttons=buttons, tone="warning")
    scope = (f"{s.direction.verb} {s.timeframe} setups of {s.symbol} and its peers ({r.peers.label}), all closed "
             f"before this signal was issued ({s.issued_at:%Y-%m-%d %H:%M} UTC)")
    fields: list[tuple[str, str]] = [
        ("This setup", ", ".join(fmt.format(r.features[k]) for k, fmt in FEATURE_WORDS if k in r.features)),
        ("Compared", f"{r.compared} earlier {scope}"),
    ]
    if not r.neighbours:
        return Doc(heading=heading, fields=tuple(fields),
                   body="No similar past setup: none of them was close enough to compare honestly.",
                   buttons=buttons, note=SIMILAR_NOTE)
    best, worst = r.best, r.worst
    assert best is not None and worst is not None
    if r.enough:
        fields.append(("Similar setups", f"{r.count} ({r.same_symbol} of {s.symbol})"))
        fields.append(("Hit rate", f"{(r.hit_rate or 0.0) * 100:.0f}% ({r.wins} of {r.count} with net return > 0)"))
        fields.append(("Average return", f"{pct(r.avg_return or 0.0)} after costs"))
    else:
        fields.append(("Similar setups", f"only {r.count} ({r.same_symbol} of {s.symbol}): too few for a hit rate "
                                         f"(at least {r.min_for_rate} needed)"))
    fields.append(("Best / worst", f"{pct(best.net_return)} ({best.signal.id}) / {pct(worst.net_return)} "
                                   f"({worst.signal.id})"))
    rows = tuple((n.signal.id, f"{n.signal.issued_at:%Y-%m-%d}", n.outcome.status.value, pct(n.net_return))
                 for n in r.neighbours[:EXAMPLES])
    shown = "nearest" if r.count > EXAMPLES else "all"
    return Doc(heading=heading, fields=tuple(fields),
               table=Table((f"{shown} {len(rows)}", "issued", "exit", "net"), rows),
               buttons=buttons, note=SIMILAR_NOTE)
