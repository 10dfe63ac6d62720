"""Live mode's composition against local vendor fakes: /signal reads the right provider, the update job
stores bars, and scans read them from the store."""
from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timezone

import pytest
from yfinance.data import YfData

from bot.commands.registry import Caller, dispatch
from bot.markets import live_market
from bot.services import Services
from bot.settings import Settings
from bot.views.text import render_text
from core.clock import FixedClock
from core.domain import AssetClass, Timeframe
from core.instruments import default_registry
from tests.conftest import MECHANICS_FAMILIES
from tests.fakes.binance_rest import FakeBinance
from tests.fakes.yahoo_chart import FakeYahoo

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:yfinance.*")
NOW = datetime(2024, 6, 10, tzinfo=timezone.utc)
USER = Caller("console", "u", "c", "U")


@pytest.fixture
async def live(tmp_path) -> AsyncIterator[tuple[Services, object, FakeYahoo, FakeBinance]]:  # noqa: ANN001
    from bot.app import build_services
    from storage import open_stores

    YfData.cache_get.cache_clear()
    async with FakeYahoo() as yahoo, FakeBinance() as binance:
        settings = Settings(_env_file=None, database_url=f"sqlite+aiosqlite:///{tmp_path / 'live.db'}",
                            market="live", yahoo_base_url=yahoo.base_url, crypto_base_url=binance.base_url,
                            families=MECHANICS_FAMILIES)
        registry = default_registry()
        clock = FixedClock(NOW)
        store = await open_stores(settings.database_url, clock)
        setup = live_market(settings, registry, store, clock)
        services = await build_services(settings, setup.scan, clock, store=store, on_demand=setup.on_demand)
        yield services, setup, yahoo, binance
        await setup.close()
        await store.close()


async def test_signal_answers_from_the_right_provider(live) -> None:  # noqa: ANN001
    services, _, yahoo, binance = live
    out = render_text(await dispatch(services.registry, services, USER, "/signal AAPL 1d"))
    assert out.startswith("AAPL 1d:"), out
    assert any(r.path.startswith("/v8/finance/chart/AAPL") for r in yahoo.requests)
    assert not any("AAPL" in r.path for r in binance.requests)
    out = render_text(await dispatch(services.registry, services, USER, "/signal BTC-USDT 4h"))
    assert out.startswith("BTC-USDT 4h:"), out
    assert any(r.path.startswith("/api/v3/klines") for r in binance.requests)
    assert not any("BTC" in r.path for r in yahoo.requests)


async def test_update_job_stores_bars_that_scans_then_read(live) -> None:  # noqa: ANN001
    services, setup, _, _ = live
    setup.scan._instruments = {s: i for s, i in setup.scan._instruments.items() if s in ("AAPL", "BTC-USDT")}  # a small universe
    assert len(await services.store.bars.load_bars("AAPL", Timeframe.D1)) == 0
    await setup.update()
    daily = await services.store.bars.load_bars("AAPL", Timeframe.D1)
    assert len(daily) > 400  # two years of sessions
    assert len(await services.store.bars.load_bars("BTC-USDT", Timeframe.H4)) > 1000
    bars = await setup.scan.get_bars("AAPL", Timeframe.D1, end=NOW, limit=300)
    assert len(bars) == 300 and bars.index[-1] < NOW
    report = await services.signal_service.scan()
    setups = sum(len(s) for s in (("1d", "1h"), ("1h", "4h", "1d")))  # the setups' AAPL + BTC-USDT targets
    books = 3  # the books' targets decided on at their newest close: trend BTC-USDT 4h and 1d, ranking AAPL 1d
    assert report.evaluated == setups + books
    assert {i.asset_class for i in setup.scan.instruments()} == {AssetClass.EQUITY, AssetClass.CRYPTO}


