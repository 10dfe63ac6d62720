"""Training rows: every bar of a series where a setup family's rule detector leans toward a setup, with its
features (read from bars <= the bar) and its labels (from core.labels, the one forward-looking module).

A row is a bar whose better side has an evidence score >= MIN_SCORE and a core criterion at least half met:
looser than the detector's trigger (0.7 and a core criterion fully met), so the model sees more setups than it
will be asked about, and learns from `setup_score` how the strength of the evidence matters. For the pullback
family (core.setups.pullback) a row is a bar where the pullback triggers: there are many, and a looser row would
mean a different setup (a dip that is not one).

The similarity features of a row read the other rows of its scope (`with_similarity`, after the rows of every
series of the scope are gathered): `series_rows` leaves them NaN."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from core.domain import AssetClass, Instrument, Timeframe
from core.features.bars import bar_features
from core.features.regime import MarketContext
from core.features.sectors import SectorContext, sector_group
from core.features.news import NewsFeatureSource
from core.features.sets import FEATURES, NEWS_COLUMNS, SIMILARITY_COLUMNS, model_rows, news_columns
from core.features.similarity import SetupHistory
from core.indicators import IndicatorEngine
from core.labels import BarrierLabels, barrier_labels, forward_returns
from core.market_data.resample import index_ns
from core.setups import MEAN_REVERSION, PULLBACK
from core.setups.vectorised import pullback_readings, side_readings, trend_scores
from core.signals.levels import LevelParams, PullbackLevelParams

MIN_SCORE = 0.5
MIN_CORE = 0.5
MIN_POSITION = 59  # the engine's MIN_BARS - 1: the first bar it analyses


@dataclass(frozen=True, slots=True)
class Dataset:
    features: np.ndarray  # (rows, len(FEATURES))
    hit: np.ndarray  # 1.0 when the idea made money after costs
    net_return: np.ndarray
    status: np.ndarray  # core.labels status codes
    fwd_5: np.ndarray  # 5-bar forward return in the trade's direction (NaN near the end of the data)
    fwd_10: np.ndarray
    decision_ns: np.ndarray  # close time of the bar: when the row's features became known
    end_ns: np.ndarray  # when all its labels were known (the expiry bar's close, or the 10th bar's if later)
    triggered: np.ndarray  # bool: the rule detector fires on the row
    symbol: np.ndarray  # object array of symbols
    outcome_ns: np.ndarray  # when the barrier outcome (hit, net return) was known: the close of the exit bar
    group: np.ndarray  # object array: the symbol's sector group (core.features.sectors.sector_group)
    scope: str  # "<asset class>-<timeframe>"

    def __len__(self) -> int:
        return len(self.hit)

    def subset(self, mask: np.ndarray) -> Dataset:
        return Dataset(self.features[mask], self.hit[mask], self.net_return[mask], self.status[mask],
                       self.fwd_5[mask], self.fwd_10[mask], self.decision_ns[mask], self.end_ns[mask],
                       self.triggered[mask], self.symbol[mask], self.outcome_ns[mask], self.group[mask], self.scope)

    @classmethod
    def concat(cls, parts: Sequence[Dataset], scope: str) -> Dataset:
        if not parts:
            return cls.empty(scope)
        fields = ("features", "hit", "net_return", "status", "fwd_5", "fwd_10", "decision_ns", "end_ns", "triggered",
                  "symbol", "outcome_ns", "group")
        arrays = {f: np.concatenate([getattr(p, f) for p in parts]) for f in fields}
        order = np.argsort(arrays["decision_ns"], kind="stable")
        return cls(**{f: a[order] for f, a in arrays.items()}, scope=scope)

    @classmethod
    def empty(cls, scope: str) -> Dataset:
        z = np.empty(0)
        return cls(np.empty((0, len(FEATURES))), z, z, np.empty(0, dtype=np.int8), z, z, np.empty(0, dtype=np.int64),
                   np.empty(0, dtype=np.int64), np.empty(0, dtype=bool), np.empty(0, dtype=object),
                   np.empty(0, dtype=np.int64), np.empty(0, dtype=object), scope)


def scope_of(asset_class: AssetClass, timeframe: Timeframe, family: str = MEAN_REVERSION) -> str:
    """A model's scope: "<asset class>-<timeframe>" for the oversold setups (the first family, whose names the
    stored models keep), "<family>-<asset class>-<timeframe>" for another family ("pullback-equity-1d")."""
    return f"{asset_class}-{timeframe}" if family == MEAN_REVERSION else f"{family}-{asset_class}-{timeframe}"


def series_rows(instrument: Instrument, timeframe: Timeframe, bars: pd.DataFrame, indicators: IndicatorEngine,
                context: MarketContext, costs_bps: float, levels: LevelParams = LevelParams(),
                sectors: SectorContext | None = None, family: str = MEAN_REVERSION,
                pullback_levels: PullbackLevelParams = PullbackLevelParams(),
                computed: pd.DataFrame | None = None) -> Dataset:
    """The training rows of one series and one setup family (its whole history; labels UNRESOLVED near the end
    are dropped), without their similarity features (NaN; see `with_similarity`). Oversold setups: the rows the
    detector leans toward (see the module docstring), with its levels; pullbacks: the rows where the pullback
    detector triggers, with the pullback's levels. `computed`: the series' indicators, when already computed."""
    scope = scope_of(instrument.asset_class, timeframe, family)
    if len(bars) <= MIN_POSITION + 1:
        return Dataset.empty(scope)
    ind = indicators.compute(bars) if computed is None else computed
    cols = {name: ind[name].to_numpy(dtype=np.float64) for name in ind.columns}
    block = np.ascontiguousarray(bars[["open", "high", "low", "close", "volume"]].to_numpy(dtype=np.float64).T)
    cols["close"], cols["gap"] = block[3], cols.get("gap", np.full(block.shape[1], np.nan))
    close, atr = block[3], cols["atr_14"]
    if family == PULLBACK:
        readings = pullback_readings(cols, instrument.asset_class, instrument.allows_short)
        with np.errstate(invalid="ignore"):
            ok = readings.triggered & (close > 0) & (atr > 0)
    else:
        readings = side_readings(cols, instrument.asset_class, instrument.allows_short)
        with np.errstate(invalid="ignore"):
            ok = (readings.score >= MIN_SCORE) & (readings.core >= MIN_CORE) & (close > 0) & (atr > 0)
    ok[: MIN_POSITION] = False
    pos = np.flatnonzero(ok)
    side = readings.sign[pos]
    c, a = close[pos], atr[pos]
    if family == PULLBACK:  # core.signals.levels.pullback_levels
        sma5 = cols["sma_5"][pos]
        toward = np.where(np.isnan(sma5), 0.0, side * (sma5 - c))
        target = c + side * np.maximum(pullback_levels.min_target_atr * a, toward)
        stop = c - side * pullback_levels.stop_atr * a
    else:  # core.signals.levels.compute_levels
        s = cols["sma_20"][pos]
        reversion = np.where(np.isnan(s), levels.min_target_atr * a, np.abs(s - c))
        target = c + side * np.minimum(levels.max_target_atr * a, np.maximum(levels.min_target_atr * a, reversion))
        stop = c - side * levels.stop_atr * a
    keep = stop > 0
    pos, side, target, stop = pos[keep], side[keep], target[keep], stop[keep]
    opens = index_ns(bars)
    labels: BarrierLabels = barrier_labels(opens, block, timeframe, instrument.asset_class, pos, side, target, stop,
                                           costs_bps)
    resolved = labels.resolved
    pos, side = pos[resolved], side[resolved]
    trend = trend_scores(cols)
    setup = np.column_stack([readings.score[pos], readings.core[pos], trend[pos], cols["adx_14"][pos],
                             cols["volume_pct_50"][pos]])
    step = int(timeframe.duration.total_seconds()) * 10**9
    decision = opens[pos] + step
    symbols = np.full(len(pos), instrument.symbol, dtype=object)
    sector = sectors.at_ns(symbols, decision) if sectors is not None else None
    x = model_rows(side, setup, bar_features(block)[pos], context.at_ns(decision), sector)
    fwd = forward_returns(close, opens, timeframe)
    barrier_end = labels.end_ns[resolved]
    fwd_end = fwd[10][1][pos]
    end = np.maximum(barrier_end, np.where(fwd_end == np.iinfo(np.int64).max, barrier_end, fwd_end))
    return Dataset(x, labels.hit[resolved], labels.net_return[resolved], labels.status[resolved],
                   fwd[5][0][pos] * side, fwd[10][0][pos] * side, decision, end,
                   readings.triggered[pos], symbols, opens[labels.exit_pos[resolved]] + step,
                   np.full(len(pos), sector_group(instrument.symbol, instrument.asset_class, instrument.sector),
                           dtype=object), scope)


def setup_history(data: Dataset) -> SetupHistory:
    """The past-setup table of a scope's rows (each usable from the time its outcome was known)."""
    return SetupHistory.of(data.features, data.hit, data.net_return, data.outcome_ns, data.decision_ns, data.symbol,
                           data.group)


def with_similarity(data: Dataset, history: SetupHistory | None = None) -> Dataset:
    """`data` with its similarity features filled from `history` (default: the rows of `data` themselves; each row
    reads only the rows whose outcome was known by its decision time)."""
    if len(data) == 0:
        return data
    table = history if history is not None else setup_history(data)
    x = data.features.copy()
    x[:, SIMILARITY_COLUMNS] = table.features(x, data.decision_ns, data.symbol, data.group)
    return replace(data, features=x)


def with_news(data: Dataset, source: NewsFeatureSource) -> Dataset:
    """`data` with its news features filled from `source` (items published at or before each row's decision)."""
    if len(data) == 0:
        return data
    x = data.features.copy()
    x[:, NEWS_COLUMNS] = news_columns(x[:, 0], data.symbol, data.decision_ns, source)
    return replace(data, features=x)
