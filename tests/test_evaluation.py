"""core.backtest.evaluation: hedged alpha, deflated Sharpe, ex-ante regimes, yearly table, rank IC, turnover."""
from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats

from core.backtest.evaluation import (deflated_sharpe, excess_vs, expected_max_sharpe, hedged_alpha, newey_west_t,
                                      probabilistic_sharpe, rank_ic, regime_table, sharpe, trailing_vol,
                                      trend_labels, turnover_stats, volatility_labels, yearly_table)

PPY = 252
RNG = np.random.default_rng(7)
BENCH = RNG.normal(0.0004, 0.01, 500)


def days(n: int, start: date = date(2020, 1, 1)) -> list[date]:
    return [start + timedelta(days=i) for i in range(n)]


# --- hedged alpha ------------------------------------------------------------------------------------------------

def test_half_benchmark_plus_constant_gives_beta_half_and_the_constant_as_alpha():
    noise = np.random.default_rng(1).normal(0, 1e-4, len(BENCH))
    h = hedged_alpha(0.5 * BENCH + 0.0004 + noise, BENCH, 0.0, PPY)
    assert h is not None
    assert h.beta == pytest.approx(0.5, abs=0.01)
    assert h.alpha_annual == pytest.approx(0.0004 * PPY, abs=0.01)
    assert h.information_ratio is not None and h.information_ratio > 30
    assert h.alpha_t is not None and h.alpha_t > 50
    assert h.periods == len(BENCH)
    exact = hedged_alpha(0.5 * BENCH + 0.0004, BENCH, 0.0, PPY)
    assert exact is not None
    assert exact.beta == pytest.approx(0.5, abs=1e-12)
    assert exact.alpha_annual == pytest.approx(0.0004 * PPY, abs=1e-12)
    assert exact.correlation == pytest.approx(1.0)


def test_copy_of_benchmark_has_no_alpha_and_beta_one():
    h = hedged_alpha(BENCH, BENCH, 0.0001, PPY)
    assert h is not None
    assert h.beta == pytest.approx(1.0, abs=1e-12)
    assert h.alpha_annual == pytest.approx(0.0, abs=1e-12)
    assert h.tracking_error == pytest.approx(0.0, abs=1e-12)


def test_hedged_reference_uses_one_minus_beta_times_cash():
    cash = np.full(len(BENCH), 0.0002)
    r = 0.5 * BENCH + 0.5 * cash + 0.001  # = reference(beta 0.5) + 0.001
    h = hedged_alpha(r, BENCH, cash, PPY)
    assert h is not None
    assert h.beta == pytest.approx(0.5, abs=1e-12)
    assert h.alpha_annual == pytest.approx(0.001 * PPY, abs=1e-10)
    # The plain (no-cash) regression would credit the strategy with the (1-beta)*cash carry as alpha.
    plain = hedged_alpha(r, BENCH, 0.0, PPY)
    assert plain is not None and plain.alpha_annual == pytest.approx(0.0011 * PPY, abs=1e-10)


def test_small_example_by_hand_with_varying_cash():
    r = np.array([0.020, -0.010, 0.015, 0.003, -0.004])
    b = np.array([0.010, -0.020, 0.030, 0.000, -0.010])
    c = np.array([0.001, 0.001, 0.002, 0.002, 0.000])
    beta = np.polyfit(b - c, r - c, 1)[0]
    active = r - (beta * b + (1 - beta) * c)
    h = hedged_alpha(r, b, c, 12)
    assert h is not None
    assert h.beta == pytest.approx(beta)
    assert h.alpha_annual == pytest.approx(active.mean() * 12)
    assert h.tracking_error == pytest.approx(active.std(ddof=1) * math.sqrt(12))
    assert h.information_ratio == pytest.approx(h.alpha_annual / h.tracking_error)
    assert h.alpha_t == pytest.approx(stats.ttest_1samp(active, 0.0).statistic)
    assert h.correlation == pytest.approx(np.corrcoef(r - c, b - c)[0, 1])


