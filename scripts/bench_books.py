"""How much a scan costs the books when no bar has closed since their last decision, against the decision itself.

    .venv/bin/python -m scripts.bench_books --data ../shared/data/crypto --as-of 2021-06-01 [--repeat 5]

Prints the first scan (the books read their windows and decide), the median of `--repeat` later scans at the
same clock (each book only looks at the last bar of its targets) and their ratio, measured in the same run.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from core.books import DEFAULT_FAMILIES, make_books
from core.clock import FixedClock
from core.dates import parse_when
from core.events import EventBus
from core.indicators import default_engine
from core.market_data import CsvMarketData
from core.risk import SERVICE_COSTS_BPS, RiskConfig, RiskManager
from core.signals.engine import SignalEngine
from core.signals.service import SignalService
from storage import Database, Stores


async def median_scan(service: SignalService, repeat: int) -> float:
    """The median wall time of `repeat` scans, in seconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await service.scan()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


async def main(data: Path, as_of: str, repeat: int) -> None:
    db = Database("sqlite+aiosqlite:///:memory:")
    await db.upgrade()
    store = Stores.over(db)
    try:
        service = SignalService(CsvMarketData(data), SignalEngine(default_engine()), store.signals, EventBus(),
                                RiskManager(RiskConfig(costs_bps=SERVICE_COSTS_BPS)), FixedClock(parse_when(as_of)),
                                books=make_books(DEFAULT_FAMILIES, SERVICE_COSTS_BPS, None), setups=False)
        t0 = time.perf_counter()
        first = await service.scan()
        decide = time.perf_counter() - t0
        idle = await median_scan(service, repeat)

        async def always_new(book: object, now: object) -> int:  # the reference: re-read every window, as before
            return 1 << 62

        service._newest_close = always_new  # type: ignore[method-assign]
        ref = await median_scan(service, repeat)
        print(f"targets {sum(len(service.book_targets(b)) for b in service.books)}  issued {len(first.issued)}")
        print(f"first scan (read and decide) {decide * 1000:.0f} ms")
        print(f"later scans, nothing closed: {idle * 1000:.1f} ms median; re-reading the windows (the reference) "
              f"{ref * 1000:.1f} ms; ratio {idle / ref:.3f}")
    finally:
        await store.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--as-of", required=True)
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()
    asyncio.run(main(a.data, a.as_of, a.repeat))
