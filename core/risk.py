"""Risk manager: position size, exposure caps, cooldown, conflicting ideas."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from core.domain import RiskTolerance, Signal


SERVICE_COSTS_BPS = 5.0
"""Costs per side the service takes from every tracked return unless SIGNALBOT_COSTS_BPS says otherwise (the
settings' default; `signalbot scan` and the bench count the same)."""


@dataclass(frozen=True, slots=True)
class RiskBudget:
    per_trade: float  # fraction of equity lost if the stop is hit
    max_position: float  # cap on the suggested position, fraction of equity


BUDGETS: dict[RiskTolerance, RiskBudget] = {
    RiskTolerance.LOW: RiskBudget(0.005, 0.05),
    RiskTolerance.MEDIUM: RiskBudget(0.01, 0.10),
    RiskTolerance.HIGH: RiskBudget(0.02, 0.20),
}


def position_size(entry: float, stop: float, tolerance: RiskTolerance = RiskTolerance.MEDIUM) -> float:
    """Fraction of equity such that hitting the stop loses the tolerance's per-trade budget, capped.
    Volatility-adjusted through the stop, which is placed in ATRs."""
    budget = BUDGETS[tolerance]
    stop_fraction = abs(entry - stop) / entry if entry > 0 else 0.0
    if stop_fraction <= 0:
        return 0.0
    return round(min(budget.max_position, budget.per_trade / stop_fraction), 4)


def vol_target_size(entry: float, stop: float, sigma_annual: float, sigma_target: float,
                    tolerance: RiskTolerance = RiskTolerance.MEDIUM) -> float:
    """Fraction of equity for a position sized by volatility: `sigma_target / sigma_annual` (the position adds
    `sigma_target` of annual volatility to the book), but never more than the tolerance's stop budget
    (`position_size`: the stop loses at most its per-trade budget) nor its cap. The cap is a real risk figure:
    whichever bound binds, a stop costs at most the per-trade budget."""
    if not (sigma_annual > 0 and math.isfinite(sigma_annual)) or sigma_target <= 0:
        return 0.0
    return round(min(sigma_target / sigma_annual, position_size(entry, stop, tolerance)), 4)


def resize(signal_size: float, tolerance: RiskTolerance) -> float:
    """A signal's medium-risk size, re-scaled for a person's tolerance."""
    medium, mine = BUDGETS[RiskTolerance.MEDIUM], BUDGETS[tolerance]
    return round(min(mine.max_position, signal_size * mine.per_trade / medium.per_trade), 4)


def expected_r(probability: float, risk_reward: float) -> float:
    """Expected result in units of risk of an idea that reaches its target (R:R) with `probability` and its stop
    otherwise: the gate for signals whose confidence is a probability (a model's, shrunk to the base rate as far
    as the model lacks skill), in place of a fixed minimum confidence. At R:R 1.5 it needs a 40 % chance, at
    R:R 1 a 50 % one. Where the model knows what its training setups really paid (mean win / mean loss after
    costs, `model_payoff` in the evidence: exits at expiry pay less than a target and cost less than a stop), that
    ratio replaces the R:R, in units of the average loss."""
    return probability * risk_reward - (1.0 - probability)


@dataclass(frozen=True, slots=True)
class RiskConfig:
    max_open_total: int = 60
    max_open_per_asset_class: int = 25
    # the suggested sizes of one asset class's open signals add up to at most this fraction of equity (1.0: a
    # follower who takes them all is fully invested in that class, never leveraged)
    max_gross_per_asset_class: float = 1.0
    cooldown_bars: int = 5
    min_risk_reward: float = 1.0
    # setups that live on their hit rate with a near target and a wide stop (core.signals.levels.pullback_levels)
    strategy_min_risk_reward: tuple[tuple[str, float], ...] = (("pullback", 0.15),)
    # setups issued only with a model's probability that says more than the base rate (its reliability above 0):
    # the oversold detector's rules alone lost after costs in every warm-up period (core.setups.pullback has the
    # figures), so a model that has not shown skill cannot carry them either
    needs_probability: tuple[str, ...] = ("mean_reversion",)
    min_expected: float | None = 0.0  # what a probability signal's expectation must exceed (None: not tested)
    min_confidence: int = 40  # for a confidence that is a score (no model); a probability faces `expected_r`
    # costs per side, in basis points, that the tracker takes from every return (the service's SIGNALBOT_COSTS_BPS,
    # the backtest's --costs-bps): an idea whose move to the target does not pay the round trip loses even when
    # it works, and is rejected whatever its confidence
    costs_bps: float = 0.0


@dataclass(frozen=True, slots=True)
class RiskDecision:
    approved: bool
    reason: str


class RiskManager:
    def __init__(self, config: RiskConfig | None = None) -> None:
        self.config = config or RiskConfig()

    def review(self, candidate: Signal, open_signals: Sequence[Signal], last_same: Signal | None) -> RiskDecision:
        """Approve or reject a candidate given what is open and the last signal on its symbol and timeframe."""
        c = self.config
        for check in (
            _quality(candidate, c),
            _conflicts(candidate, open_signals),
            _cooldown(candidate, last_same, c),
            _exposure(candidate, open_signals, c),
        ):
            if check is not None:
                return RiskDecision(False, check)
        return RiskDecision(True, "approved")

    def quality(self, candidate: Signal) -> str | None:
        """Why the idea itself would be rejected, whatever is open (levels, costs, expectation, size); None if
        it would not: what /signal shows beside a setup."""
        return _quality(candidate, self.config)


def _quality(s: Signal, c: RiskConfig) -> str | None:
    round_trip = 2 * c.costs_bps / 10_000
    move = abs(s.target - s.entry) / s.entry if s.entry > 0 else 0.0
    if round_trip > 0 and move <= round_trip:
        return (f"the target is {move:.2%} away, not more than the round-trip costs of {round_trip:.2%}: "
                "it would lose even at the target")
    min_rr = dict(c.strategy_min_risk_reward).get(s.strategy, c.min_risk_reward)
    if s.risk_reward < min_rr:
        return f"risk-reward {s.risk_reward:.2f} below {min_rr:.2f}"
    p = s.evidence.get("model_probability")
    if s.strategy in c.needs_probability and s.evidence.get("model_reliability") == 0:
        return (f"a {s.strategy.replace('_', ' ')} setup needs a model whose calls bore out its probabilities "
                "(this one's reliability is 0: it shows the base rate)")
    if isinstance(p, (int, float)):  # a probability: the idea must be worth taking at its levels
        ratio = s.evidence.get("model_payoff")
        least = c.min_expected
        if least is None:
            pass
        elif isinstance(ratio, (int, float)) and ratio > 0:  # what its kind of setup really paid, wins against losses
            edge = expected_r(float(p), float(ratio))
            if edge <= least:
                return (f"expected value {edge:+.2f} (in average losses) at a {p:.0%} chance, wins paying "
                        f"{ratio:.2f} of a loss")
        else:
            edge = expected_r(float(p), s.risk_reward)
            if edge <= least:
                return f"expected value {edge:+.2f} R at a {p:.0%} chance and R:R {s.risk_reward:.2f}"
    elif s.strategy in c.needs_probability:
        return f"a {s.strategy.replace('_', ' ')} setup is issued only with a model's probability (no model voted)"
    elif isinstance(expected := s.evidence.get("expected_return"), (int, float)):  # a book's record (core.books)
        if expected <= 0:
            return f"expected return {expected:+.2%} after costs: ideas like this lost on average"
    elif s.confidence < c.min_confidence:  # a score, not a probability
        return f"confidence {s.confidence} below {c.min_confidence}"
    if s.position_size <= 0:
        return "no position size (stop at entry)"
    return None


def _conflicts(s: Signal, open_signals: Sequence[Signal]) -> str | None:
    for o in open_signals:
        if o.symbol == s.symbol and o.timeframe == s.timeframe:
            return f"{o.id} is still open on {s.symbol} {s.timeframe}"
        if o.symbol == s.symbol and o.direction != s.direction:
            return f"conflicts with open {o.direction} idea {o.id}"
    return None


def _cooldown(s: Signal, last: Signal | None, c: RiskConfig) -> str | None:
    if last is None:
        return None
    if s.issued_at - last.issued_at < s.timeframe.duration * c.cooldown_bars:
        return f"cooldown: last {s.symbol} {s.timeframe} signal {last.id} is under {c.cooldown_bars} bars old"
    return None


def _exposure(s: Signal, open_signals: Sequence[Signal], c: RiskConfig) -> str | None:
    if len(open_signals) >= c.max_open_total:
        return f"{len(open_signals)} signals open (cap {c.max_open_total})"
    same_class = sum(1 for o in open_signals if o.asset_class == s.asset_class)
    if same_class >= c.max_open_per_asset_class:
        return f"{same_class} {s.asset_class} signals open (cap {c.max_open_per_asset_class})"
    gross = sum(o.position_size for o in open_signals if o.asset_class == s.asset_class)
    if gross + s.position_size > c.max_gross_per_asset_class + 1e-9:
        return (f"{s.asset_class} signals open already suggest {gross:.0%} of equity; this one's {s.position_size:.1%} "
                f"would pass the {c.max_gross_per_asset_class:.0%} gross cap")
    return None
