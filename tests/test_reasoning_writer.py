"""Signal reasoning written by an LLM (Claude, then GPT) through the real SDKs against local fakes: validated
against the signal's evidence, the risk sentence appended by the service (the notice is the views' note), and
the template whenever a writer fails, refuses, times out or cites what is not in the evidence. The signal is
issued either way."""
from __future__ import annotations

import time
from datetime import timedelta

import pytest

from bot.app import reasoning_narrator
from bot.settings import Settings
from bot.views.signals import signal_doc
from bot.views.text import render_text
from core.clock import FixedClock
from core.domain import AssetClass, Direction, RiskTolerance, Signal, Timeframe
from core.events import EventBus, SignalIssued
from core.news.reasoning_writers import build_narrator
from core.risk import RiskManager
from core.signals.narrative import (
    REASONING_PROMPT,
    InvalidNarrativeError,
    Narrator,
    facts_of,
    key_risks,
    validate_narrative,
)
from core.signals.reasoning import DISCLAIMER
from core.signals.service import SignalService
from storage import Database, Stores
from tests.conftest import utc
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fakes.openai_api import FakeOpenAI

T0 = utc(2017, 6, 2)
TEMPLATE = "Oversold: RSI(14) 27.4, price z-score -2.31. With the uptrend. Risk: reversion setups fail."
EVIDENCE = {
    "engine": "rules-v1+model", "bar_time": "2017-06-01T00:00:00+00:00",
    "indicators": {"rsi_14": 27.4113, "adx_14": 18.2, "atr_14": 2.0731, "sma_20": 155.92, "volume_pct_50": 0.88},
    "setup": {"name": "oversold", "score": 0.7421, "criteria": [
        {"name": "zscore", "value": -2.3107, "full_at": -2.0, "strength": 1.0, "weight": 1.0},
        {"name": "rsi", "value": 27.4113, "full_at": 30.0, "strength": 1.0, "weight": 1.0}]},
    "votes": [{"voter": "mean_reversion", "score": 0.7421, "weight": 1.0, "text": "oversold reversion setup"},
              {"voter": "trend", "score": 0.31, "weight": 0.5, "text": "uptrend"}],
    "ensemble_score": 0.5812, "model_probability": 0.6134,
}
GOOD_TEXT = ("AAPL closed oversold, with RSI(14) at 27.4 and a price z-score of -2.31 below its 20-bar mean. "
             "The mean-reversion vote and the uptrend agree, and the model puts the chance of a win at 61%, "
             "hence a confidence of 72.")
WRONG_NUMBER = ("AAPL closed oversold with RSI(14) at 27.4. Analysts expect earnings growth of 35% next quarter, "
                "so a rebound toward 160 is likely.")


def candidate(**kw: object) -> Signal:
    fields: dict[str, object] = dict(
        id="AAPL-1d-20170602-L", symbol="AAPL", asset_class=AssetClass.EQUITY, timeframe=Timeframe.D1,
        direction=Direction.LONG, entry=150.25, target=155.92, stop=146.1, confidence=72, position_size=0.05,
        issued_at=T0, expires_at=T0 + timedelta(days=10), reasoning=TEMPLATE, strategy="oversold",
        evidence=EVIDENCE)
    fields.update(kw)
    return Signal(**fields)  # type: ignore[arg-type]


def narrator(anthropic: FakeAnthropic | None, openai: FakeOpenAI | None, budget: float = 5.0) -> Narrator | None:
    return build_narrator(
        anthropic_api_key="test-anthropic-key" if anthropic else None,
        anthropic_base_url=anthropic.base_url if anthropic else None, anthropic_model="claude-haiku-4-5",
        openai_api_key="test-openai-key" if openai else None,
        openai_base_url=openai.base_url + "/v1" if openai else None, openai_model="gpt-4o-mini",
        daily_tokens=100_000, daily_cost_usd=1.0, timeout=5.0, budget=budget, clock=FixedClock(T0))


class Run:
    """A SignalService over an in-memory store; `issue` returns (stored, published) for one candidate."""

    def __init__(self, narr: Narrator | None) -> None:
        self.narrator = narr
        self.published: list[Signal] = []

    async def issue(self, cand: Signal) -> tuple[Signal, Signal]:
        db = Database("sqlite+aiosqlite:///:memory:")
        await db.upgrade()
        store = Stores.over(db)
        bus = EventBus()

        async def on_issued(event: SignalIssued) -> None:
            self.published.append(event.signal)

        bus.subscribe(SignalIssued, on_issued)
        service = SignalService(None, None, store.signals, bus, RiskManager(), FixedClock(T0),  # type: ignore[arg-type]
                                narrator=self.narrator)
        try:
            report = await service.issue([cand])
            assert [s.id for s in report.issued] == [cand.id], report.rejected
            stored = await store.signals.get_signal(cand.id)
            assert stored is not None
            assert len(self.published) == 1 and self.published[0] == report.issued[0]
            return stored, self.published[0]
        finally:
            await service.close()
            await store.close()


