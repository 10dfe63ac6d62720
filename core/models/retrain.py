"""Training new model versions from a market: the work behind `signalbot train` and the service's scheduled
retraining. Per scope: the training rows, purged and embargoed walk-forward cross-validation (the manifest's
cv_* metrics), the model for decisions after `end`, a new version folder, and the champion / challenger roles:
the first version of a name becomes the champion; later versions are challengers that run in shadow, and a
challenger replaces the champion only when it beats it on the same recent window (rows decided after both were
trained; core.models.promotion), checked at every training run. The CPU-bound part runs in a worker thread."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from core.domain import Instrument, Timeframe
from core.features.dataset import Dataset
from core.features.news import NewsFeatureSource
from core.features.sets import DEFAULT_MODEL_FEATURE_SET, require_news
from core.indicators import IndicatorEngine
from core.market_data.resample import to_utc_ns
from core.models.lgbm import TreeParams
from core.models.promotion import decide_promotion, recent_window
from core.models.reversion import MIN_RECORD_ROWS, MIN_ROWS, evaluate, is_record, train_model, train_reversion
from core.models.store import champion, computable, load_model, read_manifest, save_model, set_role, versions
from core.setups import FAMILIES
from core.models.training import (
    build_datasets,
    context_from,
    embargo_ns,
    load_series,
    scope_timeframe,
    sector_context_from,
)
from core.models.validation import slope_lower_bound, walk_forward_folds
from core.ports import MarketData

log = logging.getLogger(__name__)

CV_FOLDS = 4
FAR = datetime(2200, 1, 1, tzinfo=UTC)
Say = Callable[[float, str], None]
Line = Callable[[str], None]


def _quiet(_fraction: float, _stage: str) -> None:
    return None


def model_name(scope: str) -> str:
    """The store's name of a scope's versions: "reversion-equity-1d" for the oversold setups' models (the name
    they have always had), the scope itself for another family's ("pullback-equity-1d")."""
    return scope if scope.split("-", 1)[0] in FAMILIES else f"reversion-{scope}"


def cross_validate(data: Dataset, params: TreeParams, folds: int = CV_FOLDS,
                   feature_set: str = DEFAULT_MODEL_FEATURE_SET) -> dict[str, float]:
    """Mean metrics of purged, embargoed walk-forward folds (each model scored on the block after its training)."""
    embargo = embargo_ns(scope_timeframe(data.scope))
    scores: list[dict[str, float]] = []
    for train, test in walk_forward_folds(data.decision_ns, data.end_ns, folds, embargo, min_train=MIN_ROWS):
        first_test = int(data.decision_ns[test].min())
        try:
            model = train_reversion(data.subset(train), first_test, embargo, params, with_regressor=False,
                                    feature_set=feature_set)
        except ValueError:
            continue
        scores.append(evaluate(model, data.subset(test)))
    if not scores:
        return {"cv_folds": 0.0}
    keys = [k for k in scores[0] if k != "rows"]
    out = {f"cv_{k}": float(np.nanmean([s[k] for s in scores])) for k in keys}
    out["cv_slope_low"] = slope_lower_bound([s["slope"] for s in scores], [s["slope_low"] for s in scores])
    out["cv_folds"] = float(len(scores))
    out["cv_rows"] = float(sum(s["rows"] for s in scores))
    return out


def assign_roles(models_dir: Path, name: str, new: Path, data: Dataset, say_line: Line) -> None:
    """First version: champion. Otherwise every shadowing challenger (the new one included) is judged against
    the champion on the rows neither had seen."""
    current = champion(models_dir, name)
    if current is None:
        set_role(new, "champion")
        say_line(f"{name}: {new.name} is the first champion")
        return
    if not computable(read_manifest(current)):  # this code cannot compute its features
        set_role(current, "retired")
        set_role(new, "champion")
        say_line(f"{name}: {new.name} replaces {current.name} (feature set "
                 f"{read_manifest(current).get('feature_set')!r} is outdated)")
        return
    champ = load_model(current)
    for folder, manifest in versions(models_dir, name):
        if manifest.get("role") != "challenger":
            continue
        if not computable(manifest):
            set_role(folder, "retired")
            continue
        challenger = load_model(folder)
        decision = decide_promotion(champ, challenger, recent_window(data, champ, challenger))
        if decision.promote:
            set_role(current, "retired")
            set_role(folder, "champion")
            say_line(f"{name}: {folder.name} replaces {current.name} ({decision.reason})")
            current, champ = folder, challenger
        elif folder == new:
            say_line(f"{name}: {folder.name} shadows the champion {current.name} ({decision.reason})")


