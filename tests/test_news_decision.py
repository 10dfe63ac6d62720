"""The news vote in the signal decisions: the engine's news port, point-in-time reading, vetoes and additions,
evidence and reasoning, the voter's track record, the news job and the backtest's replay of stored verdicts."""
from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from core.backtest.candidates import Series, analysis_at, decide, screen
from core.domain import AssetClass, Direction, Instrument, Timeframe
from core.indicators.pandas_ta_engine import PandasTaEngine
from core.news.schema import AnalysisRecord, NewsVerdict
from core.news.voter import VerdictIndex, VoterConfig, news_track_record
from core.signals.engine import EngineConfig, SignalEngine
from core.signals.ensemble import EnsembleConfig, NewsOpinion
from tests.conftest import make_bars
from tests.test_engine import STOCK, FixedProbability, calm_then_crash

BARS = calm_then_crash()
AS_OF = (BARS.index[-1] + Timeframe.D1.duration).to_pydatetime()  # the last bar's close: when news may be read


def verdict(sentiment: float) -> NewsVerdict:
    return NewsVerdict(event_type="other", severity=3, time_horizon="days", company_specific=True,
                       revenue_impact="unknown", earnings_impact="unknown", credibility=0.8, novelty=0.7,
                       sentiment=sentiment, reasoning="test")


def rec(item: str, published: datetime, sentiment: float, symbol: str = "TEST") -> AnalysisRecord:
    return AnalysisRecord(item_id=item, symbol=symbol, published_at=published, analysed_at=published,
                          provider="local", model="local:m", prompt_version="local-v1", verdict=verdict(sentiment),
                          market_wide=symbol == "", title=f"headline {item}")


def burst(prefix: str, at: datetime, sentiment: float, n: int = 6, symbol: str = "TEST") -> list[AnalysisRecord]:
    return [rec(f"{prefix}{i}", at - timedelta(minutes=10 * i), sentiment, symbol) for i in range(n)]


def engine_with(records: list[AnalysisRecord], weight: float = 0.3, min_agreement: float = 0.2,
                skill: float = 1.0, model: object = None) -> SignalEngine:
    weights = (("mean_reversion", 0.7), ("trend", 0.3), ("model", 1.0), ("news", weight))
    config = EngineConfig(ensemble=EnsembleConfig(min_agreement=min_agreement, weights=weights))
    return SignalEngine(PandasTaEngine(), config, model=model,  # type: ignore[arg-type]
                        news=VerdictIndex(records, skill=skill))


@pytest.fixture(scope="module")
def rules() -> SignalEngine:
    return SignalEngine(PandasTaEngine())


# -- the engine's news port ---------------------------------------------------------------------------------------


def test_news_joins_the_vote_and_is_named_in_evidence_and_reasoning(rules):
    base = rules.analyse(STOCK, Timeframe.D1, BARS)
    eng = engine_with(burst("good", AS_OF - timedelta(hours=1), 0.8))
    a = eng.analyse(STOCK, Timeframe.D1, BARS)
    assert a.verdict is Direction.LONG and a.news is not None and a.news.items == 6
    vote = a.ensemble.votes[-1]
    assert vote.voter == "news" and vote.weight == pytest.approx(0.3) and 0 < vote.score <= 0.8
    assert vote.text.startswith("news +")
    assert a.ensemble.score == pytest.approx((base.ensemble.score * 1.0 + 0.3 * vote.score) / 1.3)
    assert a.news_effect == "confidence" and a.ensemble.confidence != base.ensemble.confidence
    s = eng.candidate(a)
    assert s is not None
    assert s.evidence["news"]["items"] == 6 and s.evidence["news"]["effect"] == "confidence"
    assert s.evidence["news"]["score"] == pytest.approx(vote.score, abs=1e-4)
    assert f"News: score {vote.score:+.2f} from 6 items published by the bar's close backs the idea." in s.reasoning
    assert "Risk:" in s.reasoning  # the key risk stays
    assert eng.version == "rules-v1+news" and eng.news_effects["confidence"] == 1
    assert s.evidence["engine"] == "rules-v1+news"


