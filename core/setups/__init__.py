"""Setups: rules that read one bar's indicator snapshot and say whether a trade idea is there."""
from __future__ import annotations

from dataclasses import dataclass

from core.domain import Direction

MEAN_REVERSION = "mean_reversion"  # the oversold / overbought detector (core.setups.oversold)
PULLBACK = "pullback"  # a dip inside the long-term trend (core.setups.pullback)
FAMILIES = (MEAN_REVERSION, PULLBACK)
"""The setup families: a signal's strategy, and the family a model is trained on (core.features.dataset)."""


@dataclass(frozen=True, slots=True)
class Evidence:
    """One criterion of a setup: its value, the level that fully satisfies it, and how far it is met (0..1)."""

    name: str
    value: float
    threshold: float
    strength: float
    weight: float
    label: str

    @property
    def met(self) -> bool:
        return self.strength >= 1.0


@dataclass(frozen=True, slots=True)
class SetupResult:
    name: str
    direction: Direction | None  # None: no setup on this bar
    score: float  # 0..1, weighted share of the evidence that is met
    evidence: tuple[Evidence, ...]

    @property
    def triggered(self) -> bool:
        return self.direction is not None
