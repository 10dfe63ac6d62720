"""The pullback setup (core.setups.pullback): the detector on known values, its levels, its risk gate, the
engine's choice between it and the oversold detector, and the backtest screen's soundness for it."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from core.backtest.candidates import Series, analysis_at, screen
from core.domain import AssetClass, Direction, Instrument, Timeframe
from core.indicators.pandas_ta_engine import PandasTaEngine
from core.risk import RiskManager
from core.setups.pullback import PullbackDetector
from core.signals.engine import EngineConfig, SignalEngine
from core.signals.ensemble import ModelOpinion
from core.signals.levels import Levels, pullback_levels
from tests.conftest import make_bars

STOCK = Instrument("UP", AssetClass.EQUITY)
PAIR = Instrument("EURUSD", AssetClass.FX)
COIN = Instrument("UP-USDT", AssetClass.CRYPTO)


def snap(close: float, sma200: float, rsi2: float) -> dict[str, float]:
    return {"close": close, "sma_200": sma200, "rsi_2": rsi2}


def test_detector_on_known_values():
    d = PullbackDetector()
    long = d.evaluate(snap(110, 100, 6.0), AssetClass.EQUITY, True)
    assert long.name == "pullback" and long.direction is Direction.LONG
    # half for the trend, half for the RSI(2) depth: (10 - 6) / (10 - 2) = 0.5
    assert long.score == pytest.approx(0.5 + 0.5 * 0.5)
    assert {e.name: e.strength for e in long.evidence} == {"trend": 1.0, "rsi2": pytest.approx(0.5)}
    assert d.evaluate(snap(110, 100, 1.0), AssetClass.EQUITY, True).score == 1.0
    assert d.evaluate(snap(110, 100, 10.0), AssetClass.EQUITY, True).direction is None  # not under the trigger
    assert d.evaluate(snap(95, 100, 3.0), AssetClass.EQUITY, True).direction is None  # below SMA200: no trend
    assert d.evaluate(snap(110, math.nan, 3.0), AssetClass.EQUITY, True).direction is None  # under 200 bars
    assert d.evaluate(snap(110, 100, math.nan), AssetClass.EQUITY, True).direction is None


def test_the_mirror_is_issued_for_fx_only():
    d = PullbackDetector()
    spike_in_downtrend = snap(90, 100, 95.0)
    short = d.evaluate(spike_in_downtrend, AssetClass.FX, True)
    assert short.direction is Direction.SHORT
    assert short.score == pytest.approx(0.5 + 0.5 * (10 - 5) / 8)
    assert d.evaluate(spike_in_downtrend, AssetClass.EQUITY, True).direction is None  # lost in the warm-up years
    assert d.evaluate(spike_in_downtrend, AssetClass.CRYPTO, False).direction is None  # spot: long only
    assert d.evaluate(spike_in_downtrend, AssetClass.FX, False).direction is None  # shorting not allowed


def test_levels_target_the_five_bar_average_with_a_wide_stop():
    lv = pullback_levels(Direction.LONG, close=100.0, atr=2.0, sma5=103.0)
    assert lv == Levels(entry=100.0, target=103.0, stop=94.0)
    assert lv is not None and lv.risk_reward == pytest.approx(0.5)
    near = pullback_levels(Direction.LONG, close=100.0, atr=2.0, sma5=100.4)  # at least half an ATR away
    assert near is not None and near.target == pytest.approx(101.0)
    short = pullback_levels(Direction.SHORT, close=1.10, atr=0.01, sma5=1.09)
    assert short is not None and short.target == pytest.approx(1.09) and short.stop == pytest.approx(1.13)
    assert pullback_levels(Direction.LONG, close=100.0, atr=math.nan, sma5=103.0) is None
    assert pullback_levels(Direction.LONG, close=2.0, atr=1.0, sma5=3.0) is None  # stop at or under zero


def uptrend_with_dips(n=320, seed=3):
    """A steady climb with a three-day dip every 40 bars: each dip is a pullback inside the trend."""
    rng = np.random.default_rng(seed)
    r = 0.004 + rng.normal(0, 0.004, n)
    for k in range(250, n - 3, 40):
        r[k:k + 3] = -0.012
    return make_bars(100 * np.exp(np.cumsum(r)), volume=rng.uniform(0.8e6, 1.2e6, n), spread=0.003)


class RecordingModel:
    """A probability model that answers every request with one opinion (None: no model for it) and keeps them."""

    name = "model"

    def __init__(self, answer: ModelOpinion | None) -> None:
        self.answer = answer
        self.requests: list = []

    def probabilities(self, requests):
        self.requests += list(requests)
        return [self.answer for _ in requests]


def test_the_engine_issues_a_pullback_with_its_levels_and_the_risk_manager_takes_its_low_risk_reward():
    bars = uptrend_with_dips()
    model = RecordingModel(None)  # asked, but no pullback model for this scope: the rules decide
    eng = SignalEngine(PandasTaEngine(), model=model)
    a = eng.analyse(STOCK, Timeframe.D1, bars.iloc[:253])  # the close of the third dip day
    assert a.setup.name == "pullback" and a.verdict is Direction.LONG
    assert a.snapshot["close"] > a.snapshot["sma_200"] and a.snapshot["rsi_2"] < 10
    (request,) = model.requests
    assert request.family == "pullback" and request.setup[1] == pytest.approx(a.setup.evidence[1].strength)
    assert a.probability is None
    s = eng.candidate(a)
    assert s is not None and s.strategy == "pullback"
    expected = pullback_levels(Direction.LONG, a.snapshot["close"], a.snapshot["atr_14"], a.snapshot["sma_5"])
    assert expected is not None and (s.entry, s.target, s.stop) == (expected.entry, expected.target, expected.stop)
    assert 0.15 <= s.risk_reward < 1.0
    assert RiskManager().review(s, [], None).approved
    oversold = replace(s, strategy="mean_reversion")  # the oversold setups keep the minimum risk-reward of 1
    assert RiskManager().review(oversold, [], None).reason.startswith("risk-reward")
    assert "pullback" in " ".join(v.text for v in a.ensemble.votes)


def test_without_the_pullback_detector_the_engine_is_the_oversold_detector_alone():
    bars = uptrend_with_dips()
    eng = SignalEngine(PandasTaEngine(), EngineConfig(pullback=None))
    a = eng.analyse(STOCK, Timeframe.D1, bars.iloc[:253])
    assert a.setup.name == "mean_reversion"


@pytest.mark.parametrize("inst", [STOCK, PAIR, COIN])
def test_screen_keeps_every_bar_the_engine_would_propose_as_a_pullback(inst):
    eng = SignalEngine(PandasTaEngine())
    bars = uptrend_with_dips(n=520, seed=11)
    if inst is PAIR:  # a downtrend with spikes for the mirror, then the climb
        bars = make_bars(np.concatenate([bars["close"].to_numpy()[::-1], bars["close"].to_numpy()]) / 100,
                         spread=0.001)
    s = Series.of(inst, Timeframe.D1, bars)
    positions = np.arange(300, len(bars))
    kept = set(screen(eng, s, positions).tolist())
    analyses = {int(p): analysis_at(eng, s, int(p)) for p in positions}
    proposed = {p for p, a in analyses.items() if eng.candidate(a) is not None}
    assert any(analyses[p].setup.name == "pullback" for p in proposed)
    assert proposed <= kept
    if inst is PAIR:
        assert any(analyses[p].setup.name == "pullback" and analyses[p].verdict is Direction.SHORT for p in proposed)


def test_the_reasoning_names_the_pullback_evidence_and_its_risk():
    a = SignalEngine(PandasTaEngine()).analyse(STOCK, Timeframe.D1, uptrend_with_dips().iloc[:253])
    s = SignalEngine(PandasTaEngine()).candidate(a)
    assert s is not None
    assert s.reasoning.startswith("Pullback in a long-term uptrend: ")
    assert f"RSI(2) {a.snapshot['rsi_2']:.1f}" in s.reasoning and "above SMA200" in s.reasoning
    assert "5-bar average" in s.reasoning and "3 ATR" in s.reasoning and "respect it" in s.reasoning
    lv = a.levels
    assert lv is not None
    wins = abs(lv.entry - lv.stop) / abs(lv.target - lv.entry)  # what one stop takes back, from its own levels
    assert f"one stop costs about {wins:.1f} wins at the target" in s.reasoning


@pytest.mark.parametrize("payoff, approved", [(0.5, True), (0.3, False)])
def test_a_pullback_with_a_model_shows_its_probability_and_faces_the_expectation_of_what_such_setups_paid(
        payoff, approved):
    """At a 72 % chance a win must pay more than 28/72 = 0.39 of a loss: the training setups' mean win / mean loss
    (`payoff`) stands in for the nominal R:R, which a pullback's expiry exits do not follow."""
    opinion = ModelOpinion(0.72, skill=1.0, base_rate=0.70, reliability=1.0, payoff=payoff)
    eng = SignalEngine(PandasTaEngine(), model=RecordingModel(opinion))
    a = eng.analyse(STOCK, Timeframe.D1, uptrend_with_dips().iloc[:253])
    s = eng.candidate(a)
    assert s is not None and s.strategy == "pullback" and s.confidence == 72
    assert s.evidence["model_probability"] == 0.72 and s.evidence["model_payoff"] == payoff
    assert f"their wins paid on average {payoff:.2f} of what their losses cost" in s.reasoning
    decision = RiskManager().review(s, [], None)
    assert decision.approved is approved, decision.reason
    if not approved:
        assert "wins paying 0.30 of a loss" in decision.reason


