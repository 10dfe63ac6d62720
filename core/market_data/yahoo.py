"""MarketData over Yahoo Finance through the real `yfinance` library (equities, FX, indices; crypto
as a USD-quoted fallback).

Timeframes: 1m, 5m, 15m, 1h (Yahoo's ``60m``) and 1d are fetched natively; 4h is resampled from 1h
with `resample_bars` (bins anchored as `default_anchor` says: US equity 4h at the New York open, DST included). Bars follow BAR_COLUMNS' conventions:
daily bars are labelled 00:00 UTC of their trading date, intraday bars by their UTC open time. Prices
are Yahoo's OHLC without dividend adjustment (``auto_adjust=False``), which Yahoo already adjusts for
splits, like ``../shared/data``.

How yfinance is driven
----------------------
yfinance is synchronous: every call runs in a worker thread (`asyncio.to_thread`), one at a time
(yfinance keeps one process-wide session, cookie and crumb in its `YfData` singleton), spaced by a
`RequestThrottle`. We hand yfinance our own session, `YahooSession`, a curl_cffi ``Session`` (the
browser-impersonating client yfinance itself prefers) with four duties:

1. ``base_url``: when set, every request to a ``*.yahoo.com`` host (the chart API, but also the
   cookie from ``fc.yahoo.com`` and the crumb from ``query1``, which yfinance hard-codes) is sent to
   that base instead. Tests point it at a local server on 127.0.0.1; nothing can leak to the internet.
   This was chosen over patching ``yfinance.const._BASE_URL_``: that constant is copied into several
   modules at import time and does not cover the cookie/crumb URLs.
2. every request's timeout is capped at the adapter's (yfinance hard-codes 10-30 s in places);
3. a chart response that is 429, 5xx or 4xx, or a transport failure, raises our own error at once
   (RateLimitedError with Retry-After, ProviderUnavailableError, ProviderRequestError,
   UnknownSymbolError for Yahoo's "Not Found"), so yfinance neither swallows it nor caches it (it
   memoises responses for past date ranges);
4. a 200 chart response is checked for shape before yfinance parses it: a malformed payload raises
   DataValidationError naming what is wrong, and nothing from it is returned.

yfinance's own retries (``yf.config.network.retries``) stay at their default of 0 and its exceptions
are made visible (``yf.config.debug.hide_exceptions = False``); the shared `RetryPolicy` retries
around each request. Fragility: this relies on yfinance accepting a curl_cffi Session subclass via
``Ticker(session=...)`` and calling ``session.get``/``request`` (both documented), on the chart URL
containing ``/v8/finance/chart/``, and on the process-wide singleton (a second YahooMarketData with
another base_url works because each call re-sets the session under the lock).
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd
import yfinance as yf
from curl_cffi import requests as curl_requests
from curl_cffi.requests import exceptions as curl_errors

from core.clock import Clock, SystemClock
from core.domain import BAR_COLUMNS, AssetClass, Instrument, Timeframe
from core.errors import DataValidationError, MarketDataError, SignalBotError, UnknownSymbolError
from core.instruments import YAHOO, InstrumentRecord, InstrumentRegistry, default_registry
from core.instruments.calendars import get_calendar
from core.market_data.capabilities import ProviderCapabilities, RequestThrottle
from core.market_data.resample import (
    bars_from_block,
    default_anchor,
    empty_bars,
    index_ns,
    resample_bars,
    to_utc_ns,
)
from core.market_data.retry import (
    ProviderRequestError,
    ProviderUnavailableError,
    RetryPolicy,
    error_for_status,
)
from core.market_data.validation import DEFAULT_POLICY, ValidationPolicy, ValidationReport, require_valid

logger = logging.getLogger(__name__)

YAHOO_INTERVALS = {Timeframe.M1: "1m", Timeframe.M5: "5m", Timeframe.M15: "15m", Timeframe.H1: "60m",
                   Timeframe.D1: "1d"}
RESAMPLED_FROM = {Timeframe.H4: Timeframe.H1}
_DAY = timedelta(days=1)
CAPABILITIES = ProviderCapabilities.of(
    (AssetClass.EQUITY, AssetClass.FX, AssetClass.INDEX),
    YAHOO_INTERVALS,
    max_bars=None,
    per_second=2.0,
    # one request may span at most this much (Yahoo refuses longer 1m ranges)...
    max_span={Timeframe.M1: 7 * _DAY, Timeframe.M5: 59 * _DAY, Timeframe.M15: 59 * _DAY, Timeframe.H1: 365 * _DAY,
              Timeframe.D1: 3650 * _DAY},
    # ...and reach back at most this far from now
    max_lookback={Timeframe.M1: 29 * _DAY, Timeframe.M5: 59 * _DAY, Timeframe.M15: 59 * _DAY,
                  Timeframe.H1: 729 * _DAY},
)
_YF_LOCK = threading.Lock()  # yfinance's session/cookie state is process-wide: one call at a time
_CHART_PATH = "/v8/finance/chart/"
_QUOTE_FIELDS = ("open", "high", "low", "close", "volume")


class YahooSession(curl_requests.Session):
    """The session handed to yfinance: routing, timeout cap, error translation, payload shape check."""

    def __init__(self, *, base_url: str | None = None, timeout: float = 10.0, impersonate: str = "chrome") -> None:
        super().__init__(impersonate=impersonate)
        self.base_url = base_url.rstrip("/") if base_url else None
        self.max_timeout = timeout

    def request(self, method: Any, url: str, *args: Any, **kwargs: Any) -> Any:
        url = self.route(url)
        asked = kwargs.get("timeout")
        kwargs["timeout"] = self.max_timeout if not asked else min(float(asked), self.max_timeout)
        is_chart = _CHART_PATH in url
        try:
            response = super().request(method, url, *args, **kwargs)
        except curl_errors.RequestException as exc:
            if not is_chart:
                raise  # yfinance copes with a failed cookie/crumb fetch by itself
            kind = "timed out" if isinstance(exc, curl_errors.Timeout) else "failed"
            raise ProviderUnavailableError(f"Yahoo request {kind}: {type(exc).__name__}") from exc
        if is_chart:
            check_chart_response(response.status_code, response.content, response.headers.get("Retry-After"),
                                 _symbol_of(url))
        return response

    def route(self, url: str) -> str:
        if self.base_url is None:
            return url
        parts = urlsplit(url)
        if not (parts.hostname or "").endswith("yahoo.com"):
            return url
        base = urlsplit(self.base_url)
        return urlunsplit((base.scheme, base.netloc, base.path + parts.path, parts.query, parts.fragment))


def _symbol_of(url: str) -> str:
    return urlsplit(url).path.split(_CHART_PATH, 1)[-1]


def check_chart_response(status: int, body: bytes, retry_after: str | None, symbol: str) -> None:
    """Raise our error for a chart response that is not a usable payload (see the module docstring)."""
    if status >= 400:
        description = _chart_error_description(body) or body[:200].decode("utf-8", "replace")
        if status == 404:  # Yahoo: "No data found, symbol may be delisted"
            raise UnknownSymbolError(symbol)
        raise error_for_status(status, f"Yahoo chart {symbol}: {description}", retry_after)
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataValidationError(f"Yahoo chart {symbol}: body is not JSON ({exc})") from exc
    check_chart_payload(payload, symbol)


def _chart_error_description(body: bytes) -> str | None:
    try:
        error = json.loads(body)["chart"]["error"]
        return str(error.get("description") or error.get("code"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def check_chart_payload(payload: Any, symbol: str) -> None:
    """The shape yfinance relies on: chart.result[0] with meta, and timestamp + indicators.quote[0]
    lists of equal length holding numbers or nulls. Raises DataValidationError naming the fault."""

    def fail(what: str) -> DataValidationError:
        return DataValidationError(f"Yahoo chart {symbol}: malformed payload: {what}")

    chart = payload.get("chart") if isinstance(payload, dict) else None
    if not isinstance(chart, dict):
        raise fail("no 'chart' object")
    if chart.get("error"):
        raise ProviderRequestError(f"Yahoo chart {symbol}: {chart['error']}")
    result = chart.get("result")
    if not isinstance(result, list) or not result or not isinstance(result[0], dict):
        raise fail("chart.result is not a non-empty list")
    item = result[0]
    meta = item.get("meta")
    if not isinstance(meta, dict):
        raise fail("chart.result[0].meta missing")
    for key in ("exchangeTimezoneName", "currency", "instrumentType"):
        if not isinstance(meta.get(key), str):
            raise fail(f"meta.{key} missing")
    times = item.get("timestamp")
    if times is None:
        return  # no bars in the range: Yahoo omits timestamp and quote values
    if not isinstance(times, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in times):
        raise fail("timestamp is not a list of integers")
    try:
        quote = item["indicators"]["quote"][0]
    except (KeyError, IndexError, TypeError):
        raise fail("indicators.quote[0] missing") from None
    if not isinstance(quote, dict):
        raise fail("indicators.quote[0] is not an object")
    for name in _QUOTE_FIELDS:
        column = quote.get(name)
        if not isinstance(column, list) or len(column) != len(times):
            raise fail(f"indicators.quote[0].{name} is not a list as long as timestamp")
        if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in column):
            raise fail(f"indicators.quote[0].{name} holds a non-number")
    if meta.get("dataGranularity") not in (None, "1d", "5d", "1wk", "1mo", "3mo") and "tradingPeriods" not in meta:
        raise fail("meta.tradingPeriods missing for intraday bars")


class YahooMarketData:
    """MarketData over yfinance for the registry's instruments that have a Yahoo symbol."""

    name = "yahoo"

    def __init__(
        self,
        registry: InstrumentRegistry | None = None,
        *,
        asset_classes: Iterable[AssetClass] = (AssetClass.EQUITY, AssetClass.FX, AssetClass.INDEX),
        base_url: str | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        requests_per_second: float | None = CAPABILITIES.requests_per_second,
        cache_dir: str | Path | None = None,
        clock: Clock | None = None,
        default_limit: int = 500,
        validation: ValidationPolicy = DEFAULT_POLICY,
    ) -> None:
        self.registry = registry or default_registry()
        self.capabilities = ProviderCapabilities(frozenset(asset_classes), CAPABILITIES.native_timeframes,
                                                 CAPABILITIES.max_bars_per_request, requests_per_second,
                                                 CAPABILITIES.max_span, CAPABILITIES.max_lookback)
        self.session = YahooSession(base_url=base_url, timeout=timeout)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.clock = clock or SystemClock()
        self.default_limit = default_limit
        self.validation = validation
        self.last_reports: dict[tuple[str, Timeframe], ValidationReport] = {}
        self._throttle = RequestThrottle(requests_per_second)
        yf.config.debug.hide_exceptions = False  # let yfinance raise instead of logging and returning nothing
        yf.config.network.retries = 0  # its default; ours retries instead (never both)
        if cache_dir is not None:
            yf.set_tz_cache_location(str(cache_dir))

    # -- the MarketData protocol -----------------------------------------------------------------

    def instruments(self) -> Sequence[Instrument]:
        return [r.instrument for r in self._records()]

    def timeframes(self, symbol: str) -> Sequence[Timeframe]:
        self._record(symbol)
        return sorted([*YAHOO_INTERVALS, *RESAMPLED_FROM], key=lambda tf: tf.duration)

    async def get_bars(self, symbol: str, timeframe: Timeframe, *, end: datetime,
                       limit: int | None = None) -> pd.DataFrame:
        """The last `limit` (default `default_limit`) bars that closed by `end`."""
        tf, rec = Timeframe(timeframe), self._record(symbol)
        wanted = self.default_limit if limit is None else limit
        if wanted <= 0:
            return empty_bars()
        start = end - _lookback(rec, tf, wanted)
        bars = await self.get_bars_between(rec.symbol, tf, start=start, end=end)
        return bars.iloc[-wanted:]

    async def get_bars_between(self, symbol: str, timeframe: Timeframe, *, start: datetime,
                               end: datetime) -> pd.DataFrame:
        """Bars with open >= `start` and close (open + timeframe) <= `end`, validated."""
        tf, rec = Timeframe(timeframe), self._record(symbol)
        native = RESAMPLED_FROM.get(tf, tf)
        first = start - (tf.duration if native is not tf else timedelta(0))
        first = self._clamp_to_lookback(rec, native, first, end)
        raw = await self._fetch_range(rec, native, first, end)
        bars, report = require_valid(raw, symbol=rec.symbol, timeframe=native, asset_class=rec.asset_class,
                                     calendar=_calendar(rec), policy=self.validation)
        self.last_reports[(rec.symbol, native)] = report
        if native is not tf:
            bars = resample_bars(bars, native, tf, default_anchor(rec.asset_class, tf), end=end)
        opens = index_ns(bars)
        keep = (opens >= to_utc_ns(start)) & (opens + _ns(tf.duration) <= to_utc_ns(end))
        return bars[keep]

    # -- fetching --------------------------------------------------------------------------------

    def _records(self) -> list[InstrumentRecord]:
        return [r for r in self.registry.records(self.capabilities.asset_classes) if r.provider_symbol(YAHOO)]

    def _record(self, symbol: str) -> InstrumentRecord:
        rec = self.registry.get(symbol)
        if rec.asset_class not in self.capabilities.asset_classes or rec.provider_symbol(YAHOO) is None:
            raise UnknownSymbolError(symbol)
        return rec

    def _clamp_to_lookback(self, rec: InstrumentRecord, native: Timeframe, start: datetime, end: datetime) -> datetime:
        reach = self.capabilities.lookback(native)
        if reach is None:
            return start
        oldest = self.clock.now() - reach
        if end <= oldest:
            raise ProviderRequestError(f"yahoo keeps {native.value} bars for {reach.days} days only; "
                                       f"{rec.symbol} up to {end:%Y-%m-%d %H:%M} is older")
        if start < oldest:
            logger.info("yahoo: %s %s starts at %s, not %s (lookback limit)", rec.symbol, native.value, oldest, start)
            return oldest
        return start

    async def _fetch_range(self, rec: InstrumentRecord, native: Timeframe, start: datetime,
                           end: datetime) -> pd.DataFrame:
        span = self.capabilities.span(native) or (end - start)
        frames, a = [], start
        while a < end:
            b = min(end, a + span)
            frames.append(await self._fetch_one(rec, native, a, b))
            a = b
        frames = [f for f in frames if len(f)]
        if not frames:
            return empty_bars()
        return pd.concat(frames) if len(frames) > 1 else frames[0]

    async def _fetch_one(self, rec: InstrumentRecord, native: Timeframe, start: datetime,
                         end: datetime) -> pd.DataFrame:
        if not _any_session(rec, start, end):
            return empty_bars()  # a weekend or holiday: Yahoo would answer "no price data, possibly delisted"
        ysym = rec.provider_symbol(YAHOO) or rec.symbol
        # Yahoo's period2 is exclusive and daily bars are stamped at the session open: reach a day past
        fetch_end = end + (_DAY if native is Timeframe.D1 else native.duration)

        async def once() -> pd.DataFrame:
            await self._throttle.wait()
            return await asyncio.to_thread(self._history, rec, ysym, native, start, fetch_end)

        return await self.retry.run(once, what=f"yahoo {ysym} {native.value}")

    def _history(self, rec: InstrumentRecord, ysym: str, native: Timeframe, start: datetime,
                 end: datetime) -> pd.DataFrame:
        """One yfinance call (in a worker thread), translated into our errors and bar convention."""
        with _YF_LOCK:
            try:
                frame = yf.Ticker(ysym, session=self.session).history(
                    interval=YAHOO_INTERVALS[native], start=start, end=end, auto_adjust=False, actions=False,
                    prepost=False, repair=False, keepna=False, timeout=self.timeout)
            except UnknownSymbolError:
                raise UnknownSymbolError(rec.symbol) from None  # known to us, not to Yahoo
            except MarketDataError:
                raise
            except Exception as exc:  # noqa: BLE001 - the adapter edge: every vendor error becomes ours
                raise _translate(exc, rec.symbol) from exc
        return _to_bars(frame, native, rec.symbol)


