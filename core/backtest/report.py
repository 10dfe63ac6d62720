"""The backtest report in the design's format (DESIGN.md section 6), plus the calibration table.

All returns are fractions after costs. Values that do not exist (no losing trade for a profit factor, no
benchmark) are None (JSON null). Definitions:
- signals: issued in the period; closed: of them, closed by its end (the rest are still open there);
- hit_rate: closed with net return > 0; target_rate: closed at target; profit_factor: sum of gains / sum of losses;
- avg_holding_days: bars held x the bar's length, in days (trading days for daily bars);
- portfolio: the capital-constrained portfolio (core.backtest.portfolio), marked at daily closes; exposure is
  the average share of equity invested; positions / skipped_no_room count the signals taken and those that
  found no room; Sharpe and Sortino have no risk-free rate and use the curve's own points per year;
- benchmark: buy and hold of the benchmark's closes over the same period (None if it does not cover it);
  alpha and beta: OLS of the portfolio's daily returns on the benchmark's, on common days, alpha x days per year;
- by_year: by the year of the bar that produced each signal, with the calendar-year portfolio and benchmark returns;
- by_asset_class, by_direction, by_strategy: the trade statistics of each asset class, of longs and shorts, and
  of each setup family (the signal's strategy) apart;
- calibration: closed signals per confidence bucket (0-30, 30-40 .. 90-100): count, mean confidence, hit rate,
  average net return (a calibrated confidence of c % should hit about c % of the time); calibration_by_kind: the
  same for the signals whose confidence is a model's probability and for those whose confidence is a rule score
  (not a probability: only the first kind is meant to hit at its confidence).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from core.backtest.metrics import (
    YEAR_DAYS,
    alpha_beta,
    calibration,
    curve_stats,
    has_probability,
    period_returns,
    trade_stats,
    yearly_returns,
)
from core.backtest.portfolio import PortfolioResult
from core.backtest.walk import BacktestResult
from core.domain import Signal, SignalOutcome, Timeframe
from core.market_data.resample import index_ns, to_utc_ns

DESIGN_KEYS = ("period", "universe", "costs_bps", "signals", "closed", "hit_rate", "target_rate", "avg_return",
               "median_return", "profit_factor", "avg_holding_days", "portfolio", "benchmark", "excess_cagr", "alpha",
               "beta", "by_year", "by_asset_class")
PORTFOLIO_KEYS = ("cagr", "sharpe", "sortino", "max_drawdown", "exposure")
BENCHMARK_KEYS = ("cagr", "sharpe", "max_drawdown")
COVERAGE_SLACK = timedelta(days=7)  # a benchmark must start and end within this of the period


@dataclass(frozen=True, slots=True)
class Curve:
    """A price or equity curve: its value at the start and at each daily close after it."""

    name: str
    times: list[datetime]
    dates: list[date]  # the day each point closes
    values: np.ndarray

    @property
    def years(self) -> float:
        return (self.times[-1] - self.times[0]).total_seconds() / 86_400 / YEAR_DAYS if len(self.times) > 1 else 0.0

    def normalised(self) -> np.ndarray:
        return self.values / self.values[0]


def portfolio_curve(p: PortfolioResult) -> Curve:
    return Curve("portfolio", p.times, p.dates, p.equity)


def benchmark_curve(name: str, bars: pd.DataFrame, timeframe: Timeframe, start: datetime, end: datetime) -> Curve | None:
    """The benchmark's closes over (start, end] and its last close at or before start; None when it does not
    cover the period (its history starts after it or ends well before its end)."""
    if bars.empty:
        return None
    close_ns = index_ns(bars) + int(timeframe.duration.total_seconds()) * 10**9
    start_ns, end_ns = to_utc_ns(start), to_utc_ns(end)
    base = int(np.searchsorted(close_ns, start_ns, side="right")) - 1
    last = int(np.searchsorted(close_ns, end_ns, side="right")) - 1
    if base < 0 or last <= base or close_ns[last] < end_ns - int(COVERAGE_SLACK.total_seconds()) * 10**9:
        return None
    idx = range(base, last + 1)
    times = [start] + [pd.Timestamp(int(close_ns[i]), unit="ns", tz="UTC").to_pydatetime() for i in idx[1:]]
    dates = [(t - timedelta(microseconds=1)).date() for t in times]
    dates[0] = (pd.Timestamp(int(close_ns[base]), unit="ns", tz="UTC") - pd.Timedelta(1, "us")).date()
    values = bars["close"].to_numpy(dtype=np.float64)[base: last + 1]
    return Curve(name, times, dates, values)


def build_report(result: BacktestResult, portfolio: PortfolioResult, benchmark: Curve | None) -> dict[str, Any]:
    trades = [(t.signal, t.outcome) for t in result.trades if t.outcome is not None]
    stats = trade_stats(result.signals, trades)
    curve = portfolio_curve(portfolio)
    pstats = curve_stats(curve.values, curve.years)
    bstats = curve_stats(benchmark.values, curve.years) if benchmark is not None else None
    ab = _alpha_beta(curve, benchmark, pstats.periods_per_year) if benchmark is not None else None
    report: dict[str, Any] = {
        "period": {"start": _day(result.start), "end": _day(result.end - timedelta(microseconds=1))},
        "universe": result.universe,
        "costs_bps": result.costs_bps,
        **asdict(stats),
        "portfolio": {
            "cagr": pstats.cagr, "sharpe": pstats.sharpe, "sortino": pstats.sortino,
            "max_drawdown": pstats.max_drawdown, "exposure": portfolio.exposure,
            "positions": len(portfolio.entered), "skipped_no_room": len(portfolio.skipped),
            "final_equity": float(curve.values[-1] / curve.values[0]),
        },
        "benchmark": ({"symbol": benchmark.name, "cagr": bstats.cagr, "sharpe": bstats.sharpe,
                       "max_drawdown": bstats.max_drawdown} if benchmark is not None and bstats is not None
                      else {"symbol": None, "cagr": None, "sharpe": None, "max_drawdown": None}),
        "excess_cagr": pstats.cagr - bstats.cagr if bstats is not None else None,
        "alpha": ab[0] if ab else None,
        "beta": ab[1] if ab else None,
        "by_year": _by_year(result.signals, trades, curve, benchmark),
        "by_asset_class": _by_group(result.signals, trades, lambda s: str(s.asset_class)),
        "by_direction": _by_group(result.signals, trades, lambda s: s.direction.value),
        "by_strategy": _by_group(result.signals, trades, lambda s: s.strategy),
        "calibration": _calibration(trades),
        "calibration_by_kind": {
            "probability": _calibration([(s, o) for s, o in trades if has_probability(s)]),
            "score": _calibration([(s, o) for s, o in trades if not has_probability(s)]),
        },
    }
    return _rounded(report)


def _calibration(trades: Sequence[tuple[Signal, SignalOutcome]]) -> list[dict[str, Any]]:
    return [{"confidence": f"{b.low}-{b.high}", "count": b.count, "mean_confidence": b.mean_confidence,
             "hit_rate": b.hit_rate, "avg_return": b.avg_return} for b in calibration(trades)]


def _day(t: datetime) -> str:
    return t.date().isoformat()


def _alpha_beta(curve: Curve, benchmark: Curve, ppy: float) -> tuple[float, float] | None:
    """Regression on the days both curves have a close (returns from one common day to the next)."""
    mine = dict(zip(curve.dates, curve.values, strict=True))
    theirs = dict(zip(benchmark.dates, benchmark.values, strict=True))
    common = sorted(set(mine) & set(theirs))
    y = period_returns(np.array([mine[d] for d in common]))
    x = period_returns(np.array([theirs[d] for d in common]))
    return alpha_beta(y, x, ppy)


def _by_year(signals: Sequence[Signal], trades: Sequence[tuple[Signal, SignalOutcome]], curve: Curve,
             benchmark: Curve | None) -> list[dict[str, Any]]:
    mine = yearly_returns(curve.dates, curve.values)
    theirs = yearly_returns(benchmark.dates, benchmark.values) if benchmark is not None else {}
    years = sorted({_year(s) for s in signals} | set(mine))
    out = []
    for y in years:
        st = trade_stats([s for s in signals if _year(s) == y], [(s, o) for s, o in trades if _year(s) == y])
        out.append({"year": y, "signals": st.signals, "closed": st.closed, "hit_rate": st.hit_rate,
                    "avg_return": st.avg_return, "profit_factor": st.profit_factor,
                    "portfolio_return": mine.get(y), "benchmark_return": theirs.get(y)})
    return out


def _year(s: Signal) -> int:
    """The year of the day whose bar produced the signal (a daily bar of 31 December closes on 1 January)."""
    return (s.issued_at - timedelta(microseconds=1)).year


def _by_group(signals: Sequence[Signal], trades: Sequence[tuple[Signal, SignalOutcome]],
              key: Callable[[Signal], str]) -> dict[str, Any]:
    """Trade statistics of each group of signals (asset class, direction, strategy), groups in name order."""
    out: dict[str, Any] = {}
    for group in sorted({key(s) for s in signals}):
        st = trade_stats([s for s in signals if key(s) == group], [(s, o) for s, o in trades if key(s) == group])
        out[group] = asdict(st)
    return out


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value