@pytest.mark.parametrize("payoff", [0.5, 0.3, None])
def test_the_model_votes_for_a_setup_only_above_its_break_even_chance(payoff):
    """72 % backs a pullback whose wins pay 0.5 of a loss (break-even 1 / 1.5 = 67 %) and weighs against one whose
    wins pay 0.3 (break-even 77 %); without a known payoff the idea's own R:R sets the break-even."""
    opinion = ModelOpinion(0.72, skill=1.0, base_rate=0.70, reliability=1.0, payoff=payoff)
    eng = SignalEngine(PandasTaEngine(), model=RecordingModel(opinion))
    a = eng.analyse(STOCK, Timeframe.D1, uptrend_with_dips().iloc[:253])
    assert a.levels is not None
    even = 1 / (1 + (payoff if payoff is not None else a.levels.risk_reward))
    (vote,) = [v for v in a.ensemble.votes if v.voter == "model"]
    assert vote.score == pytest.approx(max(-1.0, min(1.0, (0.72 - even) / 0.2)))
    assert (vote.score > 0) is (0.72 > even)
    assert f"break-even {even:.0%}" in vote.text


def test_the_model_votes_with_the_probability_it_shows():
    """A model at reliability 0 shows its base rate, and votes with it: 60 % against a break-even of 67 % (wins
    paying 0.5 of a loss) is a vote against, whatever its uncalibrated 90 % said."""
    opinion = ModelOpinion(0.90, skill=1.0, base_rate=0.60, reliability=0.0, payoff=0.5)
    a = SignalEngine(PandasTaEngine(), model=RecordingModel(opinion)).analyse(STOCK, Timeframe.D1,
                                                                            uptrend_with_dips().iloc[:253])
    (vote,) = [v for v in a.ensemble.votes if v.voter == "model"]
    assert a.probability == pytest.approx(0.60)
    assert vote.score == pytest.approx((0.60 - 1 / 1.5) / 0.2)


