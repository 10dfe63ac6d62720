"""Market-data providers through their real client libraries against local vendor fakes on 127.0.0.1:
yfinance -> a Yahoo chart API, ccxt -> a Binance REST API. Faults (timeouts, 5xx, 429, malformed
payloads), the router's failover and circuit breaker, and backfill into the real SQL store."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from yfinance.data import YfData

from core.clock import FixedClock
from core.domain import BAR_COLUMNS, AssetClass, Instrument, Timeframe
from core.errors import DataValidationError, MarketDataError, UnknownSymbolError
from core.instruments import XNYS, default_registry
from core.market_data.backfill import BackfillProgress, backfill
from core.market_data.crypto_exchange import CcxtMarketData
from core.market_data.csv_files import CsvMarketData
from core.market_data.retry import ProviderRequestError, ProviderUnavailableError, RetryPolicy
from core.market_data.router import MarketDataRouter
from core.resilience import BreakerState, CircuitBreaker
from core.market_data.validation import DataRejectedError, ValidationReport
from core.market_data.yahoo import YahooMarketData
from core.ports import MarketData
from storage.database import Database
from storage import Stores
from storage.bars import BarStore
from tests.fakes.binance_rest import FakeBinance
from tests.fakes.market_faults import bar_at
from tests.fakes.yahoo_chart import FakeYahoo

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:yfinance.*")

UTC = timezone.utc
NOW = datetime(2024, 6, 10, tzinfo=UTC)
END = datetime(2024, 6, 1, tzinfo=UTC)  # a Saturday
H = 3_600_000  # ms


def fast_retry(attempts: int = 3, sleep: Callable[[float], Any] | None = None) -> RetryPolicy:
    if sleep is None:
        return RetryPolicy(max_attempts=attempts, base_delay=0.01, max_delay=0.02)
    return RetryPolicy(max_attempts=attempts, base_delay=0.01, max_delay=0.02, sleep=sleep)


class SleepLog:
    """A RetryPolicy sleep that really sleeps and remembers for how long."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)
        await asyncio.sleep(seconds)


