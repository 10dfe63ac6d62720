"""News items and where they come from: replay files (tweets, market headlines) and live feeds.

Every source answers the same as-of question: items published in ``[since, as_of]``, never one published
after ``as_of`` (a replay used by a backtest cannot leak the future). Items carry the tickers they
concern; ``market_wide`` items (index headlines) concern no single ticker.

- `ReplayNews`: an in-memory, time-sorted list; `load_tweets` / `load_headlines` build one from the files of
  ``../shared/data/news``. Malformed rows are skipped, each with a logged reason (kept in `skipped`); a file
  without the required columns is a `NewsDataError`.
- `YahooNewsSource`: Yahoo Finance's search JSON (``/v1/finance/search?q=SYMBOL&newsCount=N``) over aiohttp.
- `RssSource`: RSS 2.0 or Atom over aiohttp, parsed with the standard library.
- `Deduplicator`: exact duplicates by a normalised-text hash, near duplicates by word-set Jaccard against
  recent items of the same ticker. `TickerTagger`: cashtags and company names from the instrument registry.
"""
from __future__ import annotations

import bisect
import csv
import gzip
import hashlib
import io
import json
import logging
import re
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Protocol
from xml.etree import ElementTree

import aiohttp

from core.domain import AssetClass
from core.errors import SignalBotError
from core.instruments.registry import InstrumentRegistry

logger = logging.getLogger(__name__)
UTC = timezone.utc


class NewsDataError(SignalBotError, ValueError):
    """A news file or feed is unusable as a whole (unreadable, missing columns, not XML/JSON)."""


class NewsSourceError(SignalBotError):
    """A live news source failed (network, HTTP status); the message names the source."""


@dataclass(frozen=True, slots=True)
class NewsItem:
    """One piece of news. `id` is a stable hash of source, time, url and text (same input -> same id)."""

    id: str
    published_at: datetime  # tz-aware UTC
    source: str
    title: str
    text: str = ""
    url: str = ""
    tickers: tuple[str, ...] = ()
    market_wide: bool = False
    engagement: int = 0  # retweets + likes where the source has them

    @classmethod
    def create(cls, *, published_at: datetime, source: str, title: str, text: str = "", url: str = "",
               tickers: Iterable[str] = (), market_wide: bool = False, engagement: int = 0) -> NewsItem:
        if published_at.tzinfo is None:
            raise ValueError("published_at must be tz-aware")
        published_at = published_at.astimezone(UTC)
        title = title.strip()
        text = text.strip() or title
        if not title:
            raise ValueError("a news item needs a title or text")
        key = "\x1f".join((source, published_at.isoformat(), url, title, text))
        item_id = hashlib.blake2b(key.encode(), digest_size=10).hexdigest()
        return cls(item_id, published_at, source, title, text, url, tuple(sorted(set(tickers))), market_wide,
                   engagement)

    def with_tickers(self, tickers: Iterable[str]) -> NewsItem:
        return replace(self, tickers=tuple(sorted(set(self.tickers) | set(tickers))))


class NewsSource(Protocol):
    name: str

    async def items(self, *, as_of: datetime, since: datetime, symbols: Sequence[str] | None = None) -> list[NewsItem]:
        """Items published in [since, as_of] about any of `symbols` (all items when None; market-wide
        items are included whenever symbols is None or contains ""), oldest first."""
        ...


# ---------------------------------------------------------------- replay


