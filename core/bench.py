"""The design's performance figures (section 7) that concern market data and indicators (`signalbot bench`,
which opens the in-memory stores, writes the JSON and prints the table: bot/cli/bench.py).

Universe: every instrument and timeframe the signal service scans in the data directory (505 S&P 500
equities on 1d, 32 crypto pairs on 1h/4h/1d, EURUSD on 1h/4h/1d), loaded into memory first.
Figures, each the median of `repeats` runs:

a. reference: the bare indicator computation the scan needs, with TA-Lib: per instrument-timeframe, the
   same bars the scan reads (its last `lookback` bars) as numpy arrays in, the CORE_COLUMNS values of the
   last bar out (TA-Lib over the window, the numpy columns for that bar), no pandas. Beside it, the
   TA-Lib calls alone (the floor) and, for scale, the whole catalogue over every instrument's full history.
b. full scan through the real signal path: bars in memory -> SignalEngine(TalibEngine) on the last bar
   of every instrument-timeframe -> ensemble -> risk -> signals persisted (in-memory SQLite), through
   SignalService.scan with a fixed clock after the last bar; a fresh store per run. Reported as seconds
   and as the ratio b / a; and b2, the same scan with the LightGBM champions the service ships in
   models_store voting (their context refreshed once, before the runs, as the service does daily).
c. one new bar for one instrument: TalibEngine.update_last (indicators) and, for "bar -> decision",
   SignalEngine.analyse of the instrument's window with the new bar; median and p95 over a few hundred
   instruments.
d. resampling throughput: resample_bars 1h -> 4h and 1h -> 1d over the crypto pairs' hourly bars.
e. resident memory of the process (VmRSS and its peak VmHWM from /proc/self/status).

Budgets (design section 7): full scan under 1 s on two cores and within 2x of the TA-Lib reference;
one-bar update under 20 ms. Timings depend on what else runs on the machine: the report records the
load average at the start.
"""
from __future__ import annotations

import asyncio
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from core.clock import FixedClock
from core.domain import AssetClass, Instrument, Timeframe
from core.events import EventBus
from core.indicators.talib_engine import TalibEngine, bar_block
from core.market_data import CsvMarketData, resample_bars
from core.models.live import champion_voter, refresh_context
from core.ports import SignalRepository
from core.risk import SERVICE_COSTS_BPS, RiskConfig, RiskManager
from core.signals.engine import SignalEngine
from core.signals.service import ScanReport, SignalService

MODELS_DIR = Path(__file__).resolve().parents[1] / "models_store"  # the repository's
SCAN_BUDGET_S = 1.0
RATIO_BUDGET = 2.0
UPDATE_BUDGET_MS = 20.0
MEMORY_BUDGET_MB = 1024.0

T = TypeVar("T")
# a fresh, empty signal store for one scan (with its tables), closed on leaving
SignalStoreFactory = Callable[[], AbstractAsyncContextManager[SignalRepository]]


@dataclass(frozen=True, slots=True)
class Target:
    instrument: Instrument
    timeframe: Timeframe
    window: pd.DataFrame  # the bars the scan reads for it (its last `lookback` closed bars)
    history: pd.DataFrame  # all its closed bars


