"""`signalbot backfill`: bars fetched into the database from the live providers (resumable)."""
from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from bot.cli.options import split_list

if TYPE_CHECKING:
    from bot.settings import Settings

NAME = "backfill"
HELP = "fetch bars into the database from the live providers (resumable)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--symbols", help="comma-separated (default: every tradable instrument)")
    p.add_argument("--timeframes", help="comma-separated, e.g. 1d,1h (default: the scan timeframes per class)")
    p.add_argument("--days", type=int, default=None,
                   help="history to fetch when nothing is stored (default: what the books read, 1,600 days of "
                        "daily bars; intraday 900 days for crypto, 720 elsewhere)")
    p.add_argument("--db", help="database URL")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from bot.markets import run_backfill

    print(asyncio.run(run_backfill(settings, split_list(args.symbols), split_list(args.timeframes), args.days)))
    return 0
