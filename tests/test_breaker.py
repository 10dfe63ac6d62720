from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.breaker import BreakerLimits, StrategyBreaker, scope_of

T0 = datetime(2018, 1, 1, tzinfo=timezone.utc)
S = "trend/crypto"


def day(n: int) -> datetime:
    return T0 + timedelta(days=n)


def trip_on_drawdown(b: StrategyBreaker, scope: str = S, start: int = 0) -> int:
    """Two full-size losses of 10 %: 0.81 of the peak. Returns the next free day."""
    b.record(scope, day(start), -0.10, 1.0, shadow=False)
    b.record(scope, day(start + 1), -0.10, 1.0, shadow=False)
    assert not b.allows(scope)
    return start + 2


def test_scope_of() -> None:
    assert scope_of("trend", "crypto") == "trend/crypto"


def test_trips_on_drawdown_at_the_crossing_not_before() -> None:
    b = StrategyBreaker(BreakerLimits(max_drawdown=0.15, min_expectancy=-math.inf))
    b.record(S, day(0), 0.25, 0.4, shadow=False)  # equity 1.10: the peak
    b.record(S, day(1), -0.25, 0.4, shadow=False)  # 1.10 * 0.90 = 0.99: 10 % down
    b.record(S, day(2), -0.10, 0.5, shadow=False)  # 0.99 * 0.95: 14.5 % down
    st0 = b.state(S)
    assert b.allows(S) and not st0.tripped
    assert st0.drawdown == pytest.approx(-0.145)
    assert st0.peak == pytest.approx(1.10)
    b.record(S, day(3), -0.01, 1.0, shadow=False)  # 15.355 % down
    assert not b.allows(S)
    s = b.state(S)
    assert s.tripped and s.since == day(3)
    assert s.drawdown == pytest.approx(1.10 * 0.90 * 0.95 * 0.99 / 1.10 - 1)


def test_an_exact_hit_of_the_threshold_trips() -> None:
    b = StrategyBreaker(BreakerLimits(max_drawdown=0.15))
    b.record(S, day(0), -0.15, 1.0, shadow=False)  # 1 - 0.15 is 0.85000000000000002 in floats
    assert not b.allows(S)


def test_position_size_scales_the_loss() -> None:
    b = StrategyBreaker(BreakerLimits(max_drawdown=0.15))
    b.record(S, day(0), -0.50, 0.2, shadow=False)  # a follower at 20 % size lost 10 %
    assert b.allows(S)
    assert b.state(S).equity == pytest.approx(0.90)


def test_trips_on_expectancy_only_once_the_window_is_full() -> None:
    b = StrategyBreaker(BreakerLimits(max_drawdown=1.0, window=5, min_expectancy=0.0))
    for i in range(4):
        b.record(S, day(i), -0.01, 0.1, shadow=False)
        assert b.allows(S), i
    assert b.state(S).rolling_expectancy == pytest.approx(-0.01)
    b.record(S, day(4), -0.01, 0.1, shadow=False)
    assert not b.allows(S)
    assert b.history()[0].cause == "expectancy"
    assert "last 5 closes" in b.state(S).reason


def test_expectancy_is_rolling() -> None:
    b = StrategyBreaker(BreakerLimits(max_drawdown=1.0, window=3))
    for i, r in enumerate([-0.05, 0.02, 0.02]):  # full at the third close: mean -0.0033 trips
        b.record(S, day(i), r, 0.1, shadow=False)
    assert not b.allows(S)
    b2 = StrategyBreaker(BreakerLimits(max_drawdown=1.0, window=3))
    for i, r in enumerate([0.03, -0.05, 0.03, 0.03, -0.02]):  # means +0.0033, +0.0033, +0.0133
        b2.record(S, day(i), r, 0.1, shadow=False)
    assert b2.allows(S)
    assert b2.state(S).rolling_expectancy == pytest.approx((0.03 + 0.03 - 0.02) / 3)


def test_reason_names_scope_figure_and_what_resumes_it() -> None:
    b = StrategyBreaker(BreakerLimits(max_drawdown=0.15, resume_after=10))
    trip_on_drawdown(b)
    reason = b.state(S).reason
    assert reason == ("paused since 2018-01-02: the trend family's crypto signals fell 19.0 % from their peak; "
                      "it resumes when 10 shadow signals show a positive average after costs")
    assert b.history()[0].reason == reason