async def run_bench(data: Path, signal_store: SignalStoreFactory, *, repeats: int = 5,
                    update_instruments: int = 300, updates_each: int = 3,
                    models_dir: Path | None = MODELS_DIR) -> dict[str, Any]:
    """Run the benchmarks on the data directory `data` and return the report; every scan persists its signals in
    a fresh store from `signal_store`. `models_dir`: the champions of b2 (None or none there: b2 is skipped)."""
    load_at_start = os.getloadavg()
    started = time.perf_counter()
    engine = TalibEngine()
    signal_engine = SignalEngine(engine)
    lookback = signal_engine.config.lookback

    t0 = time.perf_counter()
    market = CsvMarketData(data)
    await asyncio.to_thread(market.load_all)
    as_of = market.data_range()[1]
    targets = await _targets(market, signal_engine, as_of, signal_store)
    load_s = time.perf_counter() - t0
    memory_loaded = _memory()

    model_engine, models = await _model_engine(market, engine, as_of, models_dir)
    reference, scan, model_scan = await _reference_and_scan(market, engine, signal_engine, targets, as_of, repeats,
                                                            signal_store, model_engine)
    update = _updates(engine, signal_engine, targets, update_instruments, updates_each, lookback)
    resampling = _resampling(targets, repeats)
    memory_service = _memory()
    universe_full = _universe_catalogue(engine, targets, max(1, min(repeats, 3)))
    memory_end = _memory()

    ratio = scan["median_s"] / reference["median_s"]
    ratios = [b / a for a, b in zip(reference["runs_s"], scan["runs_s"], strict=True)]
    cpu_ratio = scan["cpu_median_s"] / reference["cpu_median_s"]
    report: dict[str, Any] = {
        "generated_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "data": str(data),
        "as_of": as_of.isoformat(),
        "machine": _machine(load_at_start),
        "repeats": repeats,
        "universe": _universe(targets, load_s, lookback),
        "reference_talib": reference,
        "full_scan": scan,
        "full_scan_with_models": {**models, **model_scan},
        "scan_vs_reference": round(ratio, 3),
        "model_scan_vs_reference": (round(model_scan["median_s"] / reference["median_s"], 3)
                                    if model_scan else None),
        "scan_vs_reference_per_run": [round(r, 2) for r in ratios],
        "scan_vs_reference_cpu": round(cpu_ratio, 3),
        "scan_vs_talib_calls_only": round(scan["median_s"] / reference["talib_calls_only_median_s"], 3),
        "one_bar_update": update,
        "resampling": resampling,
        "universe_catalogue": universe_full,
        "memory_mb": {"after_load_rss": memory_loaded["rss_mb"], "after_scans_rss": memory_service["rss_mb"],
                      "peak_rss_before_catalogue": memory_service["hwm_mb"], "end_rss": memory_end["rss_mb"],
                      "peak_rss": memory_end["hwm_mb"]},
        "budgets": {
            "full_scan_under_1s": scan["median_s"] < SCAN_BUDGET_S,
            "scan_within_2x_of_talib": ratio <= RATIO_BUDGET,
            "model_scan_under_1s": _under(model_scan.get("median_s"), SCAN_BUDGET_S),
            "model_scan_within_2x_of_talib": _under(model_scan["median_s"] / reference["median_s"] if model_scan
                                                    else None, RATIO_BUDGET),
            "one_bar_update_under_20ms": _under(update["indicators_p95_ms"], UPDATE_BUDGET_MS),
            "bar_to_decision_under_20ms": _under(update["decision_p95_ms"], UPDATE_BUDGET_MS),
            "memory_under_1gb": memory_service["hwm_mb"] < MEMORY_BUDGET_MB,
        },
        "total_bench_s": round(time.perf_counter() - started, 1),
    }
    return report


# -- the universe -----------------------------------------------------------------------------------


async def _targets(market: CsvMarketData, engine: SignalEngine, as_of: datetime,
                   signal_store: SignalStoreFactory) -> list[Target]:
    """What the service scans, with its bars (this also fills the provider's in-memory cache)."""
    async with signal_store() as signals:
        risk = RiskManager(RiskConfig(costs_bps=SERVICE_COSTS_BPS))
        probe = SignalService(market, engine, signals, EventBus(), risk, FixedClock(as_of))
        out = []
        for inst, tf in probe.scan_targets():
            history = await market.get_bars(inst.symbol, tf, end=as_of)
            out.append(Target(inst, tf, history.iloc[-engine.config.lookback:], history))
        return out


def _universe(targets: Sequence[Target], load_s: float, lookback: int) -> dict[str, Any]:
    per: dict[str, int] = {}
    for t in targets:
        key = f"{t.instrument.asset_class.value} {t.timeframe.value}"
        per[key] = per.get(key, 0) + 1
    return {
        "instruments": len({t.instrument.symbol for t in targets}),
        "instrument_timeframes": len(targets),
        "by_class_and_timeframe": dict(sorted(per.items())),
        "bars_in_memory": int(sum(len(t.history) for t in targets)),
        "bars_read_per_scan": int(sum(len(t.window) for t in targets)),
        "lookback": lookback,
        "load_s": round(load_s, 2),
    }


def _under(value: float | None, budget: float) -> bool | None:
    return None if value is None else value < budget


# -- a. the TA-Lib reference -------------------------------------------------------------------------


async def _model_engine(market: CsvMarketData, indicators: TalibEngine, as_of: datetime,
                        models_dir: Path | None) -> tuple[SignalEngine | None, dict[str, Any]]:
    """The engine of b2: the shipped champions voting, their context refreshed as of the scan."""
    voter = champion_voter(models_dir) if models_dir is not None and models_dir.is_dir() else None
    if voter is None:
        return None, {"models": 0}
    began = time.perf_counter()
    await refresh_context(voter, market, as_of, indicators)
    return SignalEngine(indicators, model=voter), {
        "models": len(voter.models), "scopes": sorted(voter.models),
        "context_refresh_s": round(time.perf_counter() - began, 3)}