def test_without_a_news_voter_or_without_news_the_decision_is_the_rules(rules):
    base = rules.analyse(STOCK, Timeframe.D1, BARS)
    assert rules.news is None and base.news is None and "news" not in rules.candidate(base).evidence
    quiet = engine_with([rec("other", AS_OF - timedelta(hours=1), -0.9, symbol="MSFT"),
                         rec("market", AS_OF - timedelta(hours=1), -0.9, symbol="")])  # no company news
    a = quiet.analyse(STOCK, Timeframe.D1, BARS)
    assert a.news is None and a.ensemble == base.ensemble
    unskilled = engine_with(burst("bad", AS_OF, -0.9), skill=0.0).analyse(STOCK, Timeframe.D1, BARS)
    assert unskilled.ensemble.score == pytest.approx(base.ensemble.score) and unskilled.verdict is base.verdict

    class Broken:
        name = "news"

        def opinions(self, requests):
            raise RuntimeError("index corrupt")

    broken = SignalEngine(PandasTaEngine(), news=Broken()).analyse(STOCK, Timeframe.D1, BARS)
    assert broken.ensemble == base.ensemble


def test_bad_news_can_veto_and_good_news_can_add_a_signal(rules):
    base = rules.analyse(STOCK, Timeframe.D1, BARS)
    assert base.verdict is Direction.LONG
    vetoed = engine_with(burst("bad", AS_OF, -0.9), weight=3.0)
    a = vetoed.analyse(STOCK, Timeframe.D1, BARS)
    assert a.setup.direction is Direction.LONG and a.verdict is None and a.news_effect == "vetoed"
    assert vetoed.candidate(a) is None and vetoed.news_effects["vetoed"] == 1
    # a stricter ensemble the rules alone do not pass; strong good news tips it
    strict = base.ensemble.score + 0.05
    assert SignalEngine(PandasTaEngine(), EngineConfig(ensemble=EnsembleConfig(min_agreement=strict))).analyse(
        STOCK, Timeframe.D1, BARS).verdict is None
    added = engine_with(burst("good", AS_OF, 0.95, n=30), weight=1.0, min_agreement=strict)
    b = added.analyse(STOCK, Timeframe.D1, BARS)
    assert b.verdict is Direction.LONG and b.news_effect == "added"
    assert "enough to tip the vote" in added.candidate(b).reasoning


def test_with_a_model_the_confidence_stays_the_models_probability():
    eng = engine_with(burst("bad", AS_OF, -0.9), model=FixedProbability(0.72))
    a = eng.analyse(STOCK, Timeframe.D1, BARS)
    assert [v.voter for v in a.ensemble.votes] == ["mean_reversion", "trend", "model", "news"]
    assert a.ensemble.confidence == 72 and a.verdict is Direction.LONG and a.news_effect == "none"
    assert eng.version == "rules-v1+model+news"


def test_news_published_after_the_bars_close_changes_no_decision(rules):
    """Point in time: an item published after as_of (even a second after) is never read; one at as_of is."""
    before = burst("early", AS_OF - timedelta(hours=2), 0.3, n=3)
    later = [*burst("late", AS_OF + timedelta(hours=8), -1.0, n=40), rec("just-after", AS_OF + timedelta(seconds=1), -1.0)]
    assert all(r.published_at > AS_OF for r in later)
    a1 = engine_with(before, weight=3.0).analyse(STOCK, Timeframe.D1, BARS)
    a2 = engine_with(before + later, weight=3.0).analyse(STOCK, Timeframe.D1, BARS)
    assert a1 == a2 and a1.verdict is Direction.LONG
    s1, s2 = rules.candidate(a1), rules.candidate(a2)
    assert s1 == s2  # id, confidence, reasoning, evidence
    at_close = engine_with([*before, rec("at-close", AS_OF, -1.0)], weight=3.0).analyse(STOCK, Timeframe.D1, BARS)
    assert at_close.news is not None and at_close.news.items == 4  # published exactly at the close: known then


def test_every_backtest_decision_is_the_same_with_the_future_news_removed():
    """Over a whole synthetic history: the candidate of every bar with a setup is the same whether the voter
    holds every item of the history (most of them published after that bar) or only those published by its
    close, and news does change some decisions."""
    rng = np.random.default_rng(11)
    r = rng.normal(0, 0.02, 520)
    r[rng.choice(520, 40, replace=False)] *= 4
    bars = make_bars(100 * np.exp(np.cumsum(r)), volume=rng.uniform(1e5, 1e6, 520))
    inst = Instrument("TEST", AssetClass.EQUITY)
    s = Series.of(inst, Timeframe.D1, bars)
    closes = [t.to_pydatetime() + Timeframe.D1.duration for t in bars.index]
    items = [rec(f"n{k}", closes[k] - timedelta(hours=h), float(np.clip(rng.normal(0, 0.7), -1, 1)))
             for k in range(250, 520) for h in (1, 5, 30)]
    everything = engine_with(items, weight=2.0)
    positions = [int(p) for p in screen(everything, s, np.arange(300, 520))]
    changed = 0
    plain = SignalEngine(PandasTaEngine())
    for p in positions:
        known = engine_with([i for i in items if i.published_at <= closes[p]], weight=2.0)
        full = decide(everything, s, p)
        assert full == decide(known, s, p)
        changed += full != decide(plain, s, p)
    assert positions and changed > 0
    assert sum(everything.news_effects.values()) > 0


