"""The report's "evaluation": figures that cannot flatter (issue 20), beside the design's headline figures.

- book: the whole portfolio (core.backtest.portfolio) marked daily: CAGR, Sharpe, max drawdown, beta and the
  beta-hedged alpha (against beta x benchmark + (1 - beta) x cash, cash at `cash_rate` a year), its information
  ratio and t, annual turnover and cost drag, and the deflated Sharpe for the number of variants tried;
- by_family and by_asset_class: each group's trades (hit rate, profit factor, expectancy = mean net return per
  closed signal) and the portfolio of its signals alone (the same figures as the book);
- benchmarks: the primary benchmark (SPX for equities, BTC buy and hold for crypto), the equal-weight universe of
  each asset class, and BTC buy and hold whenever the data holds BTC; vs_benchmarks: the book's plain excess
  return and information ratio against each;
- by_year and by_regime: calendar years; benchmark trend (above or below its 200-day average) and volatility
  tercile (21-day), each day classified from the day before (core.backtest.evaluation);
- the headline trade figures count every signal issued; `book.taken` counts the positions the portfolio could
  take (a signal that found no room is skipped): both are given, with the taken positions' own trade figures.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from core.backtest.candidates import Series
from core.backtest.evaluation import (
    deflated_sharpe,
    excess_vs,
    hedged_alpha,
    regime_table,
    turnover_stats,
    yearly_table,
)
from core.backtest.metrics import YEAR_DAYS, curve_stats, period_returns, trade_stats
from core.backtest.portfolio import PortfolioConfig, PortfolioResult, simulate
from core.backtest.walk import BacktestResult
from core.domain import AssetClass, Signal
from core.market_data.resample import to_utc_ns

BTC = "BTC-USDT"


def daily_curve(series: Series, times: Sequence[Any]) -> np.ndarray:
    """The series' last close at or before each time (NaN before its first close)."""
    t_ns = np.array([to_utc_ns(t) for t in times], dtype=np.int64)
    k = np.searchsorted(series.close_ns, t_ns, side="right") - 1
    closes = series.bars["close"].to_numpy(dtype=np.float64)
    return np.where(k >= 0, closes[np.maximum(k, 0)], np.nan)


def _longest(result: BacktestResult, keep: Callable[[Series], bool]) -> list[Series]:
    """Per instrument kept, its series of the longest timeframe."""
    best: dict[str, Series] = {}
    for s in result.series.values():
        if keep(s):
            cur = best.get(s.instrument.symbol)
            if cur is None or s.timeframe.duration > cur.timeframe.duration:
                best[s.instrument.symbol] = s
    return [best[k] for k in sorted(best)]


def equal_weight_curve(members: Sequence[Series], times: Sequence[Any]) -> np.ndarray | None:
    """Growth of 1 in the equal-weight universe, rebalanced at every mark: the mean of the members' returns
    between marks, over the members with a price at both."""
    if not members:
        return None
    prices = np.column_stack([daily_curve(s, times) for s in members])
    with np.errstate(invalid="ignore", divide="ignore"):
        r = prices[1:] / prices[:-1] - 1.0
    r = np.where(np.isfinite(r), r, np.nan)
    counts = np.isfinite(r).sum(axis=1)
    mean = np.where(counts > 0, np.nansum(r, axis=1) / np.maximum(counts, 1), 0.0)
    return np.concatenate([[1.0], np.cumprod(1.0 + mean)])


