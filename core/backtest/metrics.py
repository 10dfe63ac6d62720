"""Statistics of an equity curve and of closed signals: CAGR, Sharpe, Sortino, drawdown, alpha/beta, calibration.
Returns are fractions; annualisation uses the curve's own number of points per year (about 252 for a stock
portfolio marked on trading days, 365 for crypto)."""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np

from core.domain import Signal, SignalOutcome, SignalStatus

YEAR_DAYS = 365.25


@dataclass(frozen=True, slots=True)
class CurveStats:
    total_return: float
    cagr: float
    sharpe: float | None  # None when the returns do not vary
    sortino: float | None  # None without a losing period
    max_drawdown: float  # <= 0
    periods_per_year: float


def period_returns(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return v[1:] / v[:-1] - 1.0


def max_drawdown(values: np.ndarray) -> float:
    """Deepest fall from a running peak, as a negative fraction (0 for a curve that never falls)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return 0.0
    return float(np.min(v / np.maximum.accumulate(v) - 1.0))


def cagr(first: float, last: float, years: float) -> float:
    if years <= 0 or first <= 0:
        return 0.0
    if last <= 0:
        return -1.0
    return float((last / first) ** (1.0 / years) - 1.0)


def curve_stats(values: np.ndarray, years: float) -> CurveStats:
    """`values`: the curve at its start and at each period's end; `years`: the time it spans."""
    v = np.asarray(values, dtype=np.float64)
    r = period_returns(v)
    ppy = len(r) / years if years > 0 else 0.0
    sharpe = sortino = None
    if len(r) > 1:
        sd = float(np.std(r, ddof=1))
        if sd > 0:
            sharpe = float(np.mean(r) / sd * math.sqrt(ppy))
        downside = float(np.sqrt(np.mean(np.minimum(r, 0.0) ** 2)))
        if downside > 0:
            sortino = float(np.mean(r) / downside * math.sqrt(ppy))
    return CurveStats(float(v[-1] / v[0] - 1.0) if len(v) else 0.0, cagr(float(v[0]), float(v[-1]), years),
                      sharpe, sortino, max_drawdown(v), ppy)


def alpha_beta(returns: np.ndarray, benchmark: np.ndarray, periods_per_year: float) -> tuple[float, float] | None:
    """OLS of the portfolio's period returns on the benchmark's: (alpha annualised as alpha x periods, beta)."""
    y, x = np.asarray(returns, dtype=np.float64), np.asarray(benchmark, dtype=np.float64)
    if len(y) < 3 or len(y) != len(x) or float(np.var(x)) == 0.0:
        return None
    beta = float(np.cov(y, x, ddof=1)[0, 1] / np.var(x, ddof=1))
    alpha = float(np.mean(y) - beta * np.mean(x))
    return alpha * periods_per_year, beta


def yearly_returns(dates: Sequence[date], values: np.ndarray) -> dict[int, float]:
    """Return of each calendar year, from the last point of the year before (or the first point) to its last."""
    out: dict[int, float] = {}
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return out
    base = float(v[0])
    for i, d in enumerate(dates):
        last_of_year = i == len(dates) - 1 or dates[i + 1].year != d.year
        if last_of_year and i > 0:
            out[d.year] = float(v[i] / base - 1.0)
            base = float(v[i])
        elif i == 0 and last_of_year:
            base = float(v[i])
    return out


@dataclass(frozen=True, slots=True)
class TradeStats:
    signals: int
    closed: int
    hit_rate: float | None  # net return > 0
    target_rate: float | None  # closed at target before stop
    avg_return: float | None
    median_return: float | None
    profit_factor: float | None  # None when nothing was lost (or nothing closed)
    avg_holding_days: float | None


def trade_stats(signals: Sequence[Signal], outcomes: Sequence[tuple[Signal, SignalOutcome]]) -> TradeStats:
    """Every issued signal counts in `signals`; the closed ones in the rest (nothing is cherry-picked)."""
    if not outcomes:
        return TradeStats(len(signals), 0, None, None, None, None, None, None)
    rets = [o.net_return for _, o in outcomes]
    wins = sum(r for r in rets if r > 0)
    losses = -sum(r for r in rets if r <= 0)
    return TradeStats(
        signals=len(signals), closed=len(rets),
        hit_rate=sum(1 for r in rets if r > 0) / len(rets),
        target_rate=sum(1 for _, o in outcomes if o.status is SignalStatus.TARGET) / len(rets),
        avg_return=statistics.fmean(rets), median_return=statistics.median(rets),
        profit_factor=wins / losses if losses > 0 else None,
        avg_holding_days=statistics.fmean(o.bars_held * s.timeframe.duration.total_seconds() / 86_400
                                          for s, o in outcomes),
    )


CALIBRATION_EDGES = (0, 30, 40, 50, 60, 70, 80, 90, 100)
"""Model confidences are calibrated probabilities in percent and can sit below 40; the rules' start at 43."""


@dataclass(frozen=True, slots=True)
class CalibrationBucket:
    low: int
    high: int  # exclusive, except the last bucket, which includes 100
    count: int
    hit_rate: float | None
    avg_return: float | None
    mean_confidence: float | None = None  # what the bucket promised, to read against its hit rate


def has_probability(signal: Signal) -> bool:
    """Whether the signal's confidence is a model's probability (else it is a rule score, not a probability)."""
    return isinstance(signal.evidence.get("model_probability"), (int, float))


def calibration(outcomes: Sequence[tuple[Signal, SignalOutcome]],
                edges: Sequence[int] = CALIBRATION_EDGES) -> list[CalibrationBucket]:
    """Closed signals by confidence bucket: how often they made money and how much, on average."""
    out = []
    for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        last = k == len(edges) - 2
        inside = [(s, o) for s, o in outcomes if lo <= s.confidence < hi or (last and s.confidence == hi)]
        rets = [o.net_return for _, o in inside]
        out.append(CalibrationBucket(lo, hi, len(rets), sum(1 for r in rets if r > 0) / len(rets) if rets else None,
                                     statistics.fmean(rets) if rets else None,
                                     statistics.fmean(s.confidence for s, _ in inside) if inside else None))
    return out
