"""The REST API's response models (Pydantic): what /openapi.json documents and every answer is checked against.
Times are ISO 8601 UTC; returns and sizes are fractions (0.05 = 5 %), as in the webhooks."""
from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class Error(BaseModel):
    detail: str = Field(description="what was wrong, in plain words")


class Outcome(BaseModel):
    status: str = Field(description="target, stop, expired or exit")
    fill_price: float
    fill_time: datetime
    exit_price: float
    exit_time: datetime
    gross_return: float
    net_return: float = Field(description="after costs on both sides")
    mfe: float
    mae: float
    bars_held: int


class SignalOut(BaseModel):
    id: str
    symbol: str
    asset_class: str
    timeframe: str
    direction: str = Field(description="long or short")
    entry: float
    target: float
    stop: float
    risk_reward: float
    confidence: int = Field(ge=1, le=100)
    position_size: float = Field(description="suggested fraction of equity at the key owner's risk setting")
    strategy: str
    issued_at: datetime
    expires_at: datetime
    reasoning: str
    status: str = Field(description="active, or how it closed")
    outcome: Outcome | None = None


class SignalList(BaseModel):
    signals: list[SignalOut]
    count: int


class Performance(BaseModel):
    period: str
    closed: int
    wins: int
    hit_rate: float | None
    target_rate: float | None
    avg_return: float | None = Field(description="mean net return per signal, after costs")
    median_return: float | None
    profit_factor: float | None
    avg_bars_held: float | None
    best: float | None
    worst: float | None
    paused_scopes: list[str] = Field(description="strategy scopes whose breaker stopped issuing, with why")


class InstrumentOut(BaseModel):
    symbol: str
    asset_class: str
    name: str
    exchange: str
    quote_currency: str
    sector: str
    industry: str


class InstrumentList(BaseModel):
    instruments: list[InstrumentOut]
    count: int


class Subscription(BaseModel):
    user_id: int
    tier: str
    signals_per_month: int | None
    asset_classes: list[str]
    timeframes: list[str]
    channels: list[str]
    api_requests_per_minute: int


class UsageRow(BaseModel):
    key_id: int
    day: str
    endpoint: str
    count: int
    errors: int


class Usage(BaseModel):
    since: str
    rows: list[UsageRow]
    total: int


class System(BaseModel):
    process: str
    role: str
    outbox: dict[str, int]
    active_signals: int
    users: int


class FeedbackIn(BaseModel):
    action: Literal["took", "skipped", "closed"] = Field(
        description="took: follow it in the paper portfolio from the price when it reached you; skipped; closed: "
                    "close a taken one at market")


class FeedbackOut(BaseModel):
    signal_id: str
    decision: str = Field(description="took or skipped, as first given")
    decided_at: datetime
    fill_price: float | None = Field(description="took: the last close when the signal reached you (or when you "
                                                 "said so, if it never did)")
    fill_at: datetime | None
    closed_price: float | None
    closed_at: datetime | None
    message: str = Field(description="what this request did, in words")
    changed: bool = Field(description="whether this request stored anything")


class PositionOut(BaseModel):
    signal_id: str
    symbol: str
    timeframe: str
    direction: str
    size: float = Field(description="fraction of equity: the signal's suggested size")
    fill_price: float
    fill_at: datetime
    exit_price: float | None = Field(description="exit, or the latest close while open")
    exit_at: datetime | None
    how: str = Field(description="open, closed by you, or the signal's exit: target, stop, expired, exit")
    net_return: float | None = Field(description="direction-adjusted, after costs on both sides")
    contribution: float = Field(description="size x net return: P&L in fractions of equity")


class Portfolio(BaseModel):
    positions: list[PositionOut]
    open: int
    closed: int
    wins: int
    skipped: int
    exposure: float = Field(description="gross open size, fraction of equity")
    realised: float
    unrealised: float
    total: float
    costs_bps: float


class WatchedOut(BaseModel):
    symbol: str
    last: float | None
    day_change: float | None = Field(description="from the last daily close before the latest close")
    open_signals: list[str]


class Watchlist(BaseModel):
    symbols: list[WatchedOut]
    message: str = ""


class ScreenRowOut(BaseModel):
    symbol: str
    name: str
    asset_class: str
    sector: str
    price: float
    rsi: float | None
    adx: float | None
    z: float | None
    trend: str = Field(description="up, down or flat")
    score: float = Field(description="the setup's score, 0..1")
    side: str = Field(description="where the setup leans: buy or sell")
    confidence: int
    setup: str


class Screener(BaseModel):
    filters: list[str]
    screened: int = Field(description="instruments with data that the class and sector filters let through")
    rows: list[ScreenRowOut]


class Summary(BaseModel):
    closed: int
    wins: int
    hit_rate: float
    avg_return: float = Field(description="mean net return per signal, after costs")
    profit_factor: float | None
    best: float
    worst: float


class Report(BaseModel):
    start: datetime
    end: datetime
    received: int = Field(description="signals the key owner received in the period")
    received_closed: int
    yours: Summary | None = Field(description="the received signals that closed")
    service: Summary | None = Field(description="every signal of the service that closed in the period, losers "
                                                "included")
    signals: list[str] = Field(description="ids of the received signals, oldest first")


class TableOut(BaseModel):
    headers: list[str]
    rows: list[list[str]]


class DocOut(BaseModel):
    """A command's answer as the chat shows it (the admin endpoints run the same commands)."""

    heading: str
    body: str
    fields: list[list[str]]
    table: TableOut | None
    note: str
    tone: str = Field(description="info, success, warning or error")


class GenerateIn(BaseModel):
    symbols: list[str] = Field(default_factory=list, max_length=50,
                               description="symbols to scan now (empty: the whole universe)")


class Quote(BaseModel):
    symbol: str
    timeframe: str = Field(description="the finest timeframe scanned for the symbol")
    last: float = Field(description="the latest close")
    closed_at: datetime = Field(description="when that bar closed")
    day_change: float | None = Field(description="from the last daily close before it")


class Bar(BaseModel):
    time: datetime = Field(description="the bar's open time")
    open: float
    high: float
    low: float
    close: float
    volume: float
    indicators: dict[str, float | None] = Field(default_factory=dict)


class History(BaseModel):
    symbol: str
    timeframe: str
    bars: list[Bar]


class Preferences(BaseModel):
    symbols: list[str] = Field(description="empty: every symbol")
    asset_classes: list[str] = Field(description="empty: every class the tier allows")
    timeframes: list[str] = Field(description="empty: every timeframe the tier allows")
    min_confidence: int
    risk: str
    quiet_hours: str | None = Field(description="HH:MM-HH:MM and a time zone, or none")
    digest_hour_utc: int | None = None
    channels: list[str] = Field(default_factory=list, description="extra channels set: email, webhook")


class PreferencesIn(BaseModel):
    symbols: list[str] | None = Field(None, max_length=100, description="[] or [\"all\"]: every symbol")
    asset_classes: list[str] | None = Field(None, max_length=10)
    timeframes: list[str] | None = Field(None, max_length=10)
    min_confidence: str | None = Field(None, max_length=8, description="1..100 or off")
    risk: str | None = Field(None, max_length=10, description="low, medium or high")
    quiet_hours: str | None = Field(None, max_length=60, description="e.g. 22:00-07:00 Europe/Berlin, or off")


class TestSent(BaseModel):
    sent: bool
    channel: str
    detail: str


class SignalHistory(BaseModel):
    signals: list[SignalOut]
    summary: Summary | None = Field(description="of the closed signals listed, after costs")