def assert_conventions(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == list(BAR_COLUMNS)
    assert isinstance(frame.index, pd.DatetimeIndex) and str(frame.index.tz) == "UTC"
    assert all(frame[c].dtype == np.float64 for c in BAR_COLUMNS)
    assert frame.index.is_monotonic_increasing and frame.index.is_unique
    assert (frame["high"] >= frame[["open", "close"]].max(axis=1)).all()
    assert (frame["low"] <= frame[["open", "close"]].min(axis=1)).all()


@pytest.fixture(scope="module")
def yf_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("yfinance-cache")


@pytest.fixture
async def yahoo_fake() -> AsyncIterator[FakeYahoo]:
    async with FakeYahoo() as fake:
        yield fake


@pytest.fixture
async def binance_fake() -> AsyncIterator[FakeBinance]:
    async with FakeBinance() as fake:
        yield fake


@pytest.fixture
def make_yahoo(yahoo_fake: FakeYahoo, yf_cache: Path) -> Callable[..., YahooMarketData]:
    # yfinance memoises responses for past ranges by URL; a later fake may get an earlier one's port
    YfData.cache_get.cache_clear()
    shared = YfData()  # a process-wide singleton: forget the cookie and crumb an earlier test's fake gave
    shared._crumb = None
    shared._cookie = None

    def make(**kw: Any) -> YahooMarketData:
        args: dict[str, Any] = dict(base_url=yahoo_fake.base_url, timeout=0.5, cache_dir=yf_cache, retry=fast_retry(),
                                    requests_per_second=None, clock=FixedClock(NOW))
        args.update(kw)
        return YahooMarketData(**args)

    return make


@pytest.fixture
async def make_ccxt(binance_fake: FakeBinance) -> AsyncIterator[Callable[..., CcxtMarketData]]:
    made: list[CcxtMarketData] = []

    def make(**kw: Any) -> CcxtMarketData:
        args: dict[str, Any] = dict(base_url=binance_fake.base_url, timeout=0.5, retry=fast_retry(), rate_limit_ms=5)
        args.update(kw)
        made.append(CcxtMarketData(**args))
        return made[-1]

    yield make
    for provider in made:
        await provider.close()


def chart_requests(fake: FakeYahoo, symbol: str = "") -> int:
    return sum(1 for r in fake.requests if r.path.startswith(f"/v8/finance/chart/{symbol}") and "period1" in r.query)


def faulted(fake: FakeYahoo | FakeBinance) -> int:
    return sum(1 for r in fake.requests if r.fault)


# -- Yahoo through yfinance ---------------------------------------------------------------------------


async def test_yahoo_daily_bars_come_through_yfinance(yahoo_fake: FakeYahoo, make_yahoo: Callable[..., YahooMarketData]) -> None:
    yahoo = make_yahoo()
    bars = await yahoo.get_bars("AAPL", Timeframe.D1, end=END, limit=10)
    assert_conventions(bars)
    assert len(bars) == 10 and bars.index[-1] == pd.Timestamp("2024-05-31", tz="UTC")
    assert (bars.index == bars.index.normalize()).all()  # daily bars: 00:00 UTC of the trading date
    assert pd.Timestamp("2024-05-27", tz="UTC") not in bars.index  # Memorial Day
    for day, row in bars.iterrows():
        bounds = XNYS.session_bounds(pd.Timestamp(day).date())
        assert bounds is not None
        expected = bar_at("AAPL", int(bounds[0].timestamp()), 86400)
        assert row["open"] == pytest.approx(expected[0]) and row["close"] == pytest.approx(expected[3])
    assert isinstance(yahoo, MarketData)
    brk = await yahoo.get_bars("BRK.B", Timeframe.D1, end=END, limit=3)
    assert len(brk) == 3 and chart_requests(yahoo_fake, "BRK-B") == 1
    paths = {r.path for r in yahoo_fake.requests}
    assert "/" in paths and "/v1/test/getcrumb" in paths  # yfinance's cookie and crumb calls came here too
    assert yahoo.last_reports[("AAPL", Timeframe.D1)].clean


async def test_yahoo_intraday_timeframes(yahoo_fake: FakeYahoo, make_yahoo: Callable[..., YahooMarketData]) -> None:
    yahoo = make_yahoo()
    hourly = await yahoo.get_bars("AAPL", Timeframe.H1, end=END, limit=14)
    assert_conventions(hourly)
    assert len(hourly) == 14 and set(hourly.index.strftime("%H:%M")) == {f"{h}:30" for h in range(13, 20)}
    assert all(XNYS.is_open(t.to_pydatetime()) for t in hourly.index)
    four = await yahoo.get_bars("AAPL", Timeframe.H4, end=END, limit=4)
    assert len(four) == 4 and (four.index + timedelta(hours=4) <= END).all()
    fx = await yahoo.get_bars("EURUSD", Timeframe.M15, end=END, limit=50)
    assert len(fx) == 50 and not (fx.index.day_of_week == 5).any()
    assert chart_requests(yahoo_fake, "EURUSD=X") == 1
    index = await yahoo.get_bars("SPX", Timeframe.M5, end=END, limit=12)
    assert len(index) == 12 and chart_requests(yahoo_fake, "%5EGSPC") + chart_requests(yahoo_fake, "^GSPC") == 1
    assert [tf.value for tf in yahoo.timeframes("AAPL")] == ["1m", "5m", "15m", "1h", "4h", "1d"]
    with pytest.raises(ProviderRequestError, match="30 days|29 days"):
        await yahoo.get_bars("AAPL", Timeframe.M1, end=NOW - timedelta(days=40), limit=10)


async def test_yahoo_unknown_symbols(yahoo_fake: FakeYahoo, make_yahoo: Callable[..., YahooMarketData]) -> None:
    yahoo = make_yahoo()
    with pytest.raises(UnknownSymbolError) as err:
        await yahoo.get_bars("APPL", Timeframe.D1, end=END, limit=5)
    assert "AAPL" in err.value.suggestions and chart_requests(yahoo_fake) == 0
    with pytest.raises(UnknownSymbolError):
        await yahoo.get_bars("BTC-USDT", Timeframe.D1, end=END, limit=5)  # crypto is not routed to Yahoo here
    yahoo_fake.unknown.add("KO")
    with pytest.raises(UnknownSymbolError, match="KO"):
        await yahoo.get_bars("KO", Timeframe.D1, end=END, limit=5)


@pytest.mark.parametrize("kind", ["malformed", "wrong_shape"])
async def test_yahoo_malformed_payload_is_a_clear_error(yahoo_fake: FakeYahoo, make_yahoo: Callable[..., YahooMarketData],
                                                        kind: str) -> None:
    yahoo_fake.faults.add(kind, path="/v8/finance/chart/MSFT", times=-1)
    with pytest.raises(DataValidationError, match="MSFT.*(not JSON|malformed)"):
        await make_yahoo().get_bars("MSFT", Timeframe.D1, end=END, limit=5)
    assert faulted(yahoo_fake) == 1  # not retried: the same request would return the same bytes


async def test_yahoo_retries_5xx(yahoo_fake: FakeYahoo, make_yahoo: Callable[..., YahooMarketData]) -> None:
    yahoo_fake.faults.add("status", status=503, path="/v8/finance/chart/", times=2)
    bars = await make_yahoo().get_bars("JPM", Timeframe.D1, end=END, limit=5)
    assert len(bars) == 5 and faulted(yahoo_fake) == 2


async def test_yahoo_honours_retry_after(yahoo_fake: FakeYahoo, make_yahoo: Callable[..., YahooMarketData]) -> None:
    sleeps = SleepLog()
    yahoo = make_yahoo(retry=fast_retry(sleep=sleeps))
    await yahoo.get_bars("WFC", Timeframe.D1, end=END, limit=5)  # warm: timezone known
    yahoo_fake.faults.add("rate_limit", retry_after=1, path="/v8/finance/chart/WFC")
    started = time.monotonic()
    bars = await yahoo.get_bars("WFC", Timeframe.D1, end=END - timedelta(days=1), limit=5)
    assert len(bars) == 5 and sleeps.slept == [1.0] and time.monotonic() - started >= 1.0


async def test_yahoo_timeouts_are_bounded(yahoo_fake: FakeYahoo, make_yahoo: Callable[..., YahooMarketData]) -> None:
    yahoo_fake.faults.add("timeout", delay=5.0, path="/v8/finance/chart/", times=-1)
    started = time.monotonic()
    with pytest.raises(ProviderUnavailableError, match="timed out"):
        await make_yahoo(timeout=0.3, retry=fast_retry(attempts=2)).get_bars("C", Timeframe.D1, end=END, limit=5)
    assert time.monotonic() - started < 2.5 and faulted(yahoo_fake) == 2


async def test_yahoo_unadjusted_split_is_rejected(yahoo_fake: FakeYahoo, make_yahoo: Callable[..., YahooMarketData]) -> None:
    yahoo_fake.unadjusted_splits["NVDA"] = (int(datetime(2024, 5, 20, tzinfo=UTC).timestamp()), 10.0)
    with pytest.raises(DataRejectedError, match="split"):
        await make_yahoo().get_bars("NVDA", Timeframe.D1, end=END, limit=20)


# -- Binance through ccxt -----------------------------------------------------------------------------


async def test_ccxt_pages_by_since(binance_fake: FakeBinance, make_ccxt: Callable[..., CcxtMarketData]) -> None:
    ccxt = make_ccxt()
    bars = await ccxt.get_bars("BTC-USDT", Timeframe.H1, end=END, limit=2500)
    assert_conventions(bars)
    assert len(bars) == 2500 and bars.index[-1] == pd.Timestamp(END) - pd.Timedelta(hours=1)
    assert (np.diff(bars.index.asi8) == np.diff(bars.index.asi8)[0]).all()
    klines = [r for r in binance_fake.requests if r.path == "/api/v3/klines"]
    starts = [int(r.query["startTime"]) for r in klines]
    assert len(klines) == 3 and starts == sorted(starts) and {r.query["limit"] for r in klines} == {"1000"}
    assert starts[1] - starts[0] == 1000 * H
    assert binance_fake.count("/api/v3/exchangeInfo") == 1
    t = int(bars.index[100].timestamp())
    assert bars["close"].iloc[100] == pytest.approx(bar_at("BTCUSDT", t, 3600)[3])
    assert isinstance(ccxt, MarketData) and ccxt.capabilities.max_bars_per_request == 1000


async def test_ccxt_returns_closed_candles_and_reports_outages(binance_fake: FakeBinance,
                                                               make_ccxt: Callable[..., CcxtMarketData]) -> None:
    binance_fake.now_ms = int(END.timestamp() * 1000) + 90 * 60_000  # 01:30: the 00:00 4h candle is still open
    end_ms = int(END.timestamp() * 1000)
    binance_fake.outages.append((end_ms - 10 * H, end_ms - 7 * H))
    ccxt = make_ccxt()
    now = END + timedelta(minutes=90)
    four = await ccxt.get_bars("ETH-USDT", Timeframe.H4, end=now, limit=6)
    assert four.index[-1] == pd.Timestamp(END) - pd.Timedelta(hours=4)
    hourly = await ccxt.get_bars("ETH-USDT", Timeframe.H1, end=now, limit=20)
    assert hourly.index[-1] == pd.Timestamp(END)  # 00:00-01:00 closed, 01:00-02:00 not yet
    assert len(hourly) == 17  # three hours missing in the outage: reported, not filled
    report: ValidationReport = ccxt.last_reports[("ETH-USDT", Timeframe.H1)]
    assert report.count("gap") == 3 and not report.rejected
    assert [tf.value for tf in ccxt.timeframes("ETH-USDT")] == ["1m", "5m", "15m", "1h", "4h", "1d"]


@pytest.mark.parametrize("kind", ["malformed", "wrong_shape"])
async def test_ccxt_malformed_payload_is_a_clear_error(binance_fake: FakeBinance, make_ccxt: Callable[..., CcxtMarketData],
                                                       kind: str) -> None:
    binance_fake.faults.add(kind, path="/klines", times=-1)
    with pytest.raises(DataValidationError, match="candle"):
        await make_ccxt().get_bars("SOL-USDT", Timeframe.H1, end=END, limit=5)
    assert faulted(binance_fake) == 1


async def test_ccxt_retries_5xx_and_honours_retry_after(binance_fake: FakeBinance,
                                                        make_ccxt: Callable[..., CcxtMarketData]) -> None:
    sleeps = SleepLog()
    binance_fake.faults.add("status", status=502, path="/klines")
    binance_fake.faults.add("rate_limit", retry_after=1, path="/klines")
    started = time.monotonic()
    bars = await make_ccxt(retry=fast_retry(sleep=sleeps)).get_bars("ADA-USDT", Timeframe.H1, end=END, limit=5)
    assert len(bars) == 5 and faulted(binance_fake) == 2
    assert sleeps.slept[-1] == 1.0 and time.monotonic() - started >= 1.0


async def test_ccxt_timeouts_are_bounded(binance_fake: FakeBinance, make_ccxt: Callable[..., CcxtMarketData]) -> None:
    ccxt = make_ccxt(timeout=0.3, retry=fast_retry(attempts=2))
    await ccxt.get_bars("XRP-USDT", Timeframe.H1, end=END, limit=2)  # markets loaded
    binance_fake.faults.add("timeout", delay=5.0, path="/klines", times=-1)
    started = time.monotonic()
    with pytest.raises(ProviderUnavailableError, match="RequestTimeout"):
        await ccxt.get_bars("XRP-USDT", Timeframe.H1, end=END, limit=5)
    assert time.monotonic() - started < 2.0 and faulted(binance_fake) == 2


async def test_ccxt_unknown_markets(binance_fake: FakeBinance, make_ccxt: Callable[..., CcxtMarketData]) -> None:
    ccxt = make_ccxt()
    with pytest.raises(UnknownSymbolError):
        await ccxt.get_bars("XMR-USDT", Timeframe.H1, end=END, limit=5)  # in the registry, not listed by the exchange
    with pytest.raises(UnknownSymbolError):
        await ccxt.get_bars("AAPL", Timeframe.H1, end=END, limit=5)
    assert binance_fake.count("/klines") == 0


async def test_ccxt_keeps_the_exchange_rate_limit(binance_fake: FakeBinance, make_ccxt: Callable[..., CcxtMarketData]) -> None:
    ccxt = make_ccxt(rate_limit_ms=100)
    assert ccxt.exchange.enableRateLimit and ccxt.capabilities.requests_per_second == pytest.approx(10)
    await ccxt.get_bars("DOGE-USDT", Timeframe.H1, end=END, limit=3)
    started = time.monotonic()
    for i in range(4):
        await ccxt.get_bars("DOGE-USDT", Timeframe.H1, end=END - timedelta(hours=i), limit=3)
    assert time.monotonic() - started >= 0.15  # Binance klines weigh 0.8 of rateLimit at limit=1000: ~80 ms apart


# -- the router -------------------------------------------------------------------------------------


def write_csv(path: Path, symbol: str = "AAPL", start: str = "2024-03-01", end: str = "2024-06-07") -> Path:
    days = pd.bdate_range(start, end)
    closes = 500 + np.arange(len(days), dtype=float)
    frame = pd.DataFrame({"date": days.strftime("%Y-%m-%d"), "open": closes - 1, "high": closes + 2,
                          "low": closes - 2, "close": closes, "volume": 1e6})
    file = path / f"{symbol}_daily.csv"
    frame.to_csv(file, index=False)
    return file


async def test_primary_down_fails_over_within_the_same_call(yahoo_fake: FakeYahoo, make_yahoo: Callable[..., YahooMarketData],
                                                            tmp_path: Path) -> None:
    csv = CsvMarketData(write_csv(tmp_path))
    router = MarketDataRouter({AssetClass.EQUITY: [make_yahoo(), csv]}, registry=default_registry())
    yahoo_fake.faults.add("status", status=500, path="/v8/finance/chart/", times=-1)
    bars = await router.get_bars("AAPL", Timeframe.D1, end=END, limit=5)
    expected = await csv.get_bars("AAPL", Timeframe.D1, end=END, limit=5)
    pd.testing.assert_frame_equal(bars, expected)
    assert router.breakers["yahoo"].failures == 1 and faulted(yahoo_fake) == 3  # the adapter's 3 tries, then csv


async def test_crypto_fails_over_from_a_dead_exchange_to_yahoo(yahoo_fake: FakeYahoo,
                                                               make_yahoo: Callable[..., YahooMarketData]) -> None:
    dead = FakeBinance()
    await dead.start()
    await dead.stop()  # nothing listens on that port any more
    ccxt = CcxtMarketData(base_url=dead.base_url, timeout=0.5, retry=fast_retry(attempts=2), rate_limit_ms=5)
    yahoo = make_yahoo(asset_classes=(AssetClass.CRYPTO,))
    router = MarketDataRouter({AssetClass.CRYPTO: [ccxt, yahoo]}, registry=default_registry())
    try:
        bars = await router.get_bars("BTC-USDT", Timeframe.H1, end=END, limit=24)
    finally:
        await router.close()
    assert len(bars) == 24 and chart_requests(yahoo_fake, "BTC-USD") == 1
    t = int(bars.index[0].timestamp())
    assert bars["open"].iloc[0] == pytest.approx(bar_at("BTC-USD", t, 3600)[0])
    assert router.breakers["ccxt:binance"].failures == 1


async def test_breaker_opens_after_repeated_failures_and_recovers_after_the_probe(
        yahoo_fake: FakeYahoo, make_yahoo: Callable[..., YahooMarketData], tmp_path: Path) -> None:
    clock = FixedClock(NOW)
    yahoo = make_yahoo(retry=fast_retry(attempts=1))
    csv = CsvMarketData(write_csv(tmp_path))
    router = MarketDataRouter({AssetClass.EQUITY: [yahoo, csv]}, registry=default_registry(), failure_threshold=2,
                              cooldown=timedelta(seconds=30), clock=clock)
    breaker = router.breakers["yahoo"]
    yahoo_fake.faults.add("status", status=503, path="/v8/finance/chart/", times=-1)
    for _ in range(2):
        bars = await router.get_bars("AAPL", Timeframe.D1, end=END, limit=3)
        assert bars["close"].iloc[-1] >= 500  # the csv's prices
    assert breaker.state is BreakerState.OPEN and faulted(yahoo_fake) == 2
    asked = len(yahoo_fake.requests)
    await router.get_bars("AAPL", Timeframe.D1, end=END, limit=3)
    assert len(yahoo_fake.requests) == asked  # open: yahoo is not even asked
    clock.advance(timedelta(seconds=10))
    await router.get_bars("AAPL", Timeframe.D1, end=END, limit=3)
    assert len(yahoo_fake.requests) == asked and breaker.state is BreakerState.OPEN  # still cooling down
    yahoo_fake.faults.clear()  # the vendor recovers
    clock.advance(timedelta(seconds=21))
    bars = await router.get_bars("AAPL", Timeframe.D1, end=END, limit=3)  # the probe
    assert len(yahoo_fake.requests) > asked and breaker.state is BreakerState.CLOSED
    assert bars["close"].iloc[-1] < 500 and router.status() == {"yahoo": BreakerState.CLOSED, "csv": BreakerState.CLOSED}


class StubProvider:
    """A MarketData whose behaviour a test scripts call by call."""

    def __init__(self, name: str, *outcomes: Exception | float) -> None:
        self.name = name
        self.outcomes = list(outcomes)
        self.calls = 0

    def instruments(self) -> list[Instrument]:
        return [Instrument("AAPL", AssetClass.EQUITY)]

    def timeframes(self, symbol: str) -> list[Timeframe]:
        return [Timeframe.D1]

    async def get_bars(self, symbol: str, timeframe: Timeframe, *, end: datetime, limit: int | None = None) -> pd.DataFrame:
        self.calls += 1
        outcome = self.outcomes.pop(0) if self.outcomes else 1.0
        if isinstance(outcome, Exception):
            raise outcome
        if outcome > 1.0:
            await asyncio.sleep(outcome)
        idx = pd.DatetimeIndex([pd.Timestamp("2024-05-31", tz="UTC")], name="time")
        return pd.DataFrame({c: [float(len(self.name))] for c in BAR_COLUMNS}, index=idx)


async def test_breaker_state_machine() -> None:
    clock = FixedClock(NOW)
    breaker = CircuitBreaker("p", failure_threshold=3, cooldown=timedelta(seconds=5), clock=clock)
    for _ in range(2):
        breaker.record_failure()
    breaker.record_success()  # consecutive failures only
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.advance(timedelta(seconds=5))
    assert breaker.allow() and breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow()  # one probe at a time
    breaker.record_failure()  # the probe failed: open again, a new cool-down
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.advance(timedelta(seconds=5))
    assert breaker.allow()
    breaker.release()  # cancelled probe
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.failures == 0


async def test_what_counts_against_a_provider() -> None:
    report = ValidationReport("AAPL", Timeframe.D1, 5, 0)
    primary = StubProvider("primary", UnknownSymbolError("AAPL"), DataRejectedError(report),
                           ProviderRequestError("HTTP 400"), ProviderUnavailableError("HTTP 503"))
    router = MarketDataRouter({AssetClass.EQUITY: [primary, StubProvider("backup")]}, failure_threshold=1)
    for _ in range(3):  # answers about this request, not the provider's health: no trip
        await router.get_bars("AAPL", Timeframe.D1, end=END)
        assert router.breakers["primary"].state is BreakerState.CLOSED
    bars = await router.get_bars("AAPL", Timeframe.D1, end=END)
    assert bars["close"].iloc[0] == len("backup") and router.breakers["primary"].state is BreakerState.OPEN
    await router.get_bars("AAPL", Timeframe.D1, end=END)
    assert primary.calls == 4


async def test_router_errors_name_the_providers() -> None:
    registry = default_registry()
    lone = MarketDataRouter({AssetClass.EQUITY: [StubProvider("vendor", DataValidationError("bad json"))]}, registry=registry)
    with pytest.raises(DataValidationError, match="^vendor: bad json"):
        await lone.get_bars("AAPL", Timeframe.D1, end=END)
    both = MarketDataRouter({AssetClass.EQUITY: [StubProvider("a", ProviderUnavailableError("HTTP 503")),
                                                 StubProvider("b", ProviderUnavailableError("timed out"))]},
                            registry=registry)
    with pytest.raises(ProviderUnavailableError, match="a: HTTP 503; b: timed out"):
        await both.get_bars("AAPL", Timeframe.D1, end=END)
    with pytest.raises(UnknownSymbolError) as err:
        await both.get_bars("APPL", Timeframe.D1, end=END)
    assert "AAPL" in err.value.suggestions
    with pytest.raises(MarketDataError, match="no market-data provider"):
        await both.get_bars("BTC-USDT", Timeframe.D1, end=END)
    odd = MarketDataRouter({AssetClass.EQUITY: [StubProvider("odd", RuntimeError("boom"))]}, registry=registry)
    with pytest.raises(MarketDataError, match="odd: unexpected RuntimeError: boom"):
        await odd.get_bars("AAPL", Timeframe.D1, end=END)


async def test_router_bounds_a_hanging_provider() -> None:
    slow, quick = StubProvider("slow", 5.0), StubProvider("quick")
    router = MarketDataRouter({AssetClass.EQUITY: [slow, quick]}, call_timeout=0.2)
    started = time.monotonic()
    bars = await router.get_bars("AAPL", Timeframe.D1, end=END)
    assert bars["close"].iloc[0] == len("quick") and time.monotonic() - started < 1.0
    assert router.breakers["slow"].failures == 1


def test_router_checks_capabilities(make_yahoo: Callable[..., YahooMarketData]) -> None:
    with pytest.raises(ValueError, match="does not serve crypto"):
        MarketDataRouter({AssetClass.CRYPTO: [make_yahoo()]})


# -- backfill ---------------------------------------------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Stores]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'bars.db'}")
    await db.upgrade()
    yield Stores.over(db)
    await db.close()


class ForgetfulStore:
    """The real store, but it never admits to having bars: backfill re-fetches and re-upserts."""

    def __init__(self, inner: BarStore) -> None:
        self.inner = inner

    async def load_bars(self, symbol: str, timeframe: Timeframe | str, end: datetime | None = None,
                        limit: int | None = None) -> pd.DataFrame:
        return (await self.inner.load_bars(symbol, timeframe, end=end, limit=limit)).iloc[0:0]

    async def upsert_bars(self, symbol: str, timeframe: Timeframe | str, df: pd.DataFrame) -> int:
        return await self.inner.upsert_bars(symbol, timeframe, df)


async def test_backfill_is_chunked_resumable_and_idempotent(binance_fake: FakeBinance, make_ccxt: Callable[..., CcxtMarketData],
                                                            store: Stores) -> None:
    ccxt = make_ccxt(retry=fast_retry(attempts=2))
    start = END - timedelta(hours=1500)
    events: list[BackfillProgress] = []

    def break_after_first_chunk(event: BackfillProgress) -> None:
        events.append(event)
        if event.chunk == 1 and not event.done:
            binance_fake.faults.add("status", status=500, path="/klines", times=-1)

    first = await backfill(ccxt, store.bars, ["BTC-USDT"], [Timeframe.H1], start, END, progress=break_after_first_chunk,
                           chunk_bars=500)
    assert first.bars_written == 500 and len(first.failed) == 1 and "ProviderUnavailableError" in (first.failed[0].error or "")
    assert events[-1].done and events[-1].error and events[0].chunks == 3
    stored = await store.bars.load_bars("BTC-USDT", Timeframe.H1)
    assert len(stored) == 500 and stored.index[0] == pd.Timestamp(start)

    binance_fake.faults.clear()
    before = len(binance_fake.requests)
    progress: list[float] = []
    second = await backfill(ccxt, store.bars, ["BTC-USDT"], [Timeframe.H1], start, END, chunk_bars=500,
                            progress=lambda e: progress.append(e.fraction))
    resumed_at = int(binance_fake.requests[before].query["startTime"])
    assert resumed_at == int((stored.index[-1] + pd.Timedelta(hours=1)).timestamp() * 1000)
    assert second.bars_written == 1000 and not second.failed and second.pairs[0].start == stored.index[-1] + timedelta(hours=1)
    assert progress == sorted(progress) and progress[-1] == 1.0
    full = await store.bars.load_bars("BTC-USDT", Timeframe.H1)
    assert len(full) == 1500 and full.index.is_unique and full.index[-1] == pd.Timestamp(END) - pd.Timedelta(hours=1)

    before = len(binance_fake.requests)
    third = await backfill(ccxt, store.bars, ["BTC-USDT"], [Timeframe.H1], start, END, chunk_bars=500)
    assert third.bars_written == 0 and len(binance_fake.requests) == before  # up to date: nothing fetched

    again = await backfill(ccxt, ForgetfulStore(store.bars), ["BTC-USDT"], [Timeframe.H1], start, END, chunk_bars=500)
    assert again.bars_written == 1500
    after = await store.bars.load_bars("BTC-USDT", Timeframe.H1)
    pd.testing.assert_frame_equal(after, full)  # the same rows, upserted again: idempotent


async def test_backfill_defaults_to_two_years_and_takes_async_progress(binance_fake: FakeBinance,
                                                                      make_ccxt: Callable[..., CcxtMarketData],
                                                                      store: Stores) -> None:
    seen: list[BackfillProgress] = []

    async def progress(event: BackfillProgress) -> None:
        seen.append(event)

    result = await backfill(make_ccxt(), store.bars, ["ETH-USDT", "SOL-USDT"], [Timeframe.D1], progress=progress,
                            clock=FixedClock(NOW))
    assert [p.start for p in result.pairs] == [NOW - timedelta(days=730)] * 2
    assert [p.bars_written for p in result.pairs] == [730, 730]
    assert seen[-1].done and seen[-1].pairs_done == 2 and seen[-1].fraction == 1.0


async def test_malformed_payload_stores_nothing(yahoo_fake: FakeYahoo, make_yahoo: Callable[..., YahooMarketData],
                                                store: Stores) -> None:
    router = MarketDataRouter({AssetClass.EQUITY: [make_yahoo()]}, registry=default_registry())
    yahoo_fake.faults.add("malformed", path="/v8/finance/chart/", times=-1)
    result = await backfill(router, store.bars, ["AAPL"], [Timeframe.D1], END - timedelta(days=30), END)
    assert result.bars_written == 0 and "DataValidationError" in (result.failed[0].error or "")
    assert "yahoo" in (result.failed[0].error or "")
    assert (await store.bars.load_bars("AAPL", Timeframe.D1)).empty
    yahoo_fake.faults.clear()
    yahoo_fake.unadjusted_splits["MSFT"] = (int(datetime(2024, 5, 20, tzinfo=UTC).timestamp()), 2.0)
    result = await backfill(router, store.bars, ["MSFT"], [Timeframe.D1], END - timedelta(days=30), END)
    assert "DataRejectedError" in (result.failed[0].error or "") and (await store.bars.load_bars("MSFT", Timeframe.D1)).empty
