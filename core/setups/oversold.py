"""The oversold / mean-reversion detector, and its mirror for overbought shorts.

Six criteria, each scored from 0 (not at all) to 1 (fully met) by linear interpolation between a
'starts to count' and a 'fully met' level: price z-score against the 20-bar mean, RSI(14), the
volume's percentile over 50 bars (capitulation), the opening gap, the distance from SMA20 in ATRs,
and the position inside the Bollinger bands. A setup triggers when the weighted score reaches
`min_score` and at least one of the two core criteria (z-score, RSI) is fully met.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from core.domain import AssetClass, Direction
from core.setups import Evidence, SetupResult


@dataclass(frozen=True, slots=True)
class Criterion:
    name: str
    column: str
    begins: float  # level at which it starts to count (long side)
    full: float  # level at which it is fully met (long side)
    weight: float
    label: str
    mirrored: bool = True  # short side uses the mirror level (see _mirror)

    def strength(self, value: float, direction: Direction) -> float:
        if math.isnan(value):
            return 0.0
        begins, full = (self.begins, self.full) if direction is Direction.LONG else _mirror(self)
        span = full - begins
        return min(1.0, max(0.0, (value - begins) / span)) if span else float(value >= full)


def _mirror(c: Criterion) -> tuple[float, float]:
    """Short-side levels: RSI 30 -> 70, %B 0 -> 1, volume percentile unchanged, others negated."""
    if c.column == "rsi_14":
        return 100.0 - c.begins, 100.0 - c.full
    if c.column == "bb_pctb":
        return 1.0 - c.begins, 1.0 - c.full
    if not c.mirrored:
        return c.begins, c.full
    return -c.begins, -c.full


CRITERIA: tuple[Criterion, ...] = (
    Criterion("zscore", "zscore_20", -1.5, -2.2, 0.25, "price z-score (20)"),
    Criterion("rsi", "rsi_14", 38.0, 28.0, 0.25, "RSI(14)"),
    Criterion("distance", "dist_sma20_atr", -1.5, -2.5, 0.15, "distance from SMA20 in ATRs"),
    Criterion("bollinger", "bb_pctb", 0.1, -0.05, 0.15, "Bollinger %B"),
    Criterion("volume", "volume_pct_50", 0.7, 0.9, 0.10, "volume percentile (50 bars)", mirrored=False),
    Criterion("gap", "gap", -0.005, -0.02, 0.10, "opening gap"),
)
CORE_CRITERIA = ("zscore", "rsi")


@dataclass(frozen=True, slots=True)
class OversoldDetector:
    min_score: float = 0.7
    name: str = "mean_reversion"

    def evaluate(self, snapshot: Mapping[str, float], asset_class: AssetClass, allows_short: bool) -> SetupResult:
        long = self._score(snapshot, Direction.LONG, asset_class)
        short = self._score(snapshot, Direction.SHORT, asset_class) if allows_short else None
        best = long if short is None or long.score >= short.score else short
        return best

    def _score(self, snapshot: Mapping[str, float], direction: Direction, asset_class: AssetClass) -> SetupResult:
        items = []
        for c in _criteria_for(asset_class):
            value = float(snapshot.get(c.column, float("nan")))
            s = c.strength(value, direction)
            items.append(Evidence(c.name, value, _full_level(c, direction), s, c.weight, c.label))
        total_weight = sum(e.weight for e in items)
        score = sum(e.weight * e.strength for e in items) / total_weight
        core_met = any(e.met for e in items if e.name in CORE_CRITERIA)
        triggered = core_met and score >= self.min_score
        return SetupResult(self.name, direction if triggered else None, score, tuple(items))


def _criteria_for(asset_class: AssetClass) -> tuple[Criterion, ...]:
    """Opening gaps mean something only where the market closes overnight (equities)."""
    if asset_class is AssetClass.EQUITY:
        return CRITERIA
    return tuple(c for c in CRITERIA if c.name != "gap")


def _full_level(c: Criterion, direction: Direction) -> float:
    return c.full if direction is Direction.LONG else _mirror(c)[1]
