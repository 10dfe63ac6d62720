"""News sources: replay files (as-of safety, malformed rows), de-duplication, ticker tagging, and the live
Yahoo / RSS readers against local servers."""
from __future__ import annotations

import gzip
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from core.instruments import default_registry
from core.news.sources import (
    Deduplicator,
    NewsDataError,
    NewsItem,
    NewsSourceError,
    ReplayNews,
    RssSource,
    TickerTagger,
    YahooNewsSource,
    collect_news,
    company_short_name,
    load_headlines,
    load_tweets,
    normalise_text,
    parse_feed,
)
from tests.conftest import data_dir

UTC = timezone.utc
T0 = datetime(2015, 6, 1, 12, 0, tzinfo=UTC)


def write(path: Path, text: str) -> Path:
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


TWEETS = """time,symbol,text,retweet_count,favorite_count
2015-06-01T10:00:00Z,AAPL,$AAPL beats on iPhone sales http://t.co/abc,3,4
2015-06-01T11:00:00Z,AAPL,RT @trader: $AAPL beats on iPhone sales http://t.co/xyz,0,0
2015-06-01T11:30:00Z,MSFT,,1,1
not-a-time,MSFT,Microsoft cloud grows,0,0
2015-06-01T12:00:00Z,,no symbol here,0,0
2015-06-01T13:00:00Z,MSFT,Microsoft cloud revenue grows fast; $GOOG lags,x,2
2015-06-02T09:00:00Z,AAPL,Apple falls on supplier worries,0,0
2015-06-02T09:00:00Z,QCOM,Apple falls on supplier worries,0,0
"""


