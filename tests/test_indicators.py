"""The indicator catalogue, the TA-Lib engine against pandas-ta, causality, incremental updates, and
multi-timeframe alignment without look-ahead."""
from __future__ import annotations

import asyncio
import warnings
from collections import Counter
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.domain import AssetClass, Instrument, Timeframe
from core.indicators import CORE_COLUMNS, derived_columns
from core.indicators.catalogue import CATALOGUE, Family, core_indicators, output_columns
from core.indicators.multi_timeframe import align_higher, closed_by
from core.indicators.pandas_ta_engine import PandasTaEngine
from core.indicators.talib_engine import TalibEngine, rolling_rank_pct, rolling_std
from core.market_data import CsvMarketData, default_data_dir
from core.signals.engine import SignalEngine
from tests.conftest import make_bars

ENGINE = TalibEngine()


# -- real data (skipped without ../shared/data) --------------------------------------------------------


@pytest.fixture(scope="module")
def real() -> dict[str, pd.DataFrame]:
    """A few real instruments: two equities (daily), crypto on 1h (last 3,000 bars), 4h and 1d."""
    data = default_data_dir()
    equities = sorted((data / "equities").glob("*.csv*")) if (data / "equities").is_dir() else []
    if not equities or not (data / "crypto").is_dir():
        pytest.skip(f"shared data not found at {data} (set SIGNALS_DATA_DIR)")
    stocks, crypto = CsvMarketData(equities[0]), CsvMarketData(data / "crypto")

    async def load() -> dict[str, pd.DataFrame]:
        end = pd.Timestamp("2100-01-01", tz="UTC")
        return {
            "AAPL 1d": await stocks.get_bars("AAPL", Timeframe.D1, end=end),
            "XOM 1d": await stocks.get_bars("XOM", Timeframe.D1, end=end),
            "BTC-USDT 1h": await crypto.get_bars("BTC-USDT", Timeframe.H1, end=end, limit=3000),
            "ETH-USDT 4h": await crypto.get_bars("ETH-USDT", Timeframe.H4, end=end),
            "DOGE-USDT 1d": await crypto.get_bars("DOGE-USDT", Timeframe.D1, end=end),
        }

    return asyncio.run(load())


