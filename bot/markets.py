"""Which market the service reads: offline (simulated or replayed CSV) or live (providers -> store)."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from bot.settings import Settings
from core.clock import AcceleratedClock, Clock, SystemClock
from core.domain import AssetClass, Timeframe
from core.instruments import InstrumentRegistry
from core.market_data import CsvMarketData, SimulatedMarket
from core.market_data.backfill import backfill
from core.market_data.router import MarketDataRouter
from core.ports import MarketData
from core.signals.service import DEFAULT_TIMEFRAMES
from storage import Stores, open_stores
from storage.market import StoredMarketData

log = logging.getLogger(__name__)


@dataclass
class MarketSetup:
    scan: MarketData  # what scans and the tracker read
    on_demand: MarketData  # what /signal reads
    clock: Clock
    update: Callable[[], Awaitable[object]] | None = None  # periodic refresh of stored bars (live)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    stream: Callable[[], Coroutine[Any, Any, None]] | None = None  # live crypto bars as they close: run it as a task
    bar_closed: list[Callable[[str, Timeframe], None]] = field(default_factory=list)  # told of each streamed bar

    async def close(self) -> None:
        for close in self.closers:
            await close()


def offline_market(settings: Settings, replay: Path | None, speed: float | None, start: datetime | None) -> MarketSetup:
    """A replay of CSV files, or the built-in simulation (the default), on an accelerated clock."""
    if replay is not None:
        csv = CsvMarketData(replay)
        first, last = csv.data_range(tradable_only=True)
        clock = AcceleratedClock(start or min(first + timedelta(days=400), last), speed or settings.speed or 86_400.0)
        return MarketSetup(csv, csv, clock)
    now = start or datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    clock = AcceleratedClock(now, speed or settings.speed or 3_600.0)
    sim = SimulatedMarket(seed=settings.sim_seed, start=now, history_days=settings.sim_history_days, clock=clock)
    return MarketSetup(sim, sim, clock)


def live_router(settings: Settings, registry: InstrumentRegistry, clock: Clock) -> MarketDataRouter:
    """Yahoo for equities, FX and indices; the exchange (ccxt) for crypto, Yahoo as its fallback.
    The vendor adapters are imported here, not at start-up: they cost ~1.8 s the offline service never pays."""
    from core.market_data.crypto_exchange import CcxtMarketData
    from core.market_data.yahoo import YahooMarketData

    yahoo = YahooMarketData(registry, base_url=settings.yahoo_base_url, clock=clock)
    yahoo_crypto = YahooMarketData(registry, asset_classes=(AssetClass.CRYPTO,), base_url=settings.yahoo_base_url,
                                   clock=clock)
    exchange = CcxtMarketData(registry, exchange_id=settings.crypto_exchange, base_url=settings.crypto_base_url)
    return MarketDataRouter({
        AssetClass.EQUITY: [yahoo], AssetClass.FX: [yahoo], AssetClass.INDEX: [yahoo],
        AssetClass.CRYPTO: [exchange, yahoo_crypto],
    }, registry=registry)


def live_market(settings: Settings, registry: InstrumentRegistry, store: Stores,
                clock: Clock | None = None) -> MarketSetup:
    """Scans read stored bars; an update job fetches what closed since (the first run backfills two years)."""
    clock = clock or SystemClock()
    router = live_router(settings, registry, clock)
    tradable = [i for i in registry.instruments() if DEFAULT_TIMEFRAMES.get(i.asset_class)]
    scan = StoredMarketData(store.bars, tradable, DEFAULT_TIMEFRAMES)

    async def update() -> None:
        for cls, tfs in DEFAULT_TIMEFRAMES.items():
            symbols = [i.symbol for i in scan.instruments() if i.asset_class is cls]
            if symbols and tfs:
                result = await backfill(router, store.bars, symbols, tfs, clock=clock, concurrency=4)
                if result.failed:
                    log.warning("bar update: %d of %d %s pairs failed", len(result.failed), len(result.pairs), cls)
    setup = MarketSetup(scan, router, clock, update, [router.close])
    if settings.crypto_stream and (settings.crypto_ws_url is not None or settings.crypto_base_url is None):
        crypto_stream(settings, registry, store, scan, setup)  # an overridden REST host needs its stream URL too
    return setup


def crypto_stream(settings: Settings, registry: InstrumentRegistry, store: Stores, scan: StoredMarketData,
                  setup: MarketSetup) -> None:
    """The exchange's WebSocket for the scanned crypto pairs (core.market_data.stream): each closed bar is stored,
    then `setup.bar_closed` is told (the service scans at once); the stream starts from the newest stored bar of
    each pair, so what closed before it is back-filled from REST."""
    from core.market_data.crypto_exchange import CcxtMarketData
    from core.market_data.stream import BarStream

    keys = [(i.symbol, tf) for i in scan.instruments() if i.asset_class is AssetClass.CRYPTO
            for tf in DEFAULT_TIMEFRAMES.get(AssetClass.CRYPTO, ())]
    if not keys:
        return
    rest = CcxtMarketData(registry, exchange_id=settings.crypto_exchange, base_url=settings.crypto_base_url)

    async def on_closed(symbol: str, tf: Timeframe, bars: pd.DataFrame) -> None:
        await store.bars.upsert_bars(symbol, tf, bars)
        for tell in setup.bar_closed:
            tell(symbol, tf)

    stream = BarStream(rest, keys, on_closed, ws_url=settings.crypto_ws_url)

    async def run() -> None:
        newest = {}
        for symbol, tf in keys:
            last = await store.bars.load_bars(symbol, tf, limit=1)
            if len(last):
                newest[(symbol, tf)] = last.index[-1].to_pydatetime()
        stream.resume_after(newest)
        await stream.run()

    setup.stream = run
    setup.closers += [stream.close, rest.close]


def history_days(asset_class: AssetClass, timeframe: Timeframe) -> int:
    """How many days of bars a backfill fetches by default: what the books read (the ranking book's training
    window, features and horizon: about 1,100 trading days; the trend book's year of record, 200-day switch and
    longest trade), within what the vendors serve (Yahoo keeps about 730 days of intraday bars)."""
    if timeframe is Timeframe.D1:
        return 1_600
    return 900 if asset_class is AssetClass.CRYPTO else 720


async def run_backfill(settings: Settings, symbols: list[str] | None, timeframes: list[str] | None,
                       days: int | None) -> str:
    """`signalbot backfill`: fetch `days` of bars (default: `history_days` of each timeframe) into the store
    (resumable, idempotent), with a progress bar."""
    from tqdm import tqdm

    from core.instruments import default_registry

    registry = default_registry()
    clock = SystemClock()
    store = await open_stores(settings.database_url, clock)
    router = live_router(settings, registry, clock)
    wanted = [registry.get(s).instrument for s in symbols] if symbols else \
        [i for i in registry.instruments() if DEFAULT_TIMEFRAMES.get(i.asset_class)]
    await store.bars.upsert_instruments(wanted)
    bar = tqdm(total=1.0, unit="", bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")
    written = failed = 0
    try:
        for cls, default_tfs in DEFAULT_TIMEFRAMES.items():
            syms = [i.symbol for i in wanted if i.asset_class is cls]
            tfs = [Timeframe.parse(t) for t in timeframes] if timeframes else list(default_tfs)
            if not syms or not tfs:
                continue

            def show(p: object, cls: AssetClass = cls) -> None:
                frac = getattr(p, "fraction", 0.0)
                bar.n = round(frac, 4)
                bar.set_postfix_str(f"{cls.value} {getattr(p, 'symbol', '')} {getattr(p, 'timeframe', '')}")
                bar.refresh()

            spans: dict[int, list[Timeframe]] = {}
            for tf in tfs:
                spans.setdefault(days if days is not None else history_days(cls, tf), []).append(tf)
            for span, group in sorted(spans.items()):
                result = await backfill(router, store.bars, syms, group, start=clock.now() - timedelta(days=span),
                                        clock=clock, progress=show, concurrency=4)
                written += result.bars_written
                failed += len(result.failed)
    finally:
        bar.close()
        await router.close()
        await store.close()
    return f"backfill: {written:,} bars written, {failed} pairs failed (see the log)"
