"""The services a command can use, assembled by the composition root (bot.app)."""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from bot.commands.registry import Caller, CommandRegistry
from bot.news_job import NewsJob
from bot.payments import Payments
from bot.settings import Settings
from core.clock import Clock
from core.domain import User
from core.events import EventBus
from core.instruments import InstrumentRegistry
from core.ports import MarketData
from core.signals.service import SignalService
from core.signals.tracker import LifecycleTracker
from storage import Stores
from storage.admin import AdminStore


@dataclass
class Services:
    settings: Settings
    store: Stores
    market: MarketData
    signal_service: SignalService
    tracker: LifecycleTracker
    bus: EventBus
    clock: Clock
    registry: CommandRegistry
    instruments: InstrumentRegistry
    admin_store: AdminStore | None = None
    payments: Payments | None = None  # None: no payment provider configured
    retrain: Callable[[], Awaitable[object]] | None = None  # /admin retrain
    broadcast: Callable[[Sequence[User], str], Awaitable[int]] | None = None  # /admin broadcast
    news: NewsJob | None = None  # the news job (None: no news source configured); /admin models shows it
    wall: Clock = None  # type: ignore[assignment]  # set in __post_init__: never None after construction

    def __post_init__(self) -> None:
        """`clock` is the market's (bars, signals, their expiry); `wall` is people's time: link codes, request
        quotas, audit, quiet hours, digests, the outbox. They differ only offline (a replay or the simulation
        runs the market fast); default: the same clock."""
        if self.wall is None:
            self.wall = self.clock

    def is_admin(self, caller: Caller) -> bool:
        """Admins are configured numeric platform ids; the local console operator is one by construction."""
        if caller.platform == "console":
            return True
        return f"{caller.platform}:{caller.platform_user_id}" in self.settings.admin_ids
