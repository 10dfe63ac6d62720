"""Cross-sectional features of the equity ranking book: for every day and stock, from closes up to that day.

The choice follows the literature on US equities, not a search on the shared data: 12-1 momentum of the
residual returns (Blitz, Huij and Martens 2011: the stock's return less its beta times the market's, which
crashes less than the raw momentum it replaces; `features(residual_momentum=False)` gives raw 12-1 back), 6-1
momentum (Jegadeesh and Titman 1993), short-term reversal (Jegadeesh 1990; here sector-neutral, Da, Liu and Schaumburg
2014), volatility and idiosyncratic volatility (Ang, Hodrick, Xing and Zhang 2006), beta (Frazzini and Pedersen
2014), nearness to the 52-week high (George and Hwang 2004), the largest daily return of the month (Bali, Cakici
and Whitelaw 2011), abnormal volume and size (dollar volume), industry momentum (Moskowitz and Grinblatt 1999)
and the distance from the 200-day average. Every feature reads a finite window of past days (at most
`HISTORY` of them), so a day's value is the same over any history that holds the window. Each day's values are
ranked across the stocks that have them, to -0.5..0.5 (qlib's CSRankNorm): the model learns the order, not the
level, which moves with the market.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from core.books.panel import Panel

FEATURES: tuple[str, ...] = (
    "res_mom_12_1", "mom_6_1", "mom_3", "rev_5_sector", "rev_21_sector", "vol_63", "vol_ratio_21_63", "beta_252",
    "idio_vol_63", "high_52w", "max_ret_21", "abnormal_volume", "dollar_volume", "sector_mom_12_1", "dist_sma200",
)
HISTORY = 253  # days a feature reads, at most (the 252-day windows and the return into their first day)
MIN_STOCKS = 30  # a day with fewer stocks is not ranked
RAW_MOMENTUM = "mom_12_1"  # raw 12-1 momentum: always computed (the signals' reasoning quotes it)


def features(residual_momentum: bool = True) -> tuple[str, ...]:
    """The model's features: FEATURES, or with raw 12-1 momentum in place of the residual one (variants 1-5)."""
    return FEATURES if residual_momentum else tuple(RAW_MOMENTUM if f == "res_mom_12_1" else f for f in FEATURES)


def market_returns(close: np.ndarray) -> np.ndarray:
    """The equal-weight universe's daily return: the mean of the stocks' returns that day (NaN-aware)."""
    r = close[1:] / close[:-1] - 1.0
    with np.errstate(invalid="ignore"):
        m = np.nanmean(np.where(np.isfinite(r), r, np.nan), axis=1) if r.size else np.empty(0)
    return np.concatenate([[np.nan], m])


def raw_features(panel: Panel, sectors: Sequence[str]) -> dict[str, np.ndarray]:
    """Each feature as a (days x stocks) array, before ranking (NaN where the window is not full)."""
    c = pd.DataFrame(panel.close)
    r = c / c.shift(1) - 1.0
    m = pd.Series(market_returns(panel.close))
    dv = pd.DataFrame(panel.close * panel.volume)
    out: dict[str, pd.DataFrame] = {
        "mom_12_1": c.shift(21) / c.shift(252) - 1.0,
        "mom_6_1": c.shift(21) / c.shift(126) - 1.0,
        "mom_3": c / c.shift(63) - 1.0,
        "rev_5_sector": _sector_neutral(c / c.shift(5) - 1.0, sectors),
        "rev_21_sector": _sector_neutral(c / c.shift(21) - 1.0, sectors),
        "vol_63": r.rolling(63, min_periods=60).std(),
        "high_52w": c / c.rolling(252, min_periods=240).max() - 1.0,
        "max_ret_21": r.rolling(21, min_periods=20).max(),
        "abnormal_volume": _log(dv.rolling(21, min_periods=20).mean() / dv.rolling(252, min_periods=240).mean()),
        "dollar_volume": _log(dv.rolling(63, min_periods=60).mean()),
        "dist_sma200": c / c.rolling(200, min_periods=200).mean() - 1.0,
    }
    out["vol_ratio_21_63"] = r.rolling(21, min_periods=20).std() / out["vol_63"]
    beta, idio = _beta_and_idio(r, m)
    out["beta_252"], out["idio_vol_63"] = beta, idio
    out["res_mom_12_1"] = _residual_momentum(r, m, beta)
    out["sector_mom_12_1"] = _sector_mean(out["mom_12_1"], sectors)
    return {k: out[k].to_numpy(dtype=np.float64) for k in (*FEATURES, RAW_MOMENTUM)}


