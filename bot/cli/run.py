"""`signalbot run`: the service (offline on a simulated or replayed market when no tokens are set)."""
from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.settings import Settings

NAME = "run"
HELP = "run the service (offline on a simulated market when no tokens are set)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--replay", type=Path, help="replay CSV files in the layout of ../shared/data instead of simulating")
    p.add_argument("--speed", type=float, help="simulated seconds per wall second (default 3600; replay 86400)")
    p.add_argument("--start", help="where the offline clock starts, YYYY-MM-DD[THH:MM] UTC (replay default: 400 days "
                   "into the data; simulation default: now)")
    p.add_argument("--for", dest="duration", type=float, help="stop cleanly after this many seconds")
    p.add_argument("--db", help="database URL (default from SIGNALBOT_DATABASE_URL or sqlite+aiosqlite:///signalbot.db)")
    p.add_argument("--market", choices=("offline", "live"), help="offline (default): simulated or --replay; "
                   "live: Yahoo and the exchange through the router (needs the network)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import datetime, timezone

    from bot.app import RunOptions, run_service

    start = datetime.fromisoformat(args.start).replace(tzinfo=timezone.utc) if args.start else None
    opts = RunOptions(replay=args.replay, speed=args.speed, duration=args.duration, start=start)
    return asyncio.run(run_service(settings, opts))
