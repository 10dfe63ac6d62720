"""Training from CSV data: a new version of the reversion-probability models per scope (asset class and
timeframe) found in the data, each with its manifest under a models folder; see core.models.retrain for the
procedure (purged walk-forward cross-validation, calibration, champion / challenger roles). `signalbot train`
(bot/cli/train.py) drives it; the stored news verdicts come in as a `NewsLoader` (storage.news_cache)."""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from core.backtest.inputs import context_market, scan_timeframes
from core.dates import EPOCH, FAR, When, parse_end
from core.domain import Timeframe
from core.features.news import NewsFeatureSource
from core.features.sets import DEFAULT_MODEL_FEATURE_SET, reads_news
from core.indicators import IndicatorEngine, default_engine
from core.market_data import CsvMarketData
from core.models.lgbm import TreeParams
from core.models.retrain import CV_FOLDS, train_new_versions
from core.models.store import read_manifest
from core.news.replay import NewsLoader
from core.signals.service import DEFAULT_TIMEFRAMES

TRAINING_DATA = ("../shared/data CSV bars (equities: Kaggle S&P 500 daily via IEX, MIT; crypto: Binance public "
                 "candles, no licence stated; FX: EURUSD 1h from the backtesting package, AGPL-3.0 package, market "
                 "data; benchmarks: SPX from the arch package, VIX from CBOE via finance-vix, ODC-PDDL)")

Say = Callable[[float, str], None]

log = logging.getLogger(__name__)


async def train_versions(data: Path, models_dir: Path, *, end: When = None, costs_bps: float = 10.0,
                         timeframes: Sequence[Timeframe | str] | None = None,
                         indicators: IndicatorEngine | None = None, params: TreeParams = TreeParams(),
                         folds: int = CV_FOLDS, progress: Say | None = None,
                         say_line: Callable[[str], None] | None = None,
                         feature_set: str = DEFAULT_MODEL_FEATURE_SET,
                         news: NewsLoader | None = None) -> dict[str, Path]:
    """Train a new version per scope found in `data` (a CSV file or a directory like ../shared/data), with bars
    up to `end` (default: all); returns {scope: version folder}. `news`: the stored verdicts the news features
    read (asked for only by a feature set with news features)."""
    market = CsvMarketData(data)
    tfs = scan_timeframes(timeframes) if timeframes else dict(DEFAULT_TIMEFRAMES)
    targets = [(i, tf) for i in market.instruments() for tf in tfs.get(i.asset_class, ())
               if tf in set(market.timeframes(i.symbol))]
    if not targets:
        raise ValueError(f"no tradable series in {data}")
    last = parse_end(end)  # None: every bar, up to the last one of any series
    source: NewsFeatureSource | None = None
    if news is not None and reads_news(feature_set):
        symbols = sorted({i.symbol for i, _ in targets})
        source, _info = await news(symbols, EPOCH, last or FAR)
    out = await train_new_versions(market, targets, models_dir, last, indicators or default_engine(),
                                   costs_bps=costs_bps, context_market=context_market(data), params=params,
                                   folds=folds, training_data=TRAINING_DATA, progress=progress or _quiet,
                                   say_line=say_line or log.info, feature_set=feature_set, news=source)
    if not out:
        raise ValueError(f"not enough training rows in {data}")
    return out


def _quiet(fraction: float, stage: str) -> None:
    pass


def largest_version(folders: Mapping[str, Path]) -> Path:
    """The version folder with the most training rows (the only one when the data holds one scope)."""
    return max(folders.values(), key=lambda f: read_manifest(f)["metrics"]["rows"])
