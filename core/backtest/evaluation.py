"""Evaluation of a backtest that cannot flatter: beta-hedged alpha, deflated Sharpe, regimes, years, rank IC, turnover.
Returns are per-period simple returns as fractions; "annual" figures scale a per-period mean by `periods_per_year`
(ppy) and a per-period std by sqrt(ppy). Inputs with NaN or inf are rejected, not silently dropped."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.stats import kurtosis, norm, skew

from core.backtest.metrics import alpha_beta, max_drawdown

Vector = npt.NDArray[np.float64]
EULER_GAMMA = 0.5772156649015329


def _vec(x: npt.ArrayLike, name: str) -> Vector:
    v = np.asarray(x, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains NaN or inf")
    return v


def _cash(cash: float | npt.ArrayLike, n: int) -> Vector:
    c = np.asarray(cash, dtype=np.float64)
    if c.ndim == 0:
        return np.full(n, float(c))
    return _vec(c, "cash")


def _aligned(*pairs: tuple[npt.ArrayLike, str]) -> list[Vector]:
    out = [_vec(x, name) for x, name in pairs]
    if len({len(v) for v in out}) > 1:
        raise ValueError("misaligned inputs: " + ", ".join(f"{name}={len(v)}" for v, (_, name) in zip(out, pairs)))
    return out


@dataclass(frozen=True, slots=True)
class HedgedAlpha:
    beta: float
    alpha_annual: float  # mean(active) x ppy
    tracking_error: float  # std(active, ddof=1) x sqrt(ppy)
    information_ratio: float | None  # alpha_annual / tracking_error; None when TE is 0
    alpha_t: float | None  # mean(active) / (std(active, ddof=1) / sqrt(n)); None when TE is 0
    correlation: float | None  # of (returns - cash) with (benchmark - cash); None when returns do not vary
    periods: int


def hedged_alpha(returns: npt.ArrayLike, benchmark: npt.ArrayLike, cash: float | npt.ArrayLike,
                 periods_per_year: float) -> HedgedAlpha | None:
    """Alpha over the beta-hedged reference beta*benchmark + (1-beta)*cash, per period.
    beta: OLS slope of (returns - cash) on (benchmark - cash); active = returns - reference, so mean(active) is the
    OLS intercept. alpha_t ignores the estimation error of beta (slightly optimistic when mean(benchmark - cash) is
    far from 0). None with fewer than 3 periods or when benchmark - cash does not vary."""
    r, b = _aligned((returns, "returns"), (benchmark, "benchmark"))
    c = _cash(cash, len(r))
    if len(c) != len(r):
        raise ValueError(f"misaligned inputs: returns={len(r)}, cash={len(c)}")
    y, x = r - c, b - c
    if len(y) < 3 or float(np.ptp(x)) == 0.0:
        return None
    ab = alpha_beta(y, x, periods_per_year)
    if ab is None:
        return None
    beta = ab[1]
    active = y - beta * x
    n = len(active)
    sd = float(np.std(active, ddof=1))
    mean = float(np.mean(active))
    te = sd * math.sqrt(periods_per_year)
    with np.errstate(all="ignore"):
        corr = float(np.corrcoef(y, x)[0, 1]) if float(np.ptp(y)) > 0 else math.nan
    return HedgedAlpha(beta, mean * periods_per_year, te, mean * periods_per_year / te if sd > 0 else None,
                       mean / (sd / math.sqrt(n)) if sd > 0 else None, corr if math.isfinite(corr) else None, n)


@dataclass(frozen=True, slots=True)
class Excess:
    excess_annual: float  # mean(returns - benchmark) x ppy
    tracking_error: float  # std(returns - benchmark, ddof=1) x sqrt(ppy)
    information_ratio: float | None  # excess_annual / tracking_error; None when TE is 0
    periods: int


def excess_vs(returns: npt.ArrayLike, benchmark: npt.ArrayLike, periods_per_year: float) -> Excess | None:
    """Plain (unhedged, beta 1) active return against e.g. an equal-weight universe or buy-and-hold.
    None with fewer than 2 periods."""
    r, b = _aligned((returns, "returns"), (benchmark, "benchmark"))
    if len(r) < 2:
        return None
    a = r - b
    sd = float(np.std(a, ddof=1))
    ex, te = float(np.mean(a)) * periods_per_year, sd * math.sqrt(periods_per_year)
    return Excess(ex, te, ex / te if sd > 0 else None, len(a))


def sharpe(returns: npt.ArrayLike, periods_per_year: float) -> float | None:
    """mean / std(ddof=1) x sqrt(ppy), no risk-free rate; None with fewer than 2 periods or no variation."""
    r = _vec(returns, "returns")
    if len(r) < 2 or float(np.ptp(r)) == 0.0:
        return None
    return float(np.mean(r) / np.std(r, ddof=1) * math.sqrt(periods_per_year))


@dataclass(frozen=True, slots=True)
class DeflatedSharpe:
    sharpe_annual: float
    trials: int
    expected_max_sharpe_annual: float  # SR0 x sqrt(ppy): the best Sharpe expected by luck among `trials`
    probability: float  # DSR: P(true Sharpe > 0) after selecting the best of `trials`
    observations: int
    skew: float  # g3, population (biased) estimator
    kurtosis: float  # g4, non-excess (normal = 3), population (biased) estimator


def _moments(returns: npt.ArrayLike) -> tuple[float, int, float, float]:
    """(per-period Sharpe mean/std(ddof=1), n, skew g3, non-excess kurtosis g4)."""
    r = _vec(returns, "returns")
    if len(r) < 3 or float(np.ptp(r)) == 0.0:
        raise ValueError("the Sharpe test needs at least 3 returns that vary")
    return (float(np.mean(r) / np.std(r, ddof=1)), len(r), float(skew(r, bias=True)),
            float(kurtosis(r, fisher=False, bias=True)))


def _z(sr: float, sr0: float, n: int, g3: float, g4: float) -> float:
    """(SR - SR0) sqrt(n-1) / sqrt(1 - g3 SR + (g4-1)/4 SR^2); the root is >= |1 - g3 SR/2| since g4 >= 1 + g3^2."""
    var = 1.0 - g3 * sr + (g4 - 1.0) / 4.0 * sr * sr
    return (sr - sr0) * math.sqrt(n - 1) / math.sqrt(max(var, 1e-300))


def probabilistic_sharpe(returns: npt.ArrayLike, benchmark_sharpe_per_period: float = 0.0) -> float:
    """PSR (Bailey & López de Prado 2012): P(true per-period Sharpe > benchmark) = Phi(_z(SR, SR*, n, g3, g4))."""
    sr, n, g3, g4 = _moments(returns)
    return float(norm.cdf(_z(sr, benchmark_sharpe_per_period, n, g3, g4)))


def expected_max_sharpe(trials: int, variance: float) -> float:
    """SR0 = sqrt(V) ((1-g) Phi^-1(1 - 1/N) + g Phi^-1(1 - 1/(N e))), g = Euler-Mascheroni; 0 for N = 1."""
    if trials == 1:
        return 0.0
    return float(math.sqrt(variance) * ((1 - EULER_GAMMA) * norm.ppf(1 - 1 / trials)
                                        + EULER_GAMMA * norm.ppf(1 - 1 / (trials * math.e))))


def deflated_sharpe(returns: npt.ArrayLike, trials: int, periods_per_year: float,
                    trial_sharpe_std: float | None = None) -> DeflatedSharpe:
    """DSR (Bailey & López de Prado 2014) = PSR against SR0, the expected maximum per-period Sharpe of `trials`
    independent zero-Sharpe trials. `trial_sharpe_std`: std of the trials' PER-PERIOD Sharpe ratios (divide annual
    ones by sqrt(ppy)). Without it V = (1 - g3 SR + (g4-1)/4 SR^2)/(n-1), the spread that estimation noise alone
    gives: exact for independent zero-Sharpe trials, but it understates V (and so SR0) when trials differ in true
    Sharpe; pass the measured spread when there is one. Correlated trials count as fewer effective trials."""
    if isinstance(trials, bool) or int(trials) != trials or trials < 1:
        raise ValueError(f"trials must be an integer >= 1 (the number of configurations tried), got {trials!r}")
    if trial_sharpe_std is not None and not trial_sharpe_std >= 0:
        raise ValueError(f"trial_sharpe_std must be >= 0, got {trial_sharpe_std!r}")
    sr, n, g3, g4 = _moments(returns)
    v = (trial_sharpe_std ** 2 if trial_sharpe_std is not None
         else (1.0 - g3 * sr + (g4 - 1.0) / 4.0 * sr * sr) / (n - 1))
    sr0 = expected_max_sharpe(int(trials), v)
    root = math.sqrt(periods_per_year)
    return DeflatedSharpe(sr * root, int(trials), sr0 * root, float(norm.cdf(_z(sr, sr0, n, g3, g4))), n, g3, g4)


def _days(index: Any) -> pd.DatetimeIndex:
    idx = pd.DatetimeIndex(pd.to_datetime(index))
    if idx.tz is not None:
        idx = idx.tz_convert("UTC").tz_localize(None)
    return idx.normalize().as_unit("ns")  # one unit, so that the int64 values compare


def _prior_closes(dates: Sequence[date], benchmark_closes: pd.Series) -> tuple[Vector, npt.NDArray[np.intp]]:
    """The benchmark's closes (NaN dropped, sorted) and, per evaluated date, how many of them are dated before it."""
    s = benchmark_closes.dropna()
    idx = _days(s.index)
    if idx.has_duplicates:
        raise ValueError("benchmark_closes has more than one close on a date")
    order = np.argsort(idx.asi8, kind="stable")
    closes = _vec(s.to_numpy(dtype=np.float64)[order], "benchmark_closes")
    return closes, np.searchsorted(idx.asi8[order], _days(list(dates)).asi8, side="left")


