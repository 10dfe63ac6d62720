"""Who receives a signal: tier entitlements, preferences and quiet hours. Pure."""
from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from core.domain import Preferences, QuietHours, Signal, Tier, User
from core.tiers import entitlements


@dataclass(frozen=True, slots=True)
class Admission:
    admitted: bool
    reason: str
    not_before: datetime | None = None  # deliver no earlier than this (quiet hours)


def admit(user: User, signal: Signal, now: datetime, sent_this_month: int, *, watched: bool = False) -> Admission:
    """Whether `user` should receive `signal`, and when. `watched`: the symbol is on the user's watchlist, so
    their symbol, class, timeframe and confidence preferences do not filter it out (tier, quota and quiet hours
    still apply)."""
    if not user.active:
        return _UNSUBSCRIBED
    refused = _tier_refusal(user.tier, signal)
    if refused is not None:
        return refused
    if _over_quota(user.tier, sent_this_month):
        return _QUOTA_USED
    return _by_preferences(user.preferences, signal, now, signal.expires_at, watched)


def admit_many(users: Iterable[User], signal: Signal, now: datetime,
               sent_this_month: Mapping[int, int], *, expires_at: datetime | None = None,
               watchers: Collection[int] = ()) -> list[tuple[User, Admission]]:
    """admit() for each user (same answers), for a fan-out: users who share a tier and preferences share the
    work, so 10,000 users with a few hundred distinct settings cost a few hundred evaluations.

    `now` is wall time (quiet hours are a person's); `expires_at` the signal's expiry on that clock when the
    market runs on another (an offline replay): default signal.expires_at. `watchers`: ids of the users who
    watch the signal's symbol (admit's `watched`)."""
    expiry = expires_at or signal.expires_at
    by_tier: dict[Tier, Admission | None] = {}
    by_prefs: dict[tuple[Preferences, bool], Admission] = {}
    out: list[tuple[User, Admission]] = []
    for user in users:
        if not user.active:
            out.append((user, _UNSUBSCRIBED))
            continue
        tier = user.tier
        if tier in by_tier:
            refused = by_tier[tier]
        else:
            refused = by_tier[tier] = _tier_refusal(tier, signal)
        if refused is not None:
            out.append((user, refused))
        elif _over_quota(tier, sent_this_month.get(user.id, 0)):
            out.append((user, _QUOTA_USED))
        else:
            key = (user.preferences, user.id in watchers)
            decided = by_prefs.get(key)
            if decided is None:
                decided = by_prefs[key] = _by_preferences(key[0], signal, now, expiry, key[1])
            out.append((user, decided))
    return out


_UNSUBSCRIBED = Admission(False, "unsubscribed")
_QUOTA_USED = Admission(False, "monthly signal quota used")


def _tier_refusal(tier: Tier, signal: Signal) -> Admission | None:
    ent = entitlements(tier)
    if signal.asset_class not in ent.asset_classes:
        return Admission(False, f"{signal.asset_class} not in the {tier} tier")
    if signal.timeframe not in ent.timeframes:
        return Admission(False, f"{signal.timeframe} not in the {tier} tier")
    return None


def _over_quota(tier: Tier, sent_this_month: int) -> bool:
    quota = entitlements(tier).signals_per_month
    return quota is not None and sent_this_month >= quota


def _by_preferences(prefs: Preferences, signal: Signal, now: datetime, expires_at: datetime,
                    watched: bool = False) -> Admission:
    checks = () if watched else (
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
            if end >= expires_at:
                return Admission(False, "quiet hours last past the signal's expiry")
            return Admission(True, "after quiet hours", end)
    return _ADMITTED


_ADMITTED = Admission(True, "admitted")


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
