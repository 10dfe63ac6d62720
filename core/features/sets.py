"""The model's feature set (versioned): which features, in which order, oriented to the trade's side.

Side-dependent features are multiplied by the side (+1 long, -1 short) or mirrored (RSI 100 - x, positions
1 - x), so a long and a short setup that look alike to a reversion trader look alike to the model.
Bump FEATURE_SET_VERSION whenever a name, an order or a formula changes: a model records the version it was
trained on, and the engine refuses a model whose feature set it does not compute."""
from __future__ import annotations

import functools

import numpy as np

from core.features.bars import BAR_FEATURES
from core.features.news import NEWS_FEATURES, NEWS_SIGNED, NewsFeatureSource
from core.features.regime import REGIME_FEATURES
from core.features.sectors import SECTOR_FEATURES

FEATURE_SET_VERSION = "fs-3"
"""What this code computes for every row: fs-1 (setup, bar and regime features) + sector relative strength
(core.features.sectors), historical similarity (core.features.similarity) and news (core.features.news). A model
reads the columns of its own feature set (MODEL_FEATURE_SETS), chosen when it is trained and named in its
manifest."""

# historical similarity, computed by core.features.similarity
SIMILARITY_FEATURES: tuple[str, ...] = (
    "sim_symbol_hit",  # shrunk hit rate of the K most similar past setups of the symbol, minus the base's
    "sim_symbol_return",  # shrunk mean net return of the same, minus the base's
    "sim_peer_hit",  # shrunk hit rate of the K most similar past setups of the sector (symbol included), - base
    "sim_peer_return",  # shrunk mean net return of the same, minus the base's
)
SETUP_FEATURES: tuple[str, ...] = ("side", "setup_score", "core_strength", "trend_aligned", "adx_14", "volume_pct_50")
_SIGNED = {"ret_1", "ret_3", "ret_5", "ret_10", "zscore_20c", "dist_sma20", "gap"}
_MIRRORED = {"rsi_14c": 100.0, "bb_pos_20": 1.0, "close_to_low": 1.0}
FEATURES: tuple[str, ...] = (*SETUP_FEATURES, *BAR_FEATURES, *REGIME_FEATURES, *SECTOR_FEATURES,
                             *SIMILARITY_FEATURES, *NEWS_FEATURES)
SIMILARITY_COLUMNS = slice(FEATURES.index(SIMILARITY_FEATURES[0]), FEATURES.index(SIMILARITY_FEATURES[-1]) + 1)
NEWS_COLUMNS = slice(FEATURES.index(NEWS_FEATURES[0]), FEATURES.index(NEWS_FEATURES[-1]) + 1)
_NEWS_SIGN = np.array([name in NEWS_SIGNED for name in NEWS_FEATURES])
FS_1 = (*SETUP_FEATURES, *BAR_FEATURES, *REGIME_FEATURES)
MODEL_FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "fs-1": FS_1,
    "fs-2": (*FS_1, *SECTOR_FEATURES, *SIMILARITY_FEATURES),
    "fs-3": (*FS_1, *NEWS_FEATURES),
}
DEFAULT_MODEL_FEATURE_SET = "fs-1"
"""The models train on fs-1 unless told otherwise: measured on the shared data (walk-forward backtests, equities
2015-02-09..2018-02-07 and crypto 1h+4h 2018-09-21..2021-12-31), fs-2 did worse (equities PF 0.77 vs 0.91,
crypto PF 1.06 vs 1.29) and its pooled out-of-sample AUC moved by 0.01 or less. `--features fs-2` trains on it."""


@functools.lru_cache(maxsize=16)
def columns_of(names: tuple[str, ...]) -> np.ndarray:
    """The positions of `names` among FEATURES (the columns of a row this code computes). Raises ValueError for a
    feature this code does not compute (a model from other code)."""
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise ValueError(f"features this code does not compute: {', '.join(unknown)}")
    return np.array([FEATURES.index(n) for n in names], dtype=np.intp)


def model_feature_set(name: str) -> tuple[str, ...]:
    try:
        return MODEL_FEATURE_SETS[name]
    except KeyError:
        raise ValueError(f"unknown feature set {name!r} (one of {', '.join(MODEL_FEATURE_SETS)})") from None


def model_rows(side: np.ndarray, setup: np.ndarray, bars: np.ndarray, regime: np.ndarray,
               sector: np.ndarray | None = None) -> np.ndarray:
    """(m, len(FEATURES)) from the side of each row (+1/-1), its setup readings (m, len(SETUP_FEATURES) - 1:
    score, core strength, trend score, ADX, volume percentile), its bar features (m, len(BAR_FEATURES)), its
    regime (m, len(REGIME_FEATURES)) and its sector strength (m, len(SECTOR_FEATURES); None: unknown, NaN).
    Sector strengths are signed by the side (a long setup in a sector that lags reads like a short one in a
    sector that leads). The similarity columns are NaN here: they need the other rows of the scope
    (`core.features.similarity.SetupHistory.features` fills them), and so are the news columns (`news_columns`
    fills them from a news source)."""
    side = np.asarray(side, dtype=np.float64).reshape(-1)
    m = len(side)
    sec = np.full((m, len(SECTOR_FEATURES)), np.nan) if sector is None else \
        np.asarray(sector, dtype=np.float64).reshape(m, len(SECTOR_FEATURES)) * side[:, None]
    oriented = np.array(bars, dtype=np.float64, copy=True).reshape(m, len(BAR_FEATURES))
    for j, name in enumerate(BAR_FEATURES):
        if name in _SIGNED:
            oriented[:, j] *= side
        elif name in _MIRRORED:
            oriented[:, j] = np.where(side > 0, oriented[:, j], _MIRRORED[name] - oriented[:, j])
    s = np.array(setup, dtype=np.float64, copy=True).reshape(m, len(SETUP_FEATURES) - 1)
    s[:, 2] *= side  # trend score -> agreement of the trend with the side
    return np.column_stack([side, s, oriented, np.asarray(regime, dtype=np.float64).reshape(m, len(REGIME_FEATURES)),
                            sec, np.full((m, len(SIMILARITY_FEATURES) + len(NEWS_FEATURES)), np.nan)])


def news_columns(side: np.ndarray, symbols: np.ndarray, as_of_ns: np.ndarray,
                 source: NewsFeatureSource) -> np.ndarray:
    """(m, len(NEWS_FEATURES)): the news features of each row from `source`, their sentiments signed by the side
    (news that agrees with the trade reads positive for a long and a short alike)."""
    values = np.asarray(source.news_features(symbols, as_of_ns), dtype=np.float64)
    sign = np.where(_NEWS_SIGN[None, :], np.asarray(side, dtype=np.float64).reshape(-1, 1), 1.0)
    return values * sign


def model_row(side: float, setup: list[float], bars: np.ndarray, regime: np.ndarray,
              sector: np.ndarray | None = None) -> np.ndarray:
    """One row of `model_rows`, shape (len(FEATURES),)."""
    return model_rows(np.array([side]), np.array([setup]), bars.reshape(1, -1), regime.reshape(1, -1),
                      None if sector is None else sector.reshape(1, -1))[0]


def reads_news(feature_set: str) -> bool:
    return bool(set(model_feature_set(feature_set)) & set(NEWS_FEATURES))


def require_news(feature_set: str, news: NewsFeatureSource | None) -> None:
    """Raises ValueError when `feature_set` reads news features and no news source is given (its models would
    learn from NaN columns only)."""
    if news is None and reads_news(feature_set):
        raise ValueError(f"feature set {feature_set} reads news features: give the news they read (--news)")
