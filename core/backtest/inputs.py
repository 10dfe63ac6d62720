"""What a run over CSV files (a backtest, a training) reads beside its bars: the timeframes it scans and the market
context (SPX, VIX) of the regime features."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from core.domain import AssetClass, Timeframe
from core.market_data import CsvMarketData
from core.ports import MarketData
from core.signals.service import DEFAULT_TIMEFRAMES

MODES = ("rules", "walk-forward")  # a backtest's: the rule engine alone, or walk-forward models voting beside it


def scan_timeframes(wanted: Sequence[Timeframe | str] | None) -> dict[AssetClass, tuple[Timeframe, ...]]:
    """The service's timeframes per asset class, kept to `wanted` when given."""
    if not wanted:
        return dict(DEFAULT_TIMEFRAMES)
    keep = {Timeframe.parse(str(t)) for t in wanted}
    return {cls: tuple(tf for tf in tfs if tf in keep) for cls, tfs in DEFAULT_TIMEFRAMES.items()}


def context_market(data: Path) -> MarketData | None:
    """SPX and VIX for the regime features: the data itself when it holds them, else a `benchmarks` folder in or
    beside it."""
    root = data if data.is_dir() else data.parent
    for folder in (root / "benchmarks", root.parent / "benchmarks"):
        if folder.is_dir():
            return CsvMarketData(folder)
    return None
