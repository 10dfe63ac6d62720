"""What each subscription tier is entitled to."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone

from core.domain import AssetClass, Tier, Timeframe

ALL_CLASSES = frozenset({AssetClass.EQUITY, AssetClass.CRYPTO, AssetClass.FX})
# The timeframes the service offers: the ones it scans (the books: 1d and 4h; the opt-in setups: 1h too) and
# answers on demand. 1m, 5m and 15m are not offered: nothing here is fitted to those horizons, and a tier must not
# sell what the service does not do.
OFFERED_TIMEFRAMES = (Timeframe.H1, Timeframe.H4, Timeframe.D1)


@dataclass(frozen=True, slots=True)
class Entitlements:
    signals_per_month: int | None  # None: unlimited
    requests_per_day: int | None  # on-demand /signal analyses
    asset_classes: frozenset[AssetClass]
    timeframes: frozenset[Timeframe]
    charts: bool
    channels: frozenset[str]  # delivery channels beyond the chat itself
    api_per_minute: int = 0  # REST API requests per minute per key (0: no API access)


ENTITLEMENTS: dict[Tier, Entitlements] = {
    Tier.FREE: Entitlements(20, 10, frozenset({AssetClass.EQUITY, AssetClass.CRYPTO}), frozenset({Timeframe.D1}),
                            False, frozenset()),
    Tier.HOBBYIST: Entitlements(100, 50, ALL_CLASSES, frozenset({Timeframe.H4, Timeframe.D1}), True, frozenset()),
    Tier.TRADER: Entitlements(500, 300, ALL_CLASSES, frozenset({Timeframe.H1, Timeframe.H4, Timeframe.D1}), True,
                              frozenset({"email"})),
    Tier.PROFESSIONAL: Entitlements(None, None, ALL_CLASSES, frozenset(OFFERED_TIMEFRAMES), True,
                                    frozenset({"email", "webhook"}), api_per_minute=600),
}


def entitlements(tier: Tier) -> Entitlements:
    return ENTITLEMENTS[tier]


# Features a command can require (Command.requires): "charts" and the delivery channels beyond the chat.
FEATURES = ("charts", "email", "webhook", "api")


def has_feature(tier: Tier, feature: str) -> bool:
    """Whether `tier` includes `feature` (one of FEATURES)."""
    ent = entitlements(tier)
    if feature == "charts":
        return ent.charts
    if feature in ("email", "webhook"):
        return feature in ent.channels
    if feature == "api":
        return ent.api_per_minute > 0
    raise ValueError(f"unknown feature {feature!r} (one of {', '.join(FEATURES)})")


def lowest_tier_with(feature: str) -> Tier | None:
    """The cheapest tier that includes `feature` (None if none does)."""
    return next((t for t in Tier if has_feature(t, feature)), None)


def more_requests_than(tier: Tier) -> Tier | None:
    """The cheapest tier with a larger daily on-demand request allowance than `tier` (None: nothing more)."""
    mine = entitlements(tier).requests_per_day
    if mine is None:
        return None
    for t in Tier:
        theirs = entitlements(t).requests_per_day
        if t.rank > tier.rank and (theirs is None or theirs > mine):
            return t
    return None


def next_utc_midnight(now: datetime) -> datetime:
    """When the daily request allowance counted on `now`'s UTC day resets."""
    day = now.astimezone(timezone.utc).date()
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=timezone.utc)
