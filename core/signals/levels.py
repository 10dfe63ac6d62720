"""Entry, target, stop and expiry from ATR."""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import pandas as pd

from core.domain import AssetClass, Direction, Timeframe


@dataclass(frozen=True, slots=True)
class LevelParams:
    stop_atr: float = 1.25
    min_target_atr: float = 1.25
    max_target_atr: float = 3.0


class Levels(NamedTuple):  # a named tuple: built for every bar a scan reads (see core.setups.Evidence)
    entry: float
    target: float
    stop: float

    @property
    def risk_reward(self) -> float:
        risk = abs(self.entry - self.stop)
        return abs(self.target - self.entry) / risk if risk > 0 else 0.0


HORIZON_BARS: dict[Timeframe, int] = {
    Timeframe.M1: 60, Timeframe.M5: 48, Timeframe.M15: 32, Timeframe.H1: 24, Timeframe.H4: 18, Timeframe.D1: 10,
}


def compute_levels(direction: Direction, close: float, atr: float, sma20: float, p: LevelParams = LevelParams()) -> Levels | None:
    """Mean-reversion levels: target back toward SMA20 (between min and max ATRs away), stop in ATRs."""
    if not (close > 0 and atr > 0) or math.isnan(atr) or math.isnan(close):
        return None
    reversion = abs(sma20 - close) if not math.isnan(sma20) else p.min_target_atr * atr
    target_dist = min(p.max_target_atr * atr, max(p.min_target_atr * atr, reversion))
    stop_dist = p.stop_atr * atr
    sign = direction.sign
    stop = close - sign * stop_dist
    if stop <= 0:
        return None
    return Levels(entry=close, target=close + sign * target_dist, stop=stop)


@dataclass(frozen=True, slots=True)
class PullbackLevelParams:
    min_target_atr: float = 0.5
    stop_atr: float = 3.0


def pullback_levels(direction: Direction, close: float, atr: float, sma5: float,
                    p: PullbackLevelParams = PullbackLevelParams()) -> Levels | None:
    """Pullback levels: target at the 5-bar average (the published rule exits on a close back above it; a
    signal needs a price, so the average at the signal bar stands in), at least `min_target_atr` away; a wide
    stop (`stop_atr`), because a dip inside a trend often dips further before it turns. The risk-reward is
    well under 1 by design (about 0.3 at the median): the setup lives on its hit rate, which is why the risk
    manager's minimum risk-reward for it is lower (core.risk.RiskConfig)."""
    if not (close > 0 and atr > 0) or math.isnan(atr) or math.isnan(close):
        return None
    sign = direction.sign
    reversion = sign * (sma5 - close) if not math.isnan(sma5) else 0.0
    target_dist = max(p.min_target_atr * atr, reversion)
    stop = close - sign * p.stop_atr * atr
    if stop <= 0:
        return None
    return Levels(entry=close, target=close + sign * target_dist, stop=stop)


def expiry(issued_at: datetime, timeframe: Timeframe, asset_class: AssetClass, bars: int | None = None) -> datetime:
    """When an idea that has not reached target or stop lapses: `bars` (default HORIZON_BARS) bars of its
    timeframe, counted in business days for daily bars of markets closed at weekends."""
    bars = HORIZON_BARS[timeframe] if bars is None else bars
    ts = pd.Timestamp(issued_at)
    if timeframe is Timeframe.D1 and asset_class is not AssetClass.CRYPTO:
        return (ts + pd.offsets.BDay(bars)).to_pydatetime()
    return (ts + timeframe.duration * bars).to_pydatetime()
