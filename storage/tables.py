"""Every table of the schema (sqlmodel models), in one module. Only storage/ sees these; core sees frozen domain
dataclasses.

Datetimes are stored as UTC through `UTCDateTime` and always read back tz-aware UTC.
JSON-valued fields (evidence, preference sets) are stored as text so the schema is the same on
SQLite and PostgreSQL.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp stored as UTC. Naive input is refused; output is always tz-aware UTC.

    SQLite keeps no offset (the text form sorts and compares correctly because every value is
    UTC); PostgreSQL gets `timestamp with time zone`.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: storage needs tz-aware datetimes")
        utc = value.astimezone(timezone.utc)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def _utc(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(sa_type=UTCDateTime, nullable=nullable, index=index)


class InstrumentRow(SQLModel, table=True):
    __tablename__ = "instruments"

    symbol: str = Field(primary_key=True)
    asset_class: str
    name: str = ""
    exchange: str = ""
    quote_currency: str = "USD"
    sector: str = ""


class BarRow(SQLModel, table=True):
    """One OHLCV bar. `time` is the bar's OPEN time as Unix seconds (UTC): bars are the bulk table,
    and integers keep bulk writes and reads about twice as fast as timestamp columns."""

    __tablename__ = "bars"

    symbol: str = Field(primary_key=True)
    timeframe: str = Field(primary_key=True)
    time: int = Field(sa_type=sa.BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False})
    open: float
    high: float
    low: float
    close: float
    volume: float


class SignalRow(SQLModel, table=True):
    __tablename__ = "signals"
    __table_args__ = (sa.Index("ix_signals_symbol_timeframe_issued", "symbol", "timeframe", "issued_at"),)

    id: str = Field(primary_key=True)
    symbol: str
    asset_class: str
    timeframe: str
    direction: str
    entry: float
    target: float
    stop: float
    confidence: int
    position_size: float
    issued_at: datetime = _utc()
    expires_at: datetime = _utc()
    reasoning: str = Field(default="", sa_type=sa.Text)
    strategy: str
    evidence: str = Field(default="{}", sa_type=sa.Text)  # JSON
    status: str = Field(default="open", index=True)


class SignalOutcomeRow(SQLModel, table=True):
    __tablename__ = "signal_outcomes"

    signal_id: str = Field(primary_key=True, foreign_key="signals.id", ondelete="CASCADE")
    status: str
    fill_price: float
    fill_time: datetime = _utc()
    exit_price: float
    exit_time: datetime = _utc(index=True)
    gross_return: float
    net_return: float
    mfe: float
    mae: float
    bars_held: int


class SignalExitRow(SQLModel, table=True):
    """A book's decision to close one of its signals at the next bar's open (core.books), and why."""

    __tablename__ = "signal_exits"

    signal_id: str = Field(primary_key=True, foreign_key="signals.id", ondelete="CASCADE")
    decided_at: datetime = _utc()
    reason: str = Field(default="", sa_type=sa.Text)


class SignalUpdateRow(SQLModel, table=True):
    """What turned against an open signal (core.thesis), told once as a reply to it: one row per signal."""

    __tablename__ = "signal_updates"

    signal_id: str = Field(primary_key=True, foreign_key="signals.id", ondelete="CASCADE")
    at: datetime = _utc()
    changes: str = Field(default="[]", sa_type=sa.Text)  # JSON list of plain-words changes


class ChainRow(SQLModel, table=True):
    """The public track record's hash chain (storage.chain): one entry per signal issued and per outcome
    recorded, each hashed with the one before. No foreign key: a deleted signal's entry stays, as its proof."""

    __tablename__ = "record_chain"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    kind: str  # issue | exit
    signal_id: str = Field(index=True)
    payload: str = Field(sa_type=sa.Text)  # the canonical JSON that was hashed
    prev_hash: str
    hash: str = Field(unique=True)
    at: datetime = _utc()


class FanoutRow(SQLModel, table=True):
    """An issued signal (kind "signal") or its close (kind "exit") still to be fanned out to the outbox. Written
    in the transaction that stores the signal or the outcome, marked done in the one that queues its deliveries:
    a crash between the two leaves it pending, and the next start queues it (bot.delivery.setup)."""

    __tablename__ = "fanouts"

    signal_id: str = Field(primary_key=True, foreign_key="signals.id", ondelete="CASCADE")
    kind: str = Field(primary_key=True)
    created_at: datetime = _utc()
    done_at: datetime | None = _utc(nullable=True)


