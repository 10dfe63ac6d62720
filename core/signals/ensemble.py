"""Ensemble vote: each voter says -1..1 (short..long); weights say how much each counts."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.domain import Direction


@dataclass(frozen=True, slots=True)
class Vote:
    voter: str
    score: float  # -1 (short) .. +1 (long)
    weight: float
    text: str


@dataclass(frozen=True, slots=True)
class EnsembleResult:
    score: float  # weighted mean of the votes, -1..1
    direction: Direction | None
    confidence: int  # 1..100
    votes: tuple[Vote, ...]


@dataclass(frozen=True, slots=True)
class EnsembleConfig:
    min_agreement: float = 0.2  # |weighted score| needed to act
    weights: tuple[tuple[str, float], ...] = (("mean_reversion", 0.7), ("trend", 0.3))

    def weight(self, voter: str) -> float:
        return dict(self.weights).get(voter, 0.0)


def combine(votes: Sequence[Vote], proposed: Direction | None, config: EnsembleConfig) -> EnsembleResult:
    """Acts only on a proposed direction (a triggered setup) that the weighted vote agrees with.
    Confidence grows with the agreement: 0.2 -> 43, 1.0 -> 95 (a score, calibrated later against outcomes)."""
    total = sum(v.weight for v in votes)
    score = sum(v.weight * v.score for v in votes) / total if total > 0 else 0.0
    agrees = proposed is not None and score * proposed.sign >= config.min_agreement
    strength = abs(score)
    confidence = max(1, min(99, round(30 + 65 * strength)))
    return EnsembleResult(score, proposed if agrees else None, confidence, tuple(votes))