def test_hedged_alpha_none_and_errors():
    assert hedged_alpha([0.01, 0.02], [0.01, 0.03], 0.0, PPY) is None
    assert hedged_alpha([0.01, 0.02, 0.0], [0.01, 0.01, 0.01], 0.0, PPY) is None
    with pytest.raises(ValueError, match="misaligned"):
        hedged_alpha([0.01, 0.02, 0.0], [0.01, 0.01], 0.0, PPY)
    with pytest.raises(ValueError, match="NaN"):
        hedged_alpha([0.01, np.nan, 0.0], [0.01, 0.02, 0.0], 0.0, PPY)


@settings(max_examples=60, deadline=None)
@given(a=st.floats(-0.01, 0.01), b=st.floats(-3.0, 3.0), c=st.floats(0.0, 0.001))
def test_property_linear_returns_recover_beta_and_alpha(a, b, c):
    h = hedged_alpha(c + a + b * (BENCH - c), BENCH, c, PPY)
    assert h is not None
    assert h.beta == pytest.approx(b, abs=1e-9)
    assert h.alpha_annual == pytest.approx(a * PPY, abs=1e-8)


def test_excess_vs():
    e = excess_vs(BENCH + 0.0001, BENCH, PPY)
    assert e is not None
    assert e.excess_annual == pytest.approx(0.0001 * PPY)
    assert e.tracking_error == pytest.approx(0.0, abs=1e-12)
    r = 0.5 * BENCH
    e2 = excess_vs(r, BENCH, PPY)
    assert e2 is not None
    assert e2.excess_annual == pytest.approx(-0.5 * BENCH.mean() * PPY)
    assert e2.information_ratio == pytest.approx(e2.excess_annual / (0.5 * BENCH.std(ddof=1) * math.sqrt(PPY)))
    assert excess_vs([0.1], [0.0], PPY) is None


# --- Sharpe, PSR, DSR --------------------------------------------------------------------------------------------

def test_sharpe():
    r = np.array([0.01, -0.005, 0.02, 0.0])
    assert sharpe(r, 252) == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252))
    assert sharpe([0.01, 0.01, 0.01], 252) is None
    assert sharpe([0.01], 252) is None


RETS = np.random.default_rng(3).standard_t(5, 300) * 0.01 + 0.001


def test_deflated_sharpe_falls_with_trials_and_equals_psr_at_one():
    probs = [deflated_sharpe(RETS, n, PPY).probability for n in (1, 2, 10, 100, 1000)]
    assert all(x > y for x, y in zip(probs, probs[1:]))
    d1 = deflated_sharpe(RETS, 1, PPY)
    assert d1.probability == pytest.approx(probabilistic_sharpe(RETS))
    assert d1.expected_max_sharpe_annual == 0.0
    maxes = [deflated_sharpe(RETS, n, PPY).expected_max_sharpe_annual for n in (2, 10, 100)]
    assert 0 < maxes[0] < maxes[1] < maxes[2]


