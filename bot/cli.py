"""The `signalbot` command line."""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from core.risk import SERVICE_COSTS_BPS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="signalbot", description="Chat-bot-first trading-signal service")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the service (offline on a simulated market when no tokens are set)")
    run.add_argument("--replay", type=Path, help="replay CSV files in the layout of ../shared/data instead of simulating")
    run.add_argument("--speed", type=float, help="simulated seconds per wall second (default 3600; replay 86400)")
    run.add_argument("--start", help="where the offline clock starts, YYYY-MM-DD[THH:MM] UTC (replay default: 400 days "
                     "into the data; simulation default: now)")
    run.add_argument("--for", dest="duration", type=float, help="stop cleanly after this many seconds")
    run.add_argument("--db", help="database URL (default from SIGNALBOT_DATABASE_URL or sqlite+aiosqlite:///signalbot.db)")
    run.add_argument("--market", choices=("offline", "live"), help="offline (default): simulated or --replay; "
                     "live: Yahoo and the exchange through the router (needs the network)")

    fill = sub.add_parser("backfill", help="fetch bars into the database from the live providers (resumable)")
    fill.add_argument("--symbols", help="comma-separated (default: every tradable instrument)")
    fill.add_argument("--timeframes", help="comma-separated, e.g. 1d,1h (default: the scan timeframes per class)")
    fill.add_argument("--days", type=int, default=None,
                      help="history to fetch when nothing is stored (default: what the books read, 1,600 days of "
                           "daily bars; intraday 900 days for crypto, 720 elsewhere)")
    fill.add_argument("--db", help="database URL")

    scan = sub.add_parser("scan", help="the signals the pipeline would issue at a moment, from data up to it")
    scan.add_argument("--data", type=Path, required=True, help="a CSV file or a directory laid out like ../shared/data")
    scan.add_argument("--as-of", required=True, help="YYYY-MM-DD (after that day's close) or an ISO timestamp")
    scan.add_argument("--json", action="store_true", help="print JSON")
    scan.add_argument("--costs-bps", type=float, default=SERVICE_COSTS_BPS,
                      help="costs per side in basis points the risk manager counts (default 5, the service's)")
    scan.add_argument("--families", default="trend,ranking",
                      help="strategy families: trend, ranking, setups, comma-separated (default trend,ranking)")

    # its options are scripts.backtest's parser (main hands the arguments over before parsing)
    sub.add_parser("backtest", add_help=False, help="walk-forward backtest through the live signal path, scored "
                   "inside [start, end]; `signalbot backtest --help` for its options")

    # its options are scripts.train's parser, as for backtest
    sub.add_parser("train", add_help=False, help="train the LightGBM models; writes new versions with manifests under "
                   "models_store/; `signalbot train --help` for its options")

    bench = sub.add_parser("bench", help="performance benchmarks of the signal path (DESIGN.md section 7)")
    bench.add_argument("--data", type=Path, required=True, help="a directory laid out like ../shared/data")
    bench.add_argument("--json", dest="out", type=Path, required=True, help="where to write the JSON figures")
    bench.add_argument("--repeats", type=int, default=5, help="runs per figure; the median is reported")

    senti = sub.add_parser("sentiment-eval", help="evaluate the offline news-sentiment model on a labelled CSV")
    senti.add_argument("--data", type=Path, required=True, help="labelled CSV (text,label), .csv or .csv.gz")
    senti.add_argument("--json", dest="out", type=Path, help="where to write the JSON report")
    senti.add_argument("--model", type=Path, help="model folder (default: the newest models_store/sentiment-*)")
    senti.add_argument("--mode", choices=("auto", "heldout", "cv"), default="auto",
                       help="auto: cross-validate on the model's own training file, held-out scoring otherwise")
    senti.add_argument("--folds", type=int, default=5)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["backtest"]:
        from scripts.backtest import main as backtest_main

        return backtest_main(argv[1:])
    if argv[:1] == ["train"]:
        from scripts.train import main as train_main

        return train_main(argv[1:])
    args = _parser().parse_args(argv)
    from bot.settings import Settings
    from core.errors import SignalBotError

    settings = Settings()
    if getattr(args, "db", None):
        settings = settings.model_copy(update={"database_url": args.db})
    if getattr(args, "market", None):
        settings = settings.model_copy(update={"market": args.market})
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from bot.logs import install_redaction

    install_redaction(settings)  # no secret in the log at any level (PTB's DEBUG names the token in its URLs)
    for noisy in ("apscheduler", "aiosqlite", "sqlalchemy", "httpx", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)  # "skipped: still running" is by design
    try:
        if args.command == "run":
            return _run(settings, args)
        if args.command == "backfill":
            from bot.markets import run_backfill

            split = lambda v: [x.strip() for x in v.split(",") if x.strip()] if v else None  # noqa: E731
            print(asyncio.run(run_backfill(settings, split(args.symbols), split(args.timeframes), args.days)))
            return 0
        if args.command == "scan":
            from scripts.scan import run_scan

            text, code = asyncio.run(run_scan(args.data, args.as_of, args.json, args.costs_bps, args.families))
            print(text)
            return code
        if args.command == "bench":
            from scripts.bench import run_bench

            asyncio.run(run_bench(args.data, args.out, repeats=args.repeats))
            return 0
        if args.command == "sentiment-eval":
            import json

            from scripts.sentiment_eval import run as run_sentiment_eval

            report = run_sentiment_eval(args.data, args.out, args.model, args.mode, args.folds,
                                        progress=lambda m: print(m, file=sys.stderr, flush=True))
            print(json.dumps({k: report[k] for k in ("mode", "accuracy", "macro_f1", "throughput", "warning")
                              if k in report}, indent=2))
            return 0
    except (ValueError, OSError, SignalBotError) as exc:
        print(f"signalbot {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


def _run(settings, args: argparse.Namespace) -> int:  # noqa: ANN001
    from datetime import datetime, timezone

    from bot.app import RunOptions, run_service

    start = datetime.fromisoformat(args.start).replace(tzinfo=timezone.utc) if args.start else None
    opts = RunOptions(replay=args.replay, speed=args.speed, duration=args.duration, start=start)
    return asyncio.run(run_service(settings, opts))


if __name__ == "__main__":
    raise SystemExit(main())
