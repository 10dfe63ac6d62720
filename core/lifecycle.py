"""Following an issued signal on the OHLC path: fill at the next bar's open, then target, stop or expiry.

Rules (conservative, so the track record is never flattered):
- the fill is the open of the first bar that opens at or after the signal was issued;
- a bar whose range spans both stop and target counts as a stop;
- a bar that opens beyond a level exits at that open (a gap through the stop costs more than the stop);
- expiry exits at the close of the first bar that closes at or after `expires_at`;
- an exit decided by the strategy's rule at a bar close (`exit_at`, core.books: the trend turned, the name fell
  out of the ranking) exits at the open of the first bar that opens at or after it, unless a level or the
  expiry closed the signal first;
- costs (bps per side) are taken from the return.
Stateless: the outcome is recomputed from the bars since issue, so a restart loses nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from core.domain import Direction, Signal, SignalOutcome, SignalStatus


@dataclass(frozen=True, slots=True)
class Excursion:
    mfe: float
    mae: float


def track(signal: Signal, bars: pd.DataFrame, costs_bps: float = 0.0,
          exit_at: datetime | None = None) -> SignalOutcome | None:
    """The outcome of `signal` on `bars` (any bars; those before the issue are ignored), or None while open.
    `exit_at`: when the strategy's rule decided to close it (a bar close after the issue), if it did."""
    after = bars[bars.index >= signal.issued_at]
    if after.empty:
        return None
    fill_time = pd.Timestamp(after.index[0])
    fill = float(after["open"].iloc[0])
    duration = signal.timeframe.duration
    d = signal.direction
    for i, t in enumerate(pd.DatetimeIndex(after.index)):
        bar = after.iloc[i]
        if exit_at is not None and i > 0 and t >= exit_at:  # the rule's exit fills at this bar's open
            held = after.iloc[:i]
            return _outcome(signal, SignalStatus.EXIT, fill, fill_time, float(bar["open"]), t, held, i, costs_bps)
        exit_ = _exit_on_bar(signal, bar, d)
        if exit_ is None and t + duration >= signal.expires_at:
            exit_ = (SignalStatus.EXPIRED, float(bar["close"]))
        if exit_ is not None:
            status, price = exit_
            held = after.iloc[: i + 1]
            return _outcome(signal, status, fill, fill_time, price, t + duration, held, i + 1, costs_bps)
    return None


def _exit_on_bar(s: Signal, bar: pd.Series, d: Direction) -> tuple[SignalStatus, float] | None:
    o, h, lo = float(bar["open"]), float(bar["high"]), float(bar["low"])
    if d is Direction.LONG:
        if lo <= s.stop:
            return SignalStatus.STOP, min(o, s.stop)
        if h >= s.target:
            return SignalStatus.TARGET, max(o, s.target)
    else:
        if h >= s.stop:
            return SignalStatus.STOP, max(o, s.stop)
        if lo <= s.target:
            return SignalStatus.TARGET, min(o, s.target)
    return None


def _outcome(s: Signal, status: SignalStatus, fill: float, fill_time: pd.Timestamp, price: float,
             exit_time: pd.Timestamp, held: pd.DataFrame, bars_held: int, costs_bps: float) -> SignalOutcome:
    sign = s.direction.sign
    gross = sign * (price / fill - 1.0)
    cost = 2 * costs_bps / 10_000
    exc = excursion(s.direction, fill, held)
    return SignalOutcome(
        signal_id=s.id, status=status, fill_price=fill, fill_time=fill_time.to_pydatetime(),
        exit_price=price, exit_time=exit_time.to_pydatetime(), gross_return=gross, net_return=gross - cost,
        mfe=exc.mfe, mae=exc.mae, bars_held=bars_held,
    )


def excursion(direction: Direction, fill: float, held: pd.DataFrame) -> Excursion:
    """Best and worst move in the trade's favour while held, as fractions of the fill."""
    hi, lo = float(held["high"].max()), float(held["low"].min())
    if direction is Direction.LONG:
        return Excursion(max(0.0, hi / fill - 1.0), min(0.0, lo / fill - 1.0))
    return Excursion(max(0.0, 1.0 - lo / fill), min(0.0, 1.0 - hi / fill))


HORIZON_SLACK = 4
"""Bars read per tracking pass, as a multiple of the horizon: enough to span weekends and holidays
(the tracker reads further back when that does not reach the signal's own bar)."""
