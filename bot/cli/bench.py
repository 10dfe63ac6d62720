"""`signalbot bench`: the design's performance figures (section 7) that concern market data and indicators
(core.bench: what is measured and how), written as JSON and printed as a table."""
from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.cli.options import MODELS_STORE, add_data_argument, scratch_signals

if TYPE_CHECKING:
    from bot.settings import Settings

NAME = "bench"
HELP = "performance benchmarks of the signal path (DESIGN.md section 7)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_argument(p, "a directory laid out like ../shared/data")
    p.add_argument("--json", dest="out", type=Path, required=True, help="where to write the JSON figures")
    p.add_argument("--repeats", type=int, default=5, help="runs per figure; the median is reported")


def run(args: argparse.Namespace, settings: Settings) -> int:
    asyncio.run(run_bench(args.data, args.out, repeats=args.repeats))
    return 0


async def run_bench(data: Path, out_json: Path, *, repeats: int = 5, update_instruments: int = 300,
                    updates_each: int = 3, echo: bool = True, models_dir: Path | None = MODELS_STORE) -> dict[str, Any]:
    """core.bench.run_bench with a fresh in-memory store per scan; the report written to `out_json` (and printed
    as a table with `echo`)."""
    from core.bench import run_bench as bench

    report = await bench(data, scratch_signals, repeats=repeats, update_instruments=update_instruments,
                         updates_each=updates_each, models_dir=models_dir)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(report, indent=2) + "\n")
    if echo:
        print(report_text(report))
    return report


def report_text(r: dict[str, Any]) -> str:
    from core.bench import RATIO_BUDGET, SCAN_BUDGET_S, UPDATE_BUDGET_MS

    u, ref, scan, upd, res = r["universe"], r["reference_talib"], r["full_scan"], r["one_bar_update"], r["resampling"]
    cat, mem, ok = r["universe_catalogue"], r["memory_mb"], r["budgets"]

    def mark(passed: bool | None) -> str:
        return "n/a" if passed is None else "ok" if passed else "OVER"

    def ms(value: float | None, digits: int = 3) -> str:
        return "n/a" if value is None else f"{value:.{digits}f} ms"

    def resampled(key: str) -> str:
        figures = res.get(key)
        if not figures:
            return "n/a (no hourly bars)"
        return f"{figures['bars_per_s']:,} bars/s ({res['source_bars']:,} bars, {figures['median_s'] * 1e3:.1f} ms)"

    rows = [
        ("universe", f"{u['instruments']} instruments, {u['instrument_timeframes']} instrument-timeframes "
                     f"({', '.join(f'{k}: {v}' for k, v in u['by_class_and_timeframe'].items())})", ""),
        ("bars in memory", f"{u['bars_in_memory']:,} (scan reads {u['bars_read_per_scan']:,}; lookback {u['lookback']})", ""),
        ("a. TA-Lib reference", f"{ref['median_s'] * 1e3:8.1f} ms  (CPU {ref['cpu_median_s'] * 1e3:.1f} ms; "
                                f"{ref['per_instrument_us']} us per instrument-timeframe)", ""),
        ("   TA-Lib calls only", f"{ref['talib_calls_only_median_s'] * 1e3:8.1f} ms  (CPU {ref['talib_calls_only_cpu_median_s'] * 1e3:.1f} ms; "
                                f"{ref['talib_calls']} calls each)", ""),
        ("b. full scan", f"{scan['median_s'] * 1e3:8.1f} ms  (CPU {scan['cpu_median_s'] * 1e3:.1f} ms; {scan['evaluated']} evaluated, "
                         f"{scan['issued']} issued, {scan['rejected_by_risk']} rejected by risk)",
         f"< {SCAN_BUDGET_S:.0f} s: {mark(ok['full_scan_under_1s'])}"),
        ("   b / a", f"{r['scan_vs_reference']:8.2f} x  (CPU {r['scan_vs_reference_cpu']:.2f} x; per run "
                    f"{', '.join(f'{x:.2f}' for x in r['scan_vs_reference_per_run'])}; "
                    f"b / TA-Lib calls only {r['scan_vs_talib_calls_only']:.2f} x)",
         f"<= {RATIO_BUDGET:.0f} x: {mark(ok['scan_within_2x_of_talib'])}"),
        ("b2. scan with models", _model_scan_text(r), f"< {SCAN_BUDGET_S:.0f} s: {mark(ok['model_scan_under_1s'])}"),
        ("c. one-bar update", f"{ms(upd['indicators_median_ms']):>11} median, {ms(upd['indicators_p95_ms'])} p95 "
                              f"({upd['updates']} updates, {upd['instruments']} instruments, window {upd['window_bars']} bars)",
         f"< {UPDATE_BUDGET_MS:.0f} ms: {mark(ok['one_bar_update_under_20ms'])}"),
        ("   bar -> decision", f"{ms(upd['decision_median_ms']):>11} median, {ms(upd['decision_p95_ms'])} p95",
         f"< {UPDATE_BUDGET_MS:.0f} ms: {mark(ok['bar_to_decision_under_20ms'])}"),
        ("d. resample 1h -> 4h", resampled("1h_to_4h"), ""),
        ("   resample 1h -> 1d", resampled("1h_to_1d"), ""),
        ("catalogue, universe", f"{cat['catalogue_median_s']:8.2f} s  ({cat['indicators']} columns over {cat['bars']:,} bars; "
                                f"core set {cat['core_median_s']:.2f} s)", ""),
        ("e. memory", f"{mem['after_scans_rss']:8.0f} MB RSS after load and scans, peak {mem['peak_rss_before_catalogue']:.0f} MB "
                      f"(after load {mem['after_load_rss']:.0f} MB)", f"< 1 GB: {mark(ok['memory_under_1gb'])}"),
    ]
    width = max(len(k) for k, _, _ in rows)
    lines = [f"signalbot bench: {r['data']} as of {r['as_of']}, median of {r['repeats']} runs "
             f"(load average at start {r['machine']['load_average_at_start'][0]})"]
    lines += [f"  {k:<{width}}  {v}" + (f"   [{b}]" if b else "") for k, v, b in rows]
    return "\n".join(lines)


def _model_scan_text(r: dict[str, Any]) -> str:
    m = r["full_scan_with_models"]
    if "median_s" not in m:
        return "n/a (no champion in models_store)"
    return (f"{m['median_s'] * 1e3:8.1f} ms  ({m['models']} champions; b2 / a {r['model_scan_vs_reference']:.2f} x; "
            f"{m['issued']} issued, {m['rejected_by_risk']} rejected by risk; context refresh "
            f"{m['context_refresh_s']:.1f} s, daily)")
