"""Who receives a signal: tier entitlements, preferences and quiet hours. Pure."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from core.domain import QuietHours, Signal, User
from core.tiers import entitlements


@dataclass(frozen=True, slots=True)
class Admission:
    admitted: bool
    reason: str
    not_before: datetime | None = None  # deliver no earlier than this (quiet hours)


def admit(user: User, signal: Signal, now: datetime, sent_this_month: int) -> Admission:
    """Whether `user` should receive `signal`, and when."""
    ent = entitlements(user.tier)
    prefs = user.preferences
    checks = (
        (user.active, "unsubscribed"),
        (signal.asset_class in ent.asset_classes, f"{signal.asset_class} not in the {user.tier} tier"),
        (signal.timeframe in ent.timeframes, f"{signal.timeframe} not in the {user.tier} tier"),
        (ent.signals_per_month is None or sent_this_month < ent.signals_per_month, "monthly signal quota used"),
        (not prefs.symbols or signal.symbol in prefs.symbols, "symbol not in preferences"),
        (not prefs.asset_classes or signal.asset_class in prefs.asset_classes, "asset class not in preferences"),
        (not prefs.timeframes or signal.timeframe in prefs.timeframes, "timeframe not in preferences"),
        (signal.confidence >= prefs.min_confidence, "confidence below the user's minimum"),
    )
    for ok, reason in checks:
        if not ok:
            return Admission(False, reason)
    if prefs.quiet_hours is not None:
        end = quiet_until(prefs.quiet_hours, now)
        if end is not None:
            if end >= signal.expires_at:
                return Admission(False, "quiet hours last past the signal's expiry")
            return Admission(True, "after quiet hours", end)
    return Admission(True, "admitted")


def parse_hhmm(text: str) -> time:
    hh, mm = text.split(":")
    return time(int(hh), int(mm))


def quiet_until(q: QuietHours, now: datetime) -> datetime | None:
    """If `now` falls inside the quiet window, the UTC moment it ends; otherwise None.
    The window may wrap midnight (22:00-07:00). Start == end means no window."""
    tz = ZoneInfo(q.timezone)
    local = now.astimezone(tz)
    start, end = parse_hhmm(q.start), parse_hhmm(q.end)
    if start == end:
        return None
    t = local.time().replace(tzinfo=None)
    inside = start <= t < end if start < end else (t >= start or t < end)
    if not inside:
        return None
    end_day = local.date() if t < end else local.date() + timedelta(days=1)
    end_local = datetime.combine(end_day, end, tzinfo=tz)
    return end_local.astimezone(now.tzinfo)
