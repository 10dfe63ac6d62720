"""Ensemble vote: each voter says -1..1 (short..long); weights say how much each counts."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from core.domain import AssetClass, Direction, Timeframe


class Vote(NamedTuple):  # a named tuple: two or more for every bar a scan reads (see core.setups.Evidence)
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
    weights: tuple[tuple[str, float], ...] = (("mean_reversion", 0.7), ("pullback", 0.7), ("trend", 0.3), ("model", 1.0),
                                            ("news", 0.3))
    model_span: float = 0.2  # a probability of break-even +- this is a full vote for / against (model_vote_score)

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


def break_even(payoff: float | None, risk_reward: float | None = None) -> float:
    """The chance of a win at which an idea neither makes nor loses money on average: 1 / (1 + w), w what a win
    pays per loss: the model's training setups' mean win / mean loss (`payoff`) when known, else the idea's R:R,
    else 1 (an even bet: one half)."""
    for ratio in (payoff, risk_reward):
        if ratio is not None and ratio > 0:
            return 1.0 / (1.0 + ratio)
    return 0.5


def model_vote_score(probability: float, side: Direction, span: float, even: float = 0.5) -> float:
    """The model's vote, -1..1: for the setup's side when its probability of a win after costs is above the
    break-even chance `even` (`break_even`), against it below, full at even +- span. A pullback wins 70 % of the
    time with wins that pay about 0.4 of a loss: at 72 % the model hardly backs it, where "above one half" made
    every such call a full vote for."""
    return side.sign * max(-1.0, min(1.0, (probability - even) / span))


def model_confidence(probability: float) -> int:
    """Confidence 1..99 from a calibrated probability: it reads as the chance, in percent, of a win after costs."""
    return max(1, min(99, round(100 * probability)))


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """What a probability model reads about one triggered setup: the bar it is on, the setup's side and
    readings, and the last bars up to and including that bar (at least core.features.bars.BAR_WINDOW)."""

    asset_class: AssetClass
    timeframe: Timeframe
    as_of_ns: int  # the bar's close time, int64 UTC ns
    side: Direction
    setup: tuple[float, float, float, float, float]  # score, strongest core strength, trend score, ADX, volume pct
    window: np.ndarray  # (5, k) open, high, low, close, volume
    symbol: str = ""  # the instrument, for features read per symbol (its sector's strength, its past setups)
    family: str = "mean_reversion"  # the setup family (core.setups.FAMILIES): which scope's model answers


@dataclass(frozen=True, slots=True)
class ModelOpinion:
    probability: float  # calibrated probability that the setup wins after costs
    skill: float = 1.0  # 0..1, the model's tracked out-of-sample skill: it scales the model's vote weight
    base_rate: float | None = None  # the share of winners among the model's training rows (None: unknown)
    reliability: float | None = None  # 0..1, out-of-sample calibration slope (None: the skill stands in)
    payoff: float | None = None  # mean win / mean loss of the model's training setups (None: unknown)

    @property
    def effective_reliability(self) -> float | None:
        """The reliability `honest_probability` applies, 0..1 (None: no base rate, the probability is taken as is)."""
        if self.base_rate is None:
            return None
        return max(0.0, min(1.0, self.skill if self.reliability is None else self.reliability))

    @property
    def honest_probability(self) -> float:
        """The probability the signal shows: the calibrated one shrunk towards the base rate as far as the model's
        out-of-sample calls bore it out (reliability 0: the base rate; 1: the calibrated probability). A calibrator
        fitted on a few hundred rows can say 80 % where an unskilled model's setups win at the base rate."""
        r = self.effective_reliability
        if r is None or self.base_rate is None:
            return self.probability
        return self.base_rate + r * (self.probability - self.base_rate)


@runtime_checkable
class ProbabilityModel(Protocol):
    """A voter that estimates, for each setup, the calibrated probability that it wins after costs (a float, or a
    ModelOpinion that also says how much the model's vote should count; None where it has no opinion, e.g. no
    model for that asset class and timeframe). Called once per scan with every triggered setup of the scan
    (batched inference)."""

    name: str

    def probabilities(self, requests: Sequence[ModelRequest]) -> Sequence[float | ModelOpinion | None]: ...


@dataclass(frozen=True, slots=True)
class NewsOpinion:
    """The news vote about one symbol at one moment, from verdicts on items published at or before it."""

    score: float  # -1 (bearish) .. +1 (bullish), about the instrument, not about the setup's side
    items: int  # company items behind it
    text: str  # a short description naming the evidence
    skill: float = 1.0  # 0..1, the voter's tracked skill: it scales the news vote's weight


@runtime_checkable
class NewsOpinions(Protocol):
    """A news voter for the engine: for each (symbol, as_of) the opinion formed from news published at or
    before as_of only (None: no news about it). Called once per scan with every triggered setup of the scan;
    synchronous (the engine runs off the event loop), so an implementation reads verdicts held in memory."""

    name: str

    def opinions(self, requests: Sequence[tuple[str, datetime]]) -> Sequence[NewsOpinion | None]: ...
