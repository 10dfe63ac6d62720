"""What the operators' records hold: the audit log's entries, link-code redemptions, user counts (storage.admin
keeps them; core.ports.AdminRepository is the port)."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class AuditOutcome(enum.StrEnum):
    OK = "ok"  # ran
    REFUSED = "refused"  # the caller is not an admin
    INVALID = "invalid"  # bad arguments, or the command refused the input
    FAILED = "failed"  # an error on our side


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: datetime
    platform: str
    platform_user_id: str
    user_id: int | None
    command: str
    arguments: str
    outcome: AuditOutcome
    detail: str = ""
    id: int | None = None


class LinkResult(enum.StrEnum):
    OK = "ok"
    WRONG = "wrong"  # no such code
    EXPIRED = "expired"
    USED = "used"


@dataclass(frozen=True, slots=True)
class Redeemed:
    result: LinkResult
    issuer_id: int | None = None  # the user who issued the code (when OK)


@dataclass(frozen=True, slots=True)
class UserCount:
    platform: str
    tier: str
    active: bool
    count: int
