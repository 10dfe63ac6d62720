"""How similar past setups ended: the closed signals nearest to one signal by the evidence stored with them.

No look-ahead: a past signal counts only when it was issued before the signal asked about AND had closed (its
exit time) by the time that signal was issued, so the answer is what could have been known when it went out.

Candidates: the same setup family (strategy), direction and timeframe, on the same symbol or a peer (PeerGroup:
the same sector from the instrument registry, else the same asset class). Nearness: the root mean square of the differences of the setup
features (FEATURES), each divided by a fixed scale. The scales are fixed, not fitted to the stored signals, so
one more stored signal never changes how two others compare. A feature missing on either side is left out; a
candidate sharing fewer than `min_shared` features is not comparable. The `max_neighbours` nearest within
`max_distance` are the similar setups. A hit rate and an average are given only from `min_for_rate` of them up.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from core.domain import AssetClass, Signal, SignalOutcome
from core.instruments.registry import InstrumentRecord


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    path: tuple[str, ...]  # where it sits in Signal.evidence
    scale: float  # a difference of this size counts as 1


FEATURES: tuple[Feature, ...] = (
    Feature("setup_score", ("setup", "score"), 0.25),
    Feature("rsi_14", ("indicators", "rsi_14"), 10.0),
    Feature("zscore_20", ("indicators", "zscore_20"), 0.75),
    Feature("dist_sma20_atr", ("indicators", "dist_sma20_atr"), 0.75),
    Feature("volume_pct_50", ("indicators", "volume_pct_50"), 0.25),
)


@dataclass(frozen=True, slots=True)
class SimilarityConfig:
    max_neighbours: int = 20
    max_distance: float = 1.0
    min_shared: int = 3  # features both signals must have
    min_for_rate: int = 5  # fewer similar setups: no hit rate, no average
    same_timeframe: bool = True


@dataclass(frozen=True, slots=True)
class PeerGroup:
    """The instruments whose setups compare with a symbol's: its sector, else its asset class."""

    symbol: str
    label: str  # e.g. "Information Technology", "crypto"
    symbols: frozenset[str]  # the symbol itself included

    @classmethod
    def of(cls, symbol: str, asset_class: AssetClass, records: Iterable[InstrumentRecord]) -> PeerGroup:
        records = list(records)
        own = next((r for r in records if r.symbol == symbol), None)
        if own is not None and own.sector:
            peers = {r.symbol for r in records if r.sector == own.sector and r.asset_class == own.asset_class}
            return cls(symbol, own.sector, frozenset(peers | {symbol}))
        peers = {r.symbol for r in records if r.asset_class == asset_class}
        return cls(symbol, str(asset_class), frozenset(peers | {symbol}))


@dataclass(frozen=True, slots=True)
class Neighbour:
    signal: Signal
    outcome: SignalOutcome
    distance: float

    @property
    def net_return(self) -> float:
        return self.outcome.net_return


@dataclass(frozen=True, slots=True)
class SimilarSetups:
    signal: Signal
    peers: PeerGroup
    features: Mapping[str, float]  # the asked signal's, those it has
    compared: int  # closed, earlier, comparable candidates (before the distance cut)
    neighbours: tuple[Neighbour, ...]  # nearest first
    min_for_rate: int

    @property
    def count(self) -> int:
        return len(self.neighbours)

    @property
    def enough(self) -> bool:
        return self.count >= self.min_for_rate

    @property
    def wins(self) -> int:
        return sum(1 for n in self.neighbours if n.net_return > 0)

    @property
    def hit_rate(self) -> float | None:
        """Share with net return > 0; None below `min_for_rate` similar setups."""
        return self.wins / self.count if self.enough else None

    @property
    def avg_return(self) -> float | None:
        return statistics.fmean(n.net_return for n in self.neighbours) if self.enough else None

    @property
    def best(self) -> Neighbour | None:
        return max(self.neighbours, key=lambda n: n.net_return, default=None)

    @property
    def worst(self) -> Neighbour | None:
        return min(self.neighbours, key=lambda n: n.net_return, default=None)

    @property
    def same_symbol(self) -> int:
        return sum(1 for n in self.neighbours if n.signal.symbol == self.signal.symbol)


def setup_features(signal: Signal) -> dict[str, float]:
    """The signal's setup features (FEATURES) that its evidence holds as finite numbers."""
    out: dict[str, float] = {}
    for f in FEATURES:
        value: Any = signal.evidence
        for key in f.path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[f.name] = float(value)
    return out


def distance(a: Mapping[str, float], b: Mapping[str, float], min_shared: int = 1) -> float | None:
    """Root mean square of the scaled differences over the features both have; None below `min_shared` of them."""
    diffs = [((a[f.name] - b[f.name]) / f.scale) ** 2 for f in FEATURES if f.name in a and f.name in b]
    if not diffs or len(diffs) < min_shared:
        return None
    return math.sqrt(sum(diffs) / len(diffs))


def known_before(signal: Signal, candidate: Signal, outcome: SignalOutcome) -> bool:
    """Whether `candidate` had been issued and had closed when `signal` was issued."""
    return candidate.id != signal.id and candidate.issued_at < signal.issued_at and outcome.exit_time <= signal.issued_at


def find_similar(signal: Signal, closed: Iterable[tuple[Signal, SignalOutcome]], peers: PeerGroup,
                 config: SimilarityConfig = SimilarityConfig()) -> SimilarSetups:
    """The closed signals in `closed` most like `signal` (see the module's docstring for the rules)."""
    mine = setup_features(signal)
    ranked: list[tuple[float, int, float, str, Neighbour]] = []
    compared = 0
    for cand, outcome in closed:
        if (cand.direction is not signal.direction or cand.strategy != signal.strategy
                or cand.symbol not in peers.symbols
                or (config.same_timeframe and cand.timeframe != signal.timeframe)
                or not known_before(signal, cand, outcome)):
            continue
        d = distance(mine, setup_features(cand), config.min_shared)
        if d is None:
            continue
        compared += 1
        if d <= config.max_distance:
            # nearest first; at equal distance the same symbol, then the more recent
            ranked.append((d, 0 if cand.symbol == signal.symbol else 1, -cand.issued_at.timestamp(), cand.id,
                           Neighbour(cand, outcome, d)))
    ranked.sort(key=lambda r: r[:4])
    neighbours = tuple(r[4] for r in ranked[:config.max_neighbours])
    return SimilarSetups(signal, peers, mine, compared, neighbours, config.min_for_rate)
