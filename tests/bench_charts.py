"""Benchmark (not a test): how long the charts take to render.

    .venv/bin/python -m tests.bench_charts [-n 50] [--bars 120] [--signal] [--json OUT.json]

Renders `signal_chart` n times over `bars` candles (plus 50 bars of indicator warm-up) and `equity_chart` over
five years of daily equity with a benchmark, each call timed on its own (wall clock, PNG bytes in memory), and
prints p50/p95/max per chart. The first call of each (imports done, fonts and caches cold) is reported apart.
The design's budget: /signal answered, chart included, in under 300 ms at the 95th percentile, so the chart
must leave room for the analysis. With --signal it also times the whole /signal path as it would run with the
chart wired in (on the simulated market): the analysis and its Doc, then the bars re-read and the chart drawn
in a worker thread (render_signal_chart), each call timed end to end.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from bot.views.charts import clear_chart_cache, equity_chart, render_signal_chart, signal_chart

BUDGET_MS = 300.0


def sample_bars(n: int, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.012, n)))
    open_ = np.concatenate([[close[0]], close[:-1]]) * (1 + rng.normal(0, 0.002, n))
    spread = np.abs(rng.normal(0, 0.008, n))
    idx = pd.date_range("2024-01-01", periods=n, freq="1D", tz="UTC", name="time")
    return pd.DataFrame({"open": open_, "high": np.maximum(open_, close) * (1 + spread),
                         "low": np.minimum(open_, close) * (1 - spread), "close": close,
                         "volume": rng.uniform(2e5, 3e6, n)}, index=idx)


def sample_curve(days: int, drift: float, seed: int) -> pd.Series:
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2020-01-01", periods=days, freq="1D", tz="UTC")
    return pd.Series(np.exp(np.cumsum(rng.normal(drift, 0.01, days))), index=idx)


def timed(fn: Callable[[], bytes], n: int) -> tuple[float, list[float], list[float], int]:
    """(first call ms, wall ms per call, CPU ms per call, PNG size). CPU time is this thread's: on a shared
    machine the wall clock also counts the time other processes held the core."""
    start = time.perf_counter()
    size = len(fn())
    first = (time.perf_counter() - start) * 1000
    wall, cpu = [], []
    for _ in range(n):
        clear_chart_cache()  # each render draws
        start, start_cpu = time.perf_counter(), time.thread_time()
        fn()
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.thread_time() - start_cpu) * 1000)
    return first, wall, cpu, size


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(first: float, wall: list[float], cpu: list[float], size: int) -> dict[str, float]:
    return {"first_ms": round(first, 1), "p50_ms": round(statistics.median(wall), 1),
            "p95_ms": round(percentile(wall, 0.95), 1), "max_ms": round(max(wall), 1),
            "cpu_p50_ms": round(statistics.median(cpu), 1), "cpu_p95_ms": round(percentile(cpu, 0.95), 1),
            "png_bytes": size, "renders": len(wall)}


async def signal_path(n: int, shown: int) -> dict[str, float]:
    """/signal AAPL with its chart: analysis + Doc, then bars + chart off the loop (the wiring proposed for
    bot.commands.handlers.show_signal), on the simulated market of the tests."""
    from bot.app import build_services
    from bot.settings import Settings
    from bot.views.signals import analysis_doc
    from core.clock import FixedClock
    from core.market_data import SimulatedMarket
    from tests.conftest import utc

    start = utc(2025, 6, 2, 12)
    clock = FixedClock(start)
    market = SimulatedMarket(seed=7, start=start, history_days=400, clock=clock)
    services = await build_services(Settings(database_url="sqlite+aiosqlite:///:memory:", _env_file=None),
                                    market, clock)
    svc = services.signal_service

    async def one() -> tuple[float, float]:
        clear_chart_cache()  # each run draws its chart (a repeat within the same bar would be a cache hit)
        begin = time.perf_counter()
        analysis = await svc.analyse("AAPL")
        active = [s for s in await services.store.signals.open_signals() if s.symbol == "AAPL"]
        analysis_doc(analysis, active[0] if active else None)
        analysed = time.perf_counter()
        bars = await svc.on_demand.get_bars("AAPL", analysis.timeframe, end=clock.now(), limit=shown + 50)
        levels = analysis.levels
        await render_signal_chart(bars, "AAPL", str(analysis.timeframe), levels.entry if levels else None,
                                  levels.target if levels else None, levels.stop if levels else None)
        done = time.perf_counter()
        return (analysed - begin) * 1000, (done - begin) * 1000

    try:
        await one()  # warm-up: numba kernels, caches
        runs = [await one() for _ in range(n)]
    finally:
        await services.store.close()
    analysis_ms = [a for a, _ in runs]
    total_ms = [t for _, t in runs]
    return {"analysis_p50_ms": round(statistics.median(analysis_ms), 1),
            "analysis_p95_ms": round(percentile(analysis_ms, 0.95), 1),
            "total_p50_ms": round(statistics.median(total_ms), 1), "total_p95_ms": round(percentile(total_ms, 0.95), 1),
            "runs": len(runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=50, help="timed renders per chart (default 50)")
    parser.add_argument("--bars", type=int, default=120, help="candles shown (default 120)")
    parser.add_argument("--signal", action="store_true", help="also time /signal with its chart end to end")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    bars = sample_bars(args.bars + 50)
    last = float(bars["close"].iloc[-1])
    results = {
        "signal_chart": summary(*timed(lambda: signal_chart(bars, "AAPL", "1d", entry=last, target=last * 1.04,
                                                            stop=last * 0.975, shown=args.bars), args.n)),
        "equity_chart": summary(*timed(lambda: equity_chart(sample_curve(1260, 0.0004, 1),
                                                            sample_curve(1260, 0.0003, 2)), args.n)),
    }
    clear_chart_cache()
    last_args = (bars, "AAPL", "1d", last, last * 1.04, last * 0.975)
    signal_chart(*last_args, shown=args.bars)
    hit = time.perf_counter()
    signal_chart(*last_args, shown=args.bars)
    results["signal_chart"]["cached_ms"] = round((time.perf_counter() - hit) * 1000, 2)
    for name, r in results.items():
        print(f"{name:13s} {r['renders']} renders: p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms, "
              f"max {r['max_ms']:.0f} ms (first {r['first_ms']:.0f} ms); CPU p50 {r['cpu_p50_ms']:.0f} ms, "
              f"p95 {r['cpu_p95_ms']:.0f} ms; {r['png_bytes'] / 1024:.0f} KiB PNG")
    print(f"signal_chart again with the same inputs (cache hit): {results['signal_chart']['cached_ms']:.1f} ms")
    p95 = results["signal_chart"]["p95_ms"]
    print(f"/signal budget {BUDGET_MS:.0f} ms at p95: the chart alone takes {p95:.0f} ms "
          f"({'within' if p95 < BUDGET_MS else 'OVER'} budget, {BUDGET_MS - p95:.0f} ms left for the analysis)")
    if args.signal:
        path = asyncio.run(signal_path(args.n, args.bars))
        results["signal_path"] = path
        print(f"/signal AAPL with chart, {path['runs']} runs: analysis p50 {path['analysis_p50_ms']:.0f} ms, "
              f"p95 {path['analysis_p95_ms']:.0f} ms; with the chart p50 {path['total_p50_ms']:.0f} ms, "
              f"p95 {path['total_p95_ms']:.0f} ms ({'within' if path['total_p95_ms'] < BUDGET_MS else 'OVER'} "
              f"the {BUDGET_MS:.0f} ms budget)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
