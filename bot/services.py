"""The services a command can use (bot.commands.registry.CommandServices), assembled once, finished, by the
composition root (bot.app.build_services)."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.commands.caller import Caller
from bot.commands.registry import CommandRegistry
from bot.news_job import NewsJob
from bot.notices import Notices
from bot.payments import Payments
from bot.settings import Settings
from core.clock import Clock
from core.events import EventBus
from core.instruments import InstrumentRegistry
from core.models.live import ModelUpkeep
from core.ports import MarketData
from core.signals.service import SignalService
from core.signals.thesis_watch import ThesisWatch
from core.signals.tracker import LifecycleTracker
from storage import Stores


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    store: Stores
    market: MarketData
    signal_service: SignalService
    tracker: LifecycleTracker
    bus: EventBus
    clock: Clock  # the market's: bars, signals, their expiry
    wall: Clock  # people's time: link codes, request quotas, audit, quiet hours, digests, the outbox (differs
    # from `clock` only offline, where a replay or the simulation runs the market fast)
    registry: CommandRegistry
    instruments: InstrumentRegistry
    notices: Notices  # /admin broadcast and plan changes; transports are added to it as they start
    upkeep: ModelUpkeep  # the LightGBM champions: loaded at start, context refreshed daily, retrained live
    payments: Payments | None = None  # None: no payment provider configured
    news: NewsJob | None = None  # the news job (None: no news source configured); /admin models shows it
    retrain: Callable[[], Awaitable[object]] | None = None  # /admin retrain (live markets only)
    thesis: ThesisWatch | None = None  # replies to open signals whose evidence turned (None: not watched)

    def is_admin(self, caller: Caller) -> bool:
        """Admins are configured numeric platform ids; the local console operator is one by construction."""
        if caller.platform == "console":
            return True
        return f"{caller.platform}:{caller.platform_user_id}" in self.settings.admin_ids