def test_deflated_sharpe_matches_hand_computation():
    r = np.array([0.02, -0.01, 0.03, 0.005, -0.02, 0.015, 0.01, -0.005, 0.025, 0.0])
    n, trials = len(r), 20
    sr = r.mean() / r.std(ddof=1)
    d = r - r.mean()
    m2, m3, m4 = (d ** 2).mean(), (d ** 3).mean(), (d ** 4).mean()
    g3, g4 = m3 / m2 ** 1.5, m4 / m2 ** 2
    var_sr = (1 - g3 * sr + (g4 - 1) / 4 * sr ** 2)
    gamma = 0.5772156649015329
    sr0 = math.sqrt(var_sr / (n - 1)) * ((1 - gamma) * stats.norm.ppf(1 - 1 / trials)
                                         + gamma * stats.norm.ppf(1 - 1 / (trials * math.e)))
    expected = stats.norm.cdf((sr - sr0) * math.sqrt(n - 1) / math.sqrt(var_sr))
    out = deflated_sharpe(r, trials, 52)
    assert out.probability == pytest.approx(expected, rel=1e-10)
    assert out.expected_max_sharpe_annual == pytest.approx(sr0 * math.sqrt(52))
    assert out.sharpe_annual == pytest.approx(sr * math.sqrt(52))
    assert (out.skew, out.kurtosis, out.observations, out.trials) == (pytest.approx(g3), pytest.approx(g4), n, 20)
    # with a measured spread of the trials' per-period Sharpe ratios
    sr0_given = 0.1 * ((1 - gamma) * stats.norm.ppf(1 - 1 / trials) + gamma * stats.norm.ppf(1 - 1 / (trials * math.e)))
    given_sd = deflated_sharpe(r, trials, 52, trial_sharpe_std=0.1)
    assert given_sd.probability == pytest.approx(
        stats.norm.cdf((sr - sr0_given) * math.sqrt(n - 1) / math.sqrt(var_sr)), rel=1e-10)
    assert expected_max_sharpe(trials, 0.01) == pytest.approx(sr0_given)


def test_psr_against_a_higher_benchmark_is_lower():
    assert probabilistic_sharpe(RETS, 0.2) < probabilistic_sharpe(RETS, 0.0) < 1.0


def test_deflated_sharpe_validates():
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="trials must be an integer >= 1"):
            deflated_sharpe(RETS, bad, PPY)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="trial_sharpe_std"):
        deflated_sharpe(RETS, 5, PPY, trial_sharpe_std=-0.1)
    with pytest.raises(ValueError, match="vary"):
        deflated_sharpe([0.01] * 10, 5, PPY)


# --- regimes -----------------------------------------------------------------------------------------------------

def test_trend_change_is_seen_the_day_after_the_close_that_makes_it():
    all_days = days(30)
    closes = pd.Series([100.0] * 20 + [101.0 + i for i in range(10)], index=all_days)
    labels = trend_labels(all_days, closes, window=5)
    assert labels[:5] == ["unknown"] * 5  # day 5 is the first with 5 closes before it
    assert labels[5:21] == ["down"] * 16  # day 20 closes higher, but its own close is not known ex ante
    assert labels[21:] == ["up"] * 9


def test_volatility_jump_is_seen_only_after_it_happened():
    all_days = days(40)
    rets = np.r_[np.tile([0.001, -0.001], 10), np.tile([0.03, -0.03], 10)]  # jump in vol on day 20's return
    closes = pd.Series(100 * np.cumprod(np.r_[1.0, 1 + rets[1:]]), index=all_days)
    vol = trailing_vol(all_days, closes, window=3)
    assert np.isnan(vol[:4]).all() and not np.isnan(vol[4:]).any()
    assert vol[20] < 0.01 < vol[21]  # the first big return (day 20's close) enters day 21's trailing vol


def test_labels_for_days_up_to_k_ignore_everything_from_day_k_on():
    n, k = 400, 250
    all_days = days(n)
    path = 100 * np.cumprod(1 + np.random.default_rng(11).normal(0, 0.01, n))
    altered = path.copy()
    altered[k:] *= np.random.default_rng(12).uniform(0.5, 2.0, n - k)
    a, b = pd.Series(path, index=all_days), pd.Series(altered, index=all_days)
    ev = all_days[100:]
    upto = k - 100 + 1  # evaluated dates 100..k inclusive
    ta, tb = trend_labels(ev, a, 50), trend_labels(ev, b, 50)
    assert ta[:upto] == tb[:upto] and ta != tb
    va, vb = trailing_vol(ev, a, 21), trailing_vol(ev, b, 21)
    np.testing.assert_array_equal(va[:upto], vb[:upto])
    assert not np.array_equal(va, vb)


