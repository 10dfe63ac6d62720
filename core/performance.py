"""Track-record statistics over closed signals. Every closed signal counts; nothing is cherry-picked."""
from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from core.domain import SignalOutcome, SignalStatus


@dataclass(frozen=True, slots=True)
class PerformanceSummary:
    count: int
    wins: int
    hit_rate: float  # net return > 0
    target_rate: float  # closed at target
    avg_return: float
    median_return: float
    profit_factor: float | None  # None when there is no losing trade
    avg_bars_held: float
    best: float
    worst: float


def summarize(outcomes: Sequence[SignalOutcome]) -> PerformanceSummary | None:
    if not outcomes:
        return None
    rets = [o.net_return for o in outcomes]
    wins = [r for r in rets if r > 0]
    losses = [r for r in rets if r <= 0]
    loss_sum = -sum(losses)
    return PerformanceSummary(
        count=len(rets),
        wins=len(wins),
        hit_rate=len(wins) / len(rets),
        target_rate=sum(1 for o in outcomes if o.status is SignalStatus.TARGET) / len(rets),
        avg_return=statistics.fmean(rets),
        median_return=statistics.median(rets),
        profit_factor=(sum(wins) / loss_sum) if loss_sum > 0 else None,
        avg_bars_held=statistics.fmean(o.bars_held for o in outcomes),
        best=max(rets),
        worst=min(rets),
    )