class ReplayNews:
    """A NewsSource over items held in memory, indexed by time and ticker."""

    def __init__(self, items: Iterable[NewsItem], name: str = "replay", skipped: Sequence[str] = ()) -> None:
        self.name = name
        self.skipped = list(skipped)
        ordered = sorted(items, key=lambda i: (i.published_at, i.id))
        self._all = ordered
        self._times = [i.published_at for i in ordered]
        self._by_symbol: dict[str, list[NewsItem]] = {}
        for item in ordered:
            for key in (item.tickers or ()) if not item.market_wide else ("",):
                self._by_symbol.setdefault(key, []).append(item)
        self._symbol_times = {k: [i.published_at for i in v] for k, v in self._by_symbol.items()}

    def __len__(self) -> int:
        return len(self._all)

    def __iter__(self) -> Iterator[NewsItem]:
        return iter(self._all)

    def symbols(self) -> list[str]:
        return sorted(k for k in self._by_symbol if k)

    async def items(self, *, as_of: datetime, since: datetime, symbols: Sequence[str] | None = None) -> list[NewsItem]:
        return self.between(since, as_of, symbols)

    def between(self, since: datetime, as_of: datetime, symbols: Sequence[str] | None = None) -> list[NewsItem]:
        """Synchronous form of `items` (inclusive both ends)."""
        _check_aware(since, as_of)
        if symbols is None:
            lo, hi = bisect.bisect_left(self._times, since), bisect.bisect_right(self._times, as_of)
            return self._all[lo:hi]
        found: dict[str, NewsItem] = {}
        for symbol in symbols:
            items, times = self._by_symbol.get(symbol, []), self._symbol_times.get(symbol, [])
            lo, hi = bisect.bisect_left(times, since), bisect.bisect_right(times, as_of)
            for item in items[lo:hi]:
                found[item.id] = item
        return sorted(found.values(), key=lambda i: (i.published_at, i.id))


def _check_aware(*moments: datetime) -> None:
    if any(m.tzinfo is None for m in moments):
        raise ValueError("as-of times must be tz-aware")


def _read_csv(path: Path | str, required: Sequence[str]) -> tuple[Path, list[tuple[int, dict[str, str]]]]:
    path = Path(path)
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        content = raw.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise NewsDataError(f"cannot read {path}: {exc}") from exc
    reader = csv.DictReader(io.StringIO(content))
    columns = [c.strip().lower() for c in reader.fieldnames or []]
    missing = [c for c in required if c not in columns]
    if missing:
        raise NewsDataError(f"{path} must have columns {','.join(required)}; missing {', '.join(missing)} "
                            f"(found: {', '.join(columns) or 'no header'})")
    reader.fieldnames = columns
    return path, [(line, row) for line, row in enumerate(reader, start=2)]


def _skip(path: Path, line: int, reason: str, skipped: list[str]) -> None:
    message = f"{path.name} line {line}: {reason}"
    skipped.append(message)
    logger.warning("skipping news row: %s", message)


def _parse_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"time '{value}' has no zone")
    return moment.astimezone(UTC)


def _int(value: str | None) -> int:
    try:
        return max(0, int(float(value or 0)))
    except ValueError:
        return 0


def load_tweets(path: Path | str, tagger: TickerTagger | None = None) -> ReplayNews:
    """Tweets with columns time,symbol,text,retweet_count,favorite_count. Each is tagged with its row's
    symbol (plus any cashtag / company name the tagger finds); a tweet filed under several symbols (same
    time and text) becomes one item with all of them."""
    path, rows = _read_csv(path, ("time", "symbol", "text"))
    items: dict[str, NewsItem] = {}
    skipped: list[str] = []
    for line, row in rows:
        text, symbol = (row.get("text") or "").strip(), (row.get("symbol") or "").strip().upper()
        if not text or not symbol:
            _skip(path, line, "empty text" if not text else "empty symbol", skipped)
            continue
        try:
            published = _parse_time(row.get("time") or "")
        except ValueError as exc:
            _skip(path, line, f"bad time: {exc}", skipped)
            continue
        item = NewsItem.create(published_at=published, source="twitter", title=text, tickers=(symbol,),
                               engagement=_int(row.get("retweet_count")) + _int(row.get("favorite_count")))
        if tagger is not None:
            item = item.with_tickers(tagger.tag(text))
        known = items.get(item.id)  # the same tweet filed under several symbols: one item, all tickers
        items[item.id] = known.with_tickers(item.tickers) if known else item
    if not items:
        raise NewsDataError(f"{path} has no usable rows ({len(skipped)} skipped)")
    return ReplayNews(items.values(), "tweets", skipped)


