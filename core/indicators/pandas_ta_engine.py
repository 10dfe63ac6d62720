"""Indicators through pandas-ta (its TA-Lib backend is used when TA-Lib is installed).
The only module that imports pandas_ta."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from core.indicators.base import CORE_COLUMNS, derived_columns

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import pandas_ta as ta


class PandasTaEngine:
    name = "pandas-ta"

    def compute(self, bars: pd.DataFrame) -> pd.DataFrame:
        high, low, close = bars["high"], bars["low"], bars["close"]
        out = pd.DataFrame(index=bars.index)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out["rsi_14"] = ta.rsi(close, length=14)
            out["rsi_2"] = ta.rsi(close, length=2)
            out["sma_5"] = ta.sma(close, length=5)
            out["sma_20"] = ta.sma(close, length=20)
            out["sma_50"] = ta.sma(close, length=50)
            out["sma_200"] = ta.sma(close, length=200)
            out["ema_50"] = ta.ema(close, length=50)
            out["ema_200"] = ta.ema(close, length=200)
            bb = ta.bbands(close, length=20, std=2.0)  # type: ignore[arg-type]  # the stub says dict
            out["atr_14"] = ta.atr(high, low, close, length=14)
            macd = ta.macd(close, fast=12, slow=26, signal=9)
            adx = ta.adx(high, low, close, length=14)
            stoch = ta.stoch(high, low, close, k=14, d=3, smooth_k=3)
        out["bb_lower"], out["bb_mid"], out["bb_upper"] = _col(bb, "BBL_"), _col(bb, "BBM_"), _col(bb, "BBU_")
        out["bb_pctb"] = _col(bb, "BBP_")
        out["macd"], out["macd_hist"], out["macd_signal"] = _col(macd, "MACD_"), _col(macd, "MACDh_"), _col(macd, "MACDs_")
        out["adx_14"] = _col(adx, "ADX_")
        out["stoch_k"], out["stoch_d"] = _col(stoch, "STOCHk_"), _col(stoch, "STOCHd_")
        derived_columns(bars, out)
        return out[list(CORE_COLUMNS)].astype("float64")

    def last_rows(self, bars: pd.DataFrame, n: int = 1) -> tuple[list[str], np.ndarray]:
        tail = self.compute(bars).iloc[len(bars) - n:]
        return [str(c) for c in tail.columns], tail.to_numpy(np.float64)


def _col(frame: pd.DataFrame | None, prefix: str) -> pd.Series:
    """The column of a pandas-ta result whose name starts with `prefix` (NaN when too few bars)."""
    if frame is None:
        return pd.Series(float("nan"), dtype="float64")
    for name in frame.columns:
        if str(name).startswith(prefix):
            return frame[name]
    raise KeyError(f"pandas-ta result has no column starting with {prefix!r}: {list(frame.columns)}")
