"""core.features: causal (row t reads bars <= t only), window-independent, and the vectorised detector equals the
per-bar one."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from core.domain import AssetClass, Direction, Instrument, Timeframe
from core.features.bars import BAR_FEATURES, BAR_WINDOW, bar_features, last_bar_features
from core.features.dataset import series_rows
from core.features.regime import REGIME_FEATURES, MarketContext
from core.features.sets import FEATURES, model_rows
from core.indicators import default_engine
from core.market_data.resample import index_ns
from core.setups.oversold import OversoldDetector
from core.setups.trend import trend_reading
from core.setups.vectorised import side_readings, trend_scores
from tests.conftest import make_bars


def walk(n: int, seed: int, freq: str = "B", vol: float = 0.02) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    closes = 50 * np.exp(np.cumsum(rng.normal(0, vol, n)))
    opens = np.concatenate([[50.0], closes[:-1] * np.exp(rng.normal(0, vol / 3, n - 1))])
    volume = rng.lognormal(13, 0.5, n)
    return make_bars(closes, start="2015-01-01", freq=freq, spread=0.01, volume=volume, opens=opens)


def block(bars: pd.DataFrame) -> np.ndarray:
    return np.ascontiguousarray(bars[["open", "high", "low", "close", "volume"]].to_numpy(dtype=np.float64).T)


def test_bar_features_do_not_change_when_later_bars_are_appended() -> None:
    b = block(walk(300, 1))
    full = bar_features(b)
    for cut in (25, 100, 299):
        np.testing.assert_array_equal(bar_features(b[:, :cut]), full[:cut])


def test_bar_features_of_a_row_need_only_the_last_bar_window_bars() -> None:
    b = block(walk(300, 2))
    full = bar_features(b)
    for t in (BAR_WINDOW - 1, 60, 299):
        window = b[:, t + 1 - BAR_WINDOW: t + 1]
        np.testing.assert_array_equal(bar_features(window)[-1], full[t])
    assert not np.isnan(full[BAR_WINDOW - 1:]).any()
    ends = (BAR_WINDOW - 1, 60, 299)
    windows = np.stack([b[:, t + 1 - BAR_WINDOW: t + 1] for t in ends], axis=1)  # a scan's batch of setups
    np.testing.assert_array_equal(last_bar_features(windows), full[list(ends)])


def test_bar_features_values() -> None:
    bars = walk(80, 3)
    f = pd.DataFrame(bar_features(block(bars)), columns=list(BAR_FEATURES), index=bars.index)
    c, o, h, lo, v = (bars[k] for k in ("close", "open", "high", "low", "volume"))
    t = 50
    assert f["ret_5"].iloc[t] == pytest.approx(c.iloc[t] / c.iloc[t - 5] - 1)
    assert f["gap"].iloc[t] == pytest.approx(o.iloc[t] / c.iloc[t - 1] - 1)
    assert f["close_to_low"].iloc[t] == pytest.approx((c.iloc[t] - lo.iloc[t]) / (h.iloc[t] - lo.iloc[t]))
    assert f["volume_ratio_20"].iloc[t] == pytest.approx(v.iloc[t] / v.iloc[t - 20: t].mean())
    assert f["rvol_20"].iloc[t] == pytest.approx(np.log(c / c.shift(1)).iloc[t - 19: t + 1].std(ddof=0))
    gk = 0.5 * np.log(h / lo) ** 2 - (2 * math.log(2) - 1) * np.log(c / o) ** 2
    assert f["gk_vol_20"].iloc[t] == pytest.approx(math.sqrt(gk.iloc[t - 19: t + 1].mean()))
    up = block(make_bars(np.arange(1.0, 40.0)))
    assert bar_features(up)[-1][BAR_FEATURES.index("rsi_14c")] == 100.0


def test_market_context_reads_only_days_closed_by_the_time_asked() -> None:
    spx, vix = walk(400, 4, freq="D"), walk(400, 5, freq="D")
    closes = {f"S{i}": walk(400, 10 + i, freq="D")["close"] for i in range(5)}
    full = MarketContext.build(spx, vix, closes)
    day = spx.index[300]
    cut = {k: s[s.index <= day] for k, s in closes.items()}
    early = MarketContext.build(spx[spx.index <= day], vix[vix.index <= day], cut)
    asked = np.array([(day + pd.Timedelta(hours=h)).value for h in (0, 23, 24, 30)])
    np.testing.assert_array_equal(full.at_ns(asked), early.at_ns(asked))
    rows = full.at_ns(asked)
    np.testing.assert_array_equal(rows[0], rows[1])  # day D's row is usable only from its close, D+1 00:00
    assert not np.array_equal(rows[1], rows[2])
    assert not np.isnan(full.at_ns(asked[-1:])).any()
    assert np.isnan(MarketContext.empty().at_ns(asked)).all() and full.values.shape[1] == len(REGIME_FEATURES)
    stale = np.array([(spx.index[-1] + pd.Timedelta(days=30)).value])
    assert np.isnan(full.at_ns(stale)).all()  # a source that ended says nothing about a month later


def test_training_rows_before_t_do_not_change_when_bars_after_t_are_appended() -> None:
    bars = walk(700, 6, vol=0.03)
    inst = Instrument("X", AssetClass.EQUITY)
    ctx = MarketContext.build(walk(900, 7, freq="D"), walk(900, 8, freq="D"))
    full = series_rows(inst, Timeframe.D1, bars, default_engine(), ctx, 10)
    cut_at = bars.index[500]
    early = series_rows(inst, Timeframe.D1, bars[bars.index <= cut_at], default_engine(), ctx.cut(cut_at.value + 86_400 * 10**9), 10)
    assert len(early) > 20
    same = full.subset(np.isin(full.decision_ns, early.decision_ns))
    assert len(same) == len(early)  # every early row is a row of the full history too
    np.testing.assert_allclose(same.features, early.features, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(same.hit, early.hit)  # resolved labels are final


def test_vectorised_detector_and_trend_equal_the_per_bar_ones() -> None:
    bars = walk(500, 9, vol=0.035)
    ind = default_engine().compute(bars)
    cols = {k: ind[k].to_numpy() for k in ind.columns} | {"close": bars["close"].to_numpy()}
    for cls, short in ((AssetClass.EQUITY, True), (AssetClass.CRYPTO, False)):
        r = side_readings(cols, cls, short)
        trend = trend_scores(cols)
        for t in range(60, 500):
            snap = {k: float(v[t]) for k, v in cols.items()}
            res = OversoldDetector().evaluate(snap, cls, short)
            assert r.score[t] == pytest.approx(res.score, abs=1e-12)
            assert bool(r.triggered[t]) == (res.direction is not None)
            if res.direction is not None:
                assert r.sign[t] == res.direction.sign
            assert trend[t] == pytest.approx(trend_reading(snap).score, abs=1e-12)
    assert r.triggered.any() or side_readings(cols, AssetClass.EQUITY, True).triggered.any()


def test_features_are_oriented_to_the_side() -> None:
    bars = np.zeros((1, len(BAR_FEATURES)))
    bars[0, BAR_FEATURES.index("ret_5")] = -0.04
    bars[0, BAR_FEATURES.index("rsi_14c")] = 25.0
    bars[0, BAR_FEATURES.index("rvol_20")] = 0.02
    bars[0, BAR_FEATURES.index("bb_pos_20")] = 0.1
    bars[0, BAR_FEATURES.index("close_to_low")] = 0.3
    setup = np.array([[0.8, 1.0, 0.5, 20.0, 0.9]])
    long = model_rows(np.array([Direction.LONG.sign]), setup, bars, np.zeros((1, len(REGIME_FEATURES))))[0]
    mirrored = bars.copy()
    mirrored[0, BAR_FEATURES.index("ret_5")] = 0.04
    mirrored[0, BAR_FEATURES.index("rsi_14c")] = 75.0
    mirrored[0, BAR_FEATURES.index("bb_pos_20")] = 0.9
    mirrored[0, BAR_FEATURES.index("close_to_low")] = 0.7
    short = model_rows(np.array([Direction.SHORT.sign]), setup * [1, 1, -1, 1, 1], mirrored,
                       np.zeros((1, len(REGIME_FEATURES))))[0]
    assert long.shape == (len(FEATURES),)
    np.testing.assert_allclose(long[1:], short[1:])  # everything but the side itself reads the same
    assert long[0] == 1.0 and short[0] == -1.0
