"""Who calls the REST API and how often: API keys (storage.api_keys) in `Authorization: Bearer sb_...` or
`X-API-Key`, the key owner's tier checked on every request (a downgrade closes the API at once, the same
entitlements as chat), and a token bucket per key sized by the tier (`api_per_minute`): 429 with Retry-After.
The buckets live in this process: N processes behind a load balancer allow up to N times the rate."""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import HTTPException, Request

from bot.commands.caller import Caller
from core.domain import ApiKey, AssetClass, Tier, Timeframe, User
from core.tiers import entitlements, lowest_tier_with


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated API caller."""

    key: ApiKey
    user: User
    is_admin: bool

    @property
    def tier(self) -> Tier:
        return self.user.tier


@dataclass
class Bucket:
    capacity: float
    rate: float  # tokens per second
    tokens: float
    at: float = field(default_factory=time.monotonic)

    def take(self, now: float) -> float:
        """0.0 when a token was taken, else the seconds until one is there."""
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


MAX_BUCKETS = 50_000


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[int, Bucket] = {}

    def check(self, key_id: int, per_minute: int) -> float:
        """0.0: allowed; otherwise the seconds to wait."""
        now = self.clock()
        bucket = self._buckets.get(key_id)
        if bucket is None and len(self._buckets) >= MAX_BUCKETS:  # many clients (the public routes): start over
            self._buckets.clear()
        if bucket is None or bucket.capacity != per_minute:
            bucket = self._buckets[key_id] = Bucket(float(per_minute), per_minute / 60.0, float(per_minute), now)
        return bucket.take(now)


def bearer_key(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.headers.get("X-API-Key")


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def forbidden_tier(tier: Tier) -> HTTPException:
    needed = lowest_tier_with("api")
    return HTTPException(403, f"the API is part of the {needed.value if needed else 'professional'} plan; this "
                              f"key's owner is on {tier.value} (send /subscribe to the bot)")


def too_many(wait: float, per_minute: int) -> HTTPException:
    return HTTPException(429, f"over {per_minute} requests per minute for this key",
                         headers={"Retry-After": str(max(1, math.ceil(wait)))})


ADMIN_PER_MINUTE = 6000  # an administrator's key: any tier, this rate


def entitled(principal: Principal, asset_class: AssetClass, timeframe: Timeframe) -> bool:
    """Whether the key's owner may see signals of this asset class and timeframe (the chat's entitlements;
    administrators see everything)."""
    if principal.is_admin:
        return True
    ent = entitlements(principal.tier)
    return asset_class in ent.asset_classes and timeframe in ent.timeframes


def caller_of(user: User) -> Caller:
    return Caller(user.platform, user.platform_user_id, user.chat_id, user.display_name)


def per_minute(tier: Tier) -> int:
    return entitlements(tier).api_per_minute