def test_volatility_terciles():
    labels = volatility_labels([np.nan, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert labels == ["unknown", "low", "low", "low", "mid", "mid", "mid", "high", "high", "high"]
    assert volatility_labels([np.nan, np.nan]) == ["unknown", "unknown"]


def test_regime_table_structure_and_sums():
    n_hist, n = 250, 500
    all_days = days(n_hist + n)
    bench_r = np.random.default_rng(5).normal(0.0003, 0.01, n_hist + n)
    closes = pd.Series(100 * np.cumprod(1 + bench_r), index=all_days)
    ev, b = all_days[n_hist:], bench_r[n_hist:]
    r = 0.8 * b + np.random.default_rng(6).normal(0.0002, 0.004, n)
    t = regime_table(ev, r, closes, b, cash=0.0001, trend_window=200, vol_window=21)
    assert set(t) == {"trend", "volatility", "definition"}
    assert set(t["trend"]) == {"up", "down"} and set(t["volatility"]) == {"low", "mid", "high"}
    assert "t-1" in t["definition"] and "200" in t["definition"]
    for key in ("trend", "volatility"):
        buckets = t[key].values()
        assert sum(x["periods"] for x in buckets) == n
        assert sum(x["share"] for x in buckets) == pytest.approx(1.0)
        assert math.prod(1 + x["compounded_return"] for x in buckets) == pytest.approx(np.prod(1 + r))
        for x in buckets:
            assert x["beta"] == pytest.approx(0.8, abs=0.15)
    assert [t["volatility"][v]["periods"] for v in ("low", "mid", "high")] == [167, 166, 167]
    up = [lab == "up" for lab in trend_labels(ev, closes, 200)]
    ru = r[np.array(up)]
    assert t["trend"]["up"]["mean_annual"] == pytest.approx(ru.mean() * 252)
    assert t["trend"]["up"]["vol_annual"] == pytest.approx(ru.std(ddof=1) * math.sqrt(252))
    assert t["trend"]["up"]["sharpe"] == pytest.approx(sharpe(ru, 252))


def test_regime_table_unknown_and_timestamp_index():
    all_days = days(30)
    closes = pd.Series(np.linspace(100, 130, 30), index=all_days)
    r = np.full(30, 0.001)
    t = regime_table(all_days, r, closes, np.diff(np.r_[100.0, closes.to_numpy()]) / 100, trend_window=10,
                     vol_window=5)
    assert t["trend"]["unknown"]["periods"] == 10 and t["trend"]["up"]["periods"] == 20
    assert "down" not in t["trend"]
    assert t["trend"]["up"]["alpha_annual"] is not None
    stamped = pd.Series(closes.to_numpy(), index=pd.DatetimeIndex(all_days).tz_localize("UTC") + pd.Timedelta(hours=21))
    assert trend_labels(all_days, stamped, 10) == trend_labels(all_days, closes, 10)


# --- yearly ------------------------------------------------------------------------------------------------------

def test_yearly_table_compounds_within_each_year():
    ds = [date(2023, 12, 27), date(2023, 12, 28), date(2023, 12, 29), date(2024, 1, 2), date(2024, 1, 3)]
    r = np.array([0.1, -0.5, 0.2, -0.1, 0.1])
    b = np.array([0.01, 0.02, -0.01, 0.0, 0.05])
    rows = yearly_table(ds, r, b)
    assert [x["year"] for x in rows] == [2023, 2024] and [x["periods"] for x in rows] == [3, 2]
    assert rows[0]["return"] == pytest.approx(1.1 * 0.5 * 1.2 - 1)
    assert rows[0]["benchmark_return"] == pytest.approx(1.01 * 1.02 * 0.99 - 1)
    assert rows[0]["max_drawdown"] == pytest.approx(-0.5)
    assert rows[1]["return"] == pytest.approx(0.9 * 1.1 - 1)
    assert rows[1]["max_drawdown"] == pytest.approx(-0.1)  # a loss on the year's first day counts
    assert rows[0]["beta"] is not None and rows[1]["beta"] is None  # 2 periods: too few to regress
    assert rows[0]["sharpe"] == pytest.approx(sharpe(r[:3], 252))


# --- rank IC -----------------------------------------------------------------------------------------------------

def frame(values: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(values, index=pd.date_range("2022-01-01", periods=values.shape[0]),
                        columns=[f"S{i}" for i in range(values.shape[1])])


def test_rank_ic_perfect_reversed_and_random():
    x = frame(np.random.default_rng(8).normal(size=(200, 30)))
    same = rank_ic(x, x)
    assert same.mean == pytest.approx(1.0) and same.hit == 1.0 and same.dates == 200
    assert rank_ic(-x, x).mean == pytest.approx(-1.0)
    assert rank_ic(x.rank(axis=1) ** 3, x).mean == pytest.approx(1.0)  # rank correlation: monotone maps are equal
    noise = frame(np.random.default_rng(9).normal(size=(200, 30)))
    ind = rank_ic(noise, x)
    assert ind.mean is not None and abs(ind.mean) < 0.03
    assert ind.t_stat is not None and abs(ind.t_stat) < 3.5
    assert ind.std is not None and ind.ir == pytest.approx(ind.mean / ind.std)


def test_rank_ic_requires_five_symbols_with_both_values():
    x = frame(np.random.default_rng(10).normal(size=(3, 8)))
    y = x.copy()
    y.iloc[0, :4] = np.nan  # 4 symbols left: dropped
    x.iloc[1, 0] = np.nan  # 7 left: kept
    out = rank_ic(x, y)
    assert out.dates == 2 and out.mean == pytest.approx(1.0)


def test_newey_west():
    ic = np.random.default_rng(4).normal(0.02, 0.1, 300)
    assert newey_west_t(ic, 0) == pytest.approx(stats.ttest_1samp(ic, 0.0).statistic)
    x = np.array([0.1, 0.3, -0.2, 0.4, 0.0])
    d = x - x.mean()
    s = (d @ d + 2 * 0.5 * (d[1:] @ d[:-1])) / 4
    assert newey_west_t(x, 1) == pytest.approx(x.mean() / math.sqrt(s / 5))
    # overlapping 5-period sums of white noise autocorrelate; Newey-West with 4 lags widens the error
    base = np.random.default_rng(2).normal(0.01, 0.1, 1004)
    over = np.convolve(base, np.ones(5), mode="valid")
    assert abs(newey_west_t(over, 4)) < 0.7 * abs(newey_west_t(over, 0))  # type: ignore[arg-type]


def test_rank_ic_overlap_sets_lags():
    x = frame(np.random.default_rng(13).normal(size=(100, 10)))
    y = x + frame(np.random.default_rng(14).normal(size=(100, 10))) * 3
    plain, over = rank_ic(x, y), rank_ic(x, y, overlap=5)
    assert plain.t_stat_nw == pytest.approx(plain.t_stat) and plain.lags == 0
    assert over.lags == 4 and over.t_stat == pytest.approx(plain.t_stat)
    assert over.t_stat_nw != pytest.approx(over.t_stat)
    with pytest.raises(ValueError):
        rank_ic(x, y, overlap=0)


# --- turnover ----------------------------------------------------------------------------------------------------

def test_turnover_stats():
    t = turnover_stats(traded_notional=4_000_000, average_equity=1_000_000, costs_paid=4_000, years=2)
    assert t == {"annual_turnover": 2.0, "cost_drag_annual": 0.002, "cost_per_traded": 0.001}
    assert turnover_stats(0, 1.0, 0, 1)["cost_per_traded"] is None
    with pytest.raises(ValueError):
        turnover_stats(1, 0, 0, 1)