def assert_template(s: Signal) -> None:
    assert s.reasoning == TEMPLATE
    assert s.evidence["reasoning"]["by"] == "template"
    assert {k: v for k, v in s.evidence.items() if k != "reasoning"} == EVIDENCE


async def test_claude_writes_the_reasoning_and_the_service_adds_the_risks_the_view_the_notice(fake_anthropic, fake_openai):
    fake_anthropic.text = GOOD_TEXT
    stored, published = await Run(narrator(fake_anthropic, fake_openai)).issue(candidate())
    assert stored == published
    assert stored.reasoning.startswith(GOOD_TEXT)
    assert "Key risks:" in stored.reasoning and stored.reasoning.endswith(key_risks(stored))
    doc = signal_doc(stored, RiskTolerance.MEDIUM)
    assert doc.note == DISCLAIMER and render_text(doc).count(DISCLAIMER) == 1  # the notice once, from the view
    assert stored.evidence["reasoning"] == {"by": "anthropic:claude-haiku-4-5", "prompt": REASONING_PROMPT.version,
                                            "model": "claude-haiku-4-5"}
    assert stored.evidence["setup"] == EVIDENCE["setup"]  # the evidence itself is kept
    assert len(fake_anthropic.bodies) == 1 and not fake_openai.bodies
    sent = fake_anthropic.bodies[0]
    assert "tools" not in sent and "27.4113" in sent["messages"][0]["content"]


async def test_an_answer_citing_a_number_not_in_the_evidence_goes_to_gpt(fake_anthropic, fake_openai):
    fake_anthropic.text = WRONG_NUMBER
    fake_openai.text = GOOD_TEXT
    stored, _ = await Run(narrator(fake_anthropic, fake_openai)).issue(candidate())
    assert stored.reasoning.startswith(GOOD_TEXT) and stored.reasoning.endswith(key_risks(stored))
    assert stored.evidence["reasoning"]["by"] == "openai:gpt-4o-mini"
    assert "response_format" not in fake_openai.bodies[0]


async def test_invalid_answers_from_both_keep_the_template(fake_anthropic, fake_openai):
    fake_anthropic.text = WRONG_NUMBER
    fake_openai.text = "See https://example.com for why AAPL will rise. It is oversold."
    stored, published = await Run(narrator(fake_anthropic, fake_openai)).issue(candidate())
    assert stored == published
    assert_template(stored)
    notes = " ".join(stored.evidence["reasoning"]["fallback"])
    assert "cites 35" in notes and "URL" in notes


async def test_500_then_refusal_keep_the_template(fake_anthropic, fake_openai):
    fake_anthropic.faults.add("status", status=500)
    fake_openai.faults.add("refusal")
    stored, _ = await Run(narrator(fake_anthropic, fake_openai)).issue(candidate())
    assert_template(stored)
    notes = stored.evidence["reasoning"]["fallback"]
    assert "HTTP 500" in notes[0] and "refused" in notes[1]


async def test_claude_refusal_then_gpt_answers(fake_anthropic, fake_openai):
    fake_anthropic.faults.add("refusal")
    fake_openai.text = GOOD_TEXT
    stored, _ = await Run(narrator(fake_anthropic, fake_openai)).issue(candidate())
    assert stored.evidence["reasoning"]["by"] == "openai:gpt-4o-mini"


async def test_a_timeout_keeps_the_template_within_the_budget(fake_anthropic):
    fake_anthropic.faults.add("timeout", delay=5.0)
    fake_anthropic.text = GOOD_TEXT
    started = time.monotonic()
    stored, published = await Run(narrator(fake_anthropic, None, budget=0.8)).issue(candidate())
    assert time.monotonic() - started < 3.0
    assert stored == published
    assert_template(stored)


async def test_no_keys_no_narrator_nothing_changes():
    assert narrator(None, None) is None
    stored, published = await Run(None).issue(candidate())
    assert stored == published == candidate()


def test_the_setting_switches_it_off():
    on = Settings(_env_file=None, anthropic_api_key="k", anthropic_base_url="http://127.0.0.1:9")  # type: ignore[call-arg]
    off = Settings(_env_file=None, anthropic_api_key="k", llm_reasoning=False)  # type: ignore[call-arg]
    none = Settings(_env_file=None, anthropic_api_key=None, openai_api_key=None)  # type: ignore[call-arg]
    clock = FixedClock(T0)
    assert isinstance(reasoning_narrator(on, clock), Narrator)
    assert reasoning_narrator(off, clock) is None and reasoning_narrator(none, clock) is None


