"""News features (fs-3): windows and coverage, nothing published after the decision, the side's sign, the verdict
index as the same source as a feed, training rows == the voter's features."""
from __future__ import annotations

import asyncio
from datetime import timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from core.backtest.market import FrameMarket
from core.domain import AssetClass, Instrument, Timeframe
from core.features.dataset import setup_history
from core.features.news import DAY_NS, NEWS_FEATURES, SHRINK, AnalysedItem, NewsFeed
from core.features.regime import MarketContext
from core.features.sets import MODEL_FEATURE_SETS, NEWS_COLUMNS, news_columns, require_news
from core.indicators import default_engine
from core.models.training import build_datasets, sector_context_from
from core.models.voter import FeatureContext
from core.news.voter import FEATURE_LOOKBACK, VerdictIndex, news_feed
from tests.test_features import _universe, assert_voter_rows_equal_training_rows, walk
from tests.test_news_voter import AS_OF, rec

UTC = timezone.utc
T = int(pd.Timestamp("2015-06-01 20:00", tz="UTC").value)
HOUR = DAY_NS // 24


def item(symbol: str, hours_ago: float, sentiment: float, weight: float = 1.0) -> AnalysedItem:
    return AnalysedItem(symbol, T - int(hours_ago * HOUR), sentiment, weight)


def at(feed: NewsFeed, symbol: str, t: int = T) -> dict[str, float]:
    return dict(zip(NEWS_FEATURES, feed.news_features(np.array([symbol], dtype=object), np.array([t]))[0].tolist()))


def test_windows_counts_attention_and_shrunk_sentiment_on_a_hand_made_example() -> None:
    feed = NewsFeed([item("AAPL", 2, 0.8), item("AAPL", 10, 0.4, weight=0.5), item("AAPL", 30, -0.6),
                     item("AAPL", 24 * 20, 1.0), item("", 12, -0.5), item("", 80, 0.5)])
    f = at(feed, "AAPL")
    assert f["news_count_1d"] == pytest.approx(np.log1p(2))
    assert f["news_attention"] == pytest.approx(np.log1p(2) - np.log1p(4 / 30))
    assert f["news_sent_1d"] == pytest.approx((0.8 + 0.5 * 0.4) / (1.5 + SHRINK))
    assert f["news_sent_5d"] == pytest.approx((0.8 + 0.2 - 0.6) / (2.5 + SHRINK))
    assert f["market_news_3d"] == pytest.approx(-0.5 / (1 + SHRINK))  # the headline 80 h ago is outside 3 days
    quiet = at(feed, "AAPL", T + 3 * DAY_NS)  # covered, nothing in the last day: 0 items and no sentiment, not NaN
    assert quiet["news_count_1d"] == 0 and quiet["news_sent_1d"] == 0
    assert np.isnan(list(at(feed, "MSFT").values())[:4]).all()  # never covered: unknown
    assert np.isnan(list(at(feed, "AAPL", T + 40 * DAY_NS).values())[:4]).all()  # no item for 30 days: unknown
    assert np.isnan(at(NewsFeed([item("AAPL", 1, 0.5)]), "AAPL")["market_news_3d"])  # no headline source


def test_items_published_after_the_decision_change_nothing() -> None:
    rng = np.random.default_rng(3)
    items = [item(str(rng.choice(["A", "B", ""])), float(h), float(s))
             for h, s in zip(rng.uniform(-24 * 40, 24 * 40, 600), rng.uniform(-1, 1, 600), strict=True)]
    symbols = np.array(["A", "B", "C"] * 20, dtype=object)
    times = T + rng.integers(-30, 30, len(symbols)) * HOUR
    full = NewsFeed(items).news_features(symbols, times)
    for k in range(len(symbols)):
        cut = NewsFeed([i for i in items if i.published_ns <= times[k]])
        np.testing.assert_array_equal(cut.news_features(symbols[k:k + 1], times[k:k + 1])[0], full[k])


def test_sentiments_are_signed_by_the_side_counts_are_not() -> None:
    feed = NewsFeed([item("AAPL", 2, 0.8), item("", 2, 0.6)])
    both = news_columns(np.array([1.0, -1.0]), np.array(["AAPL", "AAPL"], dtype=object), np.array([T, T]), feed)
    signed = [NEWS_FEATURES.index(n) for n in ("news_sent_1d", "news_sent_5d", "market_news_3d")]
    np.testing.assert_allclose(both[1, signed], -both[0, signed])
    assert (both[0, signed] > 0).all()
    np.testing.assert_array_equal(both[1, :2], both[0, :2])


