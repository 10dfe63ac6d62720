"""core.features: causal (row t reads bars <= t only), window-independent, and the vectorised detector equals the
per-bar one."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from core.domain import AssetClass, Direction, Instrument, Timeframe
from core.features.bars import BAR_FEATURES, BAR_WINDOW, bar_features, last_bar_features
from core.features.dataset import Dataset, series_rows
from core.features.regime import REGIME_FEATURES, MarketContext
from core.features.sectors import SECTOR_FEATURES, SectorContext, benchmark_symbol, sector_group
from core.features.sets import FEATURES, model_rows
from core.features.similarity import PRIOR, SIMILARITY_FEATURES, SetupHistory
from core.models.training import SeriesBars, build_datasets
from core.models.voter import FeatureContext
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


def test_vectorised_pullback_readings_equal_the_per_bar_detector() -> None:
    from core.setups.pullback import PullbackDetector
    from core.setups.vectorised import pullback_readings

    bars = walk(700, 12, vol=0.03)
    ind = default_engine().compute(bars)
    cols = {k: ind[k].to_numpy() for k in ind.columns} | {"close": bars["close"].to_numpy()}
    seen = set()
    for cls, short in ((AssetClass.EQUITY, True), (AssetClass.FX, True), (AssetClass.CRYPTO, False)):
        r = pullback_readings(cols, cls, short)
        for t in range(0, 700):
            res = PullbackDetector().evaluate({k: float(v[t]) for k, v in cols.items()}, cls, short)
            assert r.score[t] == pytest.approx(res.score, abs=1e-12)
            assert r.core[t] == pytest.approx(res.evidence[1].strength, abs=1e-12)
            assert bool(r.triggered[t]) == (res.direction is not None)
            if res.direction is not None:
                assert r.sign[t] == res.direction.sign
                seen.add((cls, res.direction))
    assert {(AssetClass.EQUITY, Direction.LONG), (AssetClass.FX, Direction.SHORT)} <= seen


def test_pullback_rows_carry_the_pullback_levels_labels() -> None:
    """A pullback row's label is the exit of a signal at the pullback's own levels (core.labels on
    core.signals.levels.pullback_levels), not the oversold setups' levels."""
    from core.labels import barrier_labels
    from core.signals.levels import pullback_levels

    bars = walk(700, 12, vol=0.03)
    inst = Instrument("X", AssetClass.EQUITY)
    rows = series_rows(inst, Timeframe.D1, bars, default_engine(), MarketContext.empty(), 10, family="pullback")
    assert rows.scope == "pullback-equity-1d" and len(rows) > 20 and rows.triggered.all()
    ind = default_engine().compute(bars)
    opens = index_ns(bars)
    step = 86_400 * 10**9
    for k in range(0, len(rows), 7):
        pos = int(np.searchsorted(opens, rows.decision_ns[k] - step))
        lv = pullback_levels(Direction.LONG, float(bars["close"].iloc[pos]), float(ind["atr_14"].iloc[pos]),
                             float(ind["sma_5"].iloc[pos]))
        assert lv is not None
        one = barrier_labels(opens, block(bars), Timeframe.D1, AssetClass.EQUITY, np.array([pos]), np.array([1.0]),
                             np.array([lv.target]), np.array([lv.stop]), 10)
        assert one.net_return[0] == pytest.approx(rows.net_return[k], abs=1e-12)


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


# --- fs-2: sector relative strength and historical similarity ------------------------------------------------

def _sector_example() -> tuple[dict[str, pd.Series], dict[str, str], dict[str, pd.Series]]:
    """Two tech stocks (A +1 %/day, B flat), a flat SPX; two crypto pairs (BTC +0.5 %/day, ETH +1.5 %/day) and
    one FX pair."""
    days = 100
    t = np.arange(days, dtype=np.float64)
    idx = pd.date_range("2020-01-01", periods=days, freq="D", tz="UTC")
    closes = {"A": pd.Series(100 * 1.01 ** t, idx), "B": pd.Series(np.full(days, 50.0), idx),
              "BTC-USDT": pd.Series(100 * 1.005 ** t, idx), "ETH-USDT": pd.Series(10 * 1.015 ** t, idx),
              "EURUSD": pd.Series(1.1 * 1.001 ** t, idx)}
    groups = {"A": sector_group("A", AssetClass.EQUITY, "Tech"), "B": sector_group("B", AssetClass.EQUITY, "Tech"),
              "BTC-USDT": sector_group("BTC-USDT", AssetClass.CRYPTO), "ETH-USDT": sector_group("ETH-USDT", AssetClass.CRYPTO),
              "EURUSD": sector_group("EURUSD", AssetClass.FX)}
    benchmarks = {"equity:Tech": pd.Series(np.full(days, 3000.0), idx),
                  "crypto": closes[str(benchmark_symbol("crypto", list(closes)))]}
    return closes, groups, benchmarks