async def test_backfill_command_is_resumable_and_idempotent(tmp_path, capsys) -> None:  # noqa: ANN001
    from bot.markets import run_backfill
    from storage import Database, Stores

    YfData.cache_get.cache_clear()
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'fill.db'}"
    async with FakeYahoo() as yahoo, FakeBinance() as binance:
        settings = Settings(_env_file=None, database_url=db_url, yahoo_base_url=yahoo.base_url,
                            crypto_base_url=binance.base_url)
        first = await run_backfill(settings, ["MSFT", "ETH-USDT"], ["1d"], days=60)
        again = await run_backfill(settings, ["MSFT", "ETH-USDT"], ["1d"], days=60)
    assert "0 pairs failed" in first and "0 pairs failed" in again
    written_first = int(first.split()[1].replace(",", ""))
    assert written_first > 60  # ~41 sessions + 60 crypto days
    assert int(again.split()[1].replace(",", "")) <= 2  # only what closed since
    store = Stores.over(Database(db_url))
    eth = await store.bars.load_bars("ETH-USDT", Timeframe.D1)
    assert eth.index.is_unique and 58 <= len(eth) <= 61
    await store.close()


def test_a_default_backfill_holds_what_the_books_read():
    from bot.markets import history_days
    from core.books.ranking import RankingBook, RankingConfig
    from core.books.trend import TrendBook, TrendConfig
    from core.domain import AssetClass, Timeframe

    trading_days = history_days(AssetClass.EQUITY, Timeframe.D1) * 252 / 365
    assert trading_days >= RankingBook(RankingConfig()).lookback
    trend = TrendBook(TrendConfig())  # its lookback is in bars of its shortest timeframe (4h)
    assert history_days(AssetClass.CRYPTO, Timeframe.H4) * 6 >= trend.lookback
    assert history_days(AssetClass.CRYPTO, Timeframe.D1) >= trend.lookback / 6
    assert history_days(AssetClass.EQUITY, Timeframe.H1) <= 730  # Yahoo's intraday limit


async def test_a_streamed_bar_is_stored_and_scanned_at_once(tmp_path) -> None:  # noqa: ANN001
    """Live crypto bars from the exchange's WebSocket (ccxt.pro against the local Binance): the closed bar is
    stored and the leader scans at once, without waiting for the update job."""
    import asyncio

    from bot.app import bar_reactor, build_services
    from storage import open_stores
    from tests.fakes.binance_ws import FakeBinanceStreams

    async with FakeYahoo() as yahoo, FakeBinanceStreams() as binance:
        settings = Settings(_env_file=None, database_url=f"sqlite+aiosqlite:///{tmp_path / 'stream.db'}",
                            market="live", yahoo_base_url=yahoo.base_url, crypto_base_url=binance.base_url,
                            crypto_ws_url=binance.ws_url, families=MECHANICS_FAMILIES)
        clock = FixedClock(NOW)
        store = await open_stores(settings.database_url, clock)
        setup = live_market(settings, default_registry(), store, clock)
        services = await build_services(settings, setup.scan, clock, store=store, on_demand=setup.on_demand)
        assert setup.stream is not None
        tell, react = bar_reactor(services, lambda: True)
        setup.bar_closed.append(tell)
        tasks = [asyncio.create_task(setup.stream()), asyncio.create_task(react())]
        try:
            await binance.wait_subscribed(3 * len(binance.markets))  # 1h, 4h and 1d of every listed pair
            opened = int(NOW.timestamp() * 1000) - 3_600_000
            assert services.signal_service.last_scan_at is None
            await binance.kline("BTCUSDT", "1h", opened, closed=True)
            async with asyncio.timeout(10):
                while services.signal_service.last_scan_at is None:
                    await asyncio.sleep(0.02)
            stored = await store.bars.load_bars("BTC-USDT", Timeframe.H1)
            assert [int(t.timestamp() * 1000) for t in stored.index] == [opened]
            assert services.signal_service.last_scan_at == NOW
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await setup.close()
            await store.close()
