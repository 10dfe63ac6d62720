"""Validation of incoming bars (each problem repaired or rejected, logged, reported) and the shared
retry policy."""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.domain import BAR_COLUMNS, AssetClass, Timeframe
from core.errors import DataValidationError, MarketDataError
from core.market_data.retry import ProviderRequestError, ProviderUnavailableError, RateLimitedError, RetryPolicy, error_for_status
from core.resilience import parse_retry_after
from core.market_data.validation import DataRejectedError, require_valid, validate_bars
from tests.conftest import make_bars

UTC = timezone.utc


def walk(n: int, seed: int = 0, freq: str = "1h", start: str = "2024-01-01", volume: float = 1e6) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return make_bars(100 * np.exp(np.cumsum(rng.normal(0, 0.01, n))), start=start, freq=freq, volume=volume)


def set_value(frame: pd.DataFrame, row: int, column: str, value: float) -> None:
    frame.iloc[row, frame.columns.get_loc(column)] = value


def test_clean_bars_pass_untouched(caplog: pytest.LogCaptureFixture) -> None:
    bars = walk(300)
    with caplog.at_level(logging.WARNING):
        clean, report = validate_bars(bars, symbol="X", timeframe=Timeframe.H1, asset_class=AssetClass.CRYPTO)
    assert report.clean and not report.rejected and report.rows_in == report.rows_out == 300
    pd.testing.assert_frame_equal(clean, bars, check_freq=False, check_index_type=False)
    assert not caplog.records


def test_each_problem_is_repaired_or_dropped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    bars = walk(300)
    set_value(bars, 40, "high", max(bars["open"].iloc[40], bars["close"].iloc[40]) * 0.999)  # a little low: repaired
    set_value(bars, 41, "high", bars["close"].iloc[41] * 0.5)  # far under: dropped
    set_value(bars, 50, "low", -1.0)  # non-positive: dropped
    set_value(bars, 60, "close", np.nan)  # missing: dropped
    set_value(bars, 70, "volume", np.nan)  # volume missing: set to 0
    spike = bars["close"].iloc[150] * 1.6
    set_value(bars, 150, "close", spike)
    set_value(bars, 150, "high", spike)  # an outlier tick that reverts next bar: dropped
    bars = pd.concat([bars, bars.iloc[[10]].assign(close=bars["close"].iloc[10])]).sort_index(kind="stable")
    bars = bars.drop(bars.index[200:204])  # an outage: reported, not filled
    with caplog.at_level(logging.WARNING, logger="core.market_data.validation"):
        clean, report = validate_bars(bars, symbol="X", timeframe=Timeframe.H1, asset_class=AssetClass.CRYPTO)
    actions = {(i.check, i.action): i.count for i in report.issues}
    assert actions == {
        ("missing values", "dropped"): 1, ("missing volume", "repaired"): 1, ("duplicate", "repaired"): 1,
        ("non-positive", "dropped"): 1, ("inconsistent OHLC", "repaired"): 1, ("inconsistent OHLC", "dropped"): 1,
        ("outlier tick", "dropped"): 1, ("gap", "reported"): 8,
    }
    assert not report.rejected and report.rows_out == len(clean) == 301 - 4 - 1 - 4
    assert len(caplog.records) == len(report.issues)  # nothing silent
    assert clean.index.is_unique and clean.index.is_monotonic_increasing
    assert (clean["high"] >= clean[["open", "close"]].max(axis=1)).all()
    assert (clean[["open", "high", "low", "close"]] > 0).all().all()
    assert not clean.isna().any().any()
    gap = next(i for i in report.issues if i.check == "gap")
    assert gap.times[0] == bars.index[199] + timedelta(hours=1) or gap.count == 8
    assert "outlier tick" in report.summary()


def test_unsorted_bars_are_sorted() -> None:
    bars = walk(30)
    clean, report = validate_bars(bars.iloc[::-1], symbol="X", timeframe=Timeframe.H1)
    assert report.count("unsorted") == 1 and clean.index.is_monotonic_increasing


@pytest.mark.parametrize("ratio", [0.5, 1 / 3, 2.0, 0.25])
def test_unadjusted_split_is_rejected(ratio: float) -> None:
    bars = walk(120, freq="1D", start="2017-01-02")
    after = bars.index >= bars.index[80]
    bars.loc[after, ["open", "high", "low", "close"]] *= ratio
    with pytest.raises(DataRejectedError) as err:
        require_valid(bars, symbol="X", timeframe=Timeframe.D1, asset_class=AssetClass.EQUITY)
    report = err.value.report
    assert report.rejected and report.rows_out == 0 and report.count("split jump") == 1
    assert "split" in str(err.value)
    clean, _ = validate_bars(bars, symbol="X", timeframe=Timeframe.D1, asset_class=AssetClass.EQUITY)
    assert clean.empty  # nothing of a rejected series is handed on


def test_a_halving_on_heavy_volume_is_news_not_a_split() -> None:
    bars = walk(120, freq="1D", start="2017-01-02")
    bars.loc[bars.index >= bars.index[80], ["open", "high", "low", "close"]] *= 0.5
    set_value(bars, 80, "volume", 2e7)
    clean, report = validate_bars(bars, symbol="X", timeframe=Timeframe.D1, asset_class=AssetClass.EQUITY)
    assert not report.rejected and len(clean) == 120
    crypto = walk(120, freq="1D")
    crypto.loc[crypto.index >= crypto.index[80], ["open", "high", "low", "close"]] *= 0.5
    assert not validate_bars(crypto, symbol="Y", timeframe=Timeframe.D1, asset_class=AssetClass.CRYPTO)[1].rejected


