"""`signalbot train`: trains the reversion-probability models on CSV data and writes new versions under
models_store/ (one per scope: asset class and timeframe), each with its manifest; see core.models.driver and
core.models.retrain for the procedure (purged walk-forward cross-validation, calibration, champion / challenger
roles)."""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bot.cli.options import (MODELS_STORE, StderrProgress, add_costs_argument, add_data_argument,
                             add_features_argument, add_news_arguments, news_dir_option, stderr_line)
from core.risk import SERVICE_COSTS_BPS

if TYPE_CHECKING:
    from bot.settings import Settings
    from core.domain import Timeframe
    from core.indicators import IndicatorEngine
    from core.models.lgbm import TreeParams

NAME = "train"
HELP = "train the LightGBM models; writes new versions with manifests under models_store/"
DESCRIPTION = __doc__
TOOL_LOGGING = True  # warnings only, short lines, beside the progress line
LABEL_COSTS_BPS = 10.0

Say = Callable[[float, str], None]


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_argument(p)
    p.add_argument("--models-dir", type=Path, default=Path("models_store"), help="where versions go (default models_store)")
    p.add_argument("--end", help="last day of data to use, YYYY-MM-DD (default: all)")
    add_costs_argument(p, LABEL_COSTS_BPS, f"the evaluation's, stricter than the service's {SERVICE_COSTS_BPS:g}, "
                       "as the backtest that scores the models", " in the labels")
    p.add_argument("--timeframes", help="comma-separated timeframes (default: the service's per asset class)")
    add_features_argument(p)
    add_news_arguments(p, "the news features of a feature set that reads them (fs-3) read the stored verdicts of "
                          "DIR (default: the data's news folder), analysed once by the local model; no LLM is asked")


def run(args: argparse.Namespace, settings: Settings) -> int:
    began = time.perf_counter()
    folder = asyncio.run(run_train(args.data, args.models_dir, end=args.end, costs_bps=args.costs_bps,
                                   timeframes=args.timeframes.split(",") if args.timeframes else None,
                                   feature_set=args.features, news=news_dir_option(args.news, args.data),
                                   news_db=args.news_db))
    print(f"trained in {time.perf_counter() - began:.1f} s", file=sys.stderr)
    print(folder)
    return 0


async def run_train_all(data: Path, models_dir: Path, *, end: str | None = None, costs_bps: float = LABEL_COSTS_BPS,
                        timeframes: Sequence[Timeframe | str] | None = None, indicators: IndicatorEngine | None = None,
                        params: TreeParams | None = None, folds: int | None = None, progress: Say | None = None,
                        say_line: Callable[[str], None] | None = None,
                        feature_set: str | None = None, news: Path | None = None,
                        news_db: Path | None = None) -> dict[str, Path]:
    """core.models.driver.train_versions with progress on standard error by default and the news verdicts of the
    folder `news` replayed from the verdict file `news_db` (storage.news_cache, as the backtest);
    {scope: version folder}. `params`, `folds`, `feature_set` default to core's (TreeParams(), CV_FOLDS,
    DEFAULT_MODEL_FEATURE_SET)."""
    from core.features.sets import DEFAULT_MODEL_FEATURE_SET
    from core.models.driver import train_versions
    from core.models.lgbm import TreeParams
    from core.models.retrain import CV_FOLDS
    from storage.news_cache import news_loader

    loader = news_loader(news, news_db, MODELS_STORE) if news is not None else None
    return await train_versions(data, models_dir, end=end, costs_bps=costs_bps, timeframes=timeframes,
                                indicators=indicators, params=params or TreeParams(),
                                folds=CV_FOLDS if folds is None else folds,
                                progress=progress or StderrProgress("train"), say_line=say_line or stderr_line,
                                feature_set=feature_set or DEFAULT_MODEL_FEATURE_SET, news=loader)


async def run_train(data: Path, models_dir: Path, *, end: str | None = None, costs_bps: float = LABEL_COSTS_BPS,
                    timeframes: Sequence[Timeframe | str] | None = None, indicators: IndicatorEngine | None = None,
                    params: TreeParams | None = None, folds: int | None = None, progress: Say | None = None,
                    say_line: Callable[[str], None] | None = None,
                    feature_set: str | None = None, news: Path | None = None,
                    news_db: Path | None = None) -> Path:
    """Train and save new versions (`run_train_all`); returns the folder of the version with the most training
    rows (the only one when the data holds one scope)."""
    from core.models.driver import largest_version

    folders = await run_train_all(data, models_dir, end=end, costs_bps=costs_bps, timeframes=timeframes,
                                  indicators=indicators, params=params, folds=folds, progress=progress,
                                  say_line=say_line, feature_set=feature_set, news=news, news_db=news_db)
    return largest_version(folders)