def load_headlines(path: Path | str, *, stamp: time = time(23, 59, 59)) -> ReplayNews:
    """Market headlines with columns date,headline. The file has dates only, so each headline is stamped
    at `stamp` UTC of its date (end of day by default: an as-of query during that day does not see it)."""
    path, rows = _read_csv(path, ("date", "headline"))
    items: list[NewsItem] = []
    skipped: list[str] = []
    for line, row in rows:
        headline = (row.get("headline") or "").strip()
        if not headline:
            _skip(path, line, "empty headline", skipped)
            continue
        try:
            day = date.fromisoformat((row.get("date") or "").strip())
        except ValueError:
            _skip(path, line, f"bad date '{row.get('date')}'", skipped)
            continue
        items.append(NewsItem.create(published_at=datetime.combine(day, stamp, UTC), source="headlines",
                                     title=headline, market_wide=True))
    if not items:
        raise NewsDataError(f"{path} has no usable rows ({len(skipped)} skipped)")
    return ReplayNews(items, "headlines", skipped)


# ---------------------------------------------------------------- de-duplication and tagging

_URL = re.compile(r"https?://\S+|www\.\S+")
_RT = re.compile(r"^rt\s+@\w+:?\s*")
_MENTION = re.compile(r"@\w+")
_NON_WORD = re.compile(r"[^a-z0-9$]+")


def normalise_text(text: str) -> str:
    """Lower case without URLs, retweet prefix, mentions, punctuation and extra spaces."""
    text = _URL.sub(" ", text.lower().strip())
    text = _RT.sub("", text)
    text = _MENTION.sub(" ", text)
    return " ".join(_NON_WORD.sub(" ", text).split())


class Deduplicator:
    """Drops items already seen: the same normalised headline about the same tickers (exact) or, among the last
    `window` kept items of one of its tickers, one whose word set overlaps by at least `threshold` (Jaccard)."""

    def __init__(self, *, threshold: float = 0.8, window: int = 50, memory: int = 200_000) -> None:
        if not 0 < threshold <= 1:
            raise ValueError("threshold must be in (0, 1]")
        self.threshold = threshold
        self.window = window
        self.memory = memory
        self._hashes: OrderedDict[bytes, None] = OrderedDict()
        self._recent: dict[str, deque[frozenset[str]]] = {}
        self.dropped = 0

    def is_new(self, item: NewsItem) -> bool:
        """Records the item when it is new. Call in publication order."""
        title = normalise_text(item.title)
        norm = title if item.text == item.title else f"{title} {normalise_text(item.text)}"
        keys = ("",) if item.market_wide or not item.tickers else item.tickers
        # exact: the same headline about the same tickers (the same text about other tickers still says
        # something about those); summaries differ between outlets, so they are left out of this key
        digest = hashlib.blake2b(f"{title}\x1f{','.join(keys)}".encode(), digest_size=12).digest()
        if digest in self._hashes:
            self.dropped += 1
            return False
        words = frozenset(norm.split())
        if len(words) >= 4:
            for key in keys:
                for other in self._recent.get(key, ()):
                    if len(words & other) >= self.threshold * len(words | other):
                        self.dropped += 1
                        return False
        self._hashes[digest] = None
        if len(self._hashes) > self.memory:
            self._hashes.popitem(last=False)
        for key in keys:
            self._recent.setdefault(key, deque(maxlen=self.window)).append(words)
        return True

    def filter(self, items: Iterable[NewsItem]) -> list[NewsItem]:
        return [item for item in sorted(items, key=lambda i: (i.published_at, i.id)) if self.is_new(item)]


_CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z]{1,5}(?:\.[A-Za-z])?)\b")
_NAME_SUFFIXES = re.compile(
    r"[,.]?\s+(inc|incorporated|corp|corporation|co|company|companies|ltd|limited|plc|n\.?v|s\.?a|ag|"
    r"holdings?|group|trust|class [a-z]|the|& co)\.?$", re.IGNORECASE)
# Company names that are ordinary words: tagging them by name would mostly be wrong.
_AMBIGUOUS_NAMES = frozenset({
    "target", "gap", "ball", "best buy", "visa", "apple hospitality", "southern", "general", "progressive",
    "alliance", "united", "international", "american", "first", "ross", "harris", "jacobs", "dover", "pool",
    "ford", "lowe's", "mosaic", "news", "signet", "square", "twitter", "under armour", "edison", "entergy",
    "discovery", "equity", "public storage", "xerox", "hess", "ameren", "cigna", "ppl", "kellogg",
})


