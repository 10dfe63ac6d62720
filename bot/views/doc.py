"""Doc: the small immutable document every command returns and every transport renders."""
from __future__ import annotations

from dataclasses import dataclass, field


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
class Doc:
    heading: str
    body: str = ""
    fields: tuple[tuple[str, str], ...] = ()
    table: Table | None = None
    image: Image | None = None
    buttons: tuple[Button, ...] = ()
    note: str = ""
    tone: str = "info"  # info | success | warning | error

    @classmethod
    def error(cls, text: str, hint: str = "") -> "Doc":
        return cls(heading="Sorry", body=text, note=hint, tone="error")