def test_sector_relative_strength_on_a_hand_made_example() -> None:
    closes, groups, benchmarks = _sector_example()
    assert groups["A"] == "equity:Tech" and groups["ETH-USDT"] == "crypto" and groups["EURUSD"] == "fx"
    assert sector_group("AAPL", AssetClass.EQUITY) == "equity:Information Technology"  # from the registry
    assert benchmark_symbol("crypto", list(closes)) == "BTC-USDT" and benchmark_symbol("fx", list(closes)) is None
    ctx = SectorContext.build(closes, groups, benchmarks)
    day = closes["A"].index[80]
    usable = np.array([(day + pd.Timedelta(days=1)).value] * 5)  # day 80's row, from its close on
    f = ctx.at_ns(["A", "B", "BTC-USDT", "ETH-USDT", "EURUSD"], usable)
    tech = {n: (1 + (0.01 + 0.0) / 2) ** n - 1 for n in (20, 60)}  # equal weight: +0.5 %/day
    np.testing.assert_allclose(f[0], [tech[20] - 0.0, tech[60] - 0.0, 1.01 ** 20 - 1 - tech[20]], rtol=1e-9)
    np.testing.assert_allclose(f[1], [tech[20], tech[60], 0.0 - tech[20]], rtol=1e-9)
    alts = {n: (1 + (0.005 + 0.015) / 2) ** n - 1 for n in (20, 60)}  # crypto: +1 %/day against BTC's +0.5 %
    np.testing.assert_allclose(f[2], [alts[20] - (1.005 ** 20 - 1), alts[60] - (1.005 ** 60 - 1),
                                      1.005 ** 20 - 1 - alts[20]], rtol=1e-9)
    np.testing.assert_allclose(f[3, 2], 1.015 ** 20 - 1 - alts[20], rtol=1e-9)
    assert np.isnan(f[4, :2]).all() and f[4, 2] == pytest.approx(0.0, abs=1e-12)  # FX: no benchmark, its own group
    before = ctx.at_ns(["A"], np.array([day.value + 86_400 * 10**9 - 1]))  # a moment before day 80 closes: day 79
    assert before[0, 2] == pytest.approx(f[0, 2], rel=1e-9)  # constant growth: the same value, but day 79's row
    assert np.isnan(ctx.at_ns(["A"], np.array([closes["A"].index[10].value]))).all()  # 20 days not yet there
    assert np.isnan(ctx.at_ns(["ZZZ"], usable[:1])).all()  # an unknown symbol
    stale = np.array([(closes["A"].index[-1] + pd.Timedelta(days=30)).value])
    assert np.isnan(ctx.at_ns(["A"], stale)).all()
    # the side orients it: a long setup in a lagging sector reads like a short one in a leading sector
    row = model_rows(np.array([-1.0]), np.zeros((1, 5)), np.zeros((1, len(BAR_FEATURES))),
                     np.zeros((1, len(REGIME_FEATURES))), f[:1])[0]
    cols = [FEATURES.index(n) for n in SECTOR_FEATURES]
    np.testing.assert_allclose(row[cols], -f[0])


def test_sector_strength_reads_no_later_day() -> None:
    rng = np.random.default_rng(11)
    idx = pd.date_range("2020-01-01", periods=300, freq="D", tz="UTC")
    closes = {f"S{k}": pd.Series(50 * np.exp(np.cumsum(rng.normal(0, 0.02, 300))), idx) for k in range(6)}
    groups = {s: sector_group(s, AssetClass.EQUITY, "Tech" if k < 3 else "Energy") for k, s in enumerate(closes)}
    spx = pd.Series(3000 * np.exp(np.cumsum(rng.normal(0, 0.01, 300))), idx)
    full = SectorContext.build(closes, groups, {g: spx for g in set(groups.values())})
    cut_day = idx[200]
    early = SectorContext.build({s: c[c.index <= cut_day] for s, c in closes.items()}, groups,
                                {g: spx[spx.index <= cut_day] for g in set(groups.values())})
    times = np.array([d.value + h * 3_600 * 10**9 for d in idx[60:202] for h in (0, 13)])
    syms = np.array([f"S{k % 6}" for k in range(len(times))], dtype=object)
    np.testing.assert_array_equal(full.at_ns(syms, times), early.at_ns(syms, times))
    np.testing.assert_array_equal(full.cut(cut_day.value + 86_400 * 10**9).at_ns(syms, times), full.at_ns(syms, times))
    assert not np.isnan(full.at_ns(syms, times)[-10:]).any()


