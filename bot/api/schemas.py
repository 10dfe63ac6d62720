"""The REST API's response models (Pydantic): what /openapi.json documents and every answer is checked against.
Times are ISO 8601 UTC; returns and sizes are fractions (0.05 = 5 %), as in the webhooks."""
from __future__ import annotations

from datetime import datetime

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