def test_reason_for_expectancy_and_a_nonzero_resume_floor() -> None:
    b = StrategyBreaker(BreakerLimits(max_drawdown=1.0, window=2, resume_after=4, resume_expectancy=0.001))
    b.record("mean_reversion/fx", day(0), -0.002, 0.1, shadow=False)
    b.record("mean_reversion/fx", day(1), -0.004, 0.1, shadow=False)
    reason = b.state("mean_reversion/fx").reason
    assert "the mean reversion family's fx signals averaged -0.30 % after costs over their last 2 closes" in reason
    assert "the floor is +0.00 %" in reason
    assert reason.endswith("it resumes when 4 shadow signals show an average above +0.10 % after costs")


def test_shadow_records_before_a_trip_are_ignored() -> None:
    b = StrategyBreaker(BreakerLimits(resume_after=2))
    for i in range(5):
        b.record(S, day(i), 0.05, 1.0, shadow=True)
    s = b.state(S)
    assert s.ignored_shadow == 5 and s.shadow_closed == 0 and s.equity == 1.0 and s.live_closed == 0
    trip_on_drawdown(b, start=5)
    assert b.state(S).shadow_closed == 0  # the earlier shadows do not count towards a resume
    b.record(S, day(8), 0.01, 1.0, shadow=True)
    assert not b.allows(S)
    assert b.state(S).shadow_closed == 1


def test_resume_needs_enough_shadow_closes_and_a_positive_mean() -> None:
    b = StrategyBreaker(BreakerLimits(resume_after=3))
    d = trip_on_drawdown(b)
    b.record(S, day(d), 0.02, 1.0, shadow=True)
    b.record(S, day(d + 1), 0.02, 1.0, shadow=True)
    assert not b.allows(S)  # a positive mean, but only 2 closes
    b.record(S, day(d + 2), 0.02, 1.0, shadow=True)
    assert b.allows(S)
    s = b.state(S)
    assert not s.tripped and s.since is None and s.shadow_closed == 0
    assert s.equity == pytest.approx(0.81)  # shadows never touch equity


def test_enough_shadow_closes_with_a_negative_mean_stay_tripped() -> None:
    b = StrategyBreaker(BreakerLimits(resume_after=3))
    d = trip_on_drawdown(b)
    for i, r in enumerate([0.01, -0.03, 0.01, 0.005]):  # after the third: mean -0.0033, then -0.00125
        b.record(S, day(d + i), r, 1.0, shadow=True)
        assert not b.allows(S)
    s = b.state(S)
    assert s.shadow_closed == 4 and s.shadow_mean == pytest.approx(-0.00125)
    b.record(S, day(d + 4), 0.02, 1.0, shadow=True)  # mean +0.003
    assert b.allows(S)


def test_a_zero_mean_is_not_above_zero() -> None:
    b = StrategyBreaker(BreakerLimits(resume_after=2))
    d = trip_on_drawdown(b)
    b.record(S, day(d), 0.01, 1.0, shadow=True)
    b.record(S, day(d + 1), -0.01, 1.0, shadow=True)
    assert not b.allows(S)


def test_late_live_closes_count_in_equity_but_neither_retrip_nor_resume() -> None:
    b = StrategyBreaker(BreakerLimits(resume_after=2))
    d = trip_on_drawdown(b)
    b.record(S, day(d), -0.10, 1.0, shadow=False)  # issued before the trip
    b.record(S, day(d + 1), 0.50, 1.0, shadow=False)
    assert not b.allows(S)
    assert len(b.history()) == 1
    assert b.state(S).equity == pytest.approx(0.81 * 0.9 * 1.5)


def test_after_resume_an_earlier_drawdown_does_not_retrip() -> None:
    b = StrategyBreaker(BreakerLimits(max_drawdown=0.15, window=3, resume_after=2))
    d = trip_on_drawdown(b)  # equity 0.81, 19 % below the peak of 1
    b.record(S, day(d), 0.01, 1.0, shadow=True)
    b.record(S, day(d + 1), 0.01, 1.0, shadow=True)
    assert b.allows(S)
    s = b.state(S)
    assert s.peak == pytest.approx(0.81) and s.drawdown == 0.0 and s.rolling_expectancy is None
    b.record(S, day(d + 2), -0.01, 1.0, shadow=False)  # would be 19.8 % below the old peak
    b.record(S, day(d + 3), -0.01, 1.0, shadow=False)  # the cleared window has 2 of 3: no expectancy test
    assert b.allows(S)
    b.record(S, day(d + 4), -0.13, 1.0, shadow=False)  # a fresh 14.7 % fall trips again
    assert not b.allows(S)
    assert [e.kind for e in b.history()] == ["trip", "resume", "trip"]


