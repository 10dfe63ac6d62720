"""Purged, embargoed time splits. A row is decided at `decision_ns` (its features are known) and its label is
known at `end_ns`. Training for a moment t may use a row only when end_ns + embargo <= t: the label (and the
bars it read) are in the past, with a gap so that serially correlated neighbours do not leak."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DAY_NS = 86_400 * 10**9


def known_by(end_ns: np.ndarray, t_ns: int, embargo_ns: int) -> np.ndarray:
    """Rows whose label was known, plus the embargo, by `t_ns`."""
    return np.asarray(end_ns, dtype=np.int64) <= int(t_ns) - int(embargo_ns)


def walk_forward_folds(decision_ns: np.ndarray, end_ns: np.ndarray, n_folds: int, embargo_ns: int,
                       min_train: int = 200) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train indices, test indices) of `n_folds` expanding-window folds: the time span is cut into
    n_folds + 1 equal blocks; fold k tests on block k+1 and trains on the rows whose labels (plus embargo) were
    known before that block starts (purged: no training label overlaps the test block). Folds with fewer than
    `min_train` training rows or no test rows are left out."""
    decision_ns, end_ns = np.asarray(decision_ns, dtype=np.int64), np.asarray(end_ns, dtype=np.int64)
    if len(decision_ns) == 0 or n_folds < 1:
        return []
    lo, hi = int(decision_ns.min()), int(decision_ns.max()) + 1
    edges = np.linspace(lo, hi, n_folds + 2).astype(np.int64)
    folds = []
    for k in range(1, n_folds + 1):
        test = np.flatnonzero((decision_ns >= edges[k]) & (decision_ns < edges[k + 1]))
        train = np.flatnonzero(known_by(end_ns, int(edges[k]), embargo_ns))
        if len(train) >= min_train and len(test):
            folds.append((train, test))
    return folds


def auc(score: np.ndarray, outcome: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney with average ranks); NaN when one class is absent."""
    score, outcome = np.asarray(score, dtype=np.float64), np.asarray(outcome) > 0.5
    pos, neg = int(outcome.sum()), int((~outcome).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    sorted_scores = score[order]
    i = 0
    while i < len(score):  # average ranks over ties
        j = i
        while j + 1 < len(score) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i: j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[outcome].sum() - pos * (pos + 1) / 2) / (pos * neg))


def brier(prob: np.ndarray, outcome: np.ndarray) -> float:
    prob, outcome = np.asarray(prob, dtype=np.float64), np.asarray(outcome, dtype=np.float64)
    return float(np.mean((prob - outcome) ** 2)) if len(prob) else float("nan")


def log_loss(prob: np.ndarray, outcome: np.ndarray) -> float:
    p = np.clip(np.asarray(prob, dtype=np.float64), 1e-6, 1 - 1e-6)
    y = np.asarray(outcome, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) if len(p) else float("nan")


def calibration_slope(prob: np.ndarray, outcome: np.ndarray, standard_errors: float = 0.0) -> float:
    """The least-squares slope of outcomes on predicted probabilities (cov / var): 1 when a probability that is
    0.1 higher wins 10 points more often, 0 when it says nothing about winning. On out-of-sample predictions it is
    how far a calibrated probability may stand from the base rate. `standard_errors` > 0: that many standard errors
    below the estimate (a lower bound: predictions that barely vary, or few rows, cannot claim a slope they only
    show by chance). NaN when the predictions do not vary."""
    p, y = np.asarray(prob, dtype=np.float64), np.asarray(outcome, dtype=np.float64)
    if len(p) < 3:
        return float("nan")
    var = float(np.var(p))
    if var <= 1e-12:
        return float("nan")
    slope = float(np.mean((p - p.mean()) * (y - y.mean())) / var)
    if standard_errors <= 0:
        return slope
    residual = y - y.mean() - slope * (p - p.mean())
    se = float(np.sqrt(np.sum(residual ** 2) / (len(p) - 2) / (len(p) * var)))
    return slope - standard_errors * se


def slope_lower_bound(slopes: Sequence[float], lows: Sequence[float]) -> float:
    """A lower bound of a model's calibration slope from several out-of-sample blocks (CV folds, or the stints of
    the earlier models of a walk-forward schedule): the smaller of the blocks' mean lower bound (each two standard
    errors below its block's slope) and the blocks' mean slope less two standard errors of that mean across
    blocks. The second catches what one block's rows cannot: on the shared equities with news features the CV
    folds' slopes were 0.36, 0.31, -0.99, 0.81, -0.42 (AUC 0.47-0.53) and their mean bound said 0.39; one quarter
    of 2015 alone showed 3.2. NaN with fewer than two blocks."""
    ok = [(s, low) for s, low in zip(slopes, lows, strict=True) if s == s and low == low]
    if len(ok) < 2:
        return float("nan")
    s, low = np.array([x for x, _ in ok]), np.array([y for _, y in ok])
    between = float(s.mean() - 2.0 * s.std(ddof=1) / np.sqrt(len(s)))
    return min(float(low.mean()), between)
