"""`signalbot backtest`: a walk-forward backtest through the live signal path (core.backtest.run), its report
(JSON) and an equity-curve chart (PNG). Scores only signals issued inside [start, end]; earlier data is warm-up."""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.cli.options import (MODELS_STORE, StderrProgress, add_costs_argument, add_data_argument,
                             add_features_argument, add_news_arguments, news_dir_option, parse_symbols)
from core.dates import When
from core.risk import SERVICE_COSTS_BPS

if TYPE_CHECKING:
    from bot.settings import Settings
    from core.backtest.report import Curve
    from core.domain import Timeframe
    from core.indicators import IndicatorEngine

NAME = "backtest"
HELP = "walk-forward backtest through the live signal path, scored inside [start, end]"
DESCRIPTION = __doc__
TOOL_LOGGING = True  # warnings only, short lines, beside the progress line
EVALUATION_COSTS_BPS = 10.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    from core.backtest.inputs import MODES
    from core.books import DEFAULT_FAMILIES, FAMILIES

    add_data_argument(p)
    p.add_argument("--benchmark", type=Path, help="daily benchmark CSV (default: SPX when the data holds it)")
    p.add_argument("--start", help="first day whose signals count, YYYY-MM-DD (default: 400 days into the data)")
    p.add_argument("--end", help="last day whose signals count, YYYY-MM-DD (default: the end of the data)")
    add_costs_argument(p, EVALUATION_COSTS_BPS, f"the evaluation's, stricter than the service's {SERVICE_COSTS_BPS:g}, "
                       "at which the published figures are computed")
    p.add_argument("--timeframes", help="comma-separated timeframes to scan (default: the service's)")
    p.add_argument("--families", default=",".join(DEFAULT_FAMILIES),
                   help=f"strategy families, comma-separated among {', '.join(FAMILIES)} (default "
                        f"{','.join(DEFAULT_FAMILIES)}; setups: the per-bar pullback and oversold setups)")
    p.add_argument("--report", type=Path, required=True, help="where to write the JSON report")
    p.add_argument("--plot", type=Path, help="where to write the equity-curve PNG")
    p.add_argument("--model", choices=MODES, default="rules",
                   help="rules: the rule engine alone (default); walk-forward: LightGBM models retrained as time goes")
    p.add_argument("--retrain-days", type=int, default=91, help="walk-forward retraining interval in days (default 91)")
    add_features_argument(p)
    p.add_argument("--publish", type=Path, metavar="DIR",  # /performance shows it (Settings.backtest_reports_dir)
                   help="also keep the report as the latest of its scope in DIR, e.g. models_store/backtests")
    p.add_argument("--symbols", help="scan only these: a comma-separated list or a file (a CSV with a symbol column, "
                                     "such as the tweets file, or one symbol per line)")
    add_news_arguments(p, "stored news verdicts vote in the decisions (and feed the news features of fs-3): the "
                          "news of DIR (default: the data's news folder), analysed once by the local model and "
                          "replayed from --news-db; no LLM is asked")
    p.add_argument("--news-weight", type=float, help="the news vote's weight in the ensemble (default 0.3)")
    p.add_argument("--variants", type=int, default=1,
                   help="how many variants of the strategy were tried before this run (the deflated Sharpe counts "
                        "them; default 1)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    began = time.perf_counter()
    out = asyncio.run(run_backtest(args.data, args.start, args.end, args.costs_bps, args.benchmark, args.report,
                                   args.plot, timeframes=args.timeframes.split(",") if args.timeframes else None, model=args.model,
                                   retrain_every_days=args.retrain_days, feature_set=args.features,
                                   symbols=parse_symbols(args.symbols) if args.symbols else None,
                                   news=news_dir_option(args.news, args.data), news_db=args.news_db,
                                   news_weight=args.news_weight, families=args.families, variants=args.variants))
    if args.publish is not None:  # --publish: the copy the service shows in /performance
        from storage.backtest_reports import publish_report
        try:
            print(f"published {publish_report(out, args.publish)}", file=sys.stderr)
        except OSError as exc:
            print(f"signalbot backtest: not published: {exc}", file=sys.stderr)
            return 2
    print(summary(out, time.perf_counter() - began), file=sys.stderr)
    return 0


async def run_backtest(data: Path, start: When = None, end: When = None, costs_bps: float = EVALUATION_COSTS_BPS,
                       benchmark: Path | None = None, report: Path | None = None, plot: Path | None = None,
                       progress: Callable[[float, str], None] | None = None, *,
                       timeframes: Sequence[Timeframe | str] | None = None,
                       indicators: IndicatorEngine | None = None, model: str = "rules",
                       retrain_every_days: int = 91, context: Path | None = None,
                       feature_set: str | None = None,
                       symbols: Sequence[str] | None = None, news: Path | None = None, news_db: Path | None = None,
                       news_weight: float | None = None, models_dir: Path | None = None,
                       families: Sequence[str] | None = None, variants: int = 1) -> dict[str, Any]:
    """core.backtest.run.run_backtest with its inputs opened and its outputs written: the report to `report`
    (JSON) and the equity curve to `plot` (PNG) when given; progress on standard error by default.

    `news`: a news folder (layout of ../shared/data/news) whose stored verdicts vote in the engine with the
    weight `news_weight`: replayed from the SQLite file `news_db` (default in the OS cache directory); items
    without one are analysed once by the local model (`models_dir`) and stored there, never by an LLM
    (storage.news_cache). `feature_set` and `families` default to core's (DEFAULT_MODEL_FEATURE_SET,
    DEFAULT_FAMILIES)."""
    from core.backtest.run import run_backtest as backtest
    from core.books import DEFAULT_FAMILIES
    from core.features.sets import DEFAULT_MODEL_FEATURE_SET
    from storage.news_cache import news_loader

    loader = news_loader(news, news_db, models_dir or MODELS_STORE) if news is not None else None
    done = await backtest(data, start, end, costs_bps, benchmark, progress or StderrProgress(), timeframes=timeframes,
                          indicators=indicators, model=model, retrain_every_days=retrain_every_days,
                          context=context, feature_set=feature_set or DEFAULT_MODEL_FEATURE_SET, symbols=symbols,
                          news=loader, news_weight=news_weight, families=families or DEFAULT_FAMILIES,
                          variants=variants)
    out = done.report
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(out, indent=2) + "\n")
    if plot is not None:
        await asyncio.to_thread(plot_equity, done.portfolio, done.benchmark, out, plot)
    return out