def company_short_name(name: str) -> str:
    """'Apple Inc.' -> 'Apple', 'Microsoft Corp.' -> 'Microsoft', 'The Walt Disney Company' -> 'Walt Disney'."""
    short = re.sub(r"^the\s+", "", name.strip(), flags=re.IGNORECASE)
    short = re.sub(r"\s*\(.*?\)\s*", " ", short).strip()
    while True:
        stripped = _NAME_SUFFIXES.sub("", short).strip(" ,.")
        if stripped == short:
            return short
        short = stripped


@dataclass
class TickerTagger:
    """Finds the tickers a text concerns: cashtags ($AAPL) of known symbols, and company names."""

    symbols: frozenset[str]
    names: dict[str, str] = field(default_factory=dict)  # short company name -> symbol
    _name_re: re.Pattern[str] | None = None

    def __post_init__(self) -> None:
        if self.names:
            alternatives = sorted(self.names, key=len, reverse=True)
            self._name_re = re.compile(r"\b(" + "|".join(re.escape(n) for n in alternatives) + r")\b")

    @classmethod
    def from_registry(cls, registry: InstrumentRegistry) -> TickerTagger:
        records = registry.records([AssetClass.EQUITY])
        names: dict[str, str] = {}
        for rec in records:
            short = company_short_name(rec.name)
            if len(short) >= 4 and short.lower() not in _AMBIGUOUS_NAMES and short not in names:
                names[short] = rec.symbol
        return cls(frozenset(r.symbol for r in records), names)

    def tag(self, text: str) -> tuple[str, ...]:
        found = {m.upper() for m in _CASHTAG.findall(text) if m.upper() in self.symbols}
        if self._name_re is not None:
            found |= {self.names[m] for m in self._name_re.findall(text)}
        return tuple(sorted(found))

    def tag_item(self, item: NewsItem) -> NewsItem:
        if item.market_wide:
            return item
        return item.with_tickers(self.tag(item.title + " " + item.text))


# ---------------------------------------------------------------- live sources

_USER_AGENT = "Mozilla/5.0 (compatible; signalbot news reader)"