# -- the voter's index and track record -----------------------------------------------------------------------------


def test_index_window_prune_and_batch_opinions():
    t = AS_OF
    index = VerdictIndex(config=VoterConfig(window=timedelta(hours=6)))
    index.add([rec("a", t - timedelta(hours=1), 0.6), rec("old", t - timedelta(hours=7), -0.9),
               rec("m", t - timedelta(hours=1), -0.5, symbol=""), rec("b", t - timedelta(hours=2), 0.4, symbol="XYZ")])
    assert len(index) == 4
    one, none, xyz = index.opinions([("TEST", t), ("NOPE", t), ("XYZ", t - timedelta(hours=3))])
    assert isinstance(one, NewsOpinion) and one.items == 1 and one.score > 0 and "market headlines: 1" in one.text
    assert none is None and xyz is None  # XYZ's item was published after that as_of
    index.prune(t - timedelta(hours=3))
    assert len(index) == 3


def test_track_record_and_skill():
    closed = [({"news": {"score": 0.5}}, "long", 0.01), ({"news": {"score": 0.5}}, "short", 0.01),
              ({"news": {"score": -0.4}}, "long", -0.02), ({"news": {"score": 0.01}}, "long", 0.02), ({}, "long", 0.1)]
    rec_ = news_track_record(closed)
    assert (rec_.voted, rec_.calls, rec_.right) == (4, 3, 2) and rec_.hit_rate == pytest.approx(2 / 3)
    assert rec_.skill() == 0.0  # too few calls: shadow (stored and scored, moves nothing)
    assert news_track_record([({"news": {"score": 0.5}}, "long", -0.01)] * 40).skill() == 0.0
    assert news_track_record([({"news": {"score": 0.5}}, "long", 0.01)] * 40).skill() == 1.0


def test_no_news_voter_means_no_extra_work(rules):
    """The hot path without news: the analyses are returned as the rules made them, nothing is asked."""
    a = analysis_at(rules, Series.of(STOCK, Timeframe.D1, BARS), len(BARS) - 1)
    assert a.news is None and a.news_effect is None and sum(rules.news_effects.values()) == 0


# -- the news job in the service ----------------------------------------------------------------------------------


class StubAnalyst:
    """An analyst that reads 'up' as good news and anything else as bad, and counts its calls."""

    provider = "stub"
    model = "stub-1"
    prompt_version = "stub-v1"

    def __init__(self) -> None:
        self.calls = 0

    async def analyze(self, item, symbol):  # noqa: ANN001
        from core.news.schema import AnalystAnswer

        self.calls += 1
        return AnalystAnswer(verdict(0.8 if "up" in item.title else -0.8), self.model, 20, 10)


async def verdict_db():
    from storage.database import Database
    from storage.news import SqlVerdictStore
    from storage import Stores

    db = Database("sqlite+aiosqlite:///:memory:")
    await db.upgrade()
    return Stores.over(db), SqlVerdictStore(db)