def trend_labels(dates: Sequence[date], benchmark_closes: pd.Series, window: int = 200) -> list[str]:
    """Per date t: "up" if the last close before t (the close of t-1) is above the mean of the `window` closes
    ending there, "down" otherwise, "unknown" with fewer than `window` closes before t. Ex ante: no close on or
    after t is read."""
    closes, pos = _prior_closes(dates, benchmark_closes)
    return ["unknown" if p < window else "up" if closes[p - 1] > float(np.mean(closes[p - window:p])) else "down"
            for p in pos]


def trailing_vol(dates: Sequence[date], benchmark_closes: pd.Series, window: int = 21) -> Vector:
    """Per date t: std(ddof=1) of the last `window` close-to-close benchmark returns ending at the close of t-1
    (history before the evaluated period counts); NaN without enough history. Ex ante."""
    closes, pos = _prior_closes(dates, benchmark_closes)
    r = closes[1:] / closes[:-1] - 1.0
    return np.array([float(np.std(r[p - 1 - window:p - 1], ddof=1)) if p - 1 >= window else np.nan for p in pos])


def volatility_labels(vol: npt.ArrayLike) -> list[str]:
    """Terciles of the known trailing vols: "low" <= 1/3 quantile < "mid" <= 2/3 quantile < "high"; NaN is
    "unknown". The cut points use the whole evaluated period's distribution of an ex-ante quantity: they label
    regimes for reporting only and must never feed a decision."""
    v = np.asarray(vol, dtype=np.float64)
    known = ~np.isnan(v)
    if not known.any():
        return ["unknown"] * len(v)
    q1, q2 = np.quantile(v[known], [1 / 3, 2 / 3])
    return ["unknown" if not k else "low" if x <= q1 else "mid" if x <= q2 else "high" for x, k in zip(v, known)]


