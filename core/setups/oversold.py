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
from core.setups import MEAN_REVERSION, Evidence, SetupResult


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
    name: str = MEAN_REVERSION

    def evaluate(self, snapshot: Mapping[str, float], asset_class: AssetClass, allows_short: bool) -> SetupResult:
        """The better side's result (long on a tie). Both sides are scored with plain floats; the evidence
        objects are built for the chosen side only."""
        get = snapshot.get
        values = [float(get(column, math.nan)) for column in _COLUMNS[asset_class]]
        side = _SIDES[asset_class, Direction.LONG]
        strengths = side.strengths(values)
        score = side.score(strengths)
        if allows_short:
            short = _SIDES[asset_class, Direction.SHORT]
            short_strengths = short.strengths(values)
            short_score = short.score(short_strengths)
            if short_score > score:
                side, strengths, score = short, short_strengths, short_score
        triggered = side.core_met(strengths) and score >= self.min_score
        return SetupResult(self.name, side.direction if triggered else None, score, side.evidence(values, strengths))

    def _score(self, snapshot: Mapping[str, float], direction: Direction, asset_class: AssetClass) -> SetupResult:
        """One side's result (``evaluate`` picks the better of the two)."""
        values = [float(snapshot.get(column, math.nan)) for column in _COLUMNS[asset_class]]
        side = _SIDES[asset_class, direction]
        strengths = side.strengths(values)
        score = side.score(strengths)
        triggered = side.core_met(strengths) and score >= self.min_score
        return SetupResult(self.name, direction if triggered else None, score, side.evidence(values, strengths))


@dataclass(frozen=True, slots=True)
class _Side:
    """The criteria of one asset class on one side, with their levels resolved: what `evaluate` computes
    per bar, as `Criterion.strength` and the weighted mean of the strengths (same operations, same order)."""

    direction: Direction
    criteria: tuple[Criterion, ...]
    levels: tuple[tuple[float, float, float], ...]  # (begins, full, span) per criterion
    weights: tuple[float, ...]
    core: tuple[int, ...]  # positions of the core criteria
    total_weight: float
    labels: tuple[tuple[str, float, float, str], ...]  # what Evidence repeats: (name, full, weight, label)

    @classmethod
    def of(cls, criteria: tuple[Criterion, ...], direction: Direction) -> _Side:
        levels = []
        for c in criteria:
            begins, full = (c.begins, c.full) if direction is Direction.LONG else _mirror(c)
            levels.append((begins, full, full - begins))
        core = tuple(i for i, c in enumerate(criteria) if c.name in CORE_CRITERIA)
        weights = tuple(c.weight for c in criteria)
        labels = tuple((c.name, full, c.weight, c.label) for c, (_, full, _) in zip(criteria, levels, strict=True))
        return cls(direction, criteria, tuple(levels), weights, core, sum(weights), labels)

    def strengths(self, values: list[float]) -> list[float]:
        """`Criterion.strength` of each value: 0 for NaN (``v != v``), else clipped to 0..1 as
        ``min(1.0, max(0.0, x))`` does (written out, without the two calls)."""
        out = []
        for v, (begins, full, span) in zip(values, self.levels, strict=True):
            if v != v:
                out.append(0.0)
            elif span:
                x = (v - begins) / span
                x = x if x > 0.0 else 0.0
                out.append(x if x < 1.0 else 1.0)
            else:
                out.append(float(v >= full))
        return out

    def score(self, strengths: list[float]) -> float:
        return sum([w * s for w, s in zip(self.weights, strengths, strict=True)]) / self.total_weight

    def core_met(self, strengths: list[float]) -> bool:
        return any(strengths[i] >= 1.0 for i in self.core)

    def evidence(self, values: list[float], strengths: list[float]) -> tuple[Evidence, ...]:
        return tuple([Evidence(name, value, full, s, weight, label)
                      for (name, full, weight, label), value, s in zip(self.labels, values, strengths, strict=True)])


def _criteria_for(asset_class: AssetClass) -> tuple[Criterion, ...]:
    """Opening gaps mean something only where the market closes overnight (equities)."""
    if asset_class is AssetClass.EQUITY:
        return CRITERIA
    return tuple(c for c in CRITERIA if c.name != "gap")


def _full_level(c: Criterion, direction: Direction) -> float:
    return c.full if direction is Direction.LONG else _mirror(c)[1]


_SIDES = {(cls, d): _Side.of(_criteria_for(cls), d) for cls in AssetClass for d in Direction}
_COLUMNS = {cls: tuple(c.column for c in _criteria_for(cls)) for cls in AssetClass}
