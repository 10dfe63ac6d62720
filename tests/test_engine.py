from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.domain import AssetClass, Direction, Instrument, Timeframe
from core.indicators import CORE_COLUMNS
from core.indicators.pandas_ta_engine import PandasTaEngine
from core.risk import RiskConfig, RiskManager, position_size, resize
from core.domain import RiskTolerance
from core.setups.oversold import OversoldDetector
from core.signals.engine import SignalEngine
from core.signals.ensemble import ModelOpinion
from core.signals.levels import compute_levels, expiry
from tests.conftest import make_bars, utc

STOCK = Instrument("TEST", AssetClass.EQUITY)
COIN = Instrument("TEST-USDT", AssetClass.CRYPTO)


def calm_then_crash(n=260, crash=(-0.04, -0.05, -0.06), seed=1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rets = np.concatenate([0.0005 + rng.normal(0, 0.01, n - len(crash)), np.array(crash)])
    closes = 100 * np.exp(np.cumsum(rets))
    vol = np.concatenate([rng.uniform(0.8e6, 1.2e6, n - 1), [4e6]])
    opens = np.concatenate([[closes[0]], closes[:-1]])
    opens[-1] = closes[-2] * 0.97  # gap down into the last bar
    return make_bars(closes, volume=vol, opens=opens, spread=0.004)


@pytest.fixture(scope="module")
def engine() -> SignalEngine:
    return SignalEngine(PandasTaEngine())


def test_indicators_have_every_core_column_and_are_causal(engine):
    bars = calm_then_crash()
    full = engine.indicators.compute(bars)
    assert set(CORE_COLUMNS) <= set(full.columns)
    cut = engine.indicators.compute(bars.iloc[:200])
    pd.testing.assert_frame_equal(full.iloc[:200], cut, check_exact=False, rtol=1e-9)


def test_sharp_drop_after_calm_uptrend_is_an_oversold_long(engine):
    a = engine.analyse(STOCK, Timeframe.D1, calm_then_crash())
    assert a.setup.direction is Direction.LONG
    met = {e.name for e in a.setup.evidence if e.met}
    assert {"zscore", "rsi", "volume", "gap"} <= met
    assert a.verdict is Direction.LONG
    s = engine.candidate(a)
    assert s is not None and s.stop < s.entry < s.target
    assert 1 <= s.confidence <= 100 and s.risk_reward >= 1.0
    assert 0 < s.position_size <= 0.10
    assert "RSI" in s.reasoning and "z-score" in s.reasoning
    assert s.evidence["indicators"]["rsi_14"] == pytest.approx(a.snapshot["rsi_14"], rel=1e-6)
    assert s.issued_at == a.bar_time + Timeframe.D1.duration


def test_spike_up_is_a_short_for_stocks_but_not_for_spot_crypto(engine):
    bars = calm_then_crash(crash=(0.05, 0.06, 0.07))
    bars.iloc[-1, bars.columns.get_loc("open")] = bars["close"].iloc[-2] * 1.03
    assert engine.analyse(STOCK, Timeframe.D1, bars).setup.direction is Direction.SHORT
    assert engine.analyse(COIN, Timeframe.D1, bars).setup.direction is None


def test_quiet_random_walk_issues_nothing(engine):
    rng = np.random.default_rng(3)
    bars = make_bars(100 * np.exp(np.cumsum(rng.normal(0, 0.003, 300))))
    assert engine.candidate(engine.analyse(STOCK, Timeframe.D1, bars)) is None


def test_analyse_recent_equals_one_by_one(engine):
    bars = calm_then_crash()
    many = engine.analyse_recent(STOCK, Timeframe.D1, bars, 5)
    for k, a in enumerate(many):
        single = engine.analyse(STOCK, Timeframe.D1, bars.iloc[: len(bars) - 4 + k])
        assert a.bar_time == single.bar_time
        assert a.setup.score == pytest.approx(single.setup.score, rel=1e-6)


def test_analyse_many_equals_analyse_recent_and_reports_failures(engine):
    bars = calm_then_crash()
    items = [(STOCK, Timeframe.D1, bars, 3), (COIN, Timeframe.H1, bars.iloc[:30], 1), (COIN, Timeframe.D1, bars, 1)]
    failures: list[tuple[str, str]] = []
    many = engine.analyse_many(items, lambda inst, tf, exc: failures.append((inst.symbol, type(exc).__name__)))
    expected = engine.analyse_recent(STOCK, Timeframe.D1, bars, 3) + engine.analyse_recent(COIN, Timeframe.D1, bars, 1)
    assert many == expected
    assert failures == [("TEST-USDT", "NotEnoughDataError")]


def test_last_rows_are_the_tail_of_compute(engine):
    bars = calm_then_crash()
    names, values = engine.indicators.last_rows(bars, 4)
    tail = engine.indicators.compute(bars).iloc[-4:]
    assert list(names) == list(tail.columns)
    np.testing.assert_array_equal(values, tail.to_numpy())


def test_detector_thresholds_on_known_values():
    det = OversoldDetector()
    snap = pd.Series({"zscore_20": -2.5, "rsi_14": 25.0, "dist_sma20_atr": -3.0, "bb_pctb": -0.1,
                      "volume_pct_50": 0.95, "gap": -0.03})
    r = det.evaluate(snap, AssetClass.EQUITY, allows_short=True)
    assert r.direction is Direction.LONG and r.score == pytest.approx(1.0)
    mild = snap.copy()
    mild[["zscore_20", "rsi_14"]] = [-1.0, 45.0]
    assert det.evaluate(mild, AssetClass.EQUITY, True).direction is None  # no core criterion met


def test_levels_from_atr_and_expiry():
    lv = compute_levels(Direction.LONG, close=100, atr=2, sma20=108)
    assert lv.stop == pytest.approx(97.5) and lv.target == pytest.approx(106)  # capped at 3 ATR
    lv = compute_levels(Direction.SHORT, close=100, atr=2, sma20=99)
    assert lv.stop == pytest.approx(102.5) and lv.target == pytest.approx(97.5)  # at least 1.25 ATR
    assert expiry(utc(2024, 1, 5), Timeframe.D1, AssetClass.EQUITY) == utc(2024, 1, 19)  # 10 business days
    assert expiry(utc(2024, 1, 5), Timeframe.H1, AssetClass.CRYPTO) == utc(2024, 1, 6)


def test_position_size_is_volatility_adjusted_and_capped():
    assert position_size(100, 98) == pytest.approx(0.10)  # 1 % risk over a 2 % stop is 0.5, capped at 0.10
    assert position_size(100, 80) == pytest.approx(0.05)
    assert position_size(100, 99.5, RiskTolerance.LOW) == 0.05
    assert resize(0.05, RiskTolerance.HIGH) == pytest.approx(0.10)
    assert resize(0.05, RiskTolerance.LOW) == pytest.approx(0.025)


def test_risk_manager_rejects_duplicates_conflicts_and_cooldown(engine):
    a = engine.analyse(STOCK, Timeframe.D1, calm_then_crash())
    s = engine.candidate(a)
    assert s is not None and s.strategy == "mean_reversion"
    assert RiskManager().review(s, [], None).reason.startswith("a mean reversion setup is issued only with a model")
    rm = RiskManager(RiskConfig(needs_probability=()))
    assert rm.review(s, [], None).approved
    assert not rm.review(s, [s], None).approved
    assert "cooldown" in rm.review(s, [], s).reason


def test_a_signal_with_a_probability_must_have_a_positive_expectation_at_its_levels(engine):
    from dataclasses import replace

    s = engine.candidate(engine.analyse(STOCK, Timeframe.D1, calm_then_crash()))
    rm = RiskManager()
    rr = s.risk_reward
    even = 1 / (1 + rr)  # the chance at which target * p = stop * (1 - p)
    low = replace(s, confidence=99, evidence={**s.evidence, "model_probability": even - 0.01})
    assert not rm.review(low, [], None).approved and "expected value" in rm.review(low, [], None).reason
    high = replace(s, confidence=1, evidence={**s.evidence, "model_probability": even + 0.01})
    assert rm.review(high, [], None).approved  # the probability decides, not the minimum confidence for scores
    assert not rm.review(replace(s, confidence=39), [], None).approved  # a score still needs 40


def test_an_idea_whose_target_does_not_pay_the_round_trip_costs_is_rejected(engine):
    """Costs come off every return: a target no further away than entry and exit costs together loses even when
    it is reached, whatever its confidence or R:R."""
    from dataclasses import replace

    s = replace(engine.candidate(engine.analyse(STOCK, Timeframe.D1, calm_then_crash())), confidence=90)
    move = abs(s.target - s.entry) / s.entry
    open_book = RiskConfig(needs_probability=())
    assert RiskManager(open_book).review(s, [], None).approved  # costs not counted (0)
    covered = replace(open_book, costs_bps=move / 2 * 10_000 * 0.99)  # the round trip just under the move
    assert RiskManager(covered).review(s, [], None).approved
    eaten = replace(open_book, costs_bps=move / 2 * 10_000)  # the round trip equal to the move
    reason = RiskManager(eaten).review(s, [], None).reason
    assert reason.startswith(f"the target is {move:.2%} away, not more than the round-trip costs") and "lose" in reason


# -- the array path of a scan equals the frame path ------------------------------------------------


def test_analysis_from_arrays_equals_analysis_from_frame():
    from core.indicators.talib_engine import TalibEngine
    from core.market_data.resample import BarArrays

    talib_engine = SignalEngine(TalibEngine())
    for bars in (calm_then_crash(), calm_then_crash(n=300, crash=(0.05, 0.06, 0.07), seed=3)):
        arrays = BarArrays.of(bars)
        for inst in (STOCK, COIN):
            assert talib_engine.analyse_recent(inst, Timeframe.D1, arrays, 5) == talib_engine.analyse_recent(inst, Timeframe.D1, bars, 5)
            # an engine without the block interface builds a frame from the arrays
            assert engine_pandas().analyse(inst, Timeframe.D1, arrays) == engine_pandas().analyse(inst, Timeframe.D1, bars)
            a = talib_engine.analyse(inst, Timeframe.D1, arrays)
            assert a.bar_time == bars.index[-1].to_pydatetime() and a.bar_time.tzinfo is bars.index[-1].to_pydatetime().tzinfo


def engine_pandas() -> SignalEngine:
    return SignalEngine(PandasTaEngine())


def test_detector_equals_per_criterion_scoring():
    """evaluate scores with plain floats and builds evidence for the chosen side only: the result must be
    what scoring each side with Criterion.strength and picking the better one (long on a tie) gives."""
    import math

    from core.setups import Evidence, SetupResult
    from core.setups.oversold import CORE_CRITERIA, CRITERIA, _criteria_for, _full_level

    det = OversoldDetector()

    def side(snap, direction, cls):
        items = []
        for c in _criteria_for(cls):
            value = float(snap.get(c.column, math.nan))
            items.append(Evidence(c.name, value, _full_level(c, direction), c.strength(value, direction), c.weight, c.label))
        score = sum(e.weight * e.strength for e in items) / sum(e.weight for e in items)
        met = any(e.met for e in items if e.name in CORE_CRITERIA)
        return SetupResult(det.name, direction if met and score >= det.min_score else None, score, tuple(items))

    rng = np.random.default_rng(7)
    specials = [math.nan, math.inf, -math.inf, 0.0, -0.0]
    for _ in range(3000):
        snap = {}
        for c in CRITERIA:
            r = rng.random()
            if r < 0.05:
                continue
            if r < 0.15:
                snap[c.column] = float(rng.choice(specials))
            elif r < 0.3:
                snap[c.column] = float(rng.choice([c.begins, c.full, -c.begins, -c.full, 100 - c.full, 1 - c.full]))
            else:
                scale = 100.0 if c.column == "rsi_14" else 4 * max(abs(c.begins), abs(c.full))
                snap[c.column] = float(rng.uniform(-scale, scale) + (50.0 if c.column == "rsi_14" else 0.0))
        for cls in AssetClass:
            for allows_short in (True, False):
                long = side(snap, Direction.LONG, cls)
                short = side(snap, Direction.SHORT, cls) if allows_short else None
                expected = long if short is None or long.score >= short.score else short
                assert repr(det.evaluate(snap, cls, allows_short)) == repr(expected)


async def test_bar_arrays_equal_get_bars(tmp_path):
    from core.market_data import CsvMarketData

    bars = calm_then_crash(n=120)
    frame = bars.reset_index().rename(columns={bars.index.name or "index": "date"})
    frame["date"] = frame["date"].dt.strftime("%Y-%m-%d")
    frame.to_csv(tmp_path / "TEST_daily.csv", index=False)
    market = CsvMarketData(tmp_path)
    ends = [bars.index[k].to_pydatetime() for k in (0, 1, 50, 119)] + [utc(2030, 1, 1)]
    for end in ends:
        for limit in (None, 0, 1, 30, 400):
            want = await market.get_bars("TEST", Timeframe.D1, end=end, limit=limit)
            got = await market.get_bar_arrays("TEST", Timeframe.D1, end=end, limit=limit)
            assert np.array_equal(got.times, want.index.as_unit("ns").asi8)
            assert np.array_equal(got.block, want.to_numpy().T)


# -- the model as a voter ---------------------------------------------------------------------------------------


class FixedProbability:
    """A ProbabilityModel that answers every request with one probability and records its batches."""

    name = "model"

    def __init__(self, p: float | None) -> None:
        self.p = p
        self.batches: list[list] = []

    def probabilities(self, requests):
        self.batches.append(list(requests))
        return [self.p for _ in requests]


def test_without_a_model_the_engine_is_the_rules_alone(engine):
    a = engine.analyse(STOCK, Timeframe.D1, calm_then_crash())
    assert a.probability is None and [v.voter for v in a.ensemble.votes] == ["mean_reversion", "trend"]
    assert "model_probability" not in engine.candidate(a).evidence


def test_a_confident_model_votes_for_the_setup_and_sets_a_calibrated_confidence():
    model = FixedProbability(0.72)
    eng = SignalEngine(PandasTaEngine(), model=model)
    a = eng.analyse(STOCK, Timeframe.D1, calm_then_crash())
    assert a.verdict is Direction.LONG and a.probability == 0.72
    assert a.ensemble.confidence == 72
    vote = a.ensemble.votes[-1]
    assert vote.voter == "model" and vote.score == pytest.approx(1.0) and vote.weight == 1.0
    s = eng.candidate(a)
    assert s.confidence == 72 and s.evidence["model_probability"] == 0.72 and s.evidence["engine"].endswith("+model")
    assert "72% calibrated chance" in s.reasoning
    (request,) = model.batches[0]
    bars = calm_then_crash()
    assert request.side is Direction.LONG and request.window.shape == (5, 22)
    np.testing.assert_array_equal(request.window[3], bars["close"].to_numpy()[-22:])
    assert request.as_of_ns == (bars.index[-1] + Timeframe.D1.duration).value


def test_a_doubtful_model_vetoes_the_setup_and_no_opinion_leaves_the_rules():
    a = SignalEngine(PandasTaEngine(), model=FixedProbability(0.2)).analyse(STOCK, Timeframe.D1, calm_then_crash())
    assert a.setup.direction is Direction.LONG and a.verdict is None and a.ensemble.confidence == 20
    rules = SignalEngine(PandasTaEngine()).analyse(STOCK, Timeframe.D1, calm_then_crash())
    silent = SignalEngine(PandasTaEngine(), model=FixedProbability(None)).analyse(STOCK, Timeframe.D1, calm_then_crash())
    assert silent.ensemble == rules.ensemble and silent.probability is None

    class Broken:
        name = "model"

        def probabilities(self, requests):
            raise RuntimeError("corrupt trees")

    class Unskilled(FixedProbability):
        def probabilities(self, requests):
            return [ModelOpinion(0.2, skill=0.0) for _ in requests]

    unskilled = SignalEngine(PandasTaEngine(), model=Unskilled(None)).analyse(STOCK, Timeframe.D1, calm_then_crash())
    assert unskilled.verdict is rules.verdict and unskilled.ensemble.score == rules.ensemble.score  # no say
    assert unskilled.ensemble.confidence == 20 and unskilled.ensemble.votes[-1].weight == 0.0  # but honest confidence

    broken = SignalEngine(PandasTaEngine(), model=Broken()).analyse(STOCK, Timeframe.D1, calm_then_crash())
    assert broken.ensemble == rules.ensemble and broken.verdict is Direction.LONG  # the rules decide alone


def test_the_confidence_shrinks_a_calibrated_probability_to_the_base_rate_as_far_as_the_model_is_unreliable():
    class Opinions(FixedProbability):
        def __init__(self, opinion: ModelOpinion) -> None:
            super().__init__(None)
            self.opinion = opinion

        def probabilities(self, requests):
            return [self.opinion for _ in requests]

    def confidence(opinion: ModelOpinion) -> tuple[int, float | None]:
        a = SignalEngine(PandasTaEngine(), model=Opinions(opinion)).analyse(STOCK, Timeframe.D1, calm_then_crash())
        return a.ensemble.confidence, a.probability

    assert confidence(ModelOpinion(0.8, skill=0.0, base_rate=0.4)) == (40, pytest.approx(0.4))  # no skill: base rate
    assert confidence(ModelOpinion(0.8, skill=0.5, base_rate=0.4)) == (60, pytest.approx(0.6))
    assert confidence(ModelOpinion(0.8, skill=1.0, base_rate=0.4)) == (80, pytest.approx(0.8))
    assert confidence(ModelOpinion(0.8, skill=3.0, base_rate=0.4))[0] == 80  # skill is clipped to 0..1
    assert confidence(ModelOpinion(0.8, skill=0.0))[0] == 80  # base rate unknown: the calibrated probability
    assert confidence(ModelOpinion(0.8, skill=1.0, base_rate=0.4, reliability=0.25))[0] == 50  # the OOS slope rules
    assert confidence(ModelOpinion(0.8, skill=0.0, base_rate=0.4, reliability=1.0))[0] == 80


def test_the_model_is_asked_once_per_scan_and_only_about_triggered_setups():
    model = FixedProbability(0.6)
    eng = SignalEngine(PandasTaEngine(), model=model)
    quiet = make_bars(100 * np.exp(np.cumsum(np.random.default_rng(5).normal(0, 0.002, 260))))
    items = [(STOCK, Timeframe.D1, calm_then_crash(), 3), (COIN, Timeframe.H4, quiet, 2),
             (Instrument("B", AssetClass.EQUITY), Timeframe.D1, calm_then_crash(seed=2), 1)]
    out = eng.analyse_many(items, on_error=lambda *_: None)
    assert len(model.batches) == 1
    triggered = [a for a in out if a.setup.direction is not None]
    assert len(model.batches[0]) == len(triggered) >= 2
    assert all(a.probability == 0.6 for a in triggered)
    assert all(a.probability is None for a in out if a.setup.direction is None)


def test_an_oversold_setup_is_issued_only_on_a_model_that_showed_skill():
    """No model: rejected (the rules alone lost in the warm-up years). A model at reliability 0 only shows its base
    rate: rejected too. A model whose calls bore out its probabilities: reviewed by its expected value."""
    bars = calm_then_crash()
    rm = RiskManager()
    rules = SignalEngine(PandasTaEngine()).candidate(SignalEngine(PandasTaEngine()).analyse(STOCK, Timeframe.D1, bars))
    assert rules is not None and rules.strategy == "mean_reversion"
    assert "only with a model's probability" in rm.review(rules, [], None).reason
    for reliability, approved in ((0.0, False), (0.5, True)):
        opinion = ModelOpinion(0.70, skill=0.6, base_rate=0.45, reliability=reliability)
        eng = SignalEngine(PandasTaEngine(), model=FixedProbability(opinion))  # type: ignore[arg-type]
        s = eng.candidate(eng.analyse(STOCK, Timeframe.D1, bars))
        assert s is not None and s.evidence["model_reliability"] == reliability
        assert s.evidence["model_probability"] == pytest.approx(0.45 + reliability * 0.25)
        decision = rm.review(s, [], None)
        assert decision.approved is approved, decision.reason
        if not approved:
            assert "reliability is 0" in decision.reason