def benchmark_curves(result: BacktestResult, portfolio: PortfolioResult,
                     primary: tuple[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """The benchmarks' values at the portfolio's marks: the primary one given (SPX), BTC buy and hold, the
    equal-weight universe of each asset class traded."""
    out: dict[str, np.ndarray] = {}
    if primary is not None:
        out[primary[0]] = primary[1]
    btc = _longest(result, lambda s: s.instrument.symbol == BTC)
    if btc and (primary is None or primary[0] != BTC):
        out[f"{BTC} buy and hold"] = daily_curve(btc[0], portfolio.times)
    classes = sorted({s.instrument.asset_class for s in result.series.values()} - {AssetClass.INDEX})
    for cls in classes:
        curve = equal_weight_curve(_longest(result, _of_class(cls)), portfolio.times)
        if curve is not None:
            out[f"equal-weight {cls}"] = curve
    return out


def primary_benchmark(result: BacktestResult, curves: dict[str, np.ndarray], given: str | None) -> str | None:
    """What alpha is measured against: the benchmark given (SPX), else BTC for a crypto book."""
    if given is not None and given in curves:
        return given
    if any(s.instrument.asset_class is AssetClass.CRYPTO for s in result.series.values()):
        name = f"{BTC} buy and hold"
        return name if name in curves else None
    return None


def _aligned(values: np.ndarray, bench: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Period returns of both curves over the marks where both have a value (mask of the periods kept)."""
    ok = np.isfinite(values) & np.isfinite(bench)
    keep = ok[1:] & ok[:-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        a, b = period_returns(values), period_returns(bench)
    return a[keep], b[keep], keep


def book_figures(p: PortfolioResult, bench: np.ndarray | None, cash_rate: float, trials: int) -> dict[str, Any]:
    years = (p.times[-1] - p.times[0]).total_seconds() / 86_400 / YEAR_DAYS if len(p.times) > 1 else 0.0
    cs = curve_stats(p.equity, years)
    out: dict[str, Any] = {"cagr": cs.cagr, "sharpe": cs.sharpe, "sortino": cs.sortino, "max_drawdown": cs.max_drawdown,
                           "exposure": p.exposure, "positions": len(p.entered), "skipped_no_room": len(p.skipped)}
    ppy = cs.periods_per_year
    if years > 0 and len(p.equity) > 1:
        out.update(turnover_stats(p.traded, float(np.mean(p.equity)), p.costs, years))
    r = period_returns(p.equity)
    if len(r) >= 3 and float(np.std(r)) > 0:
        out["deflated_sharpe"] = asdict(deflated_sharpe(r, trials, ppy))
    if bench is not None:
        a, b, _ = _aligned(p.equity, bench)
        cash = (1 + cash_rate) ** (1 / ppy) - 1 if ppy > 0 else 0.0
        h = hedged_alpha(a, b, cash, ppy) if len(a) >= 3 else None
        if h is not None:
            out.update(beta=h.beta, alpha_annual=h.alpha_annual, information_ratio=h.information_ratio,
                       alpha_t=h.alpha_t, tracking_error=h.tracking_error)
    return out


def _group_figures(result: BacktestResult, keep: Callable[[Signal], bool], bench: np.ndarray | None,
                   portfolio: PortfolioResult, cash_rate: float, trials: int) -> dict[str, Any]:
    trades = [t for t in result.trades if keep(t.signal)]
    closed = [(t.signal, t.outcome) for t in trades if t.outcome is not None]
    st = trade_stats([t.signal for t in trades], closed)
    sub = simulate(replace(result, trades=trades), PortfolioConfig())
    figures = book_figures(sub, _at(bench, portfolio, sub), cash_rate, trials)
    return {"trades": {**asdict(st), "expectancy": st.avg_return}, "portfolio": figures}


def _at(bench: np.ndarray | None, full: PortfolioResult, sub: PortfolioResult) -> np.ndarray | None:
    """The benchmark at the marks of a sub-portfolio (the same marks as the whole book's)."""
    if bench is None:
        return None
    pos = {t: k for k, t in enumerate(full.times)}
    return np.array([bench[pos[t]] if t in pos else np.nan for t in sub.times])


def scorecard(result: BacktestResult, portfolio: PortfolioResult, primary: tuple[str, np.ndarray] | None,
              primary_closes: pd.Series | None, *, cash_rate: float = 0.0, trials: int = 1,
              rank_ic: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report's "evaluation" section (module docstring). `primary`: the given benchmark (SPX) at the
    portfolio's marks; `primary_closes`: its daily closes with history before the period (for the regimes)."""
    curves = benchmark_curves(result, portfolio, primary)
    name = primary_benchmark(result, curves, primary[0] if primary else None)
    bench = curves.get(name) if name else None
    taken = set(portfolio.entered)
    taken_closed = [(t.signal, t.outcome) for t in result.trades if t.signal.id in taken and t.outcome is not None]
    book = book_figures(portfolio, bench, cash_rate, trials)
    book["taken"] = asdict(trade_stats([t.signal for t in result.trades if t.signal.id in taken], taken_closed))
    out: dict[str, Any] = {
        "benchmark": name, "cash_rate": cash_rate, "variants_tried": trials, "book": book,
        "by_family": {f: _group_figures(result, _field("strategy", f), bench, portfolio, cash_rate, trials)
                      for f in sorted({t.signal.strategy for t in result.trades})},
        "by_asset_class": {c: _group_figures(result, _field("asset_class", c), bench, portfolio, cash_rate, trials)
                           for c in sorted({str(t.signal.asset_class) for t in result.trades})},
        "benchmarks": {k: _curve_figures(v, portfolio) for k, v in curves.items()},
        "vs_benchmarks": {k: _excess(portfolio, v) for k, v in curves.items()},
    }
    if bench is not None:
        dates, a, b = _daily(portfolio, bench)
        ppy = _ppy(portfolio)
        cash = (1 + cash_rate) ** (1 / ppy) - 1
        out["by_year"] = yearly_table(dates, a, b, cash, ppy)
        closes = primary_closes if primary is not None and name == primary[0] else _btc_closes(result)
        if len(dates) >= 3 and closes is not None:
            out["by_regime"] = regime_table(dates, a, _unique_days(closes), b, cash, periods_per_year=ppy)
    if rank_ic is not None:
        out["rank_ic"] = rank_ic
    return out


def _of_class(cls: AssetClass) -> Callable[[Series], bool]:
    return lambda s: s.instrument.asset_class is cls


def _field(name: str, value: str) -> Callable[[Signal], bool]:
    return lambda s: str(getattr(s, name)) == value


def _daily(p: PortfolioResult, bench: np.ndarray) -> tuple[list[date], np.ndarray, np.ndarray]:
    a, b, keep = _aligned(p.equity, bench)
    dates = [d for d, k in zip(p.dates[1:], keep, strict=True) if k]
    return dates, a, b


def _btc_closes(result: BacktestResult) -> pd.Series | None:
    """BTC's closes by the day they close on, with the history before the period (for the regimes)."""
    btc = _longest(result, lambda s: s.instrument.symbol == BTC)
    if not btc:
        return None
    s = btc[0]
    days = pd.to_datetime(s.close_ns - 1, unit="ns").date
    return pd.Series(s.bars["close"].to_numpy(dtype=np.float64), index=days)


def _unique_days(closes: pd.Series) -> pd.Series:
    return closes[~pd.Index(closes.index).duplicated(keep="last")]


def _ppy(p: PortfolioResult) -> float:
    years = (p.times[-1] - p.times[0]).total_seconds() / 86_400 / YEAR_DAYS if len(p.times) > 1 else 0.0
    return (len(p.times) - 1) / years if years > 0 else 252.0


def _curve_figures(values: np.ndarray, p: PortfolioResult) -> dict[str, Any]:
    ok = np.isfinite(values)
    if ok.sum() < 2:
        return {"cagr": None, "sharpe": None, "max_drawdown": None}
    v = values[ok]
    times = [t for t, k in zip(p.times, ok, strict=True) if k]
    years = (times[-1] - times[0]).total_seconds() / 86_400 / YEAR_DAYS
    cs = curve_stats(v, years)
    return {"cagr": cs.cagr, "sharpe": cs.sharpe, "max_drawdown": cs.max_drawdown,
            "covers": f"{(times[0]).date()}..{(times[-1]).date()}"}


def _excess(p: PortfolioResult, values: np.ndarray) -> dict[str, Any] | None:
    a, b, _ = _aligned(p.equity, values)
    e = excess_vs(a, b, _ppy(p)) if len(a) >= 2 else None
    return None if e is None else {"excess_annual": e.excess_annual, "information_ratio": e.information_ratio}
