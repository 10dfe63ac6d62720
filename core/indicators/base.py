"""What every indicator engine provides: the core columns, the engine protocol and the pandas-only derived
columns."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import pandas as pd

# Columns every engine provides (the signal path reads only these names).
CORE_COLUMNS = (
    "rsi_14", "rsi_2", "sma_5", "sma_20", "sma_50", "sma_200", "ema_50", "ema_200", "bb_lower", "bb_mid", "bb_upper",
    "bb_pctb",
    "atr_14", "macd", "macd_signal", "macd_hist", "adx_14", "stoch_k", "stoch_d",
    "zscore_20", "dist_sma20_atr", "volume_pct_50", "gap", "ret_1", "ret_5",
)


class IndicatorEngine(Protocol):
    name: str

    def compute(self, bars: pd.DataFrame) -> pd.DataFrame:
        """Indicator columns (CORE_COLUMNS at least) aligned on `bars`' index. Row t uses bars <= t only."""
        ...

    def last_rows(self, bars: pd.DataFrame, n: int = 1) -> tuple[Sequence[str], np.ndarray]:
        """The last `n` rows of `compute(bars)` as (column names, an (n, columns) float array), oldest first:
        what the signal engine reads. An engine may skip work for the earlier rows, and need not build a frame."""
        ...


def derived_columns(bars: pd.DataFrame, out: pd.DataFrame) -> None:
    """Columns computed with pandas alone, from bars and the engine's base columns (in place)."""
    close = bars["close"]
    std20 = close.rolling(20).std(ddof=0)
    out["zscore_20"] = (close - out["sma_20"]) / std20.where(std20 > 0)
    out["dist_sma20_atr"] = (close - out["sma_20"]) / out["atr_14"].where(out["atr_14"] > 0)
    out["volume_pct_50"] = bars["volume"].rolling(50, min_periods=20).rank(pct=True)
    out["gap"] = bars["open"] / close.shift(1) - 1.0
    out["ret_1"] = close.pct_change(1, fill_method=None)
    out["ret_5"] = close.pct_change(5, fill_method=None)
