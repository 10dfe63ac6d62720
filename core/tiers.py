"""What each subscription tier is entitled to."""
from __future__ import annotations

from dataclasses import dataclass

from core.domain import AssetClass, Tier, Timeframe

ALL_CLASSES = frozenset({AssetClass.EQUITY, AssetClass.CRYPTO, AssetClass.FX})


@dataclass(frozen=True, slots=True)
class Entitlements:
    signals_per_month: int | None  # None: unlimited
    requests_per_day: int | None  # on-demand /signal analyses
    asset_classes: frozenset[AssetClass]
    timeframes: frozenset[Timeframe]
    charts: bool
    channels: frozenset[str]  # delivery channels beyond the chat itself


ENTITLEMENTS: dict[Tier, Entitlements] = {
    Tier.FREE: Entitlements(20, 10, frozenset({AssetClass.EQUITY, AssetClass.CRYPTO}), frozenset({Timeframe.D1}),
                            False, frozenset()),
    Tier.HOBBYIST: Entitlements(100, 50, ALL_CLASSES, frozenset({Timeframe.H4, Timeframe.D1}), True, frozenset()),
    Tier.TRADER: Entitlements(500, 300, ALL_CLASSES, frozenset({Timeframe.H1, Timeframe.H4, Timeframe.D1}), True,
                              frozenset({"email"})),
    Tier.PROFESSIONAL: Entitlements(None, None, ALL_CLASSES, frozenset(Timeframe), True, frozenset({"email", "webhook"})),
}


def entitlements(tier: Tier) -> Entitlements:
    return ENTITLEMENTS[tier]