def test_the_verdict_index_reads_as_a_feed_of_its_verdicts_keeps_them_longer_than_the_vote_and_prefers_providers() -> None:
    records = [rec("a", 2, 0.6), rec("a", 2, -0.9, provider="anthropic"), rec("b", 30, 0.2),
               rec("c", 24 * 10, -0.4), rec("h", 5, 0.3, symbol=""), rec("z", 3, 0.9, symbol="MSFT")]
    index = VerdictIndex(records)
    symbols, t = np.array(["AAPL", "MSFT", "TSLA"], dtype=object), np.full(3, T)
    want = news_feed(records).news_features(symbols, t)
    np.testing.assert_array_equal(index.news_features(symbols, t), want)
    assert at(news_feed(records), "AAPL")["news_sent_1d"] < 0  # the anthropic verdict of item a, not the local one
    index.prune(AS_OF - timedelta(days=2))  # the vote forgets the 10-day-old item; the features keep it
    assert index.vote("AAPL", AS_OF) is not None
    np.testing.assert_array_equal(index.news_features(symbols, t), want)
    index.prune(AS_OF - timedelta(days=2), features_before=AS_OF - timedelta(days=5))
    assert at(news_feed(records), "AAPL", T)["news_sent_5d"] == pytest.approx(index.news_features(symbols, t)[0, 3])
    later = t + 15 * DAY_NS  # its 30 days reach back past the pruned 10-day-old item: items a and b remain
    assert index.news_features(symbols, later)[0, 1] == pytest.approx(-np.log1p(2 / 30))
    assert news_feed(records).news_features(symbols, later)[0, 1] == pytest.approx(-np.log1p(3 / 30))
    index.add([rec("d", 1, 0.5)])  # new verdicts reach the features at once
    assert index.news_features(symbols, t)[0, 0] == pytest.approx(np.log1p(2))
    assert FEATURE_LOOKBACK >= timedelta(days=31) and index.lookback == FEATURE_LOOKBACK


def test_an_item_counts_from_the_nanosecond_it_was_published() -> None:
    at_close = rec("a", 0, 0.5)  # published exactly at AS_OF (T)
    just_after = rec("b", -1e-6 / 3600 * 1.0001, 0.5)  # one microsecond later
    index = VerdictIndex([at_close, just_after])
    assert just_after.published_at - at_close.published_at == timedelta(microseconds=1)
    counts = index.news_features(np.array(["AAPL", "AAPL"], dtype=object), np.array([T - 1, T]))[:, 0]
    assert np.isnan(counts[0]) and counts[1] == pytest.approx(np.log1p(1))


def test_a_feature_set_that_reads_news_needs_a_news_source() -> None:
    assert set(NEWS_FEATURES) <= set(MODEL_FEATURE_SETS["fs-3"])
    with pytest.raises(ValueError, match="news"):
        require_news("fs-3", None)
    require_news("fs-1", None)
    require_news("fs-3", NewsFeed.empty())


def test_training_rows_and_the_voters_rows_carry_the_same_news_features() -> None:
    series, spx = _universe(3, 500), walk(700, 51, freq="B")
    rng = np.random.default_rng(11)
    start = int(series[0].bars.index[0].value)
    span = int(series[0].bars.index[-1].value) - start
    feed = NewsFeed(AnalysedItem(str(rng.choice(["S0", "S1", ""])), start + int(rng.uniform(0, span)),
                                 float(rng.uniform(-1, 1)), float(rng.uniform(0.2, 1))) for _ in range(3000))
    market = FrameMarket([Instrument("SPX", AssetClass.INDEX)], {("SPX", Timeframe.D1): spx})
    end = series[0].bars.index[-1].to_pydatetime() + pd.Timedelta(days=1)
    context = MarketContext.build(spx, None, {s.instrument.symbol: s.bars["close"] for s in series})
    sectors = asyncio.run(sector_context_from(None, series, end, market))
    data = build_datasets(series, default_engine(), context, 10, sectors=sectors, news=feed)["equity-1d"]
    news = data.features[:, NEWS_COLUMNS]
    assert np.isnan(news[data.symbol == "S2", 0]).all() and (~np.isnan(news[data.symbol == "S0", 0])).mean() > 0.9

    assert_voter_rows_equal_training_rows(
        series, data, FeatureContext(context, sectors, {"equity-1d": setup_history(data)}, feed))
