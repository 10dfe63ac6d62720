"""Models as a voter of the signal engine (`core.signals.ensemble.ProbabilityModel`): features of each setup
from its request (bars <= its bar; the market and sector context as of its bar; the past setups of its scope
whose outcome was known by its bar), one batched prediction per model.

ModelVoter          fixed models, one per scope ("equity-1d", "crypto-1h", ...): the live service
WalkForwardVoter    for each scope a series of models, each used only from the time its training labels were
                    known (plus the embargo) until the next one: the walk-forward backtest
"""
from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from core.features.bars import BAR_WINDOW, last_bar_features
from core.features.dataset import scope_of
from core.features.regime import MarketContext
from core.features.sectors import SectorContext, sector_group
from core.features.news import NewsFeatureSource
from core.features.sets import NEWS_COLUMNS, SIMILARITY_COLUMNS, model_rows, news_columns
from core.features.similarity import SIMILARITY_FEATURES, SetupHistory
from core.models.reversion import ReversionModel
from core.signals.ensemble import ModelOpinion, ModelRequest

SKILL_AUC_SPAN = 0.05
"""A model's vote counts fully from an out-of-sample AUC of 0.5 + this, not at all at 0.5 or below."""


def skill(model: ReversionModel) -> float:
    """The model's tracked skill, 0..1, from the AUC of out-of-sample calls, past data only: in a walk-forward
    schedule the calls the models before it made (`tracked_auc`, core.models.training.with_tracked_skill); for a
    version trained by `signalbot train`, its purged walk-forward cross-validation (`cv_auc`); else its calibration
    holdout. None of them: no measured skill, 0."""
    for key in ("tracked_auc", "cv_auc", "holdout_auc"):
        auc = model.metrics.get(key)
        if auc is not None and auc == auc:
            return max(0.0, min(1.0, (auc - 0.5) / SKILL_AUC_SPAN))
    return 0.0


def reliability(model: ReversionModel) -> float:
    """How far, 0..1, the model's calibrated probabilities may stand from its base rate: the lower bound of the
    calibration slope of its out-of-sample calls, within and across blocks (`tracked_slope_low`: the stints of the
    earlier models of a walk-forward schedule, at least two; `cv_slope_low`: `signalbot train`'s CV folds;
    core.models.validation.slope_lower_bound); without either, 0 (the base rate is shown). Its own holdout cannot
    say: the calibrator was fitted on it. (On the shared equities, trusting one quarter's record, slope 3.2, put
    197 calls in the 60-70 % band; they won 39 % of the time.)"""
    m = model.metrics
    slope = m["tracked_slope_low"] if "tracked_slope_low" in m else m.get("cv_slope_low", 0.0)
    return max(0.0, min(1.0, slope)) if slope == slope else 0.0


def payoff(model: ReversionModel) -> float | None:
    """Mean win / mean loss (net returns after costs) of the model's training setups, known when it was trained:
    what a win pays against what a loss costs, for the risk manager's expectation (core.risk.expected_r). None
    for a model trained before it was recorded."""
    win, loss = model.metrics.get("avg_win"), model.metrics.get("avg_loss")
    if win is None or loss is None or not (win == win and loss == loss) or loss <= 0:
        return None
    return float(win / loss)


def reads_similarity(model: ReversionModel) -> bool:
    return bool(set(model.features) & set(SIMILARITY_FEATURES))


def _opinions(model: ReversionModel, x: np.ndarray) -> list[ModelOpinion]:
    weight, trust, base, ratio = skill(model), reliability(model), model.metrics.get("base_rate"), payoff(model)
    return [ModelOpinion(float(p), weight, base, trust, ratio) for p in model.probability(x).tolist()]


@dataclass(frozen=True, slots=True)
class FeatureContext:
    """What a request's features read beyond its own bars: the market regime, the sectors' strength, per scope
    the table of past setups (core.features.similarity), and the analysed news (core.features.news; None: the
    news columns stay NaN)."""

    market: MarketContext = field(default_factory=MarketContext.empty)
    sectors: SectorContext = field(default_factory=SectorContext.empty)
    history: Mapping[str, SetupHistory] = field(default_factory=dict)
    news: NewsFeatureSource | None = None