async def test_the_news_job_analyses_new_items_once_stores_them_and_feeds_the_engine():
    from bot.news_job import NewsJob
    from core.clock import FixedClock
    from core.news.analysts import AnalystSlot, NewsAnalysisService
    from core.llm import DailyQuota
    from core.news.sources import NewsItem, ReplayNews

    t0 = AS_OF - timedelta(hours=3)
    items = [NewsItem.create(published_at=t0 + timedelta(hours=h), source="twitter", title=f"TEST {w} {h}",
                             tickers=("TEST",)) for h, w in ((0, "up"), (1, "up big"), (2, "up more"), (5, "down"))]
    store, verdicts = await verdict_db()
    try:
        clock = FixedClock(AS_OF - timedelta(minutes=30))
        stub = StubAnalyst()
        analysis = NewsAnalysisService([AnalystSlot(stub, DailyQuota(tokens=10_000, cost_usd=1.0, clock=clock))],
                                       store=verdicts, clock=clock)
        job = NewsJob([ReplayNews(items)], analysis, verdicts, clock, lambda: ["TEST"], store.signals)
        run = await job.run()
        assert (run.items, run.analysed, stub.calls) == (3, 3, 3)  # the item published later is not seen yet
        assert await verdicts.count() == 3 and len(job.index) == 3
        clock.at = AS_OF
        assert (await job.run()).items == 0 and stub.calls == 3  # nothing new: nothing asked again
        engine = SignalEngine(PandasTaEngine(), news=job.index)
        a = engine.analyse(STOCK, Timeframe.D1, BARS)
        assert a.news is not None and a.news.items == 3 and a.news.score > 0
        clock.at = AS_OF + timedelta(hours=3)
        assert (await job.run()).items == 1 and stub.calls == 4
        assert engine.analyse(STOCK, Timeframe.D1, BARS) == a  # the bar closed before that item: same decision
        assert job.index.skill == 0.0 and job.track.voted == 0  # unproven: in shadow
        # a restart reads the stored window back
        again = NewsJob([], analysis, verdicts, clock, lambda: ["TEST"])
        assert await again.load() == 4
    finally:
        await store.close()


def test_replay_news_is_found_beside_the_replayed_data(tmp_path):
    from bot.news_job import replay_news_dir

    assert replay_news_dir(None, None) is None
    (tmp_path / "equities").mkdir()
    assert replay_news_dir(tmp_path / "equities", None) is None
    (tmp_path / "news").mkdir()
    (tmp_path / "news" / "x_tweets.csv").write_text("time,symbol,text\n")
    assert replay_news_dir(tmp_path, None) == tmp_path / "news"
    assert replay_news_dir(tmp_path / "equities", None) == tmp_path / "news"
    assert replay_news_dir(None, "/elsewhere") == Path("/elsewhere")


# -- the backtest replays stored verdicts ---------------------------------------------------------------------------


async def test_backtest_news_reads_the_cache_and_asks_nothing_the_second_time(tmp_path, monkeypatch):
    """storage.news_cache (over core.news.replay): a news folder analysed into the verdict file once (a stub for the local model), then
    replayed: the second build analyses nothing, and verdicts an LLM stored there are preferred."""
    import storage.news_cache as cache
    from core.news.schema import AnalystAnswer
    from storage.news import open_verdict_file

    news = tmp_path / "news"
    news.mkdir()
    (news / "t_tweets.csv").write_text("time,symbol,text,retweet_count,favorite_count\n"
                                       "2015-06-01T14:00:00Z,TEST,TEST goes up,0,0\n"
                                       "2015-06-01T15:00:00Z,TEST,TEST goes up again today,0,0\n"
                                       "2015-06-01T15:30:00Z,OTHER,OTHER falls,0,0\n")
    (news / "m_headlines.csv").write_text("date,headline\n2015-06-01,Stocks rally\n")
    batches: list[int] = []

    class Local:
        model = "local:stub"

        def analyze_batch(self, items):  # noqa: ANN001
            batches.append(len(items))
            return [AnalystAnswer(verdict(0.5), self.model) for _ in items]

    import core.news.providers.local as local

    monkeypatch.setattr(local.LocalAnalyst, "from_store", classmethod(lambda cls, d, threads=1: Local()))
    db = tmp_path / "v.sqlite"
    start, end = datetime(2015, 5, 1, tzinfo=AS_OF.tzinfo), datetime(2015, 7, 1, tzinfo=AS_OF.tzinfo)
    index, info = await cache.news_index(db, news, ["TEST"], start, end, tmp_path)
    assert batches == [3] and info["analysed_now"] == 3 and info["verdicts_loaded"] == 3  # OTHER left out
    when = datetime(2015, 6, 2, tzinfo=AS_OF.tzinfo)
    assert index.vote("TEST", when).items == 2
    # an LLM verdict stored for the same item wins over the local one; nothing is analysed again
    handle, store = await open_verdict_file(db)
    mine = (await store.between(["TEST"], start, end))[0]
    from dataclasses import replace as dc_replace

    await store.save_many([dc_replace(mine, provider="anthropic", model="claude", prompt_version="event-v1",
                                      verdict=verdict(-0.9))])
    await handle.close()
    index2, info2 = await cache.news_index(db, news, ["TEST"], start, end, tmp_path)
    assert batches == [3] and info2["analysed_now"] == 0 and info2["providers"] == ["anthropic", "local"]
    assert index2.vote("TEST", when).score < index.vote("TEST", when).score


