"""`signalbot train`: trains the reversion-probability models on CSV data and writes new versions under
models_store/ (one per scope: asset class and timeframe), each with its manifest; see core.models.retrain for
the procedure (purged walk-forward cross-validation, calibration, champion / challenger roles)."""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from core.domain import Timeframe
from core.errors import SignalBotError
from core.indicators import IndicatorEngine, default_engine
from core.market_data import CsvMarketData
from core.models.lgbm import TreeParams
from core.models.retrain import CV_FOLDS, train_new_versions
from core.models.store import read_manifest
from core.signals.service import DEFAULT_TIMEFRAMES
from core.features.sets import DEFAULT_MODEL_FEATURE_SET
from core.features.sets import reads_news
from scripts.backtest import (EPOCH, FAR, REPO, StderrProgress, _context_market, _timeframes, add_features_argument,
                              add_news_arguments, news_dir_option, parse_end)

TRAINING_DATA = ("../shared/data CSV bars (equities: Kaggle S&P 500 daily via IEX, MIT; crypto: Binance public "
                 "candles, no licence stated; FX: EURUSD 1h from the backtesting package, AGPL-3.0 package, market "
                 "data; benchmarks: SPX from the arch package, VIX from CBOE via finance-vix, ODC-PDDL)")

Say = Callable[[float, str], None]


async def run_train_all(data: Path, models_dir: Path, *, end: str | None = None, costs_bps: float = 10.0,
                        timeframes: Sequence[Timeframe | str] | None = None, indicators: IndicatorEngine | None = None,
                        params: TreeParams = TreeParams(), folds: int = CV_FOLDS, progress: Say | None = None,
                        say_line: Callable[[str], None] | None = None,
                        feature_set: str = DEFAULT_MODEL_FEATURE_SET, news: Path | None = None,
                        news_db: Path | None = None) -> dict[str, Path]:
    """Train a new version per scope found in `data` (a CSV file or a directory like ../shared/data), with bars
    up to `end` (default: all); returns {scope: version folder}. `news`: a news folder whose stored verdicts the
    news features read (needed by a feature set with news features; scripts.news_cache, as the backtest)."""
    market = CsvMarketData(data)
    tfs = _timeframes(timeframes) if timeframes else dict(DEFAULT_TIMEFRAMES)
    targets = [(i, tf) for i in market.instruments() for tf in tfs.get(i.asset_class, ())
               if tf in set(market.timeframes(i.symbol))]
    if not targets:
        raise ValueError(f"no tradable series in {data}")
    last = parse_end(end)  # None: every bar, up to the last one of any series
    line = say_line or (lambda text: print(f"\n{text}", file=sys.stderr, flush=True))
    source = None
    if news is not None and reads_news(feature_set):
        from scripts.news_cache import default_news_db, news_index

        symbols = sorted({i.symbol for i, _ in targets})
        source, _info = await news_index(news_db or default_news_db(), news, symbols, EPOCH, last or FAR,
                                         REPO / "models_store")
    out = await train_new_versions(market, targets, models_dir, last, indicators or default_engine(),
                                   costs_bps=costs_bps, context_market=_context_market(data), params=params,
                                   folds=folds, training_data=TRAINING_DATA,
                                   progress=progress or StderrProgress("train"), say_line=line,
                                   feature_set=feature_set, news=source)
    if not out:
        raise ValueError(f"not enough training rows in {data}")
    return out


async def run_train(data: Path, models_dir: Path, *, end: str | None = None, costs_bps: float = 10.0,
                    timeframes: Sequence[Timeframe | str] | None = None, indicators: IndicatorEngine | None = None,
                    params: TreeParams = TreeParams(), folds: int = CV_FOLDS, progress: Say | None = None,
                    say_line: Callable[[str], None] | None = None,
                    feature_set: str = DEFAULT_MODEL_FEATURE_SET, news: Path | None = None,
                    news_db: Path | None = None) -> Path:
    """Train and save new versions (`run_train_all`); returns the folder of the version with the most training
    rows (the only one when the data holds one scope)."""
    folders = await run_train_all(data, models_dir, end=end, costs_bps=costs_bps, timeframes=timeframes,
                                  indicators=indicators, params=params, folds=folds, progress=progress,
                                  say_line=say_line, feature_set=feature_set, news=news, news_db=news_db)
    return max(folders.values(), key=lambda f: read_manifest(f)["metrics"]["rows"])



def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="signalbot train", description=__doc__)
    p.add_argument("--data", type=Path, required=True, help="a CSV file or a directory laid out like ../shared/data")
    p.add_argument("--models-dir", type=Path, default=Path("models_store"), help="where versions go (default models_store)")
    p.add_argument("--end", help="last day of data to use, YYYY-MM-DD (default: all)")
    p.add_argument("--costs-bps", type=float, default=10.0, help="costs per side in the labels (default 10)")
    p.add_argument("--timeframes", help="comma-separated timeframes (default: the service's per asset class)")
    add_features_argument(p)
    add_news_arguments(p, "the news features of a feature set that reads them (fs-3) read the stored verdicts of "
                          "DIR (default: the data's news folder), analysed once by the local model; no LLM is asked")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    began = time.perf_counter()
    try:
        folder = asyncio.run(run_train(args.data, args.models_dir, end=args.end, costs_bps=args.costs_bps,
                                       timeframes=args.timeframes.split(",") if args.timeframes else None,
                                       feature_set=args.features, news=news_dir_option(args.news, args.data),
                                       news_db=args.news_db))
    except (ValueError, OSError, SignalBotError) as exc:
        print(f"signalbot train: {exc}", file=sys.stderr)
        return 2
    print(f"trained in {time.perf_counter() - began:.1f} s", file=sys.stderr)
    print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