def plot_equity(portfolio: Curve, benchmark: Curve | None, report: dict[str, Any], path: Path) -> None:
    """The equity curve against the benchmark (both start at 1) and the drawdown beneath."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    eq = portfolio.normalised()
    dd = eq / np.maximum.accumulate(eq) - 1.0
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6.5), gridspec_kw={"height_ratios": [3, 1]})
    p = report["portfolio"]
    top.plot(portfolio.times, eq, color="#1f5fa8", lw=1.4,
             label=f"signals portfolio  CAGR {_pct(p['cagr'])}  Sharpe {_num(p['sharpe'])}  max DD {_pct(p['max_drawdown'])}")
    if benchmark is not None:
        b = report["benchmark"]
        top.plot(benchmark.times, benchmark.normalised(), color="#888888", lw=1.1,
                 label=f"{benchmark.name}  CAGR {_pct(b['cagr'])}  Sharpe {_num(b['sharpe'])}  max DD {_pct(b['max_drawdown'])}")
    top.axhline(1.0, color="#cccccc", lw=0.8)
    top.set_ylabel("growth of 1")
    top.legend(loc="upper left", fontsize=8, frameon=False)
    period = report["period"]
    top.set_title(f"Walk-forward backtest {period['start']} .. {period['end']}: {report['signals']} signals, "
                  f"hit rate {_rate(report['hit_rate'])}, after {report['costs_bps']:g} bps per side", fontsize=10)
    bottom.fill_between(portfolio.times, dd, 0.0, color="#c0392b", alpha=0.5, lw=0)
    bottom.set_ylabel("drawdown")
    bottom.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pct(x: float | None, decimals: int = 1) -> str:
    return "n/a" if x is None else f"{x * 100:+.{decimals}f}%"


def _rate(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.1f}%"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def summary(report: dict[str, Any], seconds: float) -> str:
    p, b = report["portfolio"], report["benchmark"]
    return (f"{report['period']['start']} .. {report['period']['end']}  universe {report['universe']}  "
            f"signals {report['signals']} (closed {report['closed']})  hit rate {_rate(report['hit_rate'])}  "
            f"PF {_num(report['profit_factor'])}  avg {_pct(report['avg_return'], 2)}\n"
            f"portfolio CAGR {_pct(p['cagr'])}  Sharpe {_num(p['sharpe'])}  max DD {_pct(p['max_drawdown'])}  "
            f"exposure {_rate(p['exposure'])}  | {b.get('symbol') or 'no benchmark'} CAGR {_pct(b['cagr'])}  "
            f"excess {_pct(report['excess_cagr'])}  | {seconds:.1f} s{_evaluation_line(report)}"
            f"{_strategy_line(report)}{_news_line(report)}")


def _evaluation_line(report: dict[str, Any]) -> str:
    ev = report.get("evaluation") or {}
    book = ev.get("book") or {}
    if not book:
        return ""
    dsr = (book.get("deflated_sharpe") or {}).get("probability")
    years = "; ".join(f"{y['year']} {_pct(y['return'])} (alpha {_pct(y['alpha_annual'])})" for y in ev.get("by_year", []))
    return (f"\nvs {ev.get('benchmark') or 'no benchmark'}: beta {_num(book.get('beta'))}  hedged alpha "
            f"{_pct(book.get('alpha_annual'))}/yr  IR {_num(book.get('information_ratio'))}  turnover "
            f"{_num(book.get('annual_turnover'))}x/yr  cost drag {_pct(book.get('cost_drag_annual'), 2)}/yr  deflated "
            f"Sharpe P {_num(dsr)} ({ev.get('variants_tried')} variants)" + (f"\nyears: {years}" if years else ""))


def _strategy_line(report: dict[str, Any]) -> str:
    families = report.get("by_strategy") or {}
    if not families:
        return ""
    return "\nsetups: " + "; ".join(f"{name} {st['signals']} (hit rate {_rate(st['hit_rate'])}, "
                                     f"PF {_num(st['profit_factor'])})" for name, st in families.items())


def _news_line(report: dict[str, Any]) -> str:
    news = report.get("news") or {}
    effects = news.get("effects")
    if not effects:
        return ""
    return (f"\nnews: {news.get('verdicts_loaded', 0)} stored verdicts, weight {news.get('weight')}; on analysed "
            f"setups: " + ", ".join(f"{k} {v}" for k, v in effects.items()))