class UserRow(SQLModel, table=True):
    __tablename__ = "users"
    __table_args__ = (
        sa.UniqueConstraint("platform", "platform_user_id", name="uq_users_platform_user"),
        {"sqlite_autoincrement": True},  # never reuse a user id
    )

    id: int | None = Field(default=None, primary_key=True)
    platform: str
    platform_user_id: str
    chat_id: str
    display_name: str = ""
    tier: str = "free"
    active: bool = True
    created_at: datetime = _utc()


class PreferencesRow(SQLModel, table=True):
    __tablename__ = "preferences"

    user_id: int = Field(primary_key=True, foreign_key="users.id", ondelete="CASCADE")
    symbols: str = Field(default="[]", sa_type=sa.Text)  # JSON list
    asset_classes: str = Field(default="[]", sa_type=sa.Text)  # JSON list
    timeframes: str = Field(default="[]", sa_type=sa.Text)  # JSON list
    min_confidence: int = 1
    risk: str = "medium"
    quiet_start: str | None = None
    quiet_end: str | None = None
    quiet_tz: str | None = None


class DeliveryRow(SQLModel, table=True):
    __tablename__ = "deliveries"
    __table_args__ = (
        # one row per signal, recipient, kind and channel: a user may get a signal in chat, by email and by webhook
        sa.UniqueConstraint("signal_id", "user_id", "kind", "channel", name="uq_deliveries_signal_user_kind_channel"),
        sa.Index("ix_deliveries_channel_status_not_before", "channel", "status", "not_before"),
        sa.Index("ix_deliveries_user_status_sent_at", "user_id", "status", "sent_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    signal_id: str = Field(foreign_key="signals.id", ondelete="CASCADE")
    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE")
    kind: str
    channel: str
    status: str = "pending"
    attempts: int = 0
    not_before: datetime | None = _utc(nullable=True)
    message_ref: str | None = None
    reply_to: str | None = None
    error: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime = _utc()
    sent_at: datetime | None = _utc(nullable=True)
    # who claimed a SENDING row and when (host:pid, as in heartbeats): only rows of a process that stopped
    # beating, or claims older than any batch takes, go back to the queue (storage.outbox.requeue_stale_sending)
    claimed_by: str | None = None
    claimed_at: datetime | None = _utc(nullable=True)


class DeliveryPartRow(SQLModel, table=True):
    """How far an unfinished delivery in parts got (a chart, then the text): the retry sends only the rest."""

    __tablename__ = "delivery_parts"

    delivery_id: int = Field(primary_key=True, foreign_key="deliveries.id", ondelete="CASCADE")
    parts_sent: int
    first_ref: str
    layout: str = ""


class HeartbeatRow(SQLModel, table=True):
    """One row per process: the readiness probe's write (a transaction that must commit)."""

    __tablename__ = "heartbeats"

    process: str = Field(primary_key=True)
    at: datetime = _utc()


def _table(model: type[SQLModel]) -> sa.Table:
    table = getattr(model, "__table__")
    assert isinstance(table, sa.Table)
    return table


INSTRUMENTS = _table(InstrumentRow)
BARS = _table(BarRow)
SIGNALS = _table(SignalRow)
OUTCOMES = _table(SignalOutcomeRow)
EXITS = _table(SignalExitRow)
UPDATES = _table(SignalUpdateRow)
USERS = _table(UserRow)
PREFERENCES = _table(PreferencesRow)
CHAIN = _table(ChainRow)
DELIVERIES = _table(DeliveryRow)
HEARTBEATS = _table(HeartbeatRow)
DELIVERY_PARTS = _table(DeliveryPartRow)
FANOUTS = _table(FanoutRow)


# admin: audit log, request counters, link codes, accounts (storage.admin)

class AdminAuditRow(SQLModel, table=True):
    """One admin command attempt, allowed or not. No foreign key: the trail outlives deleted users."""

    __tablename__ = "admin_audit"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _utc(index=True)
    platform: str
    platform_user_id: str
    user_id: int | None = None
    command: str
    arguments: str = Field(default="", sa_type=sa.Text)
    outcome: str  # AuditOutcome
    detail: str = Field(default="", sa_type=sa.Text)


class RequestCountRow(SQLModel, table=True):
    """Metered requests of one subject (an account, or an identity not yet subscribed) on one UTC day."""

    __tablename__ = "request_counts"

    subject: str = Field(primary_key=True)
    day: str = Field(primary_key=True)  # YYYY-MM-DD, UTC
    count: int = 0


class LinkCodeRow(SQLModel, table=True):
    __tablename__ = "link_codes"

    code_hash: str = Field(primary_key=True)  # sha256 hex of the code; the code itself is never stored
    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE", index=True)  # who issued it
    created_at: datetime = _utc()
    expires_at: datetime = _utc()
    used_at: datetime | None = _utc(nullable=True)
    used_by: int | None = None


class AccountMemberRow(SQLModel, table=True):
    __tablename__ = "account_members"

    user_id: int = Field(primary_key=True, foreign_key="users.id", ondelete="CASCADE")
    account_id: int = Field(index=True)  # the user id of the account's kept identity
    linked_at: datetime = _utc()


class ApiKeyRow(SQLModel, table=True):
    """A REST API key (storage.api_keys): only its SHA-256 is kept; `prefix` is what lists show of it."""

    __tablename__ = "api_keys"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE", index=True)
    name: str = ""
    prefix: str
    key_hash: str = Field(unique=True)
    created_at: datetime = _utc()
    last_used_at: datetime | None = _utc(nullable=True)
    revoked_at: datetime | None = _utc(nullable=True)


class ApiUsageRow(SQLModel, table=True):
    """Requests per API key, endpoint (its route template) and UTC day, counted in memory and added up here."""

    __tablename__ = "api_usage"

    key_id: int = Field(primary_key=True, foreign_key="api_keys.id", ondelete="CASCADE")
    day: str = Field(primary_key=True)  # YYYY-MM-DD, UTC
    endpoint: str = Field(primary_key=True)  # "GET /api/v1/signals/{signal_id}"
    count: int = 0
    errors: int = 0  # answers 4xx/5xx, 429s included


class WebLoginRow(SQLModel, table=True):
    """A one-time dashboard login link (storage.api_keys.WebLogins): only the token's SHA-256 is kept."""

    __tablename__ = "web_logins"

    token_hash: str = Field(primary_key=True)
    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE", index=True)
    created_at: datetime = _utc()
    expires_at: datetime = _utc()
    used_at: datetime | None = _utc(nullable=True)


AUDIT = _table(AdminAuditRow)
REQUEST_COUNTS = _table(RequestCountRow)
LINK_CODES = _table(LinkCodeRow)
ACCOUNT_MEMBERS = _table(AccountMemberRow)
API_KEYS = _table(ApiKeyRow)
API_USAGE = _table(ApiUsageRow)
WEB_LOGINS = _table(WebLoginRow)
ADMIN_TABLES = (AUDIT, REQUEST_COUNTS, LINK_CODES, ACCOUNT_MEMBERS)


# billing (storage.billing)

class SubscriptionRow(SQLModel, table=True):
    __tablename__ = "billing_subscriptions"
    __table_args__ = (sa.UniqueConstraint("provider", "external_id", name="uq_billing_subscriptions_provider_id"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE", index=True)
    provider: str
    external_id: str
    tier: str
    status: str
    current_period_end: datetime | None = _utc(nullable=True)
    past_due_since: datetime | None = _utc(nullable=True)
    cancel_at_period_end: bool = False
    customer_id: str | None = Field(default=None, index=True)
    status_at: datetime | None = _utc(nullable=True)
    updated_at: datetime = _utc()


class BillingEventRow(SQLModel, table=True):
    __tablename__ = "billing_events"

    provider: str = Field(primary_key=True)
    event_id: str = Field(primary_key=True)
    event_type: str
    received_at: datetime = _utc()


class RejectedEventRow(SQLModel, table=True):
    """A provider event that cannot be applied (malformed content); never in billing_events."""

    __tablename__ = "billing_rejected_events"

    provider: str = Field(primary_key=True)
    event_id: str = Field(primary_key=True)
    event_type: str | None = None
    reason: str = Field(sa_type=sa.Text)
    deliveries: int = 1
    first_received_at: datetime = _utc()
    last_received_at: datetime = _utc()


class PaymentRow(SQLModel, table=True):
    __tablename__ = "billing_payments"

    provider: str = Field(primary_key=True)
    charge_id: str = Field(primary_key=True)
    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE", index=True)
    tier: str
    amount: int
    currency: str
    provider_charge_id: str | None = None
    recurring: bool = False
    paid_at: datetime = _utc()
    period_end: datetime | None = _utc(nullable=True)


class CheckoutRow(SQLModel, table=True):
    __tablename__ = "billing_checkouts"

    id: str = Field(primary_key=True)  # Stripe Checkout Session id, or a Stars invoice payload
    provider: str
    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE", index=True)
    tier: str
    amount: int | None = None
    currency: str | None = None
    status: str = "open"
    url: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime = _utc()
    completed_at: datetime | None = _utc(nullable=True)


class BillingAccountRow(SQLModel, table=True):
    __tablename__ = "billing_accounts"

    user_id: int = Field(primary_key=True, foreign_key="users.id", ondelete="CASCADE")
    tier: str = "free"  # what billing last gave this user
    evaluated_at: datetime = _utc()


SUBSCRIPTIONS = _table(SubscriptionRow)
EVENTS = _table(BillingEventRow)
REJECTED = _table(RejectedEventRow)
PAYMENTS = _table(PaymentRow)
CHECKOUTS = _table(CheckoutRow)
ACCOUNTS = _table(BillingAccountRow)


# extra delivery channels and digests (storage.channels)

class UserChannelRow(SQLModel, table=True):
    __tablename__ = "user_channels"

    user_id: int = Field(primary_key=True, foreign_key="users.id", ondelete="CASCADE")
    channel: str = Field(primary_key=True)  # "email" | "webhook"
    address: str = Field(sa_type=sa.Text)  # email address or https URL
    secret: str | None = Field(default=None, sa_type=sa.Text)  # webhook signing secret
    format: str | None = Field(default=None, max_length=16)  # webhook payload format: None/"v1" ours, "seed" the seed's
    updated_at: datetime = Field(sa_type=UTCDateTime)


USER_CHANNELS = _table(UserChannelRow)


class DigestRow(SQLModel, table=True):
    __tablename__ = "digests"

    user_id: int = Field(primary_key=True, foreign_key="users.id", ondelete="CASCADE")
    hour_utc: int  # 0..23: the digest goes out at the first run of send_digests at or after this hour
    last_sent_on: str | None = None  # ISO date (UTC) of the last digest claimed


DIGESTS = _table(DigestRow)


# stored news verdicts (storage.news)

class NewsVerdictRow(SQLModel, table=True):
    __tablename__ = "news_verdicts"
    __table_args__ = (
        sa.UniqueConstraint("item_id", "symbol", "provider", "model", "prompt_version", name="uq_news_verdict"),
        sa.Index("ix_news_verdicts_symbol_published", "symbol", "published_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    item_id: str = Field(index=True, max_length=40)
    symbol: str = Field(max_length=32)  # "" = market-wide
    published_at: datetime = Field(sa_type=UTCDateTime)
    analysed_at: datetime = Field(sa_type=UTCDateTime)
    provider: str = Field(max_length=32)
    model: str = Field(max_length=120)
    prompt_version: str = Field(max_length=40)
    market_wide: bool = False
    title: str = Field(default="", sa_type=sa.Text)
    verdict: str = Field(sa_type=sa.Text)  # NewsVerdict as JSON
    sentiment: float  # copied out of the verdict for queries
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0


NEWS_VERDICTS = _table(NewsVerdictRow)


# what subscribers do with signals (storage.follow)

class SignalFeedbackRow(SQLModel, table=True):
    """A subscriber's own record of one signal: took it (at `fill_price`, the market when it reached them), skipped
    it, and for one taken, closed at market. One row per user and signal (storage.follow.FeedbackStore)."""

    __tablename__ = "signal_feedback"

    user_id: int = Field(primary_key=True, foreign_key="users.id", ondelete="CASCADE")
    signal_id: str = Field(primary_key=True, foreign_key="signals.id", ondelete="CASCADE", index=True)
    decision: str  # "took" | "skipped"
    decided_at: datetime = _utc()
    fill_price: float | None = None  # took: the last close when the signal reached the user (or when they tapped)
    fill_at: datetime | None = _utc(nullable=True)
    closed_price: float | None = None  # closed at market by the user
    closed_at: datetime | None = _utc(nullable=True)


class WatchRow(SQLModel, table=True):
    """A symbol on a user's watchlist: a signal on it reaches them whatever their symbol, class, timeframe and
    confidence preferences (the tier and quiet hours still apply)."""

    __tablename__ = "watchlist"

    user_id: int = Field(primary_key=True, foreign_key="users.id", ondelete="CASCADE")
    symbol: str = Field(primary_key=True, max_length=32, index=True)
    added_at: datetime = _utc()


SIGNAL_FEEDBACK = _table(SignalFeedbackRow)
WATCHLIST = _table(WatchRow)