def fit_versions(datasets: dict[str, Dataset], models_dir: Path, end: datetime, params: TreeParams, folds: int,
                 training_data: str, progress: Say = _quiet, say_line: Line = log.info,
                 feature_set: str = DEFAULT_MODEL_FEATURE_SET) -> dict[str, Path]:
    """The CPU-bound part: cross-validate, fit and save a version per scope with enough rows (a record where there
    are too few for trees, core.models.reversion.train_model); assign roles."""
    out: dict[str, Path] = {}
    scopes = [s for s in sorted(datasets) if len(datasets[s]) >= MIN_RECORD_ROWS]
    for k, scope in enumerate(scopes):
        ds = datasets[scope]
        embargo = embargo_ns(scope_timeframe(scope))
        progress(k / max(1, len(scopes)), f"cv {scope}")
        metrics = cross_validate(ds, params, folds, feature_set) if len(ds) >= MIN_ROWS else {"cv_folds": 0.0}
        progress((k + 0.7) / max(1, len(scopes)), f"fit {scope}")
        model = train_model(ds, to_utc_ns(end) + embargo, embargo, params, feature_set=feature_set)
        folder = save_model(model, models_dir, model_name(scope), ds, "challenger", metrics, training_data)
        assign_roles(models_dir, model_name(scope), folder, ds, say_line)
        out[scope] = folder
        if is_record(model):
            say_line(f"{scope}: {len(ds)} rows, too few for trees: its record, base rate {np.mean(ds.hit):.3f} "
                     f"-> {folder}")
            continue
        say_line(f"{scope}: {len(ds)} rows, cv AUC {metrics.get('cv_auc', float('nan')):.3f}, cv Brier "
                 f"{metrics.get('cv_brier', float('nan')):.4f} (base rate {np.mean(ds.hit):.3f}) -> {folder}")
    progress(1.0, "done")
    return out


async def train_new_versions(market: MarketData, targets: Sequence[tuple[Instrument, Timeframe]], models_dir: Path,
                             end: datetime | None, indicators: IndicatorEngine, *, costs_bps: float = 10.0,
                             context_market: MarketData | None = None, params: TreeParams = TreeParams(),
                             folds: int = CV_FOLDS, training_data: str = "", progress: Say = _quiet,
                             say_line: Line = log.info, feature_set: str = DEFAULT_MODEL_FEATURE_SET,
                             news: NewsFeatureSource | None = None) -> dict[str, Path]:
    """New versions trained on the bars of `targets` closing by `end` (None: all of them), reading the columns of
    `feature_set` (a set with news features needs `news`: the analysed news they read); {scope: version folder}."""
    require_news(feature_set, news)
    progress(0.0, "load")
    series = await load_series(market, targets, end or FAR)
    if not series:
        return {}
    if end is None:
        end = max(s.bars.index[-1] + s.timeframe.duration for s in series).to_pydatetime()
    context = await context_from(context_market or market, series, end)
    sectors = await sector_context_from(market, series, end, context_market)
    last: datetime = end

    def work() -> dict[str, Path]:
        datasets = build_datasets(series, indicators, context, costs_bps, lambda f, _s: progress(0.2 * f, "features"),
                                  sectors, news=news)
        return fit_versions(datasets, models_dir, last, params, folds, training_data,
                            lambda f, s: progress(0.2 + 0.8 * f, s), say_line, feature_set)

    return await asyncio.to_thread(work)
