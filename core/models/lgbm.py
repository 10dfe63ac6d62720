"""The LightGBM adapter: the one module that imports lightgbm. Trains and predicts gradient-boosted trees on
plain numpy arrays; a fitted model travels as LightGBM's own text format.

Threads: at most two (the machine has two cores), and callers set OMP_WAIT_POLICY=PASSIVE before the first
import (see `ensure_passive_openmp`): with OpenMP spinning, training is 10-15x slower when another process
keeps a core busy."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def ensure_passive_openmp() -> None:
    """OpenMP reads OMP_WAIT_POLICY when its runtime starts: set it before lightgbm is first imported."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


ensure_passive_openmp()
import lightgbm  # noqa: E402

MAX_THREADS = 2


@dataclass(frozen=True, slots=True)
class TreeParams:
    objective: str = "binary"  # or "regression"
    num_trees: int = 150
    learning_rate: float = 0.04
    num_leaves: int = 15
    min_data_in_leaf: int = 80
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    lambda_l2: float = 5.0
    num_threads: int = 2
    seed: int = 7
    extra: dict[str, Any] = field(default_factory=dict)

    def lgb_params(self) -> dict[str, Any]:
        return {"objective": self.objective, "learning_rate": self.learning_rate, "num_leaves": self.num_leaves,
                "min_data_in_leaf": self.min_data_in_leaf, "feature_fraction": self.feature_fraction,
                "bagging_fraction": self.bagging_fraction, "bagging_freq": self.bagging_freq,
                "lambda_l2": self.lambda_l2, "num_threads": max(1, min(MAX_THREADS, self.num_threads)),
                "seed": self.seed, "deterministic": True, "force_row_wise": True, "verbosity": -1, **self.extra}


class Trees:
    """A fitted booster. `predict` gives probabilities for a binary objective, values for a regression."""

    def __init__(self, booster: lightgbm.Booster) -> None:
        self._booster = booster

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x.reshape(1, -1)
        if len(x) == 0:
            return np.empty(0)
        return np.asarray(self._booster.predict(x, num_threads=1), dtype=np.float64)

    def to_text(self) -> str:
        return str(self._booster.model_to_string())

    @classmethod
    def from_text(cls, text: str) -> Trees:
        return cls(lightgbm.Booster(model_str=text))

    def importance(self, names: list[str]) -> dict[str, float]:
        gains = self._booster.feature_importance(importance_type="gain")
        total = float(np.sum(gains)) or 1.0
        return {n: float(g) / total for n, g in zip(names, gains, strict=True)}


def fit_trees(x: np.ndarray, y: np.ndarray, names: list[str], params: TreeParams = TreeParams()) -> Trees:
    if len(x) == 0:
        raise ValueError("no training rows")
    data = lightgbm.Dataset(np.asarray(x, dtype=np.float64), label=np.asarray(y, dtype=np.float64),
                            feature_name=names, free_raw_data=True, params={"verbosity": -1})
    booster = lightgbm.train(params.lgb_params(), data, num_boost_round=params.num_trees)
    return Trees(booster)


def library_version() -> str:
    return str(lightgbm.__version__)
