"""The model's feature set (versioned): which features, in which order, oriented to the trade's side.

Side-dependent features are multiplied by the side (+1 long, -1 short) or mirrored (RSI 100 - x, positions
1 - x), so a long and a short setup that look alike to a reversion trader look alike to the model.
Bump FEATURE_SET_VERSION whenever a name, an order or a formula changes: a model records the version it was
trained on, and the engine refuses a model whose feature set it does not compute."""
from __future__ import annotations

import numpy as np

from core.features.bars import BAR_FEATURES
from core.features.regime import REGIME_FEATURES

FEATURE_SET_VERSION = "fs-1"

SETUP_FEATURES: tuple[str, ...] = ("side", "setup_score", "core_strength", "trend_aligned", "adx_14", "volume_pct_50")
_SIGNED = {"ret_1", "ret_3", "ret_5", "ret_10", "zscore_20c", "dist_sma20", "gap"}
_MIRRORED = {"rsi_14c": 100.0, "bb_pos_20": 1.0, "close_to_low": 1.0}
FEATURES: tuple[str, ...] = (*SETUP_FEATURES, *BAR_FEATURES, *REGIME_FEATURES)


def model_rows(side: np.ndarray, setup: np.ndarray, bars: np.ndarray, regime: np.ndarray) -> np.ndarray:
    """(m, len(FEATURES)) from the side of each row (+1/-1), its setup readings (m, len(SETUP_FEATURES) - 1:
    score, core strength, trend score, ADX, volume percentile), its bar features (m, len(BAR_FEATURES)) and
    its regime (m, len(REGIME_FEATURES))."""
    side = np.asarray(side, dtype=np.float64).reshape(-1)
    m = len(side)
    oriented = np.array(bars, dtype=np.float64, copy=True).reshape(m, len(BAR_FEATURES))
    for j, name in enumerate(BAR_FEATURES):
        if name in _SIGNED:
            oriented[:, j] *= side
        elif name in _MIRRORED:
            oriented[:, j] = np.where(side > 0, oriented[:, j], _MIRRORED[name] - oriented[:, j])
    s = np.array(setup, dtype=np.float64, copy=True).reshape(m, len(SETUP_FEATURES) - 1)
    s[:, 2] *= side  # trend score -> agreement of the trend with the side
    return np.column_stack([side, s, oriented, np.asarray(regime, dtype=np.float64).reshape(m, len(REGIME_FEATURES))])


def model_row(side: float, setup: list[float], bars: np.ndarray, regime: np.ndarray) -> np.ndarray:
    """One row of `model_rows`, shape (len(FEATURES),)."""
    return model_rows(np.array([side]), np.array([setup]), bars.reshape(1, -1), regime.reshape(1, -1))[0]
