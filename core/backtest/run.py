"""A walk-forward backtest over CSV data, through the live signal path: the run, its report and its evaluation
(the figures of DESIGN.md section 6). Scores only signals issued inside [start, end]; earlier data is warm-up.
Writing the report, the equity chart and the summary are the command line's (bot/cli/backtest.py); the stored
news verdicts come in as a `NewsLoader` (storage.news_cache opens the verdict file)."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.backtest.candidates import Series
from core.backtest.evaluation import rank_ic
from core.backtest.inputs import MODES, context_market, scan_timeframes
from core.backtest.learning import LearningConfig, walk_forward_models
from core.backtest.market import SymbolSubset
from core.backtest.metrics import trade_stats
from core.backtest.portfolio import PortfolioConfig, PortfolioResult, simulate
from core.backtest.report import Curve, benchmark_curve, build_report, portfolio_curve
from core.backtest.scorecard import BTC, daily_curve, scorecard
from core.backtest.walk import WARM_UP, Backtester, BacktestConfig, BacktestResult, Progress
from core.books import DEFAULT_FAMILIES, SETUPS, make_books, parse_families
from core.books.base import Book
from core.books.ranking import RankingBook
from core.breaker import SERVICE_LIMITS
from core.dates import EPOCH, FAR, When, parse_end, parse_start
from core.domain import AssetClass, Instrument, Timeframe
from core.errors import MarketDataError
from core.features.news import NewsFeatureSource
from core.features.sets import DEFAULT_MODEL_FEATURE_SET, reads_news
from core.indicators import IndicatorEngine, default_engine
from core.market_data import CsvMarketData
from core.news.replay import NewsLoader
from core.ports import MarketData
from core.risk import RiskConfig, RiskManager
from core.signals.engine import NEWS_EFFECTS, EngineConfig, SignalEngine
from core.signals.ensemble import EnsembleConfig, NewsOpinions

log = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class BacktestRun:
    """A run's report (the JSON of `--report`) and the two curves its chart draws."""
    report: dict[str, Any]
    portfolio: Curve
    benchmark: Curve | None


async def run_backtest(data: Path, start: When = None, end: When = None, costs_bps: float = 10.0,
                       benchmark: Path | None = None, progress: Progress | None = None, *,
                       timeframes: Sequence[Timeframe | str] | None = None,
                       indicators: IndicatorEngine | None = None, model: str = "rules",
                       retrain_every_days: int = 91, context: Path | None = None,
                       feature_set: str = DEFAULT_MODEL_FEATURE_SET,
                       symbols: Sequence[str] | None = None, news: NewsLoader | None = None,
                       news_weight: float | None = None, families: Sequence[str] = DEFAULT_FAMILIES,
                       variants: int = 1) -> BacktestRun:
    """Backtest the CSV data at `data` (a file or a directory laid out like ../shared/data): the report and the
    curves of its chart.

    `benchmark`: a daily CSV (SPX by default when the data holds it). `timeframes`: only these timeframes are
    scanned (default: the live service's per asset class). `indicators`: the engine the live service runs
    (default: core.indicators.default_engine(), as bot.app and `signalbot scan` wire it).

    `model`: "rules" (the rule engine alone) or "walk-forward" (LightGBM reversion models vote beside the rules,
    retrained every `retrain_every_days` from the labels known at each retraining, see core.backtest.learning;
    `feature_set`: the columns they read, core.features.sets.MODEL_FEATURE_SETS).
    `context`: a directory with SPX and VIX daily files for the market-regime features (default: a
    `benchmarks` folder in or beside `data`).

    `symbols`: only these instruments are scanned (the benchmark is still read from the whole data).
    `news`: the stored news verdicts (core.news.replay.NewsLoader, e.g. storage.news_cache.news_loader over a
    news folder and a verdict file): they vote in the engine with the weight `news_weight` (default: the
    ensemble's) and feed the models' news features; never an LLM."""
    if model not in MODES:
        raise ValueError(f"model must be one of {', '.join(MODES)}, not {model!r}")
    families = parse_families(families)
    say: Progress = progress or _silent
    csv = CsvMarketData(data)
    market: MarketData = csv
    missing: list[str] = []
    if symbols is not None:
        subset = SymbolSubset(csv, symbols)
        if not subset.instruments():
            raise ValueError(f"none of the {len(symbols)} symbols given is in {data}")
        market, missing = subset, subset.missing
    ind = indicators or default_engine()
    engine_config = engine_config_for(news_weight)
    first, last = parse_start(start), parse_end(end)
    news_voter: NewsOpinions | None = None
    news_features: NewsFeatureSource | None = None  # what the models' news features read (the same verdicts)
    news_summary: dict[str, Any] = {"kind": "no news"}
    if news is not None:
        scanned = sorted({i.symbol for i in market.instruments()})
        # models reading news features learn from rows before the period too: their verdicts from the start
        since = EPOCH if model == "walk-forward" and reads_news(feature_set) else first or EPOCH
        index, info = await news(scanned, since, last or FAR, lambda f, stage: say(0.0, stage))
        news_voter, news_features, news_summary = index, index, {"kind": "stored verdicts", **info,
                                           "weight": engine_config.ensemble.weight("news")}
    engine = SignalEngine(ind, engine_config, news=news_voter)
    setup_tfs = scan_timeframes(timeframes) if SETUPS in families else {}
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
        models = await walk_forward_models(market, targets, first, last, ind, costs_bps, context_market(data),
                                           LearningConfig(every=timedelta(days=retrain_every_days),
                                                          feature_set=feature_set),
                                           lambda f, stage: say(f, stage),
                                           news=news_features if reads_news(feature_set) else None)
        engine, learning = SignalEngine(ind, engine_config, model=models.voter, news=news_voter), models.summary
    result = await Backtester(market, engine, RiskManager(RiskConfig(costs_bps=costs_bps)), config,
                              books).run(first, last, say)
    portfolio = simulate(result, PortfolioConfig())
    bench, bench_bars = await benchmark_of(csv, benchmark, result)
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
    say(1.0, "done")
    return BacktestRun(out, portfolio_curve(portfolio), bench)


def _silent(fraction: float, stage: str) -> None:
    pass


def engine_config_for(news_weight: float | None) -> EngineConfig:
    """The engine's configuration, with the news vote's weight `news_weight` when given."""
    if news_weight is None:
        return EngineConfig()
    if news_weight < 0:
        raise ValueError("the news weight must be >= 0")
    weights = tuple((k, news_weight if k == "news" else w) for k, w in EnsembleConfig().weights)
    return EngineConfig(ensemble=EnsembleConfig(weights=weights))


def _utc(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // 10**9, timezone.utc)


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


async def benchmark_of(market: CsvMarketData, path: Path | None,
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