async def _get(session: aiohttp.ClientSession, url: str, source: str, params: dict[str, str] | None,
               timeout: float) -> bytes:
    try:
        async with session.get(url, params=params, headers={"User-Agent": _USER_AGENT},
                               timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            if response.status != 200:
                raise NewsSourceError(f"{source}: HTTP {response.status} from {response.url.host}")
            return await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise NewsSourceError(f"{source}: {type(exc).__name__}: {exc}") from exc


class YahooNewsSource:
    """News for each symbol from Yahoo Finance's search endpoint (the JSON yfinance's `Ticker.news` reads)."""

    name = "yahoo"

    def __init__(self, session: aiohttp.ClientSession, *, base_url: str = "https://query2.finance.yahoo.com",
                 count: int = 20, timeout: float = 10.0) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.count = count
        self.timeout = timeout

    async def items(self, *, as_of: datetime, since: datetime, symbols: Sequence[str] | None = None) -> list[NewsItem]:
        _check_aware(since, as_of)
        found: dict[str, NewsItem] = {}
        for symbol in [s for s in symbols or () if s]:
            for item in await self.fetch(symbol):
                if since <= item.published_at <= as_of:
                    found[item.id] = item
        return sorted(found.values(), key=lambda i: (i.published_at, i.id))

    async def fetch(self, symbol: str) -> list[NewsItem]:
        body = await _get(self.session, f"{self.base_url}/v1/finance/search", self.name,
                          {"q": symbol, "quotesCount": "0", "newsCount": str(self.count)}, self.timeout)
        return parse_yahoo_news(body, symbol)


def parse_yahoo_news(body: bytes, symbol: str) -> list[NewsItem]:
    try:
        payload = json.loads(body)
        news = payload["news"]
        if not isinstance(news, list):
            raise TypeError("'news' is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise NewsDataError(f"yahoo: unexpected search response for {symbol}: {exc}") from exc
    items = []
    for entry in news:
        try:
            published = datetime.fromtimestamp(int(entry["providerPublishTime"]), UTC)
            title = str(entry["title"])
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("yahoo: skipping a news entry for %s: %r missing or bad", symbol, exc)
            continue
        related = [str(t).upper() for t in entry.get("relatedTickers") or []]
        items.append(NewsItem.create(published_at=published, source=f"yahoo:{entry.get('publisher', '')}",
                                     title=title, url=str(entry.get("link", "")), tickers=[symbol, *related]))
    return items


class RssSource:
    """One RSS 2.0 or Atom feed. `symbols`: tickers every item of this feed concerns (a company feed);
    otherwise the tagger finds them, and `market_wide` marks a general market feed."""

    def __init__(self, session: aiohttp.ClientSession, url: str, *, name: str = "rss",
                 tagger: TickerTagger | None = None, symbols: Sequence[str] = (), market_wide: bool = False,
                 timeout: float = 10.0) -> None:
        self.session = session
        self.url = url
        self.name = name
        self.tagger = tagger
        self.feed_symbols = tuple(symbols)
        self.market_wide = market_wide
        self.timeout = timeout

    async def items(self, *, as_of: datetime, since: datetime, symbols: Sequence[str] | None = None) -> list[NewsItem]:
        _check_aware(since, as_of)
        body = await _get(self.session, self.url, self.name, None, self.timeout)
        wanted = set(symbols) if symbols is not None else None
        out = []
        for item in parse_feed(body, self.name, market_wide=self.market_wide):
            item = item.with_tickers(self.feed_symbols)
            if self.tagger is not None:
                item = self.tagger.tag_item(item)
            if not since <= item.published_at <= as_of:
                continue
            keys = {""} if item.market_wide else set(item.tickers)
            if wanted is None or keys & wanted:
                out.append(item)
        return sorted(out, key=lambda i: (i.published_at, i.id))


_ATOM = "{http://www.w3.org/2005/Atom}"
_TAGS = re.compile(r"<[^>]+>")


def parse_feed(body: bytes, source: str, *, market_wide: bool = False) -> list[NewsItem]:
    """Items of an RSS 2.0 or Atom document; entries without a title or a readable date are skipped."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise NewsDataError(f"{source}: not a readable feed: {exc}") from exc
    if root.tag == "rss":
        entries = root.iter("item")
    elif root.tag == f"{_ATOM}feed":
        entries = root.iter(f"{_ATOM}entry")
    else:
        raise NewsDataError(f"{source}: not an RSS 2.0 or Atom feed (root element {root.tag!r})")
    items = []
    for entry in entries:
        title = _text(entry, "title", f"{_ATOM}title")
        when = _text(entry, "pubDate", f"{_ATOM}published", f"{_ATOM}updated")
        summary = _TAGS.sub(" ", _text(entry, "description", f"{_ATOM}summary", f"{_ATOM}content"))
        link = _text(entry, "link")
        atom_link = entry.find(f"{_ATOM}link")
        if not link and atom_link is not None:
            link = atom_link.get("href", "")
        try:
            published = _feed_time(when)
        except ValueError:
            logger.warning("%s: skipping feed entry %r: unreadable date %r", source, title[:60], when)
            continue
        if not title:
            logger.warning("%s: skipping feed entry without a title", source)
            continue
        items.append(NewsItem.create(published_at=published, source=source, title=title,
                                     text=" ".join(summary.split()), url=link, market_wide=market_wide))
    return items


def _text(entry: ElementTree.Element, *tags: str) -> str:
    for tag in tags:
        node = entry.find(tag)
        if node is not None and node.text:
            return node.text.strip()
    return ""


def _feed_time(value: str) -> datetime:
    if not value:
        raise ValueError("no date")
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


async def collect_news(sources: Sequence[NewsSource], *, as_of: datetime, since: datetime,
                       symbols: Sequence[str] | None = None, dedup: Deduplicator | None = None,
                       tagger: TickerTagger | None = None) -> list[NewsItem]:
    """Items from every source in [since, as_of], tagged and de-duplicated, oldest first. A failing source
    is logged and skipped: the others still count."""
    found: list[NewsItem] = []
    for source in sources:
        try:
            found += await source.items(as_of=as_of, since=since, symbols=symbols)
        except (NewsSourceError, NewsDataError) as exc:
            logger.warning("news source %s failed: %s", source.name, exc)
    if tagger is not None:
        found = [tagger.tag_item(item) for item in found]
    return (dedup or Deduplicator()).filter(found)


def window(as_of: datetime, length: timedelta) -> tuple[datetime, datetime]:
    """(since, as_of) for a look-back window ending at as_of."""
    _check_aware(as_of)
    return as_of - length, as_of
