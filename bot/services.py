"""The services a command can use, assembled by the composition root (bot.app)."""
from __future__ import annotations

from dataclasses import dataclass

from bot.commands.registry import Caller, CommandRegistry
from bot.settings import Settings
from core.clock import Clock
from core.events import EventBus
from core.instruments import InstrumentRegistry
from core.ports import MarketData
from core.signals.service import SignalService
from core.signals.tracker import LifecycleTracker
from storage import SqlStore


@dataclass
class Services:
    settings: Settings
    store: SqlStore
    market: MarketData
    signal_service: SignalService
    tracker: LifecycleTracker
    bus: EventBus
    clock: Clock
    registry: CommandRegistry
    instruments: InstrumentRegistry

    def is_admin(self, caller: Caller) -> bool:
        """Admins are configured numeric platform ids; the local console operator is one by construction."""
        if caller.platform == "console":
            return True
        return f"{caller.platform}:{caller.platform_user_id}" in self.settings.admin_ids
