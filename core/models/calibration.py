"""Probability calibration: isotonic regression (pool-adjacent-violators) fitted on out-of-sample predictions,
with a Platt (logistic) fallback when there are too few of them. Pure numpy; saved as a small JSON dict."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_ISOTONIC_ROWS = 400
BIN_ROWS = 50


@dataclass(frozen=True, slots=True)
class Calibrator:
    kind: str  # "isotonic", "platt" or "identity"
    x: tuple[float, ...] = ()  # isotonic knots (raw scores), ascending
    y: tuple[float, ...] = ()  # calibrated probabilities at the knots, non-decreasing
    a: float = 1.0  # platt: p = 1 / (1 + exp(-(a * logit(raw) + b)))
    b: float = 0.0

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float64)
        if self.kind == "isotonic":
            return np.interp(raw, np.asarray(self.x), np.asarray(self.y))
        if self.kind == "platt":
            return _sigmoid(self.a * _logit(raw) + self.b)
        return raw

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "x": list(self.x), "y": list(self.y), "a": self.a, "b": self.b}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibrator:
        if d.get("kind") not in ("isotonic", "platt", "identity"):
            raise ValueError(f"unknown calibrator kind {d.get('kind')!r}")
        return cls(str(d["kind"]), tuple(float(v) for v in d.get("x", ())), tuple(float(v) for v in d.get("y", ())),
                   float(d.get("a", 1.0)), float(d.get("b", 0.0)))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.asarray(np.log(p / (1 - p)))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def fit_calibrator(raw: np.ndarray, outcome: np.ndarray) -> Calibrator:
    """Isotonic on >= MIN_ISOTONIC_ROWS predictions, Platt on fewer (>= 30), identity below that."""
    raw, outcome = np.asarray(raw, dtype=np.float64), np.asarray(outcome, dtype=np.float64)
    if len(raw) != len(outcome):
        raise ValueError("predictions and outcomes differ in length")
    if len(raw) >= MIN_ISOTONIC_ROWS:
        return _isotonic(raw, outcome)
    if len(raw) >= 30:
        return _platt(raw, outcome)
    return Calibrator("identity")


def _isotonic(raw: np.ndarray, outcome: np.ndarray) -> Calibrator:
    """Pool-adjacent-violators over bins of BIN_ROWS predictions (sorted by score), knots at the bins' mean
    scores: monotone, and no knot rests on a handful of rows (a block of three losses must not say 0 %)."""
    order = np.argsort(raw, kind="stable")
    bins = np.array_split(order, max(1, len(raw) // BIN_ROWS))
    xs = [float(raw[b].mean()) for b in bins]
    sums = [float(outcome[b].sum()) for b in bins]
    weights = [float(len(b)) for b in bins]
    blocks: list[list[float]] = []  # [sum, weight, first x, last x]
    for x, s, w in zip(xs, sums, weights, strict=True):
        blocks.append([s, w, x, x])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            s2, w2, _, x2 = blocks.pop()
            blocks[-1][0] += s2
            blocks[-1][1] += w2
            blocks[-1][3] = x2
    knots_x: list[float] = []
    knots_y: list[float] = []
    for s, w, a, b in blocks:
        for x in ((a, b) if b > a else (a,)):
            knots_x.append(x)
            knots_y.append(s / w)
    return Calibrator("isotonic", tuple(knots_x), tuple(knots_y))


def _platt(raw: np.ndarray, outcome: np.ndarray) -> Calibrator:
    """Logistic regression of the outcome on logit(raw), by Newton's method (two parameters)."""
    z = _logit(raw)
    a, b = 1.0, 0.0
    for _ in range(50):
        p = _sigmoid(a * z + b)
        w = p * (1 - p) + 1e-9
        ga, gb = float(np.sum((p - outcome) * z)), float(np.sum(p - outcome))
        haa, hab, hbb = float(np.sum(w * z * z)) + 1e-6, float(np.sum(w * z)), float(np.sum(w)) + 1e-6
        det = haa * hbb - hab * hab
        if det <= 0 or not math.isfinite(det):
            break
        da, db = (hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det
        a, b = a - da, b - db
        if abs(da) + abs(db) < 1e-9:
            break
    return Calibrator("platt", a=a, b=b)
