"""The options several `signalbot` commands share, declared once: data paths, costs, the models' feature set,
the news options, symbol lists; and what the long commands share: progress on standard error, a scratch store."""
from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.ports import SignalRepository

REPO = Path(__file__).resolve().parents[2]
MODELS_STORE = REPO / "models_store"
DATA_HELP = "a CSV file or a directory laid out like ../shared/data"
SCRATCH_DATABASE = "sqlite+aiosqlite:///:memory:"


def add_data_argument(p: argparse.ArgumentParser, help: str = DATA_HELP) -> None:  # noqa: A002 - argparse's word
    """--data PATH (required)."""
    p.add_argument("--data", type=Path, required=True, help=help)


def add_costs_argument(p: argparse.ArgumentParser, default: float, why: str, counted_by: str = "") -> None:
    """--costs-bps N: costs per side in basis points. Each command keeps its own default, and its help says why
    (`why`): the service's costs (core.risk.SERVICE_COSTS_BPS) where a command shows what the service would do,
    the evaluation's stricter ones where it measures or learns."""
    p.add_argument("--costs-bps", type=float, default=default,
                   help=f"costs per side in basis points{counted_by} (default {default:g}: {why})")


def add_features_argument(p: argparse.ArgumentParser) -> None:
    """--features: the feature set the models read (core.features.sets.MODEL_FEATURE_SETS)."""
    from core.features.sets import DEFAULT_MODEL_FEATURE_SET, MODEL_FEATURE_SETS

    p.add_argument("--features", choices=tuple(MODEL_FEATURE_SETS), default=DEFAULT_MODEL_FEATURE_SET,
                   help=f"the models' feature set (default {DEFAULT_MODEL_FEATURE_SET}; fs-2 adds sector relative "
                        "strength and how similar past setups ended; fs-3 adds news features, read from --news)")


def add_news_arguments(p: argparse.ArgumentParser, what: str) -> None:
    """--news [DIR] and --news-db FILE."""
    p.add_argument("--news", nargs="?", const="auto", metavar="DIR", help=what)
    p.add_argument("--news-db", type=Path, help="SQLite file of stored verdicts (default: "
                                                "<OS cache dir>/signalbot/news-verdicts.sqlite)")


def news_dir_option(option: str | None, data: Path) -> Path | None:
    """The folder `--news` names: None without the option, the data's news folder for a bare `--news`."""
    if option is None:
        return None
    if option != "auto":
        return Path(option)
    from core.news.replay import news_folder

    found = news_folder(data)
    if found is None:
        raise ValueError(f"no news folder in or beside {data}; give one: --news DIR")
    return found


def split_list(text: str | None) -> list[str] | None:
    """A comma-separated option as a list (None when not given or empty)."""
    return [x.strip() for x in text.split(",") if x.strip()] if text else None


def parse_symbols(text: str) -> list[str]:
    """--symbols: a comma-separated list, or a file: a CSV with a `symbol` column (e.g. the tweets file, for its
    tickers) or plain text with one symbol per line (or separated by commas or spaces)."""
    path = Path(text)
    if path.is_file():
        if ".csv" in path.name.lower():
            import pandas as pd

            frame = pd.read_csv(path, usecols=lambda c: c.strip().lower() == "symbol")
            if frame.shape[1] != 1:
                raise ValueError(f"{path} has no symbol column")
            found = sorted({str(s).strip().upper() for s in frame.iloc[:, 0].dropna() if str(s).strip()})
        else:
            found = sorted({s.strip().upper() for s in path.read_text().replace(",", " ").split() if s.strip()})
    else:
        found = sorted({s.strip().upper() for s in text.split(",") if s.strip()})
    if not found:
        raise ValueError(f"no symbols in {text!r}")
    return found


class StderrProgress:
    """The default progress report: the percentage on one line of standard error, rewritten as it grows."""

    def __init__(self, label: str = "backtest") -> None:
        self.label = label
        self._shown: tuple[int, str] | None = None

    def __call__(self, fraction: float, stage: str) -> None:
        pct = int(max(0.0, min(1.0, fraction)) * 100)
        if (pct, stage) == self._shown:
            return
        self._shown = (pct, stage)
        end = "\n" if pct >= 100 and stage == "done" else ""
        print(f"\r{self.label}: {pct:3d}% {stage:<10s}", end=end, file=sys.stderr, flush=True)


def stderr_line(text: str) -> None:
    """A line of its own on standard error (after a progress line)."""
    print(f"\n{text}", file=sys.stderr, flush=True)


@asynccontextmanager
async def scratch_signals(url: str = SCRATCH_DATABASE) -> AsyncIterator[SignalRepository]:
    """A fresh signal store with its tables (in memory by default), closed on leaving: where a scan run from the
    command line puts what it issues."""
    from storage import Database, Stores

    db = Database(url)
    await db.upgrade()
    store = Stores.over(db)
    try:
        yield store.signals
    finally:
        await store.close()
