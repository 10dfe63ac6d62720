"""Technical indicators. The engine computes a fixed, named set of columns over a bar frame."""
from __future__ import annotations

from typing import Protocol

import pandas as pd

# Columns every engine provides (the signal path reads only these names).
CORE_COLUMNS = (
    "rsi_14", "sma_20", "sma_50", "ema_50", "ema_200", "bb_lower", "bb_mid", "bb_upper", "bb_pctb",
    "atr_14", "macd", "macd_signal", "macd_hist", "adx_14", "stoch_k", "stoch_d",
    "zscore_20", "dist_sma20_atr", "volume_pct_50", "gap", "ret_1", "ret_5",
)


class IndicatorEngine(Protocol):
    name: str

    def compute(self, bars: pd.DataFrame) -> pd.DataFrame:
        """Indicator columns (CORE_COLUMNS at least) aligned on `bars`' index. Row t uses bars <= t only."""
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
