"""The news vote: window, recency, credibility, market component, provider preference, stored history."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from core.news.schema import AnalysisRecord, NewsVerdict
from core.news.voter import NewsVoter, VoterConfig, news_vote
from storage.database import Database
from storage.news import SqlVerdictStore
from storage import Stores

UTC = timezone.utc
AS_OF = datetime(2015, 6, 1, 20, 0, tzinfo=UTC)


def verdict(sentiment: float, *, credibility: float = 0.8, severity: int = 3, novelty: float = 0.7) -> NewsVerdict:
    return NewsVerdict(event_type="other", severity=severity, time_horizon="days", company_specific=True,
                       revenue_impact="unknown", earnings_impact="unknown", credibility=credibility, novelty=novelty,
                       sentiment=sentiment, reasoning="test")


def rec(item: str, hours_ago: float, sentiment: float, *, symbol: str = "AAPL", provider: str = "local",
        **kw: float) -> AnalysisRecord:
    published = AS_OF - timedelta(hours=hours_ago)
    return AnalysisRecord(item_id=item, symbol=symbol, published_at=published, analysed_at=published,
                          provider=provider, model=f"{provider}-m", prompt_version="v1",
                          verdict=verdict(sentiment, **kw), market_wide=symbol == "", title=f"headline {item}")


def test_no_news_is_none_and_future_items_are_ignored() -> None:
    assert news_vote("AAPL", AS_OF, []) is None
    assert news_vote("AAPL", AS_OF, [rec("f", -1, 0.9), rec("old", 30, 0.9), rec("x", 1, 0.9, symbol="MSFT")]) is None
    with pytest.raises(ValueError, match="tz-aware"):
        news_vote("AAPL", AS_OF.replace(tzinfo=None), [])


def test_score_sign_bounds_and_evidence_text() -> None:
    vote = news_vote("AAPL", AS_OF, [rec("a", 1, 0.9), rec("b", 2, 0.6), rec("c", 3, -0.2)])
    assert vote is not None and 0 < vote.score < 0.9 and vote.items == 3 and vote.market_items == 0
    assert vote.text.startswith("news +") and "3 items (2 positive, 1 negative)" in vote.text
    assert '"headline a" (+0.90, local)' in vote.text
    many = news_vote("AAPL", AS_OF, [rec(str(i), 0.1, 1.0, credibility=1.0, severity=5, novelty=1.0)
                                     for i in range(200)])
    assert many is not None and 0.99 < many.score <= 1.0


def test_recent_and_credible_items_weigh_more() -> None:
    recent_good = news_vote("AAPL", AS_OF, [rec("a", 0.5, 0.8), rec("b", 20, -0.8)])
    assert recent_good is not None and recent_good.score > 0
    credible_bad = news_vote("AAPL", AS_OF, [rec("a", 1, 0.8, credibility=0.1), rec("b", 1, -0.8, credibility=0.9)])
    assert credible_bad is not None and credible_bad.score < 0
    thin = news_vote("AAPL", AS_OF, [rec("a", 1, 0.8, credibility=0.2)])
    thick = news_vote("AAPL", AS_OF, [rec(str(i), 1, 0.8, credibility=0.2) for i in range(10)])
    assert thin is not None and thick is not None and 0 < thin.score < thick.score < 0.8


def test_market_headlines_are_a_small_component() -> None:
    only_market = news_vote("AAPL", AS_OF, [rec("m", 2, -0.9, symbol="")])
    assert only_market is not None and -0.2 <= only_market.score < 0 and only_market.items == 0
    assert "market headlines: 1 (mean -0.90)" in only_market.text
    both = news_vote("AAPL", AS_OF, [rec("a", 1, 0.9), rec("m", 2, -0.9, symbol="")])
    alone = news_vote("AAPL", AS_OF, [rec("a", 1, 0.9)])
    assert both is not None and alone is not None and 0 < both.score < alone.score


def test_preferred_provider_wins_for_the_same_item() -> None:
    vote = news_vote("AAPL", AS_OF, [rec("a", 1, -0.5, provider="local"), rec("a", 1, 0.7, provider="anthropic"),
                                     rec("a", 1, 0.1, provider="openai")])
    assert vote is not None and vote.items == 1 and vote.score > 0 and "anthropic" in vote.text
    with pytest.raises(ValueError):
        VoterConfig(market_weight=1.5)


async def test_voter_reads_the_stored_history() -> None:
    db = Database("sqlite+aiosqlite:///:memory:")
    await db.upgrade()
    store = SqlVerdictStore(db)
    await store.save_many([rec("a", 1, 0.9), rec("late", -0.5, -0.9), rec("m", 3, 0.5, symbol=""),
                           rec("old", 25, -0.9), rec("x", 1, -0.9, symbol="MSFT")])
    voter = NewsVoter(store)
    vote = await voter.vote("AAPL", AS_OF)
    assert vote is not None and vote.items == 1 and vote.market_items == 1 and vote.score > 0
    assert await voter.vote("AAPL", AS_OF - timedelta(days=3)) is None
    both = await voter.votes(["AAPL", "MSFT", "IBM"], AS_OF)
    assert both["AAPL"] == vote and both["MSFT"] is not None and both["MSFT"].score < 0
    assert both["IBM"] is not None and both["IBM"].items == 0 and both["IBM"].market_items == 1
    beside = Stores.over(db).news
    assert await beside.count() == 5
    await db.close()


def test_eval_summary_on_synthetic_votes() -> None:
    import numpy as np
    import pandas as pd

    from scripts.news_eval import summarise

    rng = np.random.default_rng(3)
    votes = rng.uniform(-0.5, 0.5, 400)
    rets = votes * 0.02 + rng.normal(0, 0.001, 400)  # a vote that does predict
    frame = pd.DataFrame({"date": np.repeat(np.arange(40), 10), "vote": votes, "ret": rets, "excess": rets})
    out = summarise(frame, {})
    assert out["spearman_vote_vs_ret"] > 0.9 and out["hit_rate"] > 0.9 and out["daily_ic_t"] > 5
    assert sum(b["n"] for b in out["quintiles"]) == 400
    noise = summarise(frame.assign(ret=rng.normal(0, 0.01, 400), excess=rng.normal(0, 0.01, 400)), {})
    assert abs(noise["spearman_vote_vs_ret"]) < 0.2 and 0.35 < noise["hit_rate"] < 0.65