def random_walk(n: int = 400, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    closes = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    opens = np.concatenate([[closes[0]], closes[:-1]]) * (1 + rng.normal(0, 0.004, n))
    bars = make_bars(closes, opens=opens, spread=0.01, volume=rng.lognormal(12, 0.5, n))
    if n > 60:
        bars.iloc[50:53, bars.columns.get_loc("volume")] = bars["volume"].iloc[49]  # ties in the volume rank
    return bars


# -- the catalogue -----------------------------------------------------------------------------------------


def test_catalogue_has_more_than_fifty_indicators_in_five_families():
    assert len(CATALOGUE) >= 55
    per_family = Counter(i.family for i in CATALOGUE)
    assert set(per_family) == set(Family)
    assert per_family[Family.CANDLESTICK] >= 8
    assert all(per_family[f] >= 5 for f in Family), per_family
    for ind in CATALOGUE:
        assert ind.name and ind.outputs and ind.description
        assert isinstance(ind.params, dict)
        assert (ind.talib is None) != (ind.kernel is None)
    columns = output_columns(full=True)
    assert len(columns) == len(set(columns)) == sum(len(i.outputs) for i in CATALOGUE)
    assert columns[: len(CORE_COLUMNS)] == CORE_COLUMNS
    assert sorted(c for i in core_indicators() for c in i.outputs) == sorted(CORE_COLUMNS)


def test_engine_returns_the_catalogue_columns():
    bars = random_walk()
    assert tuple(ENGINE.compute(bars).columns) == CORE_COLUMNS
    full = ENGINE.compute(bars, full=True)
    assert tuple(full.columns) == output_columns(full=True)
    assert full.index.equals(bars.index) and (full.dtypes == "float64").all()
    assert full.iloc[-1].notna().all(), full.columns[full.iloc[-1].isna()].tolist()
    patterns = full[[c for c in full.columns if c.startswith("cdl_")]]
    assert set(np.unique(patterns.to_numpy())) <= {-200.0, -100.0, 0.0, 100.0, 200.0}


# -- equal to pandas-ta --------------------------------------------------------------------------------------


def test_core_columns_equal_pandas_ta_engine_on_real_data(real):
    """Equal to 1e-9; the z-score to 1e-7 because pandas' online rolling variance drifts on long series
    (8e-9 after 7,800 ETH 4h bars) where ours is two-pass per window (checked against long doubles below)."""
    reference = PandasTaEngine()
    for name, bars in real.items():
        for window in (bars, bars.iloc[-300:]):  # all history, and the window the signal path reads
            ours, theirs = ENGINE.compute(window), reference.compute(window)
            assert list(ours.columns) == list(theirs.columns)
            rest = [c for c in CORE_COLUMNS if c != "zscore_20"]
            pd.testing.assert_frame_equal(ours[rest], theirs[rest], check_exact=False, rtol=1e-9, atol=1e-12, obj=name)
            pd.testing.assert_series_equal(ours["zscore_20"], theirs["zscore_20"], check_exact=False, rtol=1e-7,
                                           atol=1e-9, obj=name)


def test_rolling_std_is_exact_where_pandas_drifts(real):
    close = real["ETH-USDT 4h"]["close"].to_numpy()
    windows = np.lib.stride_tricks.sliding_window_view(close.astype(np.longdouble), 20)
    exact = np.sqrt(((windows - windows.mean(axis=1)[:, None]) ** 2).mean(axis=1)).astype(float)
    np.testing.assert_allclose(rolling_std(close, 20)[19:], exact, rtol=1e-14)


def test_numpy_columns_equal_derived_columns_on_random_data():
    """The numpy versions of core.indicators.derived_columns (what PandasTaEngine uses), short and long."""
    for n, seed in ((15, 1), (60, 2), (400, 3)):
        bars = random_walk(n, seed)
        ours = ENGINE.compute(bars)
        expected = ours[["sma_20", "atr_14"]].copy()
        derived_columns(bars, expected)
        cols = ["zscore_20", "dist_sma20_atr", "volume_pct_50", "gap", "ret_1", "ret_5"]
        pd.testing.assert_frame_equal(ours[cols], expected[cols], check_exact=False, rtol=1e-9, atol=1e-12)


def test_rolling_helpers_match_pandas_edge_cases():
    x = np.array([5.0, 5.0, 5.0, 5.0, 5.0, 6.0, 6.0, 4.0, np.nan, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0])
    expected = pd.Series(x).rolling(4).std(ddof=0).to_numpy()
    np.testing.assert_allclose(rolling_std(x, 4), expected, rtol=1e-12, equal_nan=True)
    assert rolling_std(np.full(30, 0.1), 20)[-1] == 0.0  # a constant window is exactly flat, as in pandas
    for start in range(len(x)):
        np.testing.assert_array_equal(rolling_std(x, 4, start), rolling_std(x, 4)[start:])
    ranks = pd.Series(x).rolling(6, min_periods=3).rank(pct=True).to_numpy()
    np.testing.assert_allclose(rolling_rank_pct(x, 6, 3), ranks, rtol=1e-12, equal_nan=True)


def test_flat_band_gives_nan_percent_b_where_pandas_ta_gives_epsilon_arithmetic():
    bars = make_bars(np.full(40, 10.0), spread=0.0)
    out = ENGINE.compute(bars)
    assert np.isnan(out["bb_pctb"].iloc[-1]) and np.isnan(out["zscore_20"].iloc[-1])


def test_catalogue_equals_its_pandas_ta_reference(real):
    ta = pytest.importorskip("pandas_ta")
    checked = 0
    for name in ("AAPL 1d", "BTC-USDT 1h"):
        bars = real[name]
        ours = ENGINE.compute(bars, full=True)
        for ind in CATALOGUE:
            ref = ind.reference
            if ref is None or ref.match == "none":
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = getattr(ta, ref.function)(*[bars[c] for c in ref.inputs], **ref.kwargs)
            for column, prefix in ref.columns.items():
                theirs = _reference_column(result, prefix).to_numpy(dtype=float)
                mine = ours[column].to_numpy()
                if ref.match == "tail":  # equal once the warm-up has passed
                    mine, theirs = mine[len(mine) // 2:], theirs[len(theirs) // 2:]
                np.testing.assert_allclose(mine, theirs, rtol=ref.rtol, atol=1e-9, equal_nan=True,
                                           err_msg=f"{ind.name}.{column} on {name}")
                checked += 1
    assert checked >= 2 * 60


def _reference_column(result: pd.Series | pd.DataFrame, prefix: str) -> pd.Series:
    if isinstance(result, pd.Series):
        return result
    matches = [c for c in result.columns if str(c).startswith(prefix)]
    assert len(matches) == 1, (prefix, list(result.columns))
    return result[matches[0]]


# -- causality, the tail, the universe -----------------------------------------------------------------------


@pytest.mark.parametrize("full", [False, True])
def test_rows_are_causal(full, real):
    bars = real["ETH-USDT 4h"].iloc[-700:]
    whole = ENGINE.compute(bars, full=full)
    for k in (1, 14, 20, 33, 34, 60, 199, 200, 201, 450, 699):
        pd.testing.assert_frame_equal(ENGINE.compute(bars.iloc[:k], full=full), whole.iloc[:k], check_exact=True)


def test_rows_are_causal_on_synthetic_data():
    bars = random_walk(260)
    whole = ENGINE.compute(bars, full=True)
    for k in (5, 19, 21, 50, 259):
        pd.testing.assert_frame_equal(ENGINE.compute(bars.iloc[:k], full=True), whole.iloc[:k], check_exact=True)


@pytest.mark.parametrize("full", [False, True])
def test_compute_last_is_the_tail_of_compute(full):
    bars = random_walk(320)
    whole = ENGINE.compute(bars, full=full)
    for n in (1, 2, 5, 49, 320, 400):
        pd.testing.assert_frame_equal(ENGINE.compute_last(bars, n, full=full), whole.iloc[-n:], check_exact=True)
    short = bars.iloc[:3]
    pd.testing.assert_frame_equal(ENGINE.compute_last(short, 1), ENGINE.compute(short).iloc[-1:], check_exact=True)


def test_compute_universe_is_compute_per_instrument():
    frames = {"A": random_walk(300, 1), "B": random_walk(120, 2), "C": random_walk(10, 3)}
    out = ENGINE.compute_universe(frames)
    assert list(out) == list(frames)
    for key, bars in frames.items():
        pd.testing.assert_frame_equal(out[key], ENGINE.compute(bars), check_exact=True)


# -- incremental updates --------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", [300, 40, None])
def test_update_last_equals_a_full_recompute(window):
    bars = random_walk(420)
    state = ENGINE.start(bars.iloc[:250], window=window)
    for k in range(250, len(bars)):  # 170 updates: the buffer is trimmed several times
        row = ENGINE.update_last(state, bars.iloc[k])
        lo = 0 if window is None else max(0, k + 1 - window)
        expected = ENGINE.compute(bars.iloc[lo: k + 1]).iloc[-1]
        pd.testing.assert_series_equal(row, expected, check_exact=True)
    assert state.last is row
    held = bars.iloc[-(window or len(bars)):]
    pd.testing.assert_frame_equal(state.bars(), held.set_axis(held.index.as_unit("ns")), check_freq=False)


def test_update_last_with_the_full_catalogue_and_from_nothing():
    bars = random_walk(80)
    state = ENGINE.start(bars.iloc[:0], window=None, full=True)
    assert state.last is None
    for k in range(80):
        row = ENGINE.update_last(state, bars.iloc[k: k + 1])  # a one-row frame works as well as a row
    pd.testing.assert_series_equal(row, ENGINE.compute(bars, full=True).iloc[-1], check_exact=True)


def test_update_last_row_is_what_the_signal_engine_reads(real):
    """The signal path reads `lookback` bars; a state with that window gives the same indicator values."""
    bars = real["AAPL 1d"]
    engine = SignalEngine(ENGINE)
    lookback = engine.config.lookback
    state = ENGINE.start(bars.iloc[:-3], window=lookback)
    for k in range(len(bars) - 3, len(bars)):
        row = ENGINE.update_last(state, bars.iloc[k])
        analysis = engine.analyse(Instrument("AAPL", AssetClass.EQUITY), Timeframe.D1, bars.iloc[: k + 1])
        assert {c: analysis.snapshot[c] for c in CORE_COLUMNS} == pytest.approx(row.to_dict(), rel=0, abs=0, nan_ok=True)


def test_update_last_replaces_a_corrected_bar_and_refuses_an_older_one():
    bars = random_walk(100)
    state = ENGINE.start(bars, window=50)
    fixed = bars.iloc[-1].copy()
    fixed["close"] *= 1.01
    row = ENGINE.update_last(state, fixed)
    expected_bars = bars.copy()
    expected_bars.iloc[-1] = fixed
    pd.testing.assert_series_equal(row, ENGINE.compute(expected_bars.iloc[-50:]).iloc[-1], check_exact=True)
    with pytest.raises(ValueError, match="older"):
        ENGINE.update_last(state, bars.iloc[-2])
    naive = bars.iloc[-1].copy()
    naive.name = pd.Timestamp("2030-01-01")
    with pytest.raises(ValueError, match="tz-aware"):
        ENGINE.update_last(state, naive)


# -- multi-timeframe alignment ----------------------------------------------------------------------------------


def _hours(start: str, n: int) -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq="1h", tz="UTC", name="time")


def test_hourly_bars_see_a_daily_bar_only_from_its_close():
    daily = pd.DataFrame({"trend": [1.0, 2.0, 3.0]}, index=pd.date_range("2024-01-01", periods=3, freq="1D", tz="UTC"))
    hours = _hours("2024-01-01 00:00", 72)
    out = align_higher(hours, daily, Timeframe.D1, Timeframe.H1, prefix="d1_", source_column="d1_time")
    assert list(out.columns) == ["d1_trend", "d1_time"]
    by_hour = out["d1_trend"]
    assert by_hour.iloc[:23].isna().all()  # 00:00 .. 22:00 of day one close before the day does
    assert by_hour.iloc[23] == 1.0  # 23:00-24:00 closes with the day
    assert by_hour.loc["2024-01-02 22:00"] == 1.0 and by_hour.loc["2024-01-02 23:00"] == 2.0
    assert out["d1_time"].loc["2024-01-03 05:00"] == pd.Timestamp("2024-01-02", tz="UTC")
    # without the lower timeframe, the index values are the moments of decision
    moments = align_higher(pd.DatetimeIndex([pd.Timestamp("2024-01-02 00:00", tz="UTC")]), daily, Timeframe.D1)
    assert moments["trend"].iloc[0] == 1.0


def test_alignment_never_reads_a_bar_that_closes_later_on_real_data(real):
    hourly = real["BTC-USDT 1h"]
    daily = ENGINE.compute(real["DOGE-USDT 1d"])[["rsi_14", "ema_50"]]  # any daily frame will do
    out = align_higher(hourly.index, daily, Timeframe.D1, Timeframe.H1, source_column="daily_open")
    used = out["daily_open"].dropna()
    assert (used + timedelta(days=1) <= used.index + timedelta(hours=1)).all()
    assert (used.index + timedelta(hours=1) - (used + timedelta(days=1)) < timedelta(days=1)).all()  # the newest
    as_of = hourly.index[1500] + timedelta(hours=1)
    known = closed_by(daily, Timeframe.D1, as_of)
    early = align_higher(hourly.index[:1501], known, Timeframe.D1, Timeframe.H1)
    pd.testing.assert_frame_equal(early, out[["rsi_14", "ema_50"]].iloc[:1501])


_TF = st.sampled_from([Timeframe.M15, Timeframe.H1, Timeframe.H4, Timeframe.D1])


@settings(max_examples=200, deadline=None)
@given(
    lower_tf=_TF, higher_tf=_TF,
    lower_slots=st.lists(st.integers(0, 400), min_size=1, max_size=60, unique=True),
    higher_slots=st.lists(st.integers(0, 60), max_size=25, unique=True),
    offset_minutes=st.integers(0, 24 * 60 - 1),
)
def test_alignment_picks_the_newest_higher_bar_closed_by_each_lower_close(lower_tf, higher_tf, lower_slots,
                                                                          higher_slots, offset_minutes):
    base = pd.Timestamp("2024-03-01", tz="UTC")
    lower = pd.DatetimeIndex(sorted(base + pd.Timedelta(minutes=offset_minutes) + k * lower_tf.duration for k in lower_slots))
    higher_times = pd.DatetimeIndex(sorted(base + k * higher_tf.duration for k in higher_slots), tz="UTC")
    higher = pd.DataFrame({"v": np.arange(len(higher_times), dtype=float)}, index=higher_times)
    out = align_higher(lower, higher, higher_tf, lower_tf, source_column="src")
    for t, got in zip(lower, out["src"], strict=True):
        lower_close = t + lower_tf.duration
        closed = [h for h in higher_times if h + higher_tf.duration <= lower_close]
        if closed:
            assert got == max(closed)
        else:
            assert pd.isna(got)
    # no look-ahead: dropping the higher bars that close after a moment changes no row decided by then
    if len(lower):
        moment = lower[len(lower) // 2] + lower_tf.duration
        early = align_higher(lower, closed_by(higher, higher_tf, moment), higher_tf, lower_tf)
        decided = lower + lower_tf.duration <= moment
        pd.testing.assert_frame_equal(early[decided], out[["v"]][decided])


def test_alignment_rejects_naive_times_and_duplicates():
    daily = pd.DataFrame({"v": [1.0]}, index=pd.DatetimeIndex([pd.Timestamp("2024-01-01", tz="UTC")]))
    with pytest.raises(ValueError, match="tz-aware"):
        align_higher(pd.DatetimeIndex([pd.Timestamp("2024-01-02")]), daily, Timeframe.D1, Timeframe.H1)
    with pytest.raises(ValueError, match="duplicate"):
        align_higher(_hours("2024-01-01", 3), pd.concat([daily, daily]), Timeframe.D1, Timeframe.H1)