def _bucket(r: Vector, b: Vector, c: Vector, share: float, ppy: float) -> dict[str, Any]:
    ha = hedged_alpha(r, b, c, ppy)
    return {"periods": len(r), "share": share, "mean_annual": float(np.mean(r)) * ppy,
            "vol_annual": float(np.std(r, ddof=1)) * math.sqrt(ppy) if len(r) > 1 else None,
            "sharpe": sharpe(r, ppy), "benchmark_mean_annual": float(np.mean(b)) * ppy,
            "alpha_annual": ha.alpha_annual if ha else None, "beta": ha.beta if ha else None,
            "compounded_return": float(np.prod(1.0 + r) - 1.0)}


REGIME_DEFINITION = (
    "Each period t is labelled from information at the end of t-1 only. trend: 'up' if the benchmark close of t-1 "
    "is above its trailing {tw}-close simple mean (closes up to t-1), else 'down'; 'unknown' without {tw} prior "
    "closes. volatility: tercile of the std of the last {vw} benchmark close-to-close returns up to t-1; the tercile "
    "cut points come from the whole evaluated period's trailing-vol values (reporting labels, never a decision input). "
    "Per regime: mean/vol/Sharpe annualised x{ppy}, alpha and beta over beta*benchmark + (1-beta)*cash, and the "
    "return compounded over that regime's (non-contiguous) periods.")


