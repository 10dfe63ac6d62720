"""The screener's filters: `rsi<30 sector=tech class=equity trend=up score>=0.5`. Pure.

Numeric fields (rsi, adx, score, confidence, price, z) take <, <=, >, >=, = and a number; text fields take =:
`class` (equity, crypto, fx, index), `sector` (a case-insensitive part of the sector's name), `trend` (up, down,
flat) and `side` (buy, sell: the side the setup leans to). Every filter must hold.
"""
from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from core.errors import UserInputError

NUMERIC = {"rsi": "RSI(14)", "adx": "ADX(14)", "score": "setup score (0..1)", "confidence": "confidence (1..100)",
           "price": "last close", "z": "z-score (20)"}
TEXT = {"class": ("equity", "crypto", "fx", "index"), "sector": (), "trend": ("up", "down", "flat"),
        "side": ("buy", "sell")}
ALIASES = {"asset": "class", "assets": "class", "asset_class": "class", "setup": "score", "conf": "confidence",
           "zscore": "z", "direction": "side"}
_OPS: dict[str, Callable[[float, float], bool]] = {"<=": operator.le, ">=": operator.ge, "<": operator.lt,
                                                    ">": operator.gt, "=": lambda a, b: math.isclose(a, b)}
_TERM = re.compile(r"^(?P<field>[a-z_]+)\s*(?P<op><=|>=|<|>|=)\s*(?P<value>.+)$")
TREND_BAND = 0.2  # |trend score| under this is flat
MAX_FILTERS = 8


@dataclass(frozen=True, slots=True)
class ScreenRow:
    symbol: str
    name: str
    asset_class: str
    sector: str
    price: float
    rsi: float
    adx: float
    z: float
    trend: float  # -1..1 (core.setups.trend)
    score: float  # the setup's score, 0..1
    side: str  # "buy" | "sell": where the setup leans
    confidence: int
    setup: str  # the setup's name

    @property
    def trend_word(self) -> str:
        return "up" if self.trend >= TREND_BAND else "down" if self.trend <= -TREND_BAND else "flat"


@dataclass(frozen=True, slots=True)
class Filter:
    field: str
    op: str
    value: float | str

    def __str__(self) -> str:
        value = f"{self.value:g}" if isinstance(self.value, float) else self.value
        return f"{self.field}{self.op}{value}"

    def admits(self, row: ScreenRow) -> bool:
        if self.field in NUMERIC:
            x = float(getattr(row, self.field))
            return not math.isnan(x) and _OPS[self.op](x, float(self.value))
        text = str(self.value)
        if self.field == "class":
            return row.asset_class == text
        if self.field == "sector":
            return text in row.sector.lower()
        if self.field == "trend":
            return row.trend_word == text
        return row.side == text

    @property
    def needs_data(self) -> bool:
        """Whether the row's market data is needed to decide (class and sector are known without it)."""
        return self.field not in ("class", "sector")


def parse_filters(args: Sequence[str]) -> list[Filter]:
    """The filters in `args` (terms may be written `rsi<30` or `rsi < 30`); a clear error for anything else."""
    text = " ".join(args).strip().lower()
    terms = re.findall(r"[a-z_]+\s*(?:<=|>=|<|>|=)\s*[^\s<>=]+", text)
    leftover = re.sub(r"[a-z_]+\s*(?:<=|>=|<|>|=)\s*[^\s<>=]+", " ", text).strip()
    if leftover:
        raise UserInputError(f"'{leftover[:40]}' is not a filter. Write them like rsi<30 sector=tech trend=up "
                             f"(fields: {', '.join([*NUMERIC, *TEXT])}).")
    if len(terms) > MAX_FILTERS:
        raise UserInputError(f"At most {MAX_FILTERS} filters.")
    out = []
    for term in terms:
        m = _TERM.match(term.replace(" ", ""))
        assert m is not None
        field, op, value = ALIASES.get(m["field"], m["field"]), m["op"], m["value"]
        if field in NUMERIC:
            try:
                number = float(value.rstrip("%"))
            except ValueError:
                raise UserInputError(f"{field} needs a number, as in {field}>50 (got '{value[:20]}').") from None
            if not math.isfinite(number):
                raise UserInputError(f"{field} needs a finite number.")
            out.append(Filter(field, op, number))
        elif field in TEXT:
            if op != "=":
                raise UserInputError(f"{field} takes =, as in {field}={TEXT[field][0] if TEXT[field] else 'tech'}.")
            if field == "class" and value in ("stock", "stocks", "equities"):
                value = "equity"
            allowed = TEXT[field]
            if allowed and value not in allowed:
                raise UserInputError(f"{field} is one of {', '.join(allowed)} (got '{value[:20]}').")
            out.append(Filter(field, op, value))
        else:
            raise UserInputError(f"Unknown filter field '{field[:20]}' (fields: {', '.join([*NUMERIC, *TEXT])}).")
    return out


def screen(rows: Sequence[ScreenRow], filters: Sequence[Filter]) -> list[ScreenRow]:
    """The rows every filter admits, the strongest setups first."""
    return sorted((r for r in rows if all(f.admits(r) for f in filters)), key=lambda r: (-r.score, r.symbol))