def _any_session(rec: InstrumentRecord, start: datetime, end: datetime) -> bool:
    """Does the instrument's calendar have a session overlapping [start, end)?"""
    calendar = get_calendar(rec.calendar)
    day = start.astimezone(timezone.utc).date() - timedelta(days=1)
    while day <= end.astimezone(timezone.utc).date():
        bounds = calendar.session_bounds(day)
        if bounds is not None and bounds[0] < end and bounds[1] > start:
            return True
        day += timedelta(days=1)
    return False


def _translate(exc: Exception, symbol: str) -> SignalBotError:
    name = type(exc).__name__
    if name == "YFRateLimitError":
        return error_for_status(429, f"yahoo rate limit for {symbol}")
    if name in ("YFTzMissingError", "YFTickerMissingError"):
        return UnknownSymbolError(symbol)
    if name == "YFPricesMissingError":
        text = str(exc).lower()
        if "delisted" in text or "not found" in text:
            return UnknownSymbolError(symbol)
        return ProviderRequestError(f"yahoo has no prices for {symbol}: {exc}")
    if isinstance(exc, curl_errors.RequestException):
        return ProviderUnavailableError(f"yahoo request for {symbol} failed: {name}")
    if isinstance(exc, (KeyError, IndexError, TypeError, ValueError, AttributeError)):
        return DataValidationError(f"yahoo returned an unusable payload for {symbol}: {name}: {exc}")
    return MarketDataError(f"yahoo failed for {symbol}: {name}: {exc}")