def test_per_scope_limits_with_a_default() -> None:
    b = StrategyBreaker({"*": BreakerLimits(max_drawdown=0.15), "trend/fx": BreakerLimits(max_drawdown=0.30)})
    for scope in ("trend/fx", "trend/equity"):
        b.record(scope, day(0), -0.10, 1.0, shadow=False)
        b.record(scope, day(1), -0.10, 1.0, shadow=False)
    assert b.allows("trend/fx") and not b.allows("trend/equity")
    assert b.limits("trend/fx").max_drawdown == 0.30 and b.limits("pullback/crypto").max_drawdown == 0.15
    with pytest.raises(ValueError, match=r'"\*"'):
        StrategyBreaker({"trend/fx": BreakerLimits()})


def test_scopes_are_independent() -> None:
    b = StrategyBreaker()
    trip_on_drawdown(b)
    assert b.allows("trend/equity") and b.state("trend/equity").equity == 1.0
    b.record("trend/equity", day(0), 0.01, 1.0, shadow=False)  # its own clock, not S's


def test_out_of_order_record_raises() -> None:
    b = StrategyBreaker()
    b.record(S, day(5), 0.01, 1.0, shadow=False)
    b.record(S, day(5), 0.01, 1.0, shadow=True)  # the same time is fine
    with pytest.raises(ValueError, match="older"):
        b.record(S, day(4), 0.01, 1.0, shadow=False)
    with pytest.raises(ValueError, match="older"):
        b.record(S, day(4), 0.01, 1.0, shadow=True)


def test_allows_refuses_a_question_from_before_a_recorded_close() -> None:
    b = StrategyBreaker()
    b.record(S, day(5), 0.01, 1.0, shadow=False)
    assert b.allows(S, day(5)) and b.allows(S, day(6))
    with pytest.raises(ValueError, match="look-ahead"):
        b.allows(S, day(4))


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError):
        BreakerLimits(max_drawdown=0.0)
    with pytest.raises(ValueError):
        BreakerLimits(window=0)
    b = StrategyBreaker()
    for r, w in ((math.nan, 1.0), (0.01, -1.0), (0.01, math.inf)):
        with pytest.raises(ValueError):
            b.record(S, day(0), r, w, shadow=False)


def test_history_lists_trips_and_resumes_with_their_times() -> None:
    b = StrategyBreaker(BreakerLimits(resume_after=2))
    d = trip_on_drawdown(b)
    b.record(S, day(d), 0.03, 1.0, shadow=True)
    b.record(S, day(d + 1), 0.01, 1.0, shadow=True)
    trip, resume = b.history()
    assert (trip.scope, trip.kind, trip.cause, trip.at) == (S, "trip", "drawdown", day(1))
    assert trip.equity == pytest.approx(0.81) and trip.drawdown == pytest.approx(-0.19)
    assert (resume.scope, resume.kind, resume.cause, resume.at) == (S, "resume", "recovery", day(d + 1))
    assert resume.shadow_closed == 2 and resume.shadow_mean == pytest.approx(0.02)
    assert resume.reason == ("resumed on 2018-01-04: since the pause on 2018-01-02, 2 of the trend family's crypto "
                             "signals, followed as shadows, averaged +2.00 % after costs")
    b.history().clear()
    assert len(b.history()) == 2  # a copy


def test_state_of_an_unknown_scope() -> None:
    s = StrategyBreaker().state("x/y")
    assert (s.tripped, s.since, s.reason, s.equity, s.drawdown, s.rolling_expectancy) == (
        False, None, "issuing", 1.0, 0.0, None)


returns = st.lists(st.tuples(st.floats(0.0, 0.5), st.floats(0.0, 1.0), st.booleans()), max_size=200)


@settings(max_examples=200, deadline=None)
@given(returns)
def test_non_negative_returns_never_trip_on_drawdown(seq: list[tuple[float, float, bool]]) -> None:
    b = StrategyBreaker(BreakerLimits(max_drawdown=0.01, window=3, min_expectancy=0.001))
    for i, (r, w, shadow) in enumerate(seq):
        b.record(S, day(i), r, w, shadow)
        assert b.state(S).drawdown == 0.0
    assert all(e.cause != "drawdown" for e in b.history())


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(-0.3, 0.3), st.floats(0.0, 1.0), st.booleans()), max_size=200))
def test_deterministic_and_equity_is_the_live_product(seq: list[tuple[float, float, bool]]) -> None:
    a, b = StrategyBreaker(BreakerLimits(window=5, resume_after=3)), StrategyBreaker(BreakerLimits(window=5,
                                                                                                   resume_after=3))
    for i, (r, w, shadow) in enumerate(seq):
        a.record(S, day(i), r, w, shadow)
        b.record(S, day(i), r, w, shadow)
    assert a.history() == b.history() and a.state(S) == b.state(S)
    expected = math.prod(1 + w * r for r, w, shadow in seq if not shadow)
    assert a.state(S).equity == pytest.approx(expected, rel=1e-9)