def test_tweets_replay_skips_malformed_rows_with_reasons(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        news = load_tweets(write(tmp_path / "t.csv.gz", TWEETS))
    assert len(news) == 4
    assert news.skipped == ["t.csv.gz line 4: empty text", "t.csv.gz line 5: bad time: Invalid isoformat string: "
                            "'not-a-time'", "t.csv.gz line 6: empty symbol"]
    assert "skipping news row: t.csv.gz line 4: empty text" in caplog.text
    msft = [i for i in news if "MSFT" in i.tickers][0]
    assert msft.engagement == 2 and msft.published_at == datetime(2015, 6, 1, 13, tzinfo=UTC)
    assert news.symbols() == ["AAPL", "MSFT", "QCOM"]
    assert [i.tickers for i in news][-1] == ("AAPL", "QCOM")  # one tweet filed under two symbols


def test_missing_columns_and_empty_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(NewsDataError, match="missing symbol"):
        load_tweets(write(tmp_path / "a.csv", "time,text\n2015-01-01T00:00:00Z,hi\n"))
    with pytest.raises(NewsDataError, match="no usable rows"):
        load_tweets(write(tmp_path / "b.csv", "time,symbol,text\nbad,AAPL,hi\n"))
    with pytest.raises(NewsDataError, match="cannot read"):
        load_headlines(tmp_path / "absent.csv")
    with pytest.raises(NewsDataError, match="missing headline"):
        load_headlines(write(tmp_path / "c.csv", "date,title\n2015-01-01,x\n"))


def test_replay_as_of_never_returns_later_items(tmp_path: Path) -> None:
    news = load_tweets(write(tmp_path / "t.csv", TWEETS))
    as_of = datetime(2015, 6, 1, 12, 59, tzinfo=UTC)
    got = news.between(as_of - timedelta(days=1), as_of)
    assert [i.published_at.hour for i in got] == [10, 11]
    assert news.between(as_of - timedelta(days=1), as_of, ["MSFT"]) == []
    exactly = news.between(T0, datetime(2015, 6, 1, 13, tzinfo=UTC), ["MSFT"])
    assert len(exactly) == 1  # published at as_of is visible (inclusive)
    with pytest.raises(ValueError, match="tz-aware"):
        news.between(datetime(2015, 6, 1), datetime(2015, 6, 2))


@settings(max_examples=60, deadline=None)
@given(offsets=st.lists(st.integers(0, 10_000), min_size=1, max_size=40), as_of=st.integers(0, 10_000),
       span=st.integers(0, 10_000), pick=st.sampled_from([None, ("A",), ("B", "")]))
def test_replay_as_of_property(offsets: list[int], as_of: int, span: int, pick: tuple[str, ...] | None) -> None:
    items = [NewsItem.create(published_at=T0 + timedelta(minutes=m), source="s", title=f"n{i}",
                             tickers=["A" if i % 2 else "B"], market_wide=i % 5 == 0) for i, m in enumerate(offsets)]
    news = ReplayNews(items)
    end, start = T0 + timedelta(minutes=as_of), T0 + timedelta(minutes=as_of - span)
    got = news.between(start, end, pick)
    assert all(start <= i.published_at <= end for i in got)
    expected = [i for i in items if start <= i.published_at <= end and
                (pick is None or (("" in pick) if i.market_wide else bool(set(i.tickers) & set(pick))))]
    assert sorted(i.id for i in got) == sorted(i.id for i in expected)


def test_headlines_are_market_wide_and_stamped_at_end_of_day(tmp_path: Path) -> None:
    news = load_headlines(write(tmp_path / "h.csv", "date,headline\n2015-06-01,Stocks rally\n2015-13-01,Bad\n"
                                "2015-06-02,\n"))
    [item] = list(news)
    assert item.market_wide and item.tickers == () and item.published_at == datetime(2015, 6, 1, 23, 59, 59, tzinfo=UTC)
    assert len(news.skipped) == 2
    assert news.between(T0 - timedelta(days=1), T0) == []  # noon of that day: not yet visible
    assert news.between(T0, T0 + timedelta(days=1), [""]) == [item]


def test_item_ids_are_stable_and_need_aware_times() -> None:
    a = NewsItem.create(published_at=T0, source="s", title="Same", url="u")
    b = NewsItem.create(published_at=T0.astimezone(timezone(timedelta(hours=2))), source="s", title="Same", url="u")
    assert a.id == b.id and len(a.id) == 20 and a.text == "Same"
    assert NewsItem.create(published_at=T0, source="s", title="Other").id != a.id
    with pytest.raises(ValueError, match="tz-aware"):
        NewsItem.create(published_at=datetime(2015, 1, 1), source="s", title="x")
    with pytest.raises(ValueError, match="title"):
        NewsItem.create(published_at=T0, source="s", title="  ")


def test_dedup_exact_and_near_duplicates() -> None:
    def tweet(minutes: int, text: str, ticker: str = "AAPL") -> NewsItem:
        return NewsItem.create(published_at=T0 + timedelta(minutes=minutes), source="twitter", title=text,
                               tickers=[ticker])

    items = [
        tweet(0, "$AAPL beats on iPhone sales, record quarter http://t.co/a"),
        tweet(1, "RT @bob: $AAPL beats on iPhone sales, record quarter http://t.co/b"),  # retweet: exact after norm
        tweet(2, "$AAPL beats on iPhone sales, a record quarter!"),  # near duplicate
        tweet(3, "$AAPL falls as China demand slows"),
        tweet(4, "$MSFT beats on iPhone sales, record quarter", "MSFT"),  # other ticker, other words
        tweet(5, "$AAPL beats"),  # short: only exact matching applies
    ]
    dedup = Deduplicator()
    kept = dedup.filter(reversed(items))  # filter sorts by time itself
    assert [i.title for i in kept] == [items[0].title, items[3].title, items[4].title, items[5].title]
    assert dedup.dropped == 2
    assert normalise_text("RT @x: Hello,  World! https://t.co/z") == "hello world"
    with pytest.raises(ValueError):
        Deduplicator(threshold=0)


def test_ticker_tagging_from_the_registry() -> None:
    tagger = TickerTagger.from_registry(default_registry())
    assert tagger.tag("$aapl and $MSFT up, $FAKEX and $5 not") == ("AAPL", "MSFT")
    assert tagger.tag("Microsoft and Apple announce a partnership") == ("AAPL", "MSFT")
    assert tagger.tag("Target practice at the Gap between the ball games") == ()
    assert "NVDA" in tagger.tag("Nvidia shares jump")  or "NVDA" in tagger.tag("NVIDIA shares jump")
    assert company_short_name("The Walt Disney Company") == "Walt Disney"
    assert company_short_name("Apple Inc.") == "Apple"
    item = NewsItem.create(published_at=T0, source="rss", title="Exxon Mobil cuts spending", tickers=["XOM"])
    assert tagger.tag_item(item).tickers == ("XOM",)


# ---------------------------------------------------------------- live sources against local servers

RSS = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>Markets</title>
<item><title>Apple beats estimates</title><link>https://example.com/1</link>
<description>&lt;p&gt;Apple Inc. reported...&lt;/p&gt;</description><pubDate>Mon, 01 Jun 2015 10:00:00 GMT</pubDate></item>
<item><title>Later story</title><link>https://example.com/2</link><pubDate>Mon, 01 Jun 2015 13:00:00 GMT</pubDate></item>
<item><title>No date</title></item>
</channel></rss>"""

ATOM = b"""<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>F</title>
<entry><title>Fed holds rates</title><link href="https://example.com/a"/><updated>2015-06-01T09:00:00Z</updated>
<summary>Markets steady</summary></entry></feed>"""

YAHOO = {"news": [
    {"uuid": "1", "title": "Apple unveils new Mac", "publisher": "Reuters", "link": "https://example.com/y1",
     "providerPublishTime": int(datetime(2015, 6, 1, 11, tzinfo=UTC).timestamp()), "relatedTickers": ["AAPL", "QCOM"]},
    {"uuid": "2", "title": "Future item", "publisher": "AP", "link": "https://example.com/y2",
     "providerPublishTime": int(datetime(2015, 6, 2, 11, tzinfo=UTC).timestamp())},
    {"uuid": "3", "publisher": "AP"},
]}


@pytest.fixture
async def feeds() -> AsyncIterator[str]:
    async def rss(_: web.Request) -> web.Response:
        return web.Response(body=RSS, content_type="application/rss+xml")

    async def atom(_: web.Request) -> web.Response:
        return web.Response(body=ATOM, content_type="application/atom+xml")

    async def search(request: web.Request) -> web.Response:
        if request.query.get("q") == "DOWN":
            return web.Response(status=503)
        return web.json_response(YAHOO)

    async def broken(_: web.Request) -> web.Response:
        return web.Response(body=b"<html><body>oops", content_type="text/html")

    app = web.Application()
    app.router.add_get("/rss", rss)
    app.router.add_get("/atom", atom)
    app.router.add_get("/broken", broken)
    app.router.add_get("/v1/finance/search", search)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_rss_and_atom_feeds_as_of(feeds: str) -> None:
    tagger = TickerTagger.from_registry(default_registry())
    async with aiohttp.ClientSession() as session:
        rss = RssSource(session, feeds + "/rss", name="markets", tagger=tagger)
        got = await rss.items(as_of=T0, since=T0 - timedelta(days=1))
        assert [i.title for i in got] == ["Apple beats estimates"]
        assert got[0].tickers == ("AAPL",) and got[0].text == "Apple Inc. reported..."
        assert await rss.items(as_of=T0, since=T0 - timedelta(days=1), symbols=["MSFT"]) == []
        atom = RssSource(session, feeds + "/atom", name="fed", market_wide=True)
        [fed] = await atom.items(as_of=T0, since=T0 - timedelta(days=1), symbols=[""])
        assert fed.market_wide and fed.url == "https://example.com/a"
        with pytest.raises(NewsDataError, match="not a readable feed"):
            await RssSource(session, feeds + "/broken").items(as_of=T0, since=T0 - timedelta(days=1))
        with pytest.raises(NewsSourceError, match="HTTP 404"):
            await RssSource(session, feeds + "/missing").items(as_of=T0, since=T0 - timedelta(days=1))


def test_feed_parsing_rejects_other_documents() -> None:
    with pytest.raises(NewsDataError, match="not an RSS 2.0 or Atom feed"):
        parse_feed(b"<html><body>hello</body></html>", "site")
    assert [i.title for i in parse_feed(RSS, "s")] == ["Apple beats estimates", "Later story"]  # undated skipped


async def test_yahoo_news_as_of(feeds: str) -> None:
    async with aiohttp.ClientSession() as session:
        yahoo = YahooNewsSource(session, base_url=feeds)
        [item] = await yahoo.items(as_of=T0, since=T0 - timedelta(days=1), symbols=["AAPL"])
        assert item.title == "Apple unveils new Mac" and item.tickers == ("AAPL", "QCOM")
        assert item.source == "yahoo:Reuters"
        with pytest.raises(NewsSourceError, match="HTTP 503"):
            await yahoo.items(as_of=T0, since=T0 - timedelta(days=1), symbols=["DOWN"])


async def test_collect_news_isolates_a_failing_source(feeds: str, caplog: pytest.LogCaptureFixture) -> None:
    tagger = TickerTagger.from_registry(default_registry())
    replay = ReplayNews([NewsItem.create(published_at=T0 - timedelta(hours=3), source="wire",
                                         title="Apple beats estimates")])
    async with aiohttp.ClientSession() as session:
        sources = [RssSource(session, feeds + "/missing", name="gone"), RssSource(session, feeds + "/rss"), replay]
        with caplog.at_level(logging.WARNING):
            got = await collect_news(sources, as_of=T0, since=T0 - timedelta(days=1), tagger=tagger)
    assert "news source gone failed" in caplog.text
    assert [i.title for i in got] == ["Apple beats estimates"]  # the replay copy (earlier) kept, the feed's dropped
    assert got[0].tickers == ("AAPL",) and got[0].source == "wire"


def test_shared_tweets_file_loads() -> None:
    path = data_dir() / "news" / "stocknet_tweets_2014-01-01_2016-03-31.csv.gz"
    if not path.is_file():
        pytest.skip(f"shared news data not found at {path} (set SIGNALS_DATA_DIR)")
    news = load_tweets(path)
    # 119,844 rows; rows repeating a (time, text) under another symbol, or verbatim, merge into one item
    assert 90_000 < len(news) < 119_844 and news.skipped == [] and len(news.symbols()) == 87
    times = [i.published_at for i in news]
    assert times == sorted(times) and times[0] < datetime(2014, 1, 2, tzinfo=UTC) < times[-1]
