"""core.labels: the barrier label exits exactly as core.lifecycle.track exits a signal; forward returns."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.domain import AssetClass, Direction, Signal, SignalStatus, Timeframe
from core.labels import EXPIRED, STOP, TARGET, UNRESOLVED, barrier_labels, expiry_ns, forward_returns, ranking_labels
from core.market_data.resample import index_ns
from core.signals.levels import expiry
from tests.conftest import make_bars

STATUS = {SignalStatus.TARGET: TARGET, SignalStatus.STOP: STOP, SignalStatus.EXPIRED: EXPIRED}


def random_bars(n: int, freq: str, seed: int, start: str = "2020-01-01") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.015, n)))
    opens = np.concatenate([[100.0], closes[:-1] * np.exp(rng.normal(0, 0.006, n - 1))])
    bars = make_bars(closes, start=start, freq=freq, spread=0.008, opens=opens)
    if freq == "B":  # business days: make_bars's date_range gives them with freq B
        assert (bars.index.day_of_week < 5).all()
    return bars


def block(bars: pd.DataFrame) -> np.ndarray:
    return np.ascontiguousarray(bars[["open", "high", "low", "close", "volume"]].to_numpy(dtype=np.float64).T)


@pytest.mark.parametrize(("freq", "tf", "cls"), [("B", Timeframe.D1, AssetClass.EQUITY),
                                                  ("1h", Timeframe.H1, AssetClass.CRYPTO),
                                                  ("4h", Timeframe.H4, AssetClass.CRYPTO)])
def test_barrier_label_equals_the_lifecycle_outcome(freq: str, tf: Timeframe, cls: AssetClass) -> None:
    from core.lifecycle import track

    bars = random_bars(400, freq, seed=3)
    rng = np.random.default_rng(11)
    positions = np.sort(rng.choice(np.arange(30, 399), 120, replace=False))
    side = rng.choice([1.0, -1.0], len(positions))
    close = bars["close"].to_numpy()[positions]
    atr = close * rng.uniform(0.01, 0.03, len(positions))
    target = close + side * atr * rng.uniform(1.0, 3.0, len(positions))
    stop = close - side * atr * 1.25
    labels = barrier_labels(index_ns(bars), block(bars), tf, cls, positions, side, target, stop, costs_bps=10)
    checked = 0
    for k, p in enumerate(positions):
        issued = (bars.index[p] + tf.duration).to_pydatetime()
        d = Direction.LONG if side[k] > 0 else Direction.SHORT
        sig = Signal(id=f"s{k}", symbol="X", asset_class=cls, timeframe=tf, direction=d, entry=close[k],
                     target=target[k], stop=stop[k], confidence=50, position_size=0.01, issued_at=issued,
                     expires_at=expiry(issued, tf, cls), reasoning="", strategy="t")
        outcome = track(sig, bars, costs_bps=10)
        if outcome is None:
            assert labels.status[k] == UNRESOLVED
            continue
        if labels.status[k] == UNRESOLVED:  # the data ends before the expiry bar: the label waits for it
            assert outcome.status is SignalStatus.EXPIRED
            continue
        assert labels.status[k] == STATUS[outcome.status], k
        assert labels.net_return[k] == pytest.approx(outcome.net_return, abs=1e-12)
        assert labels.hit[k] == float(outcome.net_return > 0)
        assert labels.end_ns[k] >= pd.Timestamp(outcome.exit_time).value
        checked += 1
    assert checked > 90
    assert {TARGET, STOP} <= set(labels.status.tolist())


def test_a_bar_spanning_both_levels_is_a_stop_and_a_gap_exits_at_the_open() -> None:
    closes = np.full(30, 100.0)
    bars = make_bars(closes, freq="1h", spread=0.001)
    bars.iloc[21, bars.columns.get_loc("high")] = 110.0  # bar 21 spans both levels
    bars.iloc[21, bars.columns.get_loc("low")] = 90.0
    labels = barrier_labels(index_ns(bars), block(bars), Timeframe.H1, AssetClass.CRYPTO, np.array([20]),
                            np.array([1.0]), np.array([105.0]), np.array([95.0]), costs_bps=0)
    assert labels.status[0] == STOP and labels.net_return[0] == pytest.approx(-0.05)
    gap = make_bars(closes, freq="1h", spread=0.001)
    gap.iloc[22, :4] = [90.0, 91.0, 89.0, 90.5]  # opens below the stop (the fill was bar 21 at 100)
    labels = barrier_labels(index_ns(gap), block(gap), Timeframe.H1, AssetClass.CRYPTO, np.array([20]),
                            np.array([1.0]), np.array([105.0]), np.array([95.0]), costs_bps=0)
    assert labels.status[0] == STOP and labels.net_return[0] == pytest.approx(-0.10)


def test_entry_is_the_next_bars_open_and_costs_come_off_both_sides() -> None:
    closes = np.full(40, 100.0)
    opens = closes.copy()
    opens[11] = 101.0  # the fill
    bars = make_bars(closes, freq="1h", spread=0.001, opens=opens)
    labels = barrier_labels(index_ns(bars), block(bars), Timeframe.H1, AssetClass.CRYPTO, np.array([10]),
                            np.array([1.0]), np.array([150.0]), np.array([50.0]), costs_bps=10)
    assert labels.status[0] == EXPIRED  # 24 bars later, at that bar's close
    assert labels.exit_pos[0] == 10 + 24
    assert labels.net_return[0] == pytest.approx(100.0 / 101.0 - 1 - 0.002)


def test_an_idea_whose_horizon_outlasts_the_data_is_unresolved_unless_it_exited() -> None:
    bars = make_bars(np.full(30, 100.0), freq="1h", spread=0.001)
    labels = barrier_labels(index_ns(bars), block(bars), Timeframe.H1, AssetClass.CRYPTO, np.array([20, 21]),
                            np.array([1.0, 1.0]), np.array([150.0, 100.05]), np.array([50.0, 50.0]), costs_bps=0)
    assert labels.status.tolist() == [UNRESOLVED, TARGET]
    assert np.isnan(labels.net_return[0]) and np.isnan(labels.hit[0])


def test_expiry_matches_levels_expiry() -> None:
    times = pd.date_range("2021-03-01", periods=40, freq="17h", tz="UTC")
    for tf, cls in ((Timeframe.D1, AssetClass.EQUITY), (Timeframe.H4, AssetClass.CRYPTO), (Timeframe.D1, AssetClass.CRYPTO)):
        got = expiry_ns(times.as_unit("ns").asi8, tf, cls)
        want = [pd.Timestamp(expiry(t.to_pydatetime(), tf, cls)).value for t in times]
        assert got.tolist() == want


def test_forward_returns() -> None:
    bars = make_bars(np.arange(1.0, 21.0), freq="1D")
    out = forward_returns(bars["close"].to_numpy(), index_ns(bars), Timeframe.D1, (5,))
    ret, end = out[5]
    assert ret[0] == pytest.approx(6.0 / 1.0 - 1) and np.isnan(ret[-1])
    assert end[0] == pd.Timestamp(bars.index[5] + pd.Timedelta(days=1)).value


def test_ranking_labels_hedge_each_stock_by_its_beta_known_on_the_day():
    rng = np.random.default_rng(5)
    days, horizon = 60, 5
    market = np.cumprod(1 + rng.normal(0.002, 0.01, days))
    beta = np.array([0.5, 1.0, 2.0])
    close = market[:, None] ** beta[None, :]  # stock j is exactly its beta times the market's log move
    close = np.column_stack([close, market * np.cumprod(1 + rng.normal(0, 0.001, days))])
    open_ = close.copy()  # bought at the open = the previous close, so the forward return is close to close
    open_[1:] = close[:-1]
    ns = np.arange(days, dtype=np.int64) * 86_400 * 10**9
    betas = np.tile(np.append(beta, np.nan), (days, 1))
    plain = ranking_labels(open_, close, ns, horizon)
    hedged = ranking_labels(open_, close, ns, horizon, betas)
    ok = slice(0, days - horizon)
    expected_raw = close[horizon:] / open_[1: days - horizon + 1] - 1
    np.testing.assert_allclose(plain.raw[ok], expected_raw)
    mean = np.nanmean(expected_raw, axis=1, keepdims=True)
    np.testing.assert_allclose(plain.residual[ok], expected_raw - mean)
    weights = np.append(beta, 1.0)  # an unknown beta counts as 1: the plain excess over the universe
    np.testing.assert_allclose(hedged.residual[ok], expected_raw - weights * mean)
    assert np.isnan(hedged.label[days - horizon:]).all() and np.isnan(hedged.residual[days - horizon:]).all()
    # in a rising market the high-beta stock beats the low-beta one by its beta alone; hedged, most of that goes
    up = np.flatnonzero(mean[:, 0] > 0.01)
    assert len(up) and (plain.label[up, 2] > plain.label[up, 0]).all()
    gap = lambda r: np.abs(r[ok, 2] - r[ok, 0]).mean()  # noqa: E731
    assert gap(hedged.residual) < 0.5 * gap(plain.residual)