def _to_bars(frame: pd.DataFrame, native: Timeframe, symbol: str) -> pd.DataFrame:
    """yfinance's frame (Open..Volume, exchange-tz index) -> BAR_COLUMNS frame, UTC open times."""
    if frame is None or len(frame) == 0:
        return empty_bars()
    renamed = frame.rename(columns=str.lower)
    missing = [c for c in BAR_COLUMNS if c not in renamed.columns]
    if missing or not isinstance(frame.index, pd.DatetimeIndex):
        raise DataValidationError(f"yahoo bars of {symbol} lack {missing or 'a time index'}")
    index = frame.index
    if native is Timeframe.D1:  # a trading date, labelled 00:00 UTC of that date
        days = pd.DatetimeIndex(index.tz_localize(None) if index.tz is not None else index).normalize()
        times = days.as_unit("ns").asi8
    else:
        utc = index.tz_convert("UTC") if index.tz is not None else index.tz_localize("UTC")
        times = utc.as_unit("ns").asi8
    values = renamed[list(BAR_COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    return bars_from_block(times, values)


def _calendar(rec: InstrumentRecord) -> Any:
    try:
        return get_calendar(rec.calendar)
    except ValueError:
        return None


def _lookback(rec: InstrumentRecord, tf: Timeframe, bars: int) -> timedelta:
    """Calendar time that holds about `bars` bars of `tf` for this instrument, with a margin."""
    if rec.calendar == "24/7":
        return tf.duration * (bars + 1)
    if rec.calendar == "24/5":
        return tf.duration * bars * 7 / 5 * 1.05 + 4 * _DAY
    per_day = 1 if tf is Timeframe.D1 else math.ceil(timedelta(hours=6, minutes=30) / tf.duration)
    sessions = math.ceil(bars / per_day)
    return _DAY * (sessions * 7 / 5 * 1.1 + 6)


def _ns(delta: timedelta) -> int:
    return (delta // timedelta(microseconds=1)) * 1000
