"""`signalbot backtest`: a walk-forward backtest through the live signal path, its report (JSON) and an
equity-curve chart (PNG). Scores only signals issued inside [start, end]; earlier data is warm-up."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from dataclasses import asdict
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.backtest.learning import LearningConfig, walk_forward_models
from core.features.news import NewsFeatureSource
from core.features.sets import DEFAULT_MODEL_FEATURE_SET, MODEL_FEATURE_SETS, reads_news
from core.backtest.market import SymbolSubset
from core.backtest.candidates import Series
from core.backtest.evaluation import rank_ic
from core.backtest.portfolio import PortfolioConfig, PortfolioResult, simulate
from core.backtest.metrics import trade_stats
from core.backtest.scorecard import BTC, daily_curve, scorecard
from core.breaker import SERVICE_LIMITS
from core.backtest.report import Curve, benchmark_curve, build_report, portfolio_curve
from core.backtest.walk import WARM_UP, Backtester, BacktestConfig, BacktestResult, Progress
from core.books import DEFAULT_FAMILIES, FAMILIES, SETUPS, make_books, parse_families
from core.books.base import Book
from core.books.ranking import RankingBook
from core.domain import AssetClass, Instrument, Timeframe
from core.errors import MarketDataError, SignalBotError
from core.indicators import IndicatorEngine, default_engine
from core.market_data import CsvMarketData
from core.ports import MarketData
from core.risk import RiskConfig, RiskManager
from core.signals.engine import NEWS_EFFECTS, EngineConfig, SignalEngine
from core.signals.ensemble import EnsembleConfig, NewsOpinions
from core.signals.service import DEFAULT_TIMEFRAMES

log = logging.getLogger(__name__)

When = str | date | datetime | None
MODES = ("rules", "walk-forward")



def parse_start(when: When) -> datetime | None:
    """A day D means "from the bars of day D on": signals issued after D 00:00 UTC. A datetime is taken as is."""
    return _instant(when, next_day=False)


def parse_end(when: When) -> datetime | None:
    """A day D means "through the bars of day D": signals issued up to D+1 00:00 UTC (a daily bar of D closes then)."""
    return _instant(when, next_day=True)


def _instant(when: When, next_day: bool) -> datetime | None:
    if when is None or when == "":
        return None
    if isinstance(when, str):
        text = when.strip()
        when = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text.replace("Z", "+00:00"))
    if isinstance(when, datetime):
        return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    day = datetime(when.year, when.month, when.day, tzinfo=timezone.utc)
    return day + timedelta(days=1) if next_day else day


class StderrProgress:
    """The default progress report: the percentage on one line of standard error, rewritten as it grows."""

    def __init__(self, label: str = "backtest") -> None:
        self.label = label
        self._shown: tuple[int, str] | None = None

    def __call__(self, fraction: float, stage: str) -> None:
        pct = int(max(0.0, min(1.0, fraction)) * 100)
        if (pct, stage) == self._shown:
            return
        self._shown = (pct, stage)
        end = "\n" if pct >= 100 and stage == "done" else ""
        print(f"\r{self.label}: {pct:3d}% {stage:<10s}", end=end, file=sys.stderr, flush=True)


async def run_backtest(data: Path, start: When = None, end: When = None, costs_bps: float = 10.0,
                       benchmark: Path | None = None, report: Path | None = None, plot: Path | None = None,
                       progress: Callable[[float, str], None] | None = None, *,
                       timeframes: Sequence[Timeframe | str] | None = None,
                       indicators: IndicatorEngine | None = None, model: str = "rules",
                       retrain_every_days: int = 91, context: Path | None = None,
                       feature_set: str = DEFAULT_MODEL_FEATURE_SET,
                       symbols: Sequence[str] | None = None, news: Path | None = None, news_db: Path | None = None,
                       news_weight: float | None = None, models_dir: Path | None = None,
                       families: Sequence[str] = DEFAULT_FAMILIES, variants: int = 1) -> dict[str, Any]:
    """Backtest the CSV data at `data` (a file or a directory laid out like ../shared/data) and return the
    report; write it to `report` (JSON) and the equity curve to `plot` (PNG) when given.

    `benchmark`: a daily CSV (SPX by default when the data holds it). `timeframes`: only these timeframes are
    scanned (default: the live service's per asset class). `indicators`: the engine the live service runs
    (default: core.indicators.default_engine(), as bot.app and scripts.scan wire it).

    `model`: "rules" (the rule engine alone) or "walk-forward" (LightGBM reversion models vote beside the rules,
    retrained every `retrain_every_days` from the labels known at each retraining, see core.backtest.learning;
    `feature_set`: the columns they read, core.features.sets.MODEL_FEATURE_SETS).
    `context`: a directory with SPX and VIX daily files for the market-regime features (default: a
    `benchmarks` folder in or beside `data`).

    `symbols`: only these instruments are scanned (the benchmark is still read from the whole data).
    `news`: a news folder (layout of ../shared/data/news): its items' stored verdicts vote in the engine with the
    weight `news_weight` (default: the ensemble's). Verdicts are replayed from the SQLite file `news_db` (default
    in the OS cache directory); items without one are analysed once by the local model (`models_dir`) and stored
    there, never by an LLM (scripts.news_cache)."""
    if model not in MODES:
        raise ValueError(f"model must be one of {', '.join(MODES)}, not {model!r}")
    families = parse_families(families)
    say: Progress = progress or StderrProgress()
    csv = CsvMarketData(data)
    market: MarketData = csv
    missing: list[str] = []
    if symbols is not None:
        subset = SymbolSubset(csv, symbols)
        if not subset.instruments():
            raise ValueError(f"none of the {len(symbols)} symbols given is in {data}")
        market, missing = subset, subset.missing
    ind = indicators or default_engine()
    engine_config = _engine_config(news_weight)
    first, last = parse_start(start), parse_end(end)
    news_voter: NewsOpinions | None = None
    news_features: NewsFeatureSource | None = None  # what the models' news features read (the same verdicts)
    news_summary: dict[str, Any] = {"kind": "no news"}
    if news is not None:
        from scripts.news_cache import default_news_db, news_index

        scanned = sorted({i.symbol for i in market.instruments()})
        # models reading news features learn from rows before the period too: their verdicts from the start
        since = EPOCH if model == "walk-forward" and reads_news(feature_set) else first or EPOCH
        index, info = await news_index(news_db or default_news_db(), news, scanned, since, last or FAR,
                                       models_dir or REPO / "models_store", progress=lambda f, stage: say(0.0, stage))
        news_voter, news_features, news_summary = index, index, {"kind": "stored verdicts", **info,
                                           "weight": engine_config.ensemble.weight("news")}
    engine = SignalEngine(ind, engine_config, news=news_voter)
    setup_tfs = _timeframes(timeframes) if SETUPS in families else {}
    config = BacktestConfig(costs_bps=costs_bps, timeframes=setup_tfs)
    books = make_books(families, costs_bps, timeframes)
    say(0.0, "load")
    learning: dict[str, Any] = {"kind": "rules only"}
    if model == "walk-forward" and SETUPS in families:
        probe = Backtester(market, engine, RiskManager(RiskConfig(costs_bps=costs_bps)), config)
        targets = probe.scan_targets()
        if first is None or last is None:  # the defaults Backtester.run takes, from the same series
            loaded = await probe.load(last or FAR)
            if not loaded:
                raise ValueError(f"no bars for any scan target in {data}")
            first = first or _utc(min(int(x.open_ns[0]) for x in loaded)) + WARM_UP
            last = last or _utc(max(int(x.close_ns[-1]) for x in loaded))
        models = await walk_forward_models(market, targets, first, last, ind, costs_bps, _context_market(data),
                                           LearningConfig(every=timedelta(days=retrain_every_days),
                                                          feature_set=feature_set),
                                           lambda f, stage: say(f, stage),
                                           news=news_features if reads_news(feature_set) else None)
        engine, learning = SignalEngine(ind, engine_config, model=models.voter, news=news_voter), models.summary
    result = await Backtester(market, engine, RiskManager(RiskConfig(costs_bps=costs_bps)), config,
                              books).run(first, last, say)
    portfolio = simulate(result, PortfolioConfig())
    bench, bench_bars = await _benchmark(csv, benchmark, result)
    out = build_report(result, portfolio, bench)
    out["evaluation"] = evaluate(result, portfolio, bench, bench_bars, books, variants)
    out["trades"] = trade_rows(result, portfolio)
    out["model"] = learning
    out["families"] = list(families)
    if symbols is not None:
        out["symbols"] = {"given": len(set(symbols)), "scanned": len(market.instruments()), "missing": missing}
    if news_voter is not None:
        news_summary["effects"] = {k: engine.news_effects.get(k, 0) for k in NEWS_EFFECTS}
    out["news"] = news_summary
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(out, indent=2) + "\n")
    if plot is not None:
        await asyncio.to_thread(plot_equity, portfolio_curve(portfolio), bench, out, plot)
    say(1.0, "done")
    return out


FAR = datetime(2200, 1, 1, tzinfo=timezone.utc)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
REPO = Path(__file__).resolve().parents[1]


def _engine_config(news_weight: float | None) -> EngineConfig:
    if news_weight is None:
        return EngineConfig()
    if news_weight < 0:
        raise ValueError("the news weight must be >= 0")
    weights = tuple((k, news_weight if k == "news" else w) for k, w in EnsembleConfig().weights)
    return EngineConfig(ensemble=EnsembleConfig(weights=weights))


def parse_symbols(text: str) -> list[str]:
    """--symbols: a comma-separated list, or a file: a CSV with a `symbol` column (e.g. the tweets file, for its
    tickers) or plain text with one symbol per line (or separated by commas or spaces)."""
    path = Path(text)
    if path.is_file():
        if ".csv" in path.name.lower():
            import pandas as pd

            frame = pd.read_csv(path, usecols=lambda c: c.strip().lower() == "symbol")
            if frame.shape[1] != 1:
                raise ValueError(f"{path} has no symbol column")
            found = sorted({str(s).strip().upper() for s in frame.iloc[:, 0].dropna() if str(s).strip()})
        else:
            found = sorted({s.strip().upper() for s in path.read_text().replace(",", " ").split() if s.strip()})
    else:
        found = sorted({s.strip().upper() for s in text.split(",") if s.strip()})
    if not found:
        raise ValueError(f"no symbols in {text!r}")
    return found


def _utc(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // 10**9, timezone.utc)


def _context_market(data: Path) -> MarketData | None:
    """SPX and VIX for the regime features: the data itself when it holds them, else a `benchmarks` folder in or
    beside it."""
    root = data if data.is_dir() else data.parent
    for folder in (root / "benchmarks", root.parent / "benchmarks"):
        if folder.is_dir():
            return CsvMarketData(folder)
    return None


def _timeframes(wanted: Sequence[Timeframe | str] | None) -> dict[AssetClass, tuple[Timeframe, ...]]:
    if not wanted:
        return dict(DEFAULT_TIMEFRAMES)
    keep = {Timeframe.parse(str(t)) for t in wanted}
    return {cls: tuple(tf for tf in tfs if tf in keep) for cls, tfs in DEFAULT_TIMEFRAMES.items()}


def evaluate(result: BacktestResult, portfolio: PortfolioResult, bench: Curve | None, bench_bars: pd.DataFrame | None,
             books: Sequence[Book], variants: int) -> dict[str, Any]:
    """The report's evaluation section (core.backtest.scorecard), with the ranking book's rank IC."""
    primary = closes = None
    if bench is not None and bench_bars is not None:
        series = Series.of(Instrument(bench.name, AssetClass.INDEX), Timeframe.D1, bench_bars)
        primary = (bench.name, daily_curve(series, portfolio.times))
        closes = pd.Series(bench_bars["close"].to_numpy(dtype=np.float64), index=pd.DatetimeIndex(bench_bars.index).date)
    ic = None
    for book in books:
        if isinstance(book, RankingBook) and book.scores:
            pred, real = book.predictions()
            inside = [d for d in pred.index if result.start.date() <= d <= result.end.date()]
            r = rank_ic(pred.loc[inside], real.loc[inside], overlap=book.config.horizon)
            ic = {**asdict(r), "horizon_days": book.config.horizon,
                  "models": {q: {"rows": m.rows, "holdout_ic": m.holdout_ic,
                                 "record": None if m.record is None else m.record.evidence()}
                             for q, m in sorted(book.models.items())}}
    out = scorecard(result, portfolio, primary, closes, trials=variants, rank_ic=ic)
    out["breaker"] = breaker_summary(result)
    return out


def trade_rows(result: BacktestResult, portfolio: PortfolioResult) -> list[dict[str, Any]]:
    """Every issued signal and how it ended: the list the report's figures are computed from."""
    taken = set(portfolio.entered)
    rows = []
    for t in result.trades:
        s, o = t.signal, t.outcome
        rows.append({"id": s.id, "symbol": s.symbol, "asset_class": str(s.asset_class), "timeframe": str(s.timeframe),
                     "strategy": s.strategy, "direction": s.direction.value, "issued_at": s.issued_at.isoformat(),
                     "entry": s.entry, "target": s.target, "stop": s.stop, "confidence": s.confidence,
                     "position_size": s.position_size, "taken": s.id in taken,
                     "fill_time": None if t.fill is None else t.fill.time.isoformat(),
                     "fill_price": None if t.fill is None else t.fill.price,
                     "status": None if o is None else str(o.status),
                     "exit_time": None if o is None else o.exit_time.isoformat(),
                     "exit_price": None if o is None else o.exit_price,
                     "net_return": None if o is None else round(o.net_return, 8)})
    return rows


def breaker_summary(result: BacktestResult) -> dict[str, Any]:
    """What the strategy breaker did: its limits, every pause and resume, and how the shadow signals ended."""
    closed = [(t.signal, t.outcome) for t in result.shadows if t.outcome is not None]
    return {"limits": asdict(SERVICE_LIMITS),
            "events": [{"scope": e.scope, "at": e.at.isoformat(), "kind": e.kind, "cause": e.cause, "reason": e.reason}
                       for e in result.breaker_events],
            "shadows": asdict(trade_stats([t.signal for t in result.shadows], closed))}


async def _benchmark(market: CsvMarketData, path: Path | None,
                     result: BacktestResult) -> tuple[Curve | None, pd.DataFrame | None]:
    """The benchmark's daily closes over the period (the file given, else SPX when the data holds it), and all
    its bars up to the end."""
    source: MarketData = market
    if path is not None:
        source = CsvMarketData(path)
        symbol = source.instruments()[0].symbol
    elif any(i.symbol == "SPX" for i in market.instruments()):
        symbol = "SPX"
    elif any(i.symbol == BTC for i in market.instruments()) and all(
            i.asset_class is AssetClass.CRYPTO for i in market.instruments()):
        symbol = BTC  # a crypto book's benchmark: bitcoin bought and held
    else:
        return None, None
    try:
        bars = await source.get_bars(symbol, Timeframe.D1, end=result.end)
    except MarketDataError as exc:
        log.warning("benchmark %s unusable: %s", symbol, exc)
        return None, None
    curve = benchmark_curve(symbol, bars, Timeframe.D1, result.start, result.end)
    if curve is None:
        log.warning("benchmark %s does not cover %s .. %s; the report has no benchmark", symbol,
                    result.start.date(), result.end.date())
        return None, None
    return curve, bars


def plot_equity(portfolio: Curve, benchmark: Curve | None, report: dict[str, Any], path: Path) -> None:
    """The equity curve against the benchmark (both start at 1) and the drawdown beneath."""
    import matplotlib

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


def add_features_argument(p: argparse.ArgumentParser) -> None:
    """--features: the feature set the models read (core.features.sets.MODEL_FEATURE_SETS)."""
    p.add_argument("--features", choices=tuple(MODEL_FEATURE_SETS), default=DEFAULT_MODEL_FEATURE_SET,
                   help=f"the models' feature set (default {DEFAULT_MODEL_FEATURE_SET}; fs-2 adds sector relative "
                        "strength and how similar past setups ended; fs-3 adds news features, read from --news)")



def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="signalbot backtest", description=__doc__)
    p.add_argument("--data", type=Path, required=True, help="a CSV file or a directory laid out like ../shared/data")
    p.add_argument("--benchmark", type=Path, help="daily benchmark CSV (default: SPX when the data holds it)")
    p.add_argument("--start", help="first day whose signals count, YYYY-MM-DD (default: 400 days into the data)")
    p.add_argument("--end", help="last day whose signals count, YYYY-MM-DD (default: the end of the data)")
    p.add_argument("--costs-bps", type=float, default=10.0, help="costs per side in basis points (default 10)")
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
    return p