async def _reference_and_scan(market: CsvMarketData, indicators: TalibEngine, engine: SignalEngine,
                              targets: Sequence[Target], as_of: datetime, repeats: int,
                              signal_store: SignalStoreFactory, model_engine: SignalEngine | None = None,
                              ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(a), (b) and (b2), one run of each in turn, so that all see the same machine."""
    blocks = [bar_block(t.window) for t in targets]

    def bare() -> None:
        for block in blocks:
            indicators.compute_block(block, rows=1)

    def calls_only() -> None:
        for block in blocks:
            indicators.run_talib(block)

    async def scan_once(with_engine: SignalEngine = engine) -> tuple[tuple[float, float], ScanReport]:
        async with signal_store() as signals:
            risk = RiskManager(RiskConfig(costs_bps=SERVICE_COSTS_BPS))
            service = SignalService(market, with_engine, signals, EventBus(), risk, FixedClock(as_of))
            return await _timed_async(service.scan)

    bare()  # warm-up
    calls_only()
    await scan_once()  # warm-up: statement caches, first-use imports
    if model_engine is not None:
        await scan_once(model_engine)
    bare_runs, calls_runs, scan_runs, model_runs, report = [], [], [], [], ScanReport()
    model_report = ScanReport()
    for _ in range(repeats):
        bare_runs.append(_once_cpu(bare))
        calls_runs.append(_once_cpu(calls_only))
        seconds, report = await scan_once()
        scan_runs.append(seconds)
        if model_engine is not None:
            seconds, model_report = await scan_once(model_engine)
            model_runs.append(seconds)
    bare_wall, bare_cpu = zip(*bare_runs, strict=True)
    calls_wall, calls_cpu = zip(*calls_runs, strict=True)
    scan_wall, scan_cpu = zip(*scan_runs, strict=True)
    reference = {
        "what": "CORE_COLUMNS of the last bar, per instrument-timeframe, from numpy arrays of the bars the scan "
                "reads: TA-Lib over each window plus the numpy columns (z-score, volume percentile, gap, returns, "
                "distance, %B) for that bar",
        "median_s": _median(bare_wall),
        "runs_s": _rounded(bare_wall),
        "cpu_median_s": _median(bare_cpu),
        "per_instrument_us": round(_median(bare_wall) / len(blocks) * 1e6, 1),
        "talib_calls_only_median_s": _median(calls_wall),
        "talib_calls_only_cpu_median_s": _median(calls_cpu),
        "talib_calls": indicators.talib_calls(),
    }
    scan = {
        "median_s": _median(scan_wall),
        "runs_s": _rounded(scan_wall),
        "cpu_median_s": _median(scan_cpu),
        "cpu_runs_s": _rounded(scan_cpu),
        "evaluated": report.evaluated,
        "candidates": len(report.issued) + len(report.rejected),
        "issued": len(report.issued),
        "rejected_by_risk": len(report.rejected),
        "errors": len(report.errors),
    }
    return reference, scan, _scan_figures(model_runs, model_report) if model_runs else {}


def _scan_figures(runs: Sequence[tuple[float, float]], report: ScanReport) -> dict[str, Any]:
    wall, cpu = zip(*runs, strict=True)
    return {"median_s": _median(wall), "runs_s": _rounded(wall), "cpu_median_s": _median(cpu),
            "evaluated": report.evaluated, "issued": len(report.issued), "rejected_by_risk": len(report.rejected),
            "errors": len(report.errors)}


def _universe_catalogue(engine: TalibEngine, targets: Sequence[Target], repeats: int) -> dict[str, Any]:
    """For scale: the whole catalogue over every instrument's full history (what compute_universe computes;
    each result dropped at once, so that the figure is compute time and the memory figure stays the service's)."""
    histories = [t.history for t in targets]

    def catalogue(full: bool) -> None:
        for bars in histories:
            engine.compute(bars, full)

    runs = _timed(lambda: catalogue(True), repeats)
    core_runs = _timed(lambda: catalogue(False), repeats)
    return {
        "indicators": len(engine.columns(full=True)),
        "bars": int(sum(len(f) for f in histories)),
        "catalogue_median_s": _median(runs),
        "core_median_s": _median(core_runs),
        "runs": repeats,
    }


# -- c. one new bar ------------------------------------------------------------------------------------


def _updates(engine: TalibEngine, signal_engine: SignalEngine, targets: Sequence[Target], instruments: int,
             each: int, lookback: int) -> dict[str, Any]:
    """Per instrument: state from all but its last `each` bars, then those bars one at a time."""
    chosen = _spread([t for t in targets if len(t.history) > lookback + each], instruments)
    indicator_ns, decision_ns = [], []
    equal = True
    for t in chosen:
        history = t.history
        state = engine.start(history.iloc[: len(history) - each], window=lookback)
        for k in range(len(history) - each, len(history)):
            bar = history.iloc[k]
            window = history.iloc[k + 1 - lookback: k + 1]
            t0 = time.perf_counter_ns()
            row = engine.update_last(state, bar)
            t1 = time.perf_counter_ns()
            signal_engine.analyse(t.instrument, t.timeframe, window)
            t2 = time.perf_counter_ns()
            indicator_ns.append(t1 - t0)
            decision_ns.append(t2 - t1)
            if k == len(history) - 1:
                expected = engine.compute(window).iloc[-1].to_numpy()
                equal &= bool(np.array_equal(row.to_numpy(), expected, equal_nan=True))
    if not indicator_ns:
        return {"instruments": 0, "updates": 0, "window_bars": lookback, "indicators_median_ms": None,
                "indicators_p95_ms": None, "decision_median_ms": None, "decision_p95_ms": None,
                "last_row_equals_full_recompute": None}
    ind_ms, dec_ms = np.array(indicator_ns) / 1e6, np.array(decision_ns) / 1e6
    return {
        "instruments": len(chosen),
        "updates": len(ind_ms),
        "window_bars": lookback,
        "indicators_median_ms": round(float(np.median(ind_ms)), 3),
        "indicators_p95_ms": round(float(np.percentile(ind_ms, 95)), 3),
        "decision_median_ms": round(float(np.median(dec_ms)), 3),
        "decision_p95_ms": round(float(np.percentile(dec_ms, 95)), 3),
        "last_row_equals_full_recompute": equal,
    }


def _spread(items: Sequence[T], n: int) -> list[T]:
    """Up to n items evenly spread over the sequence (equities and crypto alike)."""
    if len(items) <= n:
        return list(items)
    picks = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in picks]