def test_equity_gaps_follow_the_exchange_calendar() -> None:
    days = pd.bdate_range("2024-05-20", "2024-06-07", tz="UTC", name="time")  # includes Memorial Day 05-27
    bars = make_bars(np.linspace(100, 110, len(days)), start="2024-05-20", freq="1D").iloc[: len(days)]
    bars.index = days
    bars = bars.drop(pd.Timestamp("2024-05-27", tz="UTC"))  # the holiday: not a gap
    _, report = validate_bars(bars, symbol="X", timeframe=Timeframe.D1, asset_class=AssetClass.EQUITY)
    assert report.count("gap") == 0
    _, report = validate_bars(bars.drop(pd.Timestamp("2024-05-29", tz="UTC")), symbol="X", timeframe=Timeframe.D1,
                              asset_class=AssetClass.EQUITY)
    assert report.count("gap") == 1


def test_structural_problems_raise() -> None:
    bars = walk(10)
    with pytest.raises(DataValidationError, match="lack column"):
        validate_bars(bars.drop(columns="close"), symbol="X", timeframe=Timeframe.H1)
    with pytest.raises(DataValidationError, match="tz-aware"):
        validate_bars(bars.tz_localize(None), symbol="X", timeframe=Timeframe.H1)
    with pytest.raises(DataValidationError, match="non-numeric"):
        validate_bars(bars.assign(open="x"), symbol="X", timeframe=Timeframe.H1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.floats(-10, 1000) | st.just(float("nan")), st.floats(0, 50),
                          st.floats(0, 50), st.floats(-5, 1e6) | st.just(float("nan"))), min_size=0, max_size=80))
def test_validated_bars_always_meet_the_bar_conventions(rows: list[tuple[int, float, float, float, float]]) -> None:
    times = pd.DatetimeIndex([pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(hours=h) for h, *_ in rows],
                             dtype="datetime64[ns, UTC]", name="time")
    closes = [c for _, c, *_ in rows]
    frame = pd.DataFrame({"open": [c + u for (_, c, u, _, _) in rows], "high": [c + u + 1 for (_, c, u, _, _) in rows],
                          "low": [c - d for (_, c, _, d, _) in rows], "close": closes,
                          "volume": [v for *_, v in rows]}, index=times, dtype=float)
    clean, report = validate_bars(frame, symbol="H", timeframe=Timeframe.H1, asset_class=AssetClass.CRYPTO)
    assert list(clean.columns) == list(BAR_COLUMNS)
    assert clean.index.is_unique and clean.index.is_monotonic_increasing and str(clean.index.tz) == "UTC"
    assert np.isfinite(clean.to_numpy()).all()
    assert (clean[["open", "high", "low", "close"]] > 0).all().all() and (clean["volume"] >= 0).all()
    assert (clean["high"] >= clean[["open", "close"]].max(axis=1)).all()
    assert (clean["low"] <= clean[["open", "close"]].min(axis=1)).all()
    assert report.rows_out == len(clean) <= report.rows_in == len(rows)


# -- retry policy ---------------------------------------------------------------------------------------


def test_parse_retry_after() -> None:
    now = datetime(2024, 6, 1, 12, tzinfo=UTC)
    assert parse_retry_after("3") == 3.0 and parse_retry_after("0.5") == 0.5
    assert parse_retry_after("Sat, 01 Jun 2024 12:00:07 GMT", now) == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None and parse_retry_after("") is None


def test_status_classification() -> None:
    assert isinstance(error_for_status(429, "x", "2"), RateLimitedError)
    assert error_for_status(429, "x", "2").retry_after == 2.0  # type: ignore[attr-defined]
    assert isinstance(error_for_status(503, "x"), ProviderUnavailableError)
    assert isinstance(error_for_status(404, "x"), ProviderRequestError)


def test_policy_retries_transient_errors_only() -> None:
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    policy = RetryPolicy(max_attempts=3, base_delay=0.1, max_delay=0.15, jitter=0.0, max_retry_after=5, sleep=sleep)
    calls = {"n": 0}

    async def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise ProviderUnavailableError("503")
        return "ok"

    assert asyncio.run(policy.run(flaky)) == "ok" and slept == [0.1, 0.15]

    async def rate_limited() -> None:
        raise RateLimitedError("429", retry_after=2.0)

    slept.clear()
    with pytest.raises(RateLimitedError):
        asyncio.run(policy.run(rate_limited))
    assert slept == [2.0, 2.0]  # Retry-After honoured, tries bounded

    async def too_long() -> None:
        raise RateLimitedError("429", retry_after=60.0)

    slept.clear()
    with pytest.raises(RateLimitedError):
        asyncio.run(policy.run(too_long))
    assert slept == []  # longer than max_retry_after: fail now, let the router fail over

    for permanent in (DataValidationError("bad json"), ProviderRequestError("400"), MarketDataError("x")):
        async def fail(exc: Exception = permanent) -> None:
            raise exc

        with pytest.raises(type(permanent)):
            asyncio.run(policy.run(fail))
    assert slept == []
