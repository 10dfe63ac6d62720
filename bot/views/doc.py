"""Doc: the small immutable document every command returns and every transport renders."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Button:
    label: str
    command: str  # the command text it runs, e.g. "/signal AAPL"


@dataclass(frozen=True, slots=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True, slots=True)
class Image:
    data: bytes
    filename: str = "chart.png"
    caption: str = ""


@dataclass(frozen=True, slots=True)
class Invoice:
    """A payment the transport asks for natively (Telegram: a Stars invoice). Transports without payments ignore it;
    the Doc's text must make sense without it."""

    title: str  # 1-32 characters
    description: str  # 1-255 characters
    payload: str  # 1-128 bytes, ours: what pre-checkout and the successful payment are matched against
    currency: str  # "XTR": Telegram Stars
    amount: int  # in the currency's smallest unit (Stars: whole stars)
    label: str = "Subscription"
    subscription_period: int | None = None  # seconds between charges; Telegram Stars allow 2592000 (30 days)
    pay_label: str = "Pay"


@dataclass(frozen=True, slots=True)
class Doc:
    heading: str
    body: str = ""
    fields: tuple[tuple[str, str], ...] = ()
    table: Table | None = None
    image: Image | None = None
    buttons: tuple[Button, ...] = ()
    note: str = ""
    tone: str = "info"  # info | success | warning | error
    invoice: Invoice | None = None
    private: bool = False  # operator figures: asked in a group, the answer goes to the asker's private chat

    @classmethod
    def error(cls, text: str, hint: str = "") -> "Doc":
        return cls(heading="Sorry", body=text, note=hint, tone="error")