# -- d. resampling ---------------------------------------------------------------------------------------


def _resampling(targets: Sequence[Target], repeats: int) -> dict[str, Any]:
    """Over the crypto pairs' hourly bars (every instrument's hourly bars when there is no crypto)."""
    hourly = [t.history for t in targets if t.instrument.asset_class is AssetClass.CRYPTO and t.timeframe is Timeframe.H1]
    hourly = hourly or [t.history for t in targets if t.timeframe is Timeframe.H1]
    bars = int(sum(len(f) for f in hourly))
    out: dict[str, Any] = {"instruments": len(hourly), "source_bars": bars}
    if not bars:
        return out
    for target in (Timeframe.H4, Timeframe.D1):
        def resample_all(target: Timeframe = target) -> None:
            for frame in hourly:
                resample_bars(frame, Timeframe.H1, target)

        runs = _timed(resample_all, repeats)
        med = _median(runs)
        out[f"1h_to_{target.value}"] = {"median_s": med, "bars_per_s": round(bars / med) if med > 0 else None}
    return out


# -- e. memory, machine ------------------------------------------------------------------------------------


def _memory() -> dict[str, float]:
    """VmRSS and VmHWM of this process in MB, from /proc/self/status (0 where it does not exist)."""
    values = {"rss_mb": 0.0, "hwm_mb": 0.0}
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values["rss_mb" if key == "VmRSS" else "hwm_mb"] = round(int(rest.split()[0]) / 1024, 1)
    except OSError:
        pass
    return values


def _machine(load: tuple[float, float, float]) -> dict[str, Any]:
    return {
        "python": platform.python_version(), "numpy": np.__version__, "pandas": pd.__version__,
        "ta-lib": _version("ta-lib"), "cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in load],
    }


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


# -- timing helpers ------------------------------------------------------------------------------------------


def _timed(fn: Callable[[], object], repeats: int) -> list[float]:
    fn()  # warm-up
    return [_once(fn) for _ in range(repeats)]


def _once(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _once_cpu(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds (the process's, all threads): CPU time hardly depends on the neighbours."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


async def _timed_async(fn: Callable[[], Awaitable[T]]) -> tuple[tuple[float, float], T]:
    t0, c0 = time.perf_counter(), time.process_time()
    result = await fn()
    return (time.perf_counter() - t0, time.process_time() - c0), result


def _median(runs: Sequence[float]) -> float:
    return round(statistics.median(runs), 4)


def _rounded(runs: Sequence[float]) -> list[float]:
    return [round(r, 4) for r in runs]