def add_news_arguments(p: argparse.ArgumentParser, what: str) -> None:
    """--news [DIR] and --news-db FILE."""
    p.add_argument("--news", nargs="?", const="auto", metavar="DIR", help=what)
    p.add_argument("--news-db", type=Path, help="SQLite file of stored verdicts (default: "
                                                "<OS cache dir>/signalbot/news-verdicts.sqlite)")


def news_dir_option(option: str | None, data: Path) -> Path | None:
    if option is None:
        return None
    if option != "auto":
        return Path(option)
    from scripts.news_cache import news_folder

    found = news_folder(data)
    if found is None:
        raise ValueError(f"no news folder in or beside {data}; give one: --news DIR")
    return found


def main(argv: list[str] | None = None) -> int:
    """`signalbot backtest ...` (bot.cli hands its arguments here: one parser for the backtest's options)."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    began = time.perf_counter()
    try:
        out = asyncio.run(run_backtest(args.data, args.start, args.end, args.costs_bps, args.benchmark, args.report,
                                       args.plot, timeframes=args.timeframes.split(",") if args.timeframes else None,
                                       model=args.model, retrain_every_days=args.retrain_days, feature_set=args.features,
                                       symbols=parse_symbols(args.symbols) if args.symbols else None,
                                       news=news_dir_option(args.news, args.data), news_db=args.news_db,
                                       news_weight=args.news_weight, families=args.families,
                                       variants=args.variants))
    except (ValueError, OSError, SignalBotError) as exc:
        print(f"signalbot backtest: {exc}", file=sys.stderr)
        return 2
    if args.publish is not None:  # --publish: the copy the service shows in /performance
        from storage.backtest_reports import publish_report
        try:
            print(f"published {publish_report(out, args.publish)}", file=sys.stderr)
        except OSError as exc:
            print(f"signalbot backtest: not published: {exc}", file=sys.stderr)
            return 2
    print(summary(out, time.perf_counter() - began), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
