"""Price, volatility and microstructure features of each bar, from the bars alone.

Every feature reads a finite window of at most ``BAR_WINDOW`` bars ending at the row (no recursive
averages), computed the same way whatever the row's position: the features of bar t over bars[:t+1] equal
those over any window of at least BAR_WINDOW bars ending at t, bit for bit. So the live engine computes them
on its last BAR_WINDOW bars and training computes them over whole histories, and both agree.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

BAR_FEATURES: tuple[str, ...] = (
    "ret_1", "ret_3", "ret_5", "ret_10",  # simple returns over 1/3/5/10 bars
    "rvol_20",  # realised volatility: std of log returns over 20 bars
    "gk_vol_20",  # Garman-Klass volatility over 20 bars
    "rsi_14c",  # Cutler's RSI (simple averages of gains and losses over 14 bars)
    "zscore_20c",  # (close - SMA20) / std20
    "dist_sma20",  # close / SMA20 - 1
    "bb_pos_20",  # position inside the 2-sigma Bollinger bands (0 lower .. 1 upper)
    "volume_ratio_20",  # volume / mean volume of the 20 bars before
    "log_dollar_volume_20",  # log of the mean close x volume over 20 bars
    "amihud_20",  # log of the mean |return| / dollar volume over 20 bars (x 1e9)
    "gap",  # open / previous close - 1
    "range",  # (high - low) / close
    "close_to_low",  # (close - low) / (high - low), 0.5 when high == low
    "atr_pct_14",  # mean true range over 14 bars / close
)
BAR_WINDOW = 22
"""Bars a row's features read, at most (the 20-bar volume ratio reads the 20 bars before it and itself, plus
one more close for the first return)."""


def _mean(x: np.ndarray, n: int) -> np.ndarray:
    """Trailing mean over `n` values along the last axis; NaN for the first n-1."""
    out = np.full(x.shape, np.nan)
    if x.shape[-1] >= n:
        out[..., n - 1:] = sliding_window_view(x, n, axis=-1).mean(axis=-1)
    return out


def _std(x: np.ndarray, n: int) -> np.ndarray:
    out = np.full(x.shape, np.nan)
    if x.shape[-1] >= n:
        out[..., n - 1:] = sliding_window_view(x, n, axis=-1).std(axis=-1)
    return out


def _shift(x: np.ndarray, k: int) -> np.ndarray:
    out = np.full(x.shape, np.nan)
    if k < x.shape[-1]:
        out[..., k:] = x[..., : x.shape[-1] - k]
    return out


def bar_features(block: np.ndarray) -> np.ndarray:
    """Features of each bar of a (5, n) block of open, high, low, close, volume rows: (n, len(BAR_FEATURES)).
    A (5, m, n) block (m series of n bars each, e.g. the windows of a scan's setups) gives (m, n, features),
    each series computed as on its own."""
    o, h, lo, c, v = (np.asarray(block[i], dtype=np.float64) for i in range(5))
    n = c.shape[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        prev = _shift(c, 1)
        logret = np.log(c / prev)
        ret = {k: c / _shift(c, k) - 1.0 for k in (1, 3, 5, 10)}
        rvol = _std(np.nan_to_num(logret, nan=0.0), 20)
        rvol[..., :20] = np.nan  # the first return of a series does not exist
        gk_terms = 0.5 * np.log(h / lo) ** 2 - (2 * np.log(2) - 1) * np.log(c / o) ** 2
        gk = np.sqrt(np.maximum(_mean(gk_terms, 20), 0.0))
        change = np.nan_to_num(c - prev, nan=0.0)
        gains, losses = _mean(np.maximum(change, 0.0), 14), _mean(np.maximum(-change, 0.0), 14)
        rsi = np.where(gains + losses > 0, 100.0 * gains / (gains + losses), 50.0)
        rsi[..., :14] = np.nan
        sma, sd = _mean(c, 20), _std(c, 20)
        z = np.where(sd > 0, (c - sma) / sd, np.nan)
        bb = np.where(sd > 0, (c - (sma - 2 * sd)) / (4 * sd), np.nan)
        vol_prior = _shift(_mean(v, 20), 1)
        vol_ratio = np.where(vol_prior > 0, v / vol_prior, np.nan)
        dollar = c * v
        dollar_mean = _mean(dollar, 20)
        log_dollar = np.where(dollar_mean > 0, np.log(dollar_mean), np.nan)
        illiquid = np.where(dollar > 0, np.abs(np.nan_to_num(ret[1], nan=0.0)) / dollar, np.nan) * 1e9
        amihud = np.log1p(_mean(illiquid, 20))
        amihud[..., :20] = np.nan
        gap = o / prev - 1.0
        rng = (h - lo) / c
        ctl = np.where(h > lo, (c - lo) / (h - lo), 0.5)
        tr = np.maximum(h - lo, np.maximum(np.abs(h - prev), np.abs(lo - prev)))
        if n:
            tr[..., 0] = h[..., 0] - lo[..., 0]
        atr = _mean(tr, 14) / c
        atr[..., :14] = np.nan  # the first true range lacks a previous close
    if n == 0:
        return np.empty((*c.shape, len(BAR_FEATURES)))
    out = np.stack([ret[1], ret[3], ret[5], ret[10], rvol, gk, rsi, z, c / sma - 1.0, bb,
                    vol_ratio, log_dollar, amihud, gap, rng, ctl, atr], axis=-1)
    out[~np.isfinite(out)] = np.nan
    return out


def last_bar_features(windows: np.ndarray) -> np.ndarray:
    """(m, len(BAR_FEATURES)): the features of the last bar of each of m windows, a (5, m, k) block with
    k >= BAR_WINDOW (only the last BAR_WINDOW bars are read)."""
    return bar_features(windows[:, :, -BAR_WINDOW:])[:, -1, :]