def ranked(values: np.ndarray) -> np.ndarray:
    """Each row ranked across its finite values to -0.5..0.5 (ties share their mean rank); rows with fewer
    than MIN_STOCKS values are all NaN."""
    frame = pd.DataFrame(values)
    counts = frame.notna().sum(axis=1).to_numpy()
    out = frame.rank(axis=1, pct=True).to_numpy() - 0.5
    out[counts < MIN_STOCKS] = np.nan
    return out


def feature_cube(raw: dict[str, np.ndarray], names: Sequence[str] = FEATURES) -> np.ndarray:
    """(days, stocks, features): each of `names` from `raw_features`, ranked across the stocks of each day."""
    return np.stack([ranked(raw[k]) for k in names], axis=2)


def _log(x: pd.DataFrame) -> pd.DataFrame:
    with np.errstate(divide="ignore", invalid="ignore"):
        return pd.DataFrame(np.log(x.to_numpy(dtype=np.float64)), index=x.index, columns=x.columns)


def _beta_and_idio(r: pd.DataFrame, m: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    rm = r.mul(m, axis=0)
    mean_r, mean_m = r.rolling(252, min_periods=240).mean(), m.rolling(252, min_periods=240).mean()
    cov = rm.rolling(252, min_periods=240).mean() - mean_r.mul(mean_m, axis=0)
    var = m.rolling(252, min_periods=240).var(ddof=0)
    beta = cov.div(var, axis=0)
    resid = r - beta.mul(m, axis=0)
    return beta, resid.rolling(63, min_periods=60).std()


def _residual_momentum(r: pd.DataFrame, m: pd.Series, beta: pd.DataFrame) -> pd.DataFrame:
    """12-1 momentum of the residual returns r - beta x m over days t-251..t-21 (beta: the 252-day estimate
    known at t), as their mean over their standard deviation: the residual return's t-statistic up to the
    window's length, which is the same for every stock with a full window (Blitz, Huij and Martens 2011, with
    the equal-weight market as the one factor)."""
    w, least = 231, 220
    rs, ms = r.shift(21), m.shift(21)
    mean_r, mean_m = rs.rolling(w, min_periods=least).mean(), ms.rolling(w, min_periods=least).mean()
    var_r, var_m = rs.rolling(w, min_periods=least).var(ddof=0), ms.rolling(w, min_periods=least).var(ddof=0)
    cov = rs.mul(ms, axis=0).rolling(w, min_periods=least).mean() - mean_r.mul(mean_m, axis=0)
    mean_res = mean_r - beta.mul(mean_m, axis=0)
    var_res = var_r - 2.0 * beta * cov + beta.pow(2).mul(var_m, axis=0)
    return mean_res / var_res.where(var_res > 1e-12).pow(0.5)


def _groups(sectors: Sequence[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for j, s in enumerate(sectors):
        groups.setdefault(s or "?", []).append(j)
    return groups


def _sector_neutral(x: pd.DataFrame, sectors: Sequence[str]) -> pd.DataFrame:
    """Each stock's value less its sector's median that day."""
    out = x.copy()
    for cols in _groups(sectors).values():
        out.iloc[:, cols] = x.iloc[:, cols].sub(x.iloc[:, cols].median(axis=1), axis=0)
    return out


def _sector_mean(x: pd.DataFrame, sectors: Sequence[str]) -> pd.DataFrame:
    """Each stock gets its sector's mean that day (the sector's own momentum)."""
    out = x.copy()
    for cols in _groups(sectors).values():
        mean = x.iloc[:, cols].mean(axis=1)
        for j in cols:
            out.iloc[:, j] = mean
    return out
