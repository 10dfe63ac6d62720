"""Cross-sectional features of the equity ranking book: for every day and stock, from closes up to that day.

The choice follows the literature on US equities, not a search on the shared data: 12-1 and 6-1 momentum
(Jegadeesh and Titman 1993), short-term reversal (Jegadeesh 1990; here sector-neutral, Da, Liu and Schaumburg
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
    "mom_12_1", "mom_6_1", "mom_3", "rev_5_sector", "rev_21_sector", "vol_63", "vol_ratio_21_63", "beta_252",
    "idio_vol_63", "high_52w", "max_ret_21", "abnormal_volume", "dollar_volume", "sector_mom_12_1", "dist_sma200",
)
HISTORY = 253  # days a feature reads, at most (the 252-day windows and the return into their first day)
MIN_STOCKS = 30  # a day with fewer stocks is not ranked


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
    out["sector_mom_12_1"] = _sector_mean(out["mom_12_1"], sectors)
    return {k: out[k].to_numpy(dtype=np.float64) for k in FEATURES}


def ranked(values: np.ndarray) -> np.ndarray:
    """Each row ranked across its finite values to -0.5..0.5 (ties share their mean rank); rows with fewer
    than MIN_STOCKS values are all NaN."""
    frame = pd.DataFrame(values)
    counts = frame.notna().sum(axis=1).to_numpy()
    out = frame.rank(axis=1, pct=True).to_numpy() - 0.5
    out[counts < MIN_STOCKS] = np.nan
    return out


def feature_cube(raw: dict[str, np.ndarray]) -> np.ndarray:
    """(days, stocks, features): every feature of `raw_features` ranked across the stocks of each day."""
    return np.stack([ranked(raw[k]) for k in FEATURES], axis=2)


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
