"""Pure domain values of the signal service. No I/O, no vendor imports."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any


class AssetClass(enum.StrEnum):
    EQUITY = "equity"
    CRYPTO = "crypto"
    FX = "fx"
    INDEX = "index"


class Timeframe(enum.StrEnum):
    M1 = "1m"
    M5 = "5m"
    M15 = "15m"
    H1 = "1h"
    H4 = "4h"
    D1 = "1d"

    @property
    def duration(self) -> timedelta:
        return _TF_DURATION[self]

    @property
    def pandas_freq(self) -> str:
        return _TF_FREQ[self]

    @classmethod
    def parse(cls, text: str) -> "Timeframe":
        key = text.strip().lower()
        key = _TF_ALIASES.get(key, key)
        try:
            return cls(key)
        except ValueError:
            valid = ", ".join(t.value for t in cls)
            raise ValueError(f"unknown timeframe '{text}' (use one of {valid})") from None


_TF_DURATION = {
    Timeframe.M1: timedelta(minutes=1),
    Timeframe.M5: timedelta(minutes=5),
    Timeframe.M15: timedelta(minutes=15),
    Timeframe.H1: timedelta(hours=1),
    Timeframe.H4: timedelta(hours=4),
    Timeframe.D1: timedelta(days=1),
}
_TF_FREQ = {
    Timeframe.M1: "1min",
    Timeframe.M5: "5min",
    Timeframe.M15: "15min",
    Timeframe.H1: "1h",
    Timeframe.H4: "4h",
    Timeframe.D1: "1D",
}
_TF_ALIASES = {"60m": "1h", "240m": "4h", "d": "1d", "1day": "1d", "daily": "1d", "h": "1h", "4hr": "4h", "1hr": "1h"}


class Direction(enum.StrEnum):
    LONG = "long"
    SHORT = "short"

    @property
    def sign(self) -> int:
        return 1 if self is Direction.LONG else -1

    @property
    def verb(self) -> str:
        return "BUY" if self is Direction.LONG else "SELL"


class SignalStatus(enum.StrEnum):
    OPEN = "open"
    TARGET = "target"
    STOP = "stop"
    EXPIRED = "expired"
    EXIT = "exit"  # closed at the next bar's open because the strategy's own rule said so (core.books)

    @property
    def is_closed(self) -> bool:
        return self is not SignalStatus.OPEN


class Tier(enum.StrEnum):
    FREE = "free"
    HOBBYIST = "hobbyist"
    TRADER = "trader"
    PROFESSIONAL = "professional"

    @property
    def rank(self) -> int:
        return list(Tier).index(self)


class RiskTolerance(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


class DeliveryKind(enum.StrEnum):
    SIGNAL = "signal"
    EXIT = "exit"
    UPDATE = "update"  # the evidence behind an open signal changed (core.thesis): a reply to the signal


@dataclass(frozen=True, slots=True)
class Instrument:
    symbol: str
    asset_class: AssetClass
    name: str = ""
    exchange: str = ""
    quote_currency: str = "USD"
    sector: str = ""

    @property
    def allows_short(self) -> bool:
        """Spot crypto cannot be shorted; an index is not traded directly."""
        return self.asset_class in (AssetClass.EQUITY, AssetClass.FX)


@dataclass(frozen=True, slots=True)
class Signal:
    """One trading idea as issued. Never mutated; its life is recorded as a SignalOutcome."""

    id: str
    symbol: str
    asset_class: AssetClass
    timeframe: Timeframe
    direction: Direction
    entry: float
    target: float
    stop: float
    confidence: int  # 1..100
    position_size: float  # suggested fraction of equity, e.g. 0.05 = 5 %
    issued_at: datetime  # close time of the bar that produced it (UTC)
    expires_at: datetime
    reasoning: str
    strategy: str
    evidence: dict[str, Any] = field(default_factory=dict)  # the inputs that produced it

    @property
    def risk_reward(self) -> float:
        risk = abs(self.entry - self.stop)
        return abs(self.target - self.entry) / risk if risk > 0 else 0.0

    @property
    def shadow(self) -> bool:
        """Issued while its scope's strategy breaker was tripped (core.breaker): tracked like any signal so the
        breaker can see it recover, never delivered, never in the track record."""
        return "shadow" in self.evidence


@dataclass(frozen=True, slots=True)
class SignalUpdate:
    """What changed in the evidence behind an open signal (core.thesis), told once as a reply to it."""

    signal_id: str
    at: datetime  # the market time it was seen
    changes: tuple[str, ...]  # each in plain words, e.g. "the trend turned against it: ..."

    @property
    def text(self) -> str:
        return "; ".join(self.changes)


@dataclass(frozen=True, slots=True)
class SignalOutcome:
    signal_id: str
    status: SignalStatus
    fill_price: float
    fill_time: datetime
    exit_price: float
    exit_time: datetime
    gross_return: float  # fraction, direction-adjusted
    net_return: float  # after costs on both sides
    mfe: float  # maximum favourable excursion, fraction of fill price (>= 0)
    mae: float  # maximum adverse excursion, fraction of fill price (<= 0)
    bars_held: int


@dataclass(frozen=True, slots=True)
class QuietHours:
    start: str  # "HH:MM" local
    end: str  # "HH:MM" local
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class Preferences:
    symbols: frozenset[str] = frozenset()  # empty: every symbol
    asset_classes: frozenset[AssetClass] = frozenset()  # empty: every class the tier allows
    timeframes: frozenset[Timeframe] = frozenset()  # empty: every timeframe the tier allows
    min_confidence: int = 1  # the user's own filter; 1: off (the risk manager already requires a positive expectation)
    risk: RiskTolerance = RiskTolerance.MEDIUM
    quiet_hours: QuietHours | None = None


@dataclass(frozen=True, slots=True)
class User:
    id: int
    platform: str  # "console", "telegram", "discord"
    platform_user_id: str
    chat_id: str  # where deliveries go on that platform
    display_name: str = ""
    tier: Tier = Tier.FREE
    active: bool = True
    created_at: datetime | None = None
    preferences: Preferences = field(default_factory=Preferences)


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    signal_id: str
    user_id: int
    kind: DeliveryKind
    channel: str
    status: DeliveryStatus
    attempts: int = 0
    not_before: datetime | None = None
    message_ref: str | None = None
    reply_to: str | None = None
    error: str | None = None
    created_at: datetime | None = None
    sent_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeliveryUpdate:
    """The result of one attempt at a claimed delivery (DeliveryRepository.record_attempts)."""

    delivery_id: int
    status: DeliveryStatus
    message_ref: str | None = None
    error: str | None = None
    not_before: datetime | None = None
    sent_at: datetime | None = None
    refund_attempt: bool = False
    parts_sent: int = 0  # a message in parts that stopped part-way: parts that went out, and the first's ref
    first_ref: str | None = None
    layout: str = ""  # how the parts were split (bot.transports.base.Resume)


@dataclass(frozen=True, slots=True)
class ChannelAddress:
    user_id: int
    channel: str
    address: str
    secret: str | None = None
    format: str | None = None  # a webhook's payload format (bot.delivery.payloads.WEBHOOK_FORMATS); None: "v1"


BAR_COLUMNS = ("open", "high", "low", "close", "volume")
"""Bars are pandas DataFrames indexed by the bar's OPEN time (tz-aware UTC DatetimeIndex named 'time'),
with float columns open, high, low, close, volume, sorted ascending, unique index.
A bar exists (may be used) only once its close time, open time + timeframe, is <= now."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A REST API key as stored: never the key itself (only its hash), `prefix` identifies it in lists."""

    id: int
    user_id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class ApiUsage:
    """Requests of one key to one endpoint on one UTC day."""

    key_id: int
    day: str
    endpoint: str
    count: int
    errors: int = 0


class Decision(enum.StrEnum):
    """What a subscriber said they did with a signal (the buttons under it)."""

    TOOK = "took"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Feedback:
    """One subscriber's record of one signal. A taken signal has the fill the paper portfolio uses: the last close
    when the signal reached the user (quiet hours delay it), or when they tapped, if it never reached them."""

    user_id: int
    signal_id: str
    decision: Decision
    decided_at: datetime
    fill_price: float | None = None
    fill_at: datetime | None = None
    closed_price: float | None = None  # closed at market by the user
    closed_at: datetime | None = None
