"""/similar SIGNAL_ID: how setups like a signal's ended; and the published backtests /performance shows.

Open to every tier (no tier includes or excludes the track record): the answer reads stored signals only.
"""
from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bot.commands.registry import Command, CommandContext, CommandServices
from bot.views.doc import Doc
from bot.views.track import similar_doc
from core.domain import Timeframe
from core.errors import UserInputError
from core.similar import PeerGroup, find_similar
from storage.backtest_reports import PublishedBacktest, published_reports

EVERYTHING = datetime(1970, 1, 1, tzinfo=timezone.utc)
SIGNAL_ID_EXAMPLE = "AAPL-1d-20250602-L"
_TIMEFRAMES = "|".join(re.escape(t.value) for t in Timeframe)
# core.signals.engine.signal_id: SYMBOL-TIMEFRAME-YYYYMMDD[HHMM]-L|S
_SIGNAL_ID = re.compile(rf"^(?P<symbol>[A-Z0-9][A-Z0-9.\-=^]{{0,19}})-(?P<tf>{_TIMEFRAMES})-(?P<stamp>\d{{8}}(?:\d{{4}})?)"
                        rf"-(?P<side>[LS])$", re.IGNORECASE)


def parse_signal_id(args: Sequence[str]) -> str:
    """The signal id as stored: the symbol and side in capitals, the timeframe as written by the engine."""
    if len(args) != 1:
        raise UserInputError(f"Give one signal id, like {SIGNAL_ID_EXAMPLE} (shown under each signal).")
    text = args[0].strip()
    m = _SIGNAL_ID.match(text) if len(text) <= 48 else None
    if m is None:
        raise UserInputError(f"'{text[:48]}' is not a signal id; they look like {SIGNAL_ID_EXAMPLE} "
                             "(shown under each signal).")
    return f"{m['symbol'].upper()}-{m['tf'].lower()}-{m['stamp']}-{m['side'].upper()}"


async def show_similar(ctx: CommandContext, signal_id: str) -> Doc:
    store = ctx.services.store
    signal = await store.signals.get_signal(signal_id)
    if signal is None:
        raise UserInputError(f"There is no signal {signal_id}. The id is shown under each signal; /signals lists "
                             "the open ones.")
    peers = PeerGroup.of(signal.symbol, signal.asset_class, ctx.services.instruments.records())
    closed = await store.signals.outcomes_since(EVERYTHING)
    return similar_doc(find_similar(signal, closed, peers))


async def published_backtests(services: CommandServices) -> list[PublishedBacktest]:
    """The latest published backtest report per scope (none when the setting names no directory)."""
    folder = services.settings.backtest_reports_dir
    if not folder:
        return []
    return await asyncio.to_thread(published_reports, Path(folder))


def track_commands() -> tuple[Command[Any], ...]:
    return (
        Command("similar", "how similar past setups ended (same symbol and its peers)", "/similar SIGNAL_ID",
                parse_signal_id, show_similar, needs_user=False),
    )