async def test_a_failing_provider_opens_its_breaker(fake_anthropic, fake_openai):
    fake_anthropic.faults.add("status", status=500, times=-1)
    fake_openai.text = GOOD_TEXT
    narr = narrator(fake_anthropic, fake_openai)
    assert narr is not None
    try:
        signals = [candidate(id=f"AAPL-1d-2017060{i}-L", issued_at=T0 + timedelta(days=i)) for i in range(5)]
        narr.concurrency = 1
        out = await narr.narrate(signals)
        assert all(s.evidence["reasoning"]["by"] == "openai:gpt-4o-mini" for s in out)
        assert len(fake_anthropic.bodies) == 3  # then the breaker is open: no more calls
        assert narr.slots[0].stats.skipped == 2
    finally:
        await narr.close()


def test_the_writer_is_told_when_the_probability_is_a_record():
    """At reliability 0 the probability is the base rate of past setups: the LLM must not call it a model's call."""
    assert "model_win_probability_is" not in facts_of(candidate())
    record = candidate(evidence={**EVIDENCE, "model_reliability": 0.0})
    facts = facts_of(record)
    assert facts["model_win_probability"] == 0.6134 and "not a calibrated model probability" in \
        facts["model_win_probability_is"]


def test_validation_rules():
    s = candidate()
    assert validate_narrative("  " + GOOD_TEXT.replace(" ", "\n", 1), s) == GOOD_TEXT
    ok_rounded = "RSI(14) is 27 and the z-score about -2.3. Entry is near 150.3 with the stop at 146."
    assert validate_narrative(ok_rounded, s) == ok_rounded
    for bad, why in [
        ("Too short.", "characters"),
        (WRONG_NUMBER, "cites 35"),
        ("AAPL is oversold with RSI at 27.4 today. <b>Buy</b> it now before the rebound starts.", "HTML"),
        ("AAPL is oversold. RSI is 27.4. The z-score is -2.31. The model says 61%. Confidence is 72.", "sentences"),
        ("AAPL is oversold, see www.example.com for the chart. The model says 61%.", "URL"),
        ("AAPL is oversold with RSI at 27.4 on the daily chart. The stop sits at 140 under support.", "cites 140"),
    ]:
        with pytest.raises(InvalidNarrativeError, match=why):
            validate_narrative(bad, s)


async def test_admin_models_shows_each_writer_and_what_it_did(fake_anthropic, fake_openai):
    from bot.commands.admin import reasoning_part

    assert reasoning_part(None) == [("Reasoning", "the engine's template (no LLM key, or SIGNALBOT_LLM_REASONING=false)")]
    fake_anthropic.text = WRONG_NUMBER
    fake_openai.text = GOOD_TEXT
    narr = narrator(fake_anthropic, fake_openai)
    assert narr is not None
    await Run(narr).issue(candidate())
    claude, gpt = reasoning_part(narr)
    assert claude[0] == "Reasoning by anthropic:claude-haiku-4-5" and gpt[0] == "Reasoning by openai:gpt-4o-mini"
    assert claude[1].startswith("breaker closed; 1 calls, 0 used, 0 failed, 1 rejected, 0 skipped; today ")
    assert gpt[1].startswith("breaker closed; 1 calls, 1 used, 0 failed, 0 rejected, 0 skipped; today ")
    assert "of 100,000 tokens" in gpt[1] and "of $1.00" in gpt[1]


async def test_a_candidate_already_expired_is_not_issued() -> None:
    """The first scan after a weekend or a long stop finds the setups of old bars: one whose expiry has passed
    is rejected with the reason, never stored or published (nobody could follow it)."""
    db = Database("sqlite+aiosqlite:///:memory:")
    await db.upgrade()
    store = Stores.over(db)
    bus, published = EventBus(), []

    async def on_issued(event: SignalIssued) -> None:
        published.append(event.signal)

    bus.subscribe(SignalIssued, on_issued)
    service = SignalService(None, None, store.signals, bus, RiskManager(), FixedClock(T0),  # type: ignore[arg-type]
                            narrator=None)
    try:
        stale = candidate(id="AAPL-1d-20170530-L", issued_at=T0 - timedelta(days=4), expires_at=T0)
        fresh = candidate(issued_at=T0, expires_at=T0 + timedelta(days=3))
        report = await service.issue([stale, fresh])
        assert [s.id for s in report.issued] == [fresh.id]
        assert report.rejected == [(stale.id, "expired at 2017-06-02 00:00 UTC, before it could be issued")]
        assert await store.signals.get_signal(stale.id) is None and [s.id for s in published] == [fresh.id]
    finally:
        await service.close()
        await store.close()