def request_features(requests: Sequence[ModelRequest], context: MarketContext | FeatureContext,
                     similarity: bool = True) -> np.ndarray:
    """(len(requests), len(FEATURES)): the rows the models read, as training builds them. `similarity` False:
    the similarity columns stay NaN (for a model that does not read them: they are the costly part)."""
    if not requests:
        return np.empty((0, 0))
    ctx = context if isinstance(context, FeatureContext) else FeatureContext(context)
    bars = last_bar_features(np.stack([r.window[:, -BAR_WINDOW:] for r in requests], axis=1))
    side = np.array([r.side.sign for r in requests], dtype=np.float64)
    setup = np.array([r.setup for r in requests], dtype=np.float64)
    as_of = np.array([r.as_of_ns for r in requests], dtype=np.int64)
    symbols = np.array([r.symbol for r in requests], dtype=object)
    x = model_rows(side, setup, bars, ctx.market.at_ns(as_of), ctx.sectors.at_ns(symbols, as_of))
    groups = np.array([ctx.sectors.group_of.get(r.symbol) or sector_group(r.symbol, r.asset_class)
                       for r in requests], dtype=object)
    scopes = np.array([scope_of(r.asset_class, r.timeframe, r.family) for r in requests], dtype=object)
    for scope in set(scopes.tolist()) if similarity else ():
        table = ctx.history.get(scope)
        if table is None:
            continue
        rows = np.flatnonzero(scopes == scope)
        x[np.ix_(rows, np.arange(x.shape[1])[SIMILARITY_COLUMNS])] = table.features(x[rows], as_of[rows],
                                                                                     symbols[rows], groups[rows])
    if ctx.news is not None:
        x[:, NEWS_COLUMNS] = news_columns(side, symbols, as_of, ctx.news)
    return x


class ModelVoter:
    name = "model"

    def __init__(self, models: Mapping[str, ReversionModel], context: MarketContext | None = None,
                 sectors: SectorContext | None = None, history: Mapping[str, SetupHistory] | None = None,
                 news: NewsFeatureSource | None = None) -> None:
        self.models = dict(models)
        self.context = context or MarketContext.empty()
        self.sectors = sectors or SectorContext.empty()
        self.history: dict[str, SetupHistory] = dict(history or {})
        self.news = news

    def features(self) -> FeatureContext:
        return FeatureContext(self.context, self.sectors, self.history, self.news)

    def probabilities(self, requests: Sequence[ModelRequest]) -> list[ModelOpinion | None]:
        out: list[ModelOpinion | None] = [None] * len(requests)
        by_scope: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            scope = scope_of(r.asset_class, r.timeframe, r.family)
            if scope in self.models and r.window.shape[1] >= BAR_WINDOW:
                by_scope.setdefault(scope, []).append(i)
        for scope, idx in by_scope.items():
            x = request_features([requests[i] for i in idx], self.features(), reads_similarity(self.models[scope]))
            for i, opinion in zip(idx, _opinions(self.models[scope], x), strict=True):
                out[i] = opinion
        return out


class WalkForwardVoter:
    """Each request is answered by the newest model of its scope whose training labels were all known by the
    request's time (`ReversionModel.trained_until_ns <= as_of`): never a model that saw a later label."""

    name = "model"

    def __init__(self, schedule: Mapping[str, Sequence[ReversionModel]], context: MarketContext | None = None,
                 sectors: SectorContext | None = None, history: Mapping[str, SetupHistory] | None = None,
                 news: NewsFeatureSource | None = None) -> None:
        self.schedule = {scope: sorted(models, key=lambda m: m.trained_until_ns) for scope, models in schedule.items()}
        self._starts = {scope: [m.trained_until_ns for m in models] for scope, models in self.schedule.items()}
        self.context = context or MarketContext.empty()
        self.sectors = sectors or SectorContext.empty()
        self.history: dict[str, SetupHistory] = dict(history or {})
        self.news = news
        self.used: dict[int, int] = {}  # id(model) -> requests answered (for reports)

    def model_for(self, scope: str, as_of_ns: int) -> ReversionModel | None:
        starts = self._starts.get(scope)
        if not starts:
            return None
        k = bisect.bisect_right(starts, as_of_ns) - 1
        return self.schedule[scope][k] if k >= 0 else None

    def probabilities(self, requests: Sequence[ModelRequest]) -> list[ModelOpinion | None]:
        out: list[ModelOpinion | None] = [None] * len(requests)
        groups: dict[int, tuple[ReversionModel, list[int]]] = {}
        for i, r in enumerate(requests):
            model = self.model_for(scope_of(r.asset_class, r.timeframe, r.family), r.as_of_ns)
            if model is not None and r.window.shape[1] >= BAR_WINDOW:
                groups.setdefault(id(model), (model, []))[1].append(i)
        for key, (model, idx) in groups.items():
            x = request_features([requests[i] for i in idx],
                                 FeatureContext(self.context, self.sectors, self.history, self.news),
                                 reads_similarity(model))
            self.used[key] = self.used.get(key, 0) + len(idx)
            for i, opinion in zip(idx, _opinions(model, x), strict=True):
                out[i] = opinion
        return out