def _history_rows(score: list[float], hit: list[float], ret: list[float], known: list[int], symbol: list[str],
                  group: list[str]) -> SetupHistory:
    x = np.zeros((len(score), len(FEATURES)))
    x[:, FEATURES.index("setup_score")] = score
    return SetupHistory.of(x, np.array(hit), np.array(ret), np.array(known, dtype=np.int64),
                           np.array(known, dtype=np.int64) - 5, np.array(symbol, dtype=object),
                           np.array(group, dtype=object))


def _query(table: SetupHistory, t: int, score: float = 0.7, symbol: str = "A", group: str = "g1") -> np.ndarray:
    x = np.zeros((1, len(FEATURES)))
    x[0, FEATURES.index("setup_score")] = score
    return table.features(x, np.array([t]), [symbol], [group])[0]


def test_similarity_reads_only_setups_resolved_by_the_decision_and_shrinks_to_the_base_rate() -> None:
    names = list(SIMILARITY_FEATURES)
    table = _history_rows([0.7, 0.7, 0.7, 0.7, 0.7, 0.7], [1, 1, 0, 0, 0, 0], [0.02, 0.02, -0.01, -0.01, -0.01, -0.05],
                          [10, 20, 10, 10, 10, 31], ["A", "A", "C", "C", "C", "A"], ["g1", "g1", "g2", "g2", "g2", "g1"])
    f = dict(zip(names, _query(table, 30), strict=True))
    base_hit, base_ret = 2 / 5, (0.04 - 0.03) / 5  # the five setups known by t = 30 (A's third ends at 31)
    symbol_hit = (2 + PRIOR * base_hit) / (2 + PRIOR)  # A's two neighbours, shrunk toward the base
    assert f["sim_symbol_hit"] == pytest.approx(symbol_hit - base_hit)  # features: how much better than the base
    assert f["sim_symbol_return"] == pytest.approx((0.04 + PRIOR * base_ret) / (2 + PRIOR) - base_ret)
    assert f["sim_peer_hit"] == pytest.approx(symbol_hit - base_hit)  # g1 holds only A's two
    # the setup resolved after the decision is invisible: changing its outcome changes nothing
    other = _history_rows([0.7] * 6, [1, 1, 0, 0, 0, 1], [0.02, 0.02, -0.01, -0.01, -0.01, 0.3],
                          [10, 20, 10, 10, 10, 31], ["A", "A", "C", "C", "C", "A"], ["g1", "g1", "g2", "g2", "g2", "g1"])
    np.testing.assert_array_equal(_query(other, 30), _query(table, 30))
    assert not np.array_equal(_query(other, 31), _query(table, 31))  # known at 31: usable from 31 on
    base_31 = 2 / 6
    assert _query(table, 31)[names.index("sim_symbol_hit")] == pytest.approx((2 + PRIOR * base_31) / 13 - base_31)
    alone = dict(zip(names, _query(table, 15, symbol="NEW", group="g3"), strict=True))  # nothing of its own
    assert alone["sim_symbol_hit"] == 0.0 and alone["sim_peer_return"] == 0.0  # no neighbours: the base itself
    assert np.isnan(_query(table, 5)).all()  # nothing resolved yet


def test_similarity_takes_the_nearest_past_setups() -> None:
    near, far = 20, 15
    table = _history_rows([0.7] * near + [0.95] * far, [1.0] * near + [0.0] * far, [0.01] * near + [-0.01] * far,
                          list(range(1, near + far + 1)), ["A"] * (near + far), ["g1"] * (near + far))
    f = dict(zip(SIMILARITY_FEATURES, _query(table, 100, score=0.7), strict=True))
    base = near / (near + far)
    assert f["sim_symbol_hit"] == pytest.approx((near + PRIOR * base) / (near + PRIOR) - base)  # the K = 20 like it won
    g = dict(zip(SIMILARITY_FEATURES, _query(table, 100, score=0.95), strict=True))
    assert g["sim_symbol_hit"] == pytest.approx((0 + 5 + PRIOR * base) / (20 + PRIOR) - base)  # 15 losers + 5 winners


def _universe(n: int = 4, days: int = 700) -> list[SeriesBars]:
    out = []
    for k in range(n):
        bars = walk(days, 40 + k, vol=0.03)
        out.append(SeriesBars(Instrument(f"S{k}", AssetClass.EQUITY, sector="Tech" if k % 2 else "Energy"),
                              Timeframe.D1, bars))
    return out


