from __future__ import annotations

import dataclasses
from datetime import timedelta

from core.audience import admit, quiet_until
from core.domain import (
    AssetClass, Direction, Preferences, QuietHours, Signal, Tier, Timeframe, User,
)
from tests.conftest import utc

NOW = utc(2024, 3, 5, 12, 0)


def sig(asset=AssetClass.EQUITY, tf=Timeframe.D1, conf=70, symbol="AAPL") -> Signal:
    return Signal(id="s", symbol=symbol, asset_class=asset, timeframe=tf, direction=Direction.LONG, entry=100,
                  target=104, stop=98, confidence=conf, position_size=0.05, issued_at=NOW,
                  expires_at=NOW + timedelta(days=14), reasoning="", strategy="t")


def user(tier=Tier.FREE, **prefs) -> User:
    return User(id=1, platform="console", platform_user_id="u", chat_id="c", tier=tier,
                preferences=Preferences(**prefs))


def test_tier_limits_asset_classes_timeframes_and_quota():
    assert admit(user(), sig(), NOW, 0).admitted
    assert not admit(user(), sig(asset=AssetClass.FX), NOW, 0).admitted
    assert not admit(user(), sig(tf=Timeframe.H1), NOW, 0).admitted
    assert admit(user(Tier.TRADER), sig(asset=AssetClass.FX, tf=Timeframe.H1), NOW, 0).admitted
    assert not admit(user(), sig(), NOW, 20).admitted  # free: 20 a month
    assert admit(user(Tier.PROFESSIONAL), sig(tf=Timeframe.H1), NOW, 10_000).admitted
    # no tier is sold 1m, 5m or 15m: the service neither scans nor answers them
    assert not any(admit(user(t), sig(tf=tf), NOW, 0).admitted for t in Tier for tf in (Timeframe.M1, Timeframe.M5,
                                                                                       Timeframe.M15))


def test_preferences_filter():
    assert not admit(user(symbols=frozenset({"MSFT"})), sig(), NOW, 0).admitted
    assert admit(user(symbols=frozenset({"AAPL"})), sig(), NOW, 0).admitted
    assert not admit(user(asset_classes=frozenset({AssetClass.CRYPTO})), sig(), NOW, 0).admitted
    assert not admit(user(Tier.TRADER, timeframes=frozenset({Timeframe.H1})), sig(), NOW, 0).admitted
    assert not admit(user(min_confidence=80), sig(conf=79), NOW, 0).admitted
    assert admit(user(min_confidence=80), sig(conf=80), NOW, 0).admitted
    inactive = dataclasses.replace(user(), active=False)
    assert not admit(inactive, sig(), NOW, 0).admitted


def test_quiet_hours_defer_delivery_to_their_end_in_the_users_zone():
    # 12:00 UTC is 21:00 in Tokyo: inside 20:00-08:00, which ends at 08:00 JST = 23:00 UTC
    q = QuietHours("20:00", "08:00", "Asia/Tokyo")
    a = admit(user(quiet_hours=q), sig(), NOW, 0)
    assert a.admitted and a.not_before == utc(2024, 3, 5, 23, 0)
    assert quiet_until(QuietHours("09:00", "11:00", "UTC"), NOW) is None
    assert quiet_until(QuietHours("11:00", "13:00", "UTC"), NOW) == utc(2024, 3, 5, 13, 0)


def test_quiet_hours_past_expiry_drop_the_signal():
    short = dataclasses.replace(sig(), expires_at=NOW + timedelta(hours=2))
    a = admit(user(quiet_hours=QuietHours("11:00", "18:00", "UTC")), short, NOW, 0)
    assert not a.admitted
