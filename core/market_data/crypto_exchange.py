"""MarketData over a crypto exchange's public candles through the real `ccxt` (async_support).

No API key is needed: only ``load_markets`` and ``fetch_ohlcv`` are used. The exchange is
configurable (default Binance); for Binance only the spot market list is loaded
(``options.fetchMarkets.types = ['spot']``). ccxt's own rate limiter is on (``enableRateLimit``), so
requests are spaced by the exchange's ``rateLimit``; ccxt's retries (``maxRetriesOnFailure``) stay at
their default of 0 and the shared `RetryPolicy` retries each request instead.

Ranges are fetched page by page from ``since``, at most ``max_bars`` candles a page (Binance: 1,000),
with ``until`` (Binance ``endTime``) bounding the last page. Candles are returned only once closed
(open + timeframe <= end). Timeframes the exchange lacks are resampled from the largest native one
that divides them.

`base_url` rewrites every URL in ``exchange.urls['api']`` to that scheme and host, keeping the path:
tests point it at a local server on 127.0.0.1 that speaks the exchange's REST format.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import ccxt.async_support as ccxt_async
import ccxt.pro as ccxt_pro
import numpy as np
import pandas as pd

from core.clock import Clock, SystemClock
from core.domain import BAR_COLUMNS, AssetClass, Instrument, Timeframe
from core.errors import DataValidationError, MarketDataError, SignalBotError, UnknownSymbolError
from core.instruments import CCXT, CRYPTO_24_7, InstrumentRecord, InstrumentRegistry, default_registry
from core.market_data.capabilities import ProviderCapabilities
from core.market_data.resample import bars_from_block, default_anchor, empty_bars, index_ns, resample_bars, to_utc_ns
from core.market_data.retry import (
    ProviderRequestError,
    ProviderUnavailableError,
    RateLimitedError,
    RetryPolicy,
)
from core.resilience import parse_retry_after
from core.market_data.validation import DEFAULT_POLICY, ValidationPolicy, ValidationReport, require_valid

DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {"binance": {"fetchMarkets": {"types": ["spot"]}}}
MAX_BARS: dict[str, int] = {"binance": 1000}


class CcxtMarketData:
    """MarketData over one ccxt exchange's public OHLCV for the registry's crypto pairs."""

    def __init__(
        self,
        registry: InstrumentRegistry | None = None,
        *,
        exchange_id: str = "binance",
        base_url: str | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        options: Mapping[str, Any] | None = None,
        rate_limit_ms: float | None = None,
        max_bars: int | None = None,
        clock: Clock | None = None,
        default_limit: int = 500,
        validation: ValidationPolicy = DEFAULT_POLICY,
    ) -> None:
        if not hasattr(ccxt_async, exchange_id):
            raise ValueError(f"ccxt has no exchange '{exchange_id}'")
        self.name = f"ccxt:{exchange_id}"
        self.registry = registry or default_registry()
        config: dict[str, Any] = {"enableRateLimit": True, "timeout": int(timeout * 1000),
                                  "options": {"maxRetriesOnFailure": 0,  # ccxt's default; ours retries instead
                                              **DEFAULT_OPTIONS.get(exchange_id, {}), **(options or {})}}
        if rate_limit_ms is not None:
            config["rateLimit"] = rate_limit_ms
        self.exchange = checked_exchange_class(getattr(ccxt_async, exchange_id))(config)
        if base_url is not None:
            self.exchange.urls["api"] = rebase_urls(self.exchange.urls["api"], base_url)
        self.retry = retry or RetryPolicy()
        self.clock = clock or SystemClock()
        self.default_limit = default_limit
        self.validation = validation
        self.max_bars = max_bars or MAX_BARS.get(exchange_id, 500)
        self.last_reports: dict[tuple[str, Timeframe], ValidationReport] = {}
        native = {tf for tf in Timeframe if tf.value in (self.exchange.timeframes or {})}
        self.capabilities = ProviderCapabilities.of((AssetClass.CRYPTO,), native, max_bars=self.max_bars,
                                                    per_second=1000.0 / float(self.exchange.rateLimit))
        self._markets_loaded = False

    async def close(self) -> None:
        await self.exchange.close()

    async def __aenter__(self) -> CcxtMarketData:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the MarketData protocol -----------------------------------------------------------------

    def instruments(self) -> Sequence[Instrument]:
        return [r.instrument for r in self.registry.records((AssetClass.CRYPTO,)) if r.provider_symbol(CCXT)]

    def timeframes(self, symbol: str) -> Sequence[Timeframe]:
        self._record(symbol)
        return sorted((tf for tf in Timeframe if self._source_of(tf) is not None), key=lambda tf: tf.duration)

    async def get_bars(self, symbol: str, timeframe: Timeframe, *, end: datetime,
                       limit: int | None = None) -> pd.DataFrame:
        """The last `limit` (default `default_limit`) candles that closed by `end`."""
        tf = Timeframe(timeframe)
        wanted = self.default_limit if limit is None else limit
        if wanted <= 0:
            return empty_bars()
        bars = await self.get_bars_between(symbol, tf, start=end - tf.duration * (wanted + 1), end=end)
        return bars.iloc[-wanted:]

    async def get_bars_between(self, symbol: str, timeframe: Timeframe, *, start: datetime,
                               end: datetime) -> pd.DataFrame:
        """Candles with open >= `start` and close <= `end`, validated."""
        tf, rec = Timeframe(timeframe), self._record(symbol)
        native = self._source_of(tf)
        if native is None:
            raise ProviderRequestError(f"{self.name} has no timeframe that builds {tf.value}")
        first = start - (tf.duration if native is not tf else timedelta(0))
        raw = await self._fetch_range(rec, native, first, end)
        bars, report = require_valid(raw, symbol=rec.symbol, timeframe=native, asset_class=AssetClass.CRYPTO,
                                     calendar=CRYPTO_24_7, policy=self.validation)
        self.last_reports[(rec.symbol, native)] = report
        if native is not tf:
            bars = resample_bars(bars, native, tf, default_anchor(AssetClass.CRYPTO, tf), end=end)
        opens = index_ns(bars)
        keep = (opens >= to_utc_ns(start)) & (opens + _ms(tf) * 1_000_000 <= to_utc_ns(end))
        return bars[keep]

    # -- fetching --------------------------------------------------------------------------------

    def _record(self, symbol: str) -> InstrumentRecord:
        rec = self.registry.get(symbol)
        if rec.asset_class is not AssetClass.CRYPTO or rec.provider_symbol(CCXT) is None:
            raise UnknownSymbolError(symbol)
        return rec

    def _source_of(self, tf: Timeframe) -> Timeframe | None:
        native = self.capabilities.native_timeframes
        if tf in native:
            return tf
        divisors = [s for s in native if s.duration < tf.duration and tf.duration % s.duration == timedelta(0)]
        return max(divisors, key=lambda s: s.duration) if divisors else None

    async def _fetch_range(self, rec: InstrumentRecord, tf: Timeframe, start: datetime, end: datetime) -> pd.DataFrame:
        market = rec.provider_symbol(CCXT) or rec.symbol
        step = _ms(tf)
        since = -(-to_utc_ns(start) // 1_000_000 // step) * step  # first candle open at or after start
        last_open = to_utc_ns(end) // 1_000_000 - step  # the last candle that has closed by `end`
        rows: list[list[Any]] = []
        while since <= last_open:
            page = await self._page(rec, market, tf, since, last_open)
            if not page:
                break
            rows.extend(page)
            nxt = int(page[-1][0]) + step
            if nxt <= since or len(page) < self.max_bars:
                break
            since = nxt
        return _to_bars(rows, rec.symbol, last_open)

    async def _page(self, rec: InstrumentRecord, market: str, tf: Timeframe, since: int, until: int) -> list[list[Any]]:
        async def once() -> list[list[Any]]:
            try:
                if not self._markets_loaded:
                    await self.exchange.load_markets()
                    self._markets_loaded = True
                page = await self.exchange.fetch_ohlcv(market, tf.value, since=since, limit=self.max_bars,
                                                       params={"until": until})
            except Exception as exc:  # noqa: BLE001 - the adapter edge: every vendor error becomes ours
                raise self._translate(exc, rec) from exc
            return _check_page(page, rec.symbol, self.name)

        return await self.retry.run(once, what=f"{self.name} {market} {tf.value}")

    def _translate(self, exc: Exception, rec: InstrumentRecord) -> SignalBotError:
        name, where = type(exc).__name__, f"{self.name} {rec.symbol}"
        if isinstance(exc, SignalBotError):
            return exc
        if isinstance(exc, (ccxt_async.RateLimitExceeded, ccxt_async.DDoSProtection)):
            headers = {str(k).lower(): v for k, v in (self.exchange.last_response_headers or {}).items()}
            return RateLimitedError(f"{where}: rate limited ({name})", parse_retry_after(headers.get("retry-after")))
        if isinstance(exc, ccxt_async.BadSymbol):
            return UnknownSymbolError(rec.symbol)  # known to us, not listed by this exchange
        if isinstance(exc, ccxt_async.BadResponse):
            return DataValidationError(f"{where}: malformed response ({name}: {exc})")
        if isinstance(exc, ccxt_async.OperationFailed):  # network errors, 5xx, "unknown error": transient
            return ProviderUnavailableError(f"{where}: {name}: {_short(exc)}")
        if isinstance(exc, ccxt_async.BaseError):
            return ProviderRequestError(f"{where}: {name}: {_short(exc)}")
        if isinstance(exc, (TypeError, ValueError, KeyError, IndexError, AttributeError)):
            return DataValidationError(f"{where}: unusable response ({name}: {exc})")
        return MarketDataError(f"{where}: {name}: {exc}")


def checked_exchange_class(base: type) -> type:
    """`base` (a ccxt exchange class) refusing malformed candles instead of dropping them: ccxt turns
    a null or non-JSON response into no candles and a candle without a time into one that its
    since-filter discards, so a broken payload would otherwise pass as "no data"."""

    class Checked(base):
        def parse_ohlcvs(self, ohlcvs: Any, market: Any = None, timeframe: str = "1m", since: Any = None,
                         limit: Any = None, tail: Any = False) -> Any:
            if not isinstance(ohlcvs, (list, dict)):
                raise DataValidationError(f"{self.id}: candle response is not a JSON array "
                                          f"({type(ohlcvs).__name__}: {str(ohlcvs)[:60]})")
            return super().parse_ohlcvs(ohlcvs, market, timeframe, since, limit, tail)

        def parse_ohlcv(self, ohlcv: Any, market: Any = None) -> Any:
            row = super().parse_ohlcv(ohlcv, market)
            if not isinstance(row, list) or len(row) < 6 or not isinstance(row[0], int):
                raise DataValidationError(f"{self.id}: malformed candle {str(ohlcv)[:80]}")
            return row

    Checked.__name__ = Checked.__qualname__ = base.__name__
    return Checked


def closing_exchange_class(base: type) -> type:
    """`base` (a ccxt.pro exchange class) that also remembers, per (market id, interval), the newest candle the
    exchange marked closed (Binance's kline `x`); ccxt's parsed candles do not carry it."""

    class Closing(base):
        def handle_ohlcv(self, client: Any, message: dict[str, Any]) -> None:
            kline = message.get("k") if isinstance(message, dict) else None
            if isinstance(kline, dict) and kline.get("x") is True and isinstance(kline.get("t"), int):
                closed = self.__dict__.setdefault("closed_klines", {})
                key = (str(kline.get("s")), str(kline.get("i")))
                closed[key] = max(closed.get(key, kline["t"]), kline["t"])
            super().handle_ohlcv(client, message)

    Closing.__name__ = Closing.__qualname__ = base.__name__
    return Closing


def stream_exchange(rest: CcxtMarketData, ws_url: str | None = None) -> Any:
    """The ccxt.pro twin of `rest`'s exchange for its market streams (core.market_data.stream): REST URLs as
    `rest`'s (rebased in tests), streams at `ws_url` when given, malformed candles refused, closed klines kept."""
    exchange_id = rest.exchange.id
    options = {"maxRetriesOnFailure": 0, **DEFAULT_OPTIONS.get(exchange_id, {})}
    cls = closing_exchange_class(checked_exchange_class(getattr(ccxt_pro, exchange_id)))
    exchange = cls({"enableRateLimit": False, "options": options})
    exchange.urls["api"] = {**rest.exchange.urls["api"], "ws": exchange.urls["api"]["ws"]}
    if ws_url is not None:
        exchange.urls["api"]["ws"] = {k: ws_url if isinstance(v, str) else v for k, v in exchange.urls["api"]["ws"].items()}
    return exchange


def _check_page(page: Any, symbol: str, provider: str) -> list[list[Any]]:
    """ccxt's parsed candles must be [ms, o, h, l, c, v] rows of numbers (an exchange never sends a
    candle without a price: a null is a malformed payload, not a gap)."""
    if not isinstance(page, list):
        raise DataValidationError(f"{provider} {symbol}: candles are not a list ({type(page).__name__})")
    for row in page:
        if not isinstance(row, list) or len(row) < 6 or not isinstance(row[0], int) or isinstance(row[0], bool):
            raise DataValidationError(f"{provider} {symbol}: malformed candle {str(row)[:80]}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row[1:6]):
            raise DataValidationError(f"{provider} {symbol}: candle with a missing or non-numeric value {str(row)[:80]}")
    return page


def _to_bars(rows: list[list[Any]], symbol: str, last_open_ms: int) -> pd.DataFrame:
    if not rows:
        return empty_bars()
    arr = np.array([[float(v) for v in row[:6]] for row in rows], dtype=np.float64)
    times = arr[:, 0].astype(np.int64)
    keep = times <= last_open_ms
    return bars_from_block(times[keep] * 1_000_000, arr[keep, 1:1 + len(BAR_COLUMNS)])


def rebase_urls(urls: Any, base_url: str) -> Any:
    """`urls` (a URL, or nested dicts of them, as in ccxt's ``urls['api']``) with scheme and host
    replaced by `base_url`'s, paths kept."""
    if isinstance(urls, str):
        parts, base = urlsplit(urls), urlsplit(base_url)
        return urlunsplit((base.scheme, base.netloc, base.path.rstrip("/") + parts.path, parts.query, parts.fragment))
    if isinstance(urls, dict):
        return {k: rebase_urls(v, base_url) for k, v in urls.items()}
    return urls


def _ms(tf: Timeframe) -> int:
    return int(tf.duration.total_seconds() * 1000)


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 300 else text[:300] + "..."
