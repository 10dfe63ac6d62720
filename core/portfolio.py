"""The paper portfolio: the signals a subscriber said they took, followed at the suggested size from the fill they
got (the market when the signal reached them) to the signal's own exit or their close at market. Pure.

Returns are direction-adjusted and after `costs_bps` a side, like the track record's; a position's contribution is
its size (the signal's suggested fraction of equity) times its return, and the portfolio's P&L is the sum of the
contributions, in % of the equity the sizes refer to. An open position is marked at the latest close.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from core.domain import Decision, Direction, Feedback, Signal, SignalOutcome


@dataclass(frozen=True, slots=True)
class PaperPosition:
    signal: Signal
    size: float  # fraction of equity
    fill_price: float
    fill_at: datetime
    exit_price: float | None  # None: open and no price to mark it at
    exit_at: datetime | None  # None while open
    how: str  # "open", "closed by you", or the signal's exit: "target", "stop", "expired", "exit"
    net_return: float | None  # direction-adjusted, after costs on both sides (open: as if closed at the mark)

    @property
    def open(self) -> bool:
        return self.exit_at is None

    @property
    def contribution(self) -> float:
        return 0.0 if self.net_return is None else self.size * self.net_return


@dataclass(frozen=True, slots=True)
class PaperPortfolio:
    positions: tuple[PaperPosition, ...]
    skipped: int

    @property
    def open_positions(self) -> tuple[PaperPosition, ...]:
        return tuple(p for p in self.positions if p.open)

    @property
    def closed_positions(self) -> tuple[PaperPosition, ...]:
        return tuple(p for p in self.positions if not p.open)

    @property
    def realised(self) -> float:
        return sum(p.contribution for p in self.closed_positions)

    @property
    def unrealised(self) -> float:
        return sum(p.contribution for p in self.open_positions)

    @property
    def exposure(self) -> float:
        """Gross open size, fraction of equity."""
        return sum(p.size for p in self.open_positions)

    @property
    def wins(self) -> int:
        return sum(1 for p in self.closed_positions if (p.net_return or 0.0) > 0)


def net_return(direction: Direction, fill: float, exit_price: float, costs_bps: float) -> float:
    return direction.sign * (exit_price / fill - 1.0) - 2.0 * costs_bps / 10_000.0


def paper_portfolio(feedback: Sequence[Feedback], signals: Mapping[str, Signal],
                    outcomes: Mapping[str, SignalOutcome], marks: Mapping[str, float], *,
                    costs_bps: float) -> PaperPortfolio:
    """The portfolio from the user's records. `signals` and `outcomes` by signal id (a signal without an outcome
    is open); `marks` the latest close by symbol (for open positions)."""
    positions: list[PaperPosition] = []
    skipped = 0
    for fb in feedback:
        if fb.decision is Decision.SKIPPED:
            skipped += 1
            continue
        signal = signals.get(fb.signal_id)
        if signal is None or fb.fill_price is None or fb.fill_at is None or fb.fill_price <= 0:
            continue
        outcome = outcomes.get(fb.signal_id)
        exit_price: float | None
        exit_at: datetime | None
        if fb.closed_price is not None and fb.closed_at is not None and (
                outcome is None or fb.closed_at <= outcome.exit_time):
            exit_price, exit_at, how = fb.closed_price, fb.closed_at, "closed by you"
        elif outcome is not None:
            exit_price, exit_at, how = outcome.exit_price, max(outcome.exit_time, fb.fill_at), outcome.status.value
        else:
            exit_price, exit_at, how = marks.get(signal.symbol), None, "open"
        ret = None if exit_price is None else net_return(signal.direction, fb.fill_price, exit_price, costs_bps)
        positions.append(PaperPosition(signal, signal.position_size, fb.fill_price, fb.fill_at, exit_price, exit_at,
                                       how, ret))
    return PaperPortfolio(tuple(positions), skipped)