def test_the_article_before_a_percentage():
    from core.signals.reasoning import indefinite

    assert [indefinite(x) for x in ("80%", "8%", "11%", "18%", "72%", "1%", "100%", "38%")] == \
        ["an", "an", "an", "an", "a", "a", "a", "a"]


@pytest.mark.parametrize("base, payoff, approved", [(0.80, 0.40, True), (0.41, 0.90, False)])
def test_a_pullback_scored_by_its_record_shows_that_share_and_faces_the_expectation_after_costs(base, payoff, approved):
    """A scope with too few setups for trees serves its record (core.models.reversion.train_record): the share of
    its setups that won after costs, with no skill and no reliability. The confidence is that share, the text says
    it is a record, the vote weighs nothing, and the risk manager tests its expectation (EURUSD 4h pullbacks: 41 %
    won at 10 bps a side)."""
    from bot.views.signals import analysis_doc, signal_doc

    opinion = ModelOpinion(base, skill=0.0, base_rate=base, reliability=0.0, payoff=payoff)
    eng = SignalEngine(PandasTaEngine(), model=RecordingModel(opinion))
    a = eng.analyse(STOCK, Timeframe.D1, uptrend_with_dips().iloc[:253])
    s = eng.candidate(a)
    assert s is not None and s.confidence == round(base * 100) and s.evidence["model_reliability"] == 0
    (vote,) = [v for v in a.ensemble.votes if v.voter == "model"]
    assert vote.weight == 0.0
    assert f"Record: {base:.0%} of past setups like this won after costs" in s.reasoning
    assert "calibrated chance" not in s.reasoning
    fields = dict(signal_doc(s).fields)
    assert fields["Confidence"] == f"{base:.0%} chance of a win after costs (the record of past setups like this)"
    decision = RiskManager().review(s, [], None)
    assert decision.approved is approved, decision.reason
    check = RiskManager().quality(s)  # what /signal shows beside the setup
    shown = dict(analysis_doc(a, None, check or "").fields)["Risk check"]
    assert shown == ("passes (R:R, costs, and the expected value or, without a probability, the minimum score)"
                     if approved else
                     f"fails, so no signal is issued: {decision.reason}")
