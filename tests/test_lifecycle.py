from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from core.domain import AssetClass, Direction, Signal, SignalStatus, Timeframe
from core.lifecycle import track
from tests.conftest import utc


def signal(direction=Direction.LONG, entry=100.0, target=105.0, stop=97.0, bars=10) -> Signal:
    issued = utc(2024, 1, 2)
    return Signal(id="X-1d-20240102-L", symbol="X", asset_class=AssetClass.EQUITY, timeframe=Timeframe.D1,
                  direction=direction, entry=entry, target=target, stop=stop, confidence=60, position_size=0.05,
                  issued_at=issued, expires_at=issued + timedelta(days=bars), reasoning="", strategy="t")


def frame(rows, start=utc(2024, 1, 2)) -> pd.DataFrame:
    idx = pd.date_range(start, periods=len(rows), freq="1D", name="time")
    return pd.DataFrame(rows, columns=["open", "high", "low", "close"], index=idx).assign(volume=1.0)


def test_fills_at_next_open_and_hits_target():
    s = signal()
    bars = frame([(101, 102, 99, 101), (101, 106, 100, 105)])
    o = track(s, bars)
    assert o is not None and o.status is SignalStatus.TARGET
    assert o.fill_price == 101 and o.exit_price == 105
    assert o.gross_return == pytest.approx(105 / 101 - 1)
    assert o.bars_held == 2


def test_bar_spanning_both_levels_counts_as_stop():
    s = signal()
    o = track(s, frame([(100, 110, 90, 104)]))
    assert o.status is SignalStatus.STOP and o.exit_price == 97


def test_gap_through_stop_exits_at_open():
    s = signal()
    o = track(s, frame([(100, 101, 99, 100), (95, 96, 94, 95)]))
    assert o.status is SignalStatus.STOP and o.exit_price == 95


def test_expiry_exits_at_close_and_costs_are_taken():
    s = signal(bars=3)
    o = track(s, frame([(100, 101, 99, 100), (100, 101, 99, 100.5), (100, 101, 99, 102)]), costs_bps=10)
    assert o.status is SignalStatus.EXPIRED and o.exit_price == 102
    assert o.net_return == pytest.approx(o.gross_return - 0.002)


def test_open_while_no_level_reached_and_bars_before_issue_are_ignored():
    s = signal()
    before = frame([(50, 200, 1, 50)], start=utc(2024, 1, 1))  # would hit both levels, but before the issue
    after = frame([(100, 101, 99, 100)])
    assert track(s, pd.concat([before, after])) is None


def test_short_mirror_and_excursions():
    s = signal(Direction.SHORT, entry=100, target=95, stop=103)
    o = track(s, frame([(100, 102, 98, 99), (99, 99.5, 94, 95)]))
    assert o.status is SignalStatus.TARGET and o.exit_price == 95
    assert o.gross_return == pytest.approx(1 - 95 / 100)
    assert o.mfe == pytest.approx(1 - 94 / 100) and o.mae == pytest.approx(1 - 102 / 100)
