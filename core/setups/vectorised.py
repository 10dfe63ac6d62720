"""The detector and the trend voter over whole columns at once (for training sets and screens): the same
criteria, levels and formulas as `OversoldDetector.evaluate` and `trend_reading`, row by row."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from core.domain import AssetClass, Direction
from core.setups.oversold import CORE_CRITERIA, Criterion, OversoldDetector, _criteria_for, _mirror
from core.setups.pullback import SHORT_CLASSES, PullbackDetector


@dataclass(frozen=True, slots=True)
class SideReadings:
    sign: np.ndarray  # +1 long, -1 short: the better side of each row (long on a tie)
    score: np.ndarray  # that side's weighted evidence score, 0..1
    core: np.ndarray  # the strongest core criterion's strength on that side, 0..1
    triggered: np.ndarray  # bool: the detector issues a setup on the row


def strength(c: Criterion, d: Direction, values: np.ndarray) -> np.ndarray:
    """`Criterion.strength`, vectorised (NaN counts as 0)."""
    begins, full = (c.begins, c.full) if d is Direction.LONG else _mirror(c)
    span = full - begins
    with np.errstate(invalid="ignore"):
        s = np.clip((values - begins) / span, 0.0, 1.0) if span else (values >= full).astype(np.float64)
    return np.nan_to_num(s, nan=0.0)


def side_readings(columns: Mapping[str, np.ndarray], asset_class: AssetClass, allows_short: bool,
                  detector: OversoldDetector | None = None) -> SideReadings:
    detector = detector or OversoldDetector()
    criteria = _criteria_for(asset_class)
    n = len(next(iter(columns.values())))
    total = sum(c.weight for c in criteria)
    best: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    for d in ((Direction.LONG, Direction.SHORT) if allows_short else (Direction.LONG,)):
        score, core = np.zeros(n), np.zeros(n)
        for c in criteria:
            values = columns.get(c.column)
            s = strength(c, d, np.full(n, np.nan) if values is None else np.asarray(values, dtype=np.float64))
            score += c.weight * s
            if c.name in CORE_CRITERIA:
                core = np.maximum(core, s)
        score /= total
        sign = np.full(n, d.sign, dtype=np.float64)
        if best is None:
            best = (sign, score, core)
        else:
            take = score > best[1]
            best = (np.where(take, sign, best[0]), np.where(take, score, best[1]), np.where(take, core, best[2]))
    assert best is not None
    sign, score, core = best
    return SideReadings(sign, score, core, (core >= 1.0) & (score >= detector.min_score))


def pullback_readings(columns: Mapping[str, np.ndarray], asset_class: AssetClass, allows_short: bool,
                      detector: PullbackDetector | None = None) -> SideReadings:
    """`PullbackDetector.evaluate` of every row: its side, score, RSI(2) strength (as `core`) and trigger."""
    d = detector or PullbackDetector()
    close, sma200, rsi2 = (np.asarray(columns[k], dtype=np.float64) for k in ("close", "sma_200", "rsi_2"))
    with np.errstate(invalid="ignore"):
        short = (close < sma200) & (rsi2 > 50.0) if allows_short and asset_class in SHORT_CLASSES \
            else np.zeros(len(close), dtype=bool)
        sign = np.where(short, -1.0, 1.0)
        trend_met = sign * (close - sma200) > 0.0
        depth = np.where(short, 100.0 - rsi2, rsi2)
        strength = np.nan_to_num(np.clip((d.trigger - depth) / (d.trigger - d.full), 0.0, 1.0), nan=0.0)
        triggered = trend_met & (depth < d.trigger)
    return SideReadings(sign, 0.5 * trend_met + 0.5 * strength, strength, triggered)


def trend_scores(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """`trend_reading(...).score` of each row."""
    close, ema50, ema200, adx = (np.asarray(columns[k], dtype=np.float64) for k in ("close", "ema_50", "ema_200", "adx_14"))
    above = np.where(close > ema200, 1.0, -1.0)
    raw = np.where(np.isnan(ema50), above, (above + np.where(ema50 > ema200, 1.0, -1.0)) / 2)
    strength_ = np.where(np.isnan(adx), 0.75, np.clip(adx / 30.0, 0.5, 1.0))
    return np.where(np.isnan(ema200) | np.isnan(close), 0.0, raw * strength_)
