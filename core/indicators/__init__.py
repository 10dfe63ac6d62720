"""Technical indicators. The engine computes a fixed, named set of columns over a bar frame."""
from __future__ import annotations

from core.indicators.base import CORE_COLUMNS, IndicatorEngine, derived_columns

__all__ = ["CORE_COLUMNS", "IndicatorEngine", "default_engine", "derived_columns"]


def default_engine() -> IndicatorEngine:
    """The engine the live path, scans and backtests use: TA-Lib (equal to pandas-ta's definitions to 1e-9 on
    the core columns, see tests/test_indicators.py, and about 40x faster per symbol)."""
    from core.indicators.talib_engine import TalibEngine

    return TalibEngine()