def regime_table(dates: Sequence[date], returns: npt.ArrayLike, benchmark_closes: pd.Series,
                 benchmark_returns: npt.ArrayLike, cash: float | npt.ArrayLike = 0.0, trend_window: int = 200,
                 vol_window: int = 21, periods_per_year: float = 252) -> dict[str, Any]:
    """Strategy statistics by benchmark trend and volatility regime; see REGIME_DEFINITION. Regimes with no
    period are left out; 'unknown' appears when some periods lack history."""
    r, b = _aligned((returns, "returns"), (benchmark_returns, "benchmark_returns"))
    c = _cash(cash, len(r))
    if len(dates) != len(r) or len(c) != len(r):
        raise ValueError(f"misaligned inputs: dates={len(dates)}, returns={len(r)}, cash={len(c)}")
    out: dict[str, Any] = {}
    for key, labels, values in (
            ("trend", trend_labels(dates, benchmark_closes, trend_window), ("up", "down", "unknown")),
            ("volatility", volatility_labels(trailing_vol(dates, benchmark_closes, vol_window)),
             ("low", "mid", "high", "unknown"))):
        lab = np.array(labels, dtype=object)
        out[key] = {v: _bucket(r[m], b[m], c[m], float(m.mean()), periods_per_year)
                    for v in values if (m := lab == v).any()}
    out["definition"] = REGIME_DEFINITION.format(tw=trend_window, vw=vol_window, ppy=periods_per_year)
    return out


def yearly_table(dates: Sequence[date], returns: npt.ArrayLike, benchmark_returns: npt.ArrayLike,
                 cash: float | npt.ArrayLike = 0.0, periods_per_year: float = 252) -> list[dict[str, Any]]:
    """Per calendar year of the period end dates: returns compounded within the year, Sharpe, max drawdown of the
    curve starting at 1 at the year's start, and hedged_alpha on that year's periods (None when too few)."""
    r, b = _aligned((returns, "returns"), (benchmark_returns, "benchmark_returns"))
    c = _cash(cash, len(r))
    if len(dates) != len(r) or len(c) != len(r):
        raise ValueError(f"misaligned inputs: dates={len(dates)}, returns={len(r)}, cash={len(c)}")
    years = np.array([d.year for d in dates], dtype=np.int64)
    rows = []
    for y in sorted(set(years.tolist())):
        m = years == y
        ry, by = r[m], b[m]
        ha = hedged_alpha(ry, by, c[m], periods_per_year)
        rows.append({"year": y, "periods": int(m.sum()), "return": float(np.prod(1.0 + ry) - 1.0),
                     "benchmark_return": float(np.prod(1.0 + by) - 1.0), "sharpe": sharpe(ry, periods_per_year),
                     "max_drawdown": max_drawdown(np.concatenate([[1.0], np.cumprod(1.0 + ry)])),
                     "beta": ha.beta if ha else None, "alpha_annual": ha.alpha_annual if ha else None,
                     "information_ratio": ha.information_ratio if ha else None})
    return rows


