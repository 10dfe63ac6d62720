"""Turning what a person typed into typed arguments. Every failure is a UserInputError with a usage hint."""
from __future__ import annotations

import re
from dataclasses import dataclass

from core.domain import AssetClass, RiskTolerance, Tier, Timeframe
from core.errors import UserInputError
from core.tiers import OFFERED_TIMEFRAMES

MAX_COMMAND_LENGTH = 1000
_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9.\-=^]{0,19}$")
_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True, slots=True)
class CommandLine:
    name: str  # without the slash, lower case
    args: tuple[str, ...]


def split_command(text: str) -> CommandLine:
    """'/Signal@MyBot aapl 1d' -> CommandLine('signal', ('aapl', '1d'))."""
    text = text.strip()
    if not text:
        raise UserInputError("Empty message. Send /help to see the commands.")
    if len(text) > MAX_COMMAND_LENGTH:
        raise UserInputError(f"That message is too long ({len(text)} characters, at most {MAX_COMMAND_LENGTH}).")
    if not text.startswith("/"):
        raise UserInputError("Commands start with '/'. Send /help to see them.")
    head, *args = text.split()
    name = head[1:].split("@", 1)[0].lower()
    if not name or not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", name):
        raise UserInputError(f"'{head[:40]}' is not a command. Send /help to see them.")
    return CommandLine(name, tuple(args))


def parse_symbol(text: str) -> str:
    sym = text.strip().upper().replace("/", "-")
    if re.fullmatch(r"[A-Z0-9]{2,10}USDT", sym):
        sym = sym[:-4] + "-USDT"  # BTCUSDT -> BTC-USDT
    if not _SYMBOL.match(sym):
        raise UserInputError(f"'{text[:30]}' does not look like a symbol (for example AAPL, BTC-USDT, EURUSD).")
    return sym


def parse_timeframe(text: str) -> Timeframe:
    """A timeframe the service offers (core.tiers.OFFERED_TIMEFRAMES)."""
    try:
        tf = Timeframe.parse(text)
    except ValueError as exc:
        raise UserInputError(str(exc).capitalize() + ".") from None
    if tf not in OFFERED_TIMEFRAMES:
        offered = ", ".join(t.value for t in OFFERED_TIMEFRAMES)
        raise UserInputError(f"{tf.value} is not offered: signals and analyses are on {offered}.")
    return tf


def parse_list(text: str) -> list[str]:
    return [t for t in re.split(r"[,\s]+", text.strip()) if t]


def parse_asset_class(text: str) -> AssetClass:
    aliases = {"stock": "equity", "stocks": "equity", "equities": "equity", "forex": "fx", "cryptos": "crypto"}
    key = aliases.get(text.lower(), text.lower())
    try:
        ac = AssetClass(key)
    except ValueError:
        raise UserInputError(f"Unknown asset class '{text[:20]}' (use equity, crypto or fx).") from None
    if ac is AssetClass.INDEX:
        raise UserInputError("Indices are not traded by signals (use equity, crypto or fx).")
    return ac


def parse_risk(text: str) -> RiskTolerance:
    try:
        return RiskTolerance(text.lower())
    except ValueError:
        raise UserInputError(f"Unknown risk level '{text[:20]}' (use low, medium or high).") from None


def parse_confidence(text: str) -> int:
    """1..100, or "off" (1: no filter of one's own beyond the risk manager's)."""
    if text.lower() == "off":
        return 1
    if not re.fullmatch(r"\d{1,3}", text):
        raise UserInputError(f"Minimum confidence must be a whole number from 1 to 100 or 'off', not '{text[:20]}'.")
    value = int(text)
    if not 1 <= value <= 100:
        raise UserInputError(f"Minimum confidence must be from 1 to 100, not {value}.")
    return value


def parse_hhmm(text: str) -> str:
    m = _HHMM.match(text)
    if not m:
        raise UserInputError(f"'{text[:20]}' is not a time of day (use HH:MM, for example 22:00).")
    return f"{int(m.group(1)):02d}:{m.group(2)}"


def parse_period_days(text: str) -> int | None:
    """'30d' -> 30, '90d' -> 90, 'all' -> None."""
    t = text.lower()
    if t == "all":
        return None
    m = re.fullmatch(r"(\d{1,4})d?", t)
    if not m or not 1 <= int(m.group(1)) <= 3650:
        raise UserInputError(f"Period must look like 30d or 90d (or 'all'), not '{text[:20]}'.")
    return int(m.group(1))


def parse_count(text: str, low: int, high: int, what: str) -> int:
    if not re.fullmatch(r"\d{1,4}", text) or not low <= int(text) <= high:
        raise UserInputError(f"{what} must be a number from {low} to {high}, not '{text[:20]}'.")
    return int(text)


PLATFORMS = ("console", "telegram", "discord")
_PLATFORM_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


@dataclass(frozen=True, slots=True)
class UserRef:
    """A user named by an admin: our user id, or a platform identity."""

    user_id: int | None = None
    platform: str | None = None
    platform_user_id: str | None = None

    def __str__(self) -> str:
        return str(self.user_id) if self.user_id is not None else f"{self.platform}:{self.platform_user_id}"


def parse_user_ref(text: str) -> UserRef:
    """'42' (our user id) or 'telegram:123456' (a platform identity)."""
    t = text.strip()
    if re.fullmatch(r"\d{1,12}", t):
        return UserRef(user_id=int(t))
    platform, sep, pid = t.partition(":")
    if sep and platform.lower() in PLATFORMS and _PLATFORM_ID.match(pid):
        return UserRef(platform=platform.lower(), platform_user_id=pid)
    raise UserInputError(f"'{text[:40]}' is not a user: give our user id (42) or platform:id (telegram:123456).")


def parse_tier(text: str) -> Tier:
    try:
        return Tier(text.strip().lower())
    except ValueError:
        raise UserInputError(f"Unknown tier '{text[:20]}' (one of {', '.join(t.value for t in Tier)}).") from None