def _datasets(series: list[SeriesBars], spx: pd.DataFrame) -> dict[str, Dataset]:
    import asyncio

    from core.backtest.market import FrameMarket
    from core.models.training import sector_context_from

    market = FrameMarket([Instrument("SPX", AssetClass.INDEX)], {("SPX", Timeframe.D1): spx})
    end = series[0].bars.index[-1].to_pydatetime() + pd.Timedelta(days=1)
    ctx = MarketContext.build(spx, None, {s.instrument.symbol: s.bars["close"] for s in series})
    sectors = asyncio.run(sector_context_from(None, series, end, market))
    return build_datasets(series, default_engine(), ctx, 10, sectors=sectors)


def test_fs2_rows_before_a_date_do_not_change_when_later_bars_are_added() -> None:
    series, spx = _universe(), walk(900, 50, freq="B")
    spx = spx[spx.index <= series[0].bars.index[-1]]
    full = _datasets(series, spx)["equity-1d"]
    cut_at = series[0].bars.index[450]
    early = _datasets([SeriesBars(s.instrument, s.timeframe, s.bars[s.bars.index <= cut_at]) for s in series],
                      spx[spx.index <= cut_at])["equity-1d"]
    assert len(early) > 100 and set(early.group) == {"equity:Tech", "equity:Energy"}
    key = {(s, int(t)): i for i, (s, t) in enumerate(zip(full.symbol, full.decision_ns, strict=True))}
    rows = [key[(s, int(t))] for s, t in zip(early.symbol, early.decision_ns, strict=True)]
    np.testing.assert_allclose(full.features[rows], early.features, rtol=1e-9, atol=1e-12)
    sim = [FEATURES.index(n) for n in SIMILARITY_FEATURES]
    assert np.isfinite(early.features[:, sim]).mean() > 0.9
    assert np.isfinite(early.features[:, [FEATURES.index(n) for n in SECTOR_FEATURES]]).mean() > 0.9
    assert (early.outcome_ns <= early.end_ns).all() and (early.outcome_ns > early.decision_ns).all()


def test_the_voter_computes_the_features_training_computed() -> None:
    import asyncio

    from core.backtest.market import FrameMarket
    from core.features.dataset import setup_history
    from core.models.training import sector_context_from

    series, spx = _universe(3, 500), walk(700, 51, freq="B")
    datasets = _datasets(series, spx)
    data = datasets["equity-1d"]
    market = FrameMarket([Instrument("SPX", AssetClass.INDEX)], {("SPX", Timeframe.D1): spx})
    end = series[0].bars.index[-1].to_pydatetime() + pd.Timedelta(days=1)
    ctx = FeatureContext(MarketContext.build(spx, None, {s.instrument.symbol: s.bars["close"] for s in series}),
                         asyncio.run(sector_context_from(None, series, end, market)),
                         {scope: setup_history(d) for scope, d in datasets.items()})
    assert_voter_rows_equal_training_rows(series, data, ctx)
    pullbacks = datasets["pullback-equity-1d"]  # the second family: its own rows, its own requests
    assert len(pullbacks) > 20 and pullbacks.triggered.all()
    assert_voter_rows_equal_training_rows(series, pullbacks, ctx, min_pairs=3)


def assert_voter_rows_equal_training_rows(series: list[SeriesBars], data: Dataset, ctx: FeatureContext,
                                          min_pairs: int = 20) -> None:
    """The engine scans the last 60 bars of every series; the rows its model voter reads (from `ctx`) about the
    setups of `data`'s family equal the training rows of the same bars in `data`."""
    from core.models.voter import request_features
    from core.signals.engine import SignalEngine

    class Recorder:
        name = "model"

        def __init__(self) -> None:
            self.requests: list = []

        def probabilities(self, requests):
            self.requests += list(requests)
            return [None] * len(requests)

    recorder = Recorder()
    engine = SignalEngine(default_engine(), model=recorder)
    for s in series:
        engine.analyse_recent(s.instrument, s.timeframe, s.bars, len(s.bars) - 60)
    from core.features.dataset import scope_of

    requests = [r for r in recorder.requests if scope_of(r.asset_class, r.timeframe, r.family) == data.scope]
    x = request_features(requests, ctx)
    key = {(s, int(t)): i for i, (s, t) in enumerate(zip(data.symbol, data.decision_ns, strict=True))}
    pairs = [(j, key[(r.symbol, r.as_of_ns)]) for j, r in enumerate(requests) if (r.symbol, r.as_of_ns) in key]
    assert len(pairs) > min_pairs
    np.testing.assert_allclose(x[[j for j, _ in pairs]], data.features[[i for _, i in pairs]], rtol=1e-9, atol=1e-12)