def newey_west_t(x: npt.ArrayLike, lags: int = 0) -> float | None:
    """t-stat of mean(x) with the Newey-West long-run variance: S = g0 + 2 sum_{l=1..L} (1 - l/(L+1)) g_l, with
    autocovariances g_l = sum (x_t - m)(x_{t-l} - m) / (n-1) so that lags=0 gives mean / (std(ddof=1)/sqrt(n)).
    None with fewer than 2 values or S = 0."""
    v = _vec(x, "x")
    n = len(v)
    if lags < 0:
        raise ValueError(f"lags must be >= 0, got {lags}")
    if n < 2:
        return None
    d = v - v.mean()
    s = float(d @ d) / (n - 1)
    for lag in range(1, min(lags, n - 1) + 1):
        s += 2.0 * (1.0 - lag / (lags + 1)) * float(d[lag:] @ d[:-lag]) / (n - 1)
    return float(v.mean() / math.sqrt(s / n)) if s > 0 else None


def rank_ic_series(predictions: pd.DataFrame, realised: pd.DataFrame, min_symbols: int = 5) -> pd.Series:
    """Per date, Spearman correlation across the symbols with both values (average ranks for ties); dates with
    fewer than `min_symbols` such symbols, or with no variation in either rank, are dropped."""
    p, q = predictions.align(realised, join="inner")
    both = p.notna() & q.notna()
    rp, rq = p.where(both).rank(axis=1), q.where(both).rank(axis=1)
    dp, dq = rp.sub(rp.mean(axis=1), axis=0), rq.sub(rq.mean(axis=1), axis=0)
    den = ((dp ** 2).sum(axis=1) * (dq ** 2).sum(axis=1)).pow(0.5)
    ic = (dp * dq).sum(axis=1) / den.where(den > 0)
    return ic[(both.sum(axis=1) >= min_symbols) & ic.notna()].astype(np.float64)


@dataclass(frozen=True, slots=True)
class RankIC:
    mean: float | None
    std: float | None  # ddof=1
    t_stat: float | None  # mean / (std / sqrt(dates))
    t_stat_nw: float | None  # Newey-West with `lags` (Bartlett weights)
    ir: float | None  # mean / std
    dates: int
    hit: float | None  # share of dates with IC > 0
    lags: int


def rank_ic(predictions: pd.DataFrame, realised: pd.DataFrame, overlap: int = 1, lags: int | None = None,
            min_symbols: int = 5) -> RankIC:
    """Cross-sectional rank IC (see rank_ic_series) over decision dates. `overlap`: the label horizon in rows;
    forward returns over h > 1 rows overlap and autocorrelate, so t_stat_nw uses lags = overlap - 1 unless `lags`
    is given (0 by default: t_stat_nw == t_stat)."""
    if overlap < 1:
        raise ValueError(f"overlap must be >= 1 (the label horizon in periods), got {overlap}")
    nw_lags = overlap - 1 if lags is None else lags
    ic = rank_ic_series(predictions, realised, min_symbols).to_numpy(dtype=np.float64)
    n = len(ic)
    if n < 2:
        return RankIC(float(ic[0]) if n else None, None, None, None, None, n,
                      float(ic[0] > 0) if n else None, nw_lags)
    mean, sd = float(ic.mean()), float(ic.std(ddof=1))
    return RankIC(mean, sd, mean / (sd / math.sqrt(n)) if sd > 0 else None, newey_west_t(ic, nw_lags),
                  mean / sd if sd > 0 else None, n, float((ic > 0).mean()), nw_lags)


def turnover_stats(traded_notional: float, average_equity: float, costs_paid: float, years: float) -> dict[str, Any]:
    """annual_turnover = traded_notional / average_equity / years, with buys AND sells in traded_notional (selling
    the whole book and buying a new one is 2.0; one-sided conventions report half). cost_drag_annual =
    costs_paid / average_equity / years (fees, spread and slippage paid, as a yearly fraction of equity).
    cost_per_traded = costs_paid / traded_notional (None when nothing traded)."""
    if average_equity <= 0 or years <= 0:
        raise ValueError(f"average_equity and years must be > 0, got {average_equity}, {years}")
    return {"annual_turnover": traded_notional / average_equity / years,
            "cost_drag_annual": costs_paid / average_equity / years,
            "cost_per_traded": costs_paid / traded_notional if traded_notional > 0 else None}