def stub_local_analyst(monkeypatch, batches: list[int]) -> None:  # noqa: ANN001
    """The local model replaced by a stub: 'terrible' is bad news, anything else good."""
    from core.news.schema import AnalystAnswer
    import core.news.providers.local as local

    class Local:
        model = "local:stub"

        def analyze_batch(self, items):  # noqa: ANN001
            batches.append(len(items))
            return [AnalystAnswer(verdict(-0.9 if "terrible" in i.title else 0.9), self.model) for i in items]

    monkeypatch.setattr(local.LocalAnalyst, "from_store", classmethod(lambda cls, d, threads=1: Local()))


def write_tweets(folder: Path, days, symbols) -> None:  # noqa: ANN001
    folder.mkdir()
    lines = ["time,symbol,text,retweet_count,favorite_count"]
    for d in days:
        for s in symbols:
            word = "terrible" if s == "AAA" else "great"
            lines.append(f"{d:%Y-%m-%d}T15:00:00Z,{s},{s} {d:%Y%m%d} looks {word},0,0")
    (folder / "x_tweets.csv").write_text("\n".join(lines) + "\n")


async def test_run_backtest_with_symbols_and_news_end_to_end(tmp_path, monkeypatch):
    """`signalbot backtest --symbols --news`: only the symbols given are scanned; news published only after the
    period changes no figure of the report; news during it vetoes setups and the report counts it."""
    import pandas as pd

    from bot.cli.backtest import run_backtest
    from bot.cli.options import parse_symbols
    from tests.test_backtest import synthetic_csvs

    data, bench = synthetic_csvs(tmp_path, ("AAA", "BBB", "CCC"))
    batches: list[int] = []
    stub_local_analyst(monkeypatch, batches)
    write_tweets(tmp_path / "late", pd.bdate_range("2022-09-05", periods=20), ("AAA", "BBB"))
    write_tweets(tmp_path / "during", pd.bdate_range("2021-01-04", "2022-08-31"), ("AAA", "BBB"))
    args = dict(progress=lambda f, s: None, symbols=["AAA", "BBB", "ZZZ"], models_dir=tmp_path, families=("setups",))
    period = (data, "2021-01-04", "2022-08-31", 10, bench, None, None)
    plain = await run_backtest(*period, **args)
    assert plain["universe"] == 2 and plain["symbols"] == {"given": 3, "scanned": 2, "missing": ["ZZZ"]}
    assert plain["news"] == {"kind": "no news"} and plain["signals"] > 0
    late = await run_backtest(*period, **args, news=tmp_path / "late", news_db=tmp_path / "late.sqlite")
    assert late["news"]["analysed_now"] == 40 and late["news"]["verdicts_loaded"] == 0
    assert {k: v for k, v in late.items() if k != "news"} == {k: v for k, v in plain.items() if k != "news"}
    assert late["news"]["effects"] == {"vetoed": 0, "added": 0, "confidence": 0, "none": 0}
    during = await run_backtest(*period, **args, news=tmp_path / "during", news_db=tmp_path / "during.sqlite",
                                news_weight=3.0)
    effects = during["news"]["effects"]
    assert effects["vetoed"] > 0 and during["news"]["weight"] == 3.0 and during["news"]["verdicts_loaded"] > 0
    assert during["signals"] != plain["signals"]
    seen = list(batches)
    again = await run_backtest(*period, **args, news=tmp_path / "during", news_db=tmp_path / "during.sqlite",
                               news_weight=3.0)
    assert batches == seen and again["news"]["analysed_now"] == 0  # replayed from the file, nothing analysed
    assert {k: v for k, v in again.items() if k != "news"} == {k: v for k, v in during.items() if k != "news"}
    # --symbols forms
    assert parse_symbols("aapl, msft") == ["AAPL", "MSFT"]
    (tmp_path / "list.txt").write_text("msft\naapl nvda\n")
    assert parse_symbols(str(tmp_path / "list.txt")) == ["AAPL", "MSFT", "NVDA"]
    assert parse_symbols(str(tmp_path / "during" / "x_tweets.csv")) == ["AAA", "BBB"]
