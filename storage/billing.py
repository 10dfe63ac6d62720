"""Billing tables and their repository: subscriptions, processed provider events, payments, checkouts, and
provider events refused because they cannot be applied (`reject()`: the reason, kept for support and audit).

Exactly-once: `BillingStore.apply()` records the provider's event id and applies its effects (subscriptions,
payment, checkout, the user's tier) in ONE transaction. A replayed event finds its id and changes nothing;
a failure rolls back the id with the effects, so the provider's retry is processed in full. A rejected event
is not processed: its id is not in billing_events, and each delivery of it is counted in billing_rejected_events.

Tier ownership: `billing_accounts.tier` is the tier billing last gave a user. When billing's verdict changes,
it is written to `users.tier`; between changes, `users.tier` may differ (an admin grant) and billing leaves it.

Its tables are defined in storage.tables, with every other table of the schema.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from core.billing import (
    Applied, Checkout, CheckoutStatus, Payment, Provider, RejectedEvent, Subscription, SubscriptionStatus, TierChange,
    apply_update, change_reason, effective_tier, needs_review_at,
)
from core.clock import Clock, SystemClock
from core.domain import Tier
from storage.admin import users_in_account_of
from storage.tables import ACCOUNTS, CHECKOUTS, EVENTS, PAYMENTS, REJECTED, SUBSCRIPTIONS, USERS

from storage.database import Database, Insert, upsert


class BillingStore:
    def __init__(self, db: "Database", clock: Clock | None = None, *,
                 users_changed: Callable[[], None] | None = None) -> None:
        """`users_changed` is called after a commit that changed users.tier (e.g. UserStore.invalidate_users, which
        drops its cache of active users)."""
        self._engine = db.engine
        self._clock: Clock = clock or SystemClock()
        self._users_changed = users_changed
        self._write_lock = asyncio.Lock()  # one billing transaction at a time in this process

    def _insert(self, table: sa.Table) -> Insert:
        return upsert(self._engine.dialect.name, table)

    # -- reads -----------------------------------------------------------------------------------------
    async def subscriptions_of(self, user_id: int) -> list[Subscription]:
        async with self._engine.connect() as conn:
            return await _subscriptions(conn, SUBSCRIPTIONS.c.user_id == user_id)

    async def find_subscription(self, provider: Provider, external_id: str) -> Subscription | None:
        async with self._engine.connect() as conn:
            subs = await _subscriptions(conn, (SUBSCRIPTIONS.c.provider == provider.value)
                                        & (SUBSCRIPTIONS.c.external_id == external_id))
        return subs[0] if subs else None

    async def get_checkout(self, checkout_id: str) -> Checkout | None:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(sa.select(CHECKOUTS).where(CHECKOUTS.c.id == checkout_id))).mappings().all()
        return _checkout(rows[0]) if rows else None

    async def payments_of(self, user_id: int) -> list[Payment]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(sa.select(PAYMENTS).where(PAYMENTS.c.user_id == user_id)
                                       .order_by(PAYMENTS.c.paid_at))).mappings().all()
        return [_payment(r) for r in rows]

    async def processed(self, provider: Provider, event_id: str) -> bool:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(EVENTS.c.event_id).where(
                EVENTS.c.provider == provider.value, EVENTS.c.event_id == event_id))).first()
        return row is not None

    async def rejected(self, provider: Provider, event_id: str) -> RejectedEvent | None:
        """The record of a rejected event, or None when it was never rejected."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(sa.select(REJECTED).where(
                REJECTED.c.provider == provider.value, REJECTED.c.event_id == event_id))).mappings().all()
        return _rejected(rows[0]) if rows else None

    # -- writes ----------------------------------------------------------------------------------------
    async def reject(self, provider: Provider, event_id: str, event_type: str | None, reason: str) -> None:
        """Record that an event was refused (a redelivery counts one more delivery and keeps the latest reason)."""
        now = self._clock.now()
        stmt = self._insert(REJECTED).values(provider=provider.value, event_id=event_id, event_type=event_type,
                                             reason=reason, deliveries=1, first_received_at=now,
                                             last_received_at=now)
        stmt = stmt.on_conflict_do_update(
            index_elements=[REJECTED.c.provider, REJECTED.c.event_id],
            set_={"event_type": event_type, "reason": reason, "deliveries": REJECTED.c.deliveries + 1,
                  "last_received_at": now})
        async with self._write_lock, self._engine.begin() as conn:
            await conn.execute(stmt)

    async def add_checkout(self, checkout: Checkout) -> None:
        row = {"id": checkout.id, "provider": checkout.provider.value, "user_id": checkout.user_id,
               "tier": checkout.tier.value, "amount": checkout.amount, "currency": checkout.currency,
               "status": checkout.status.value, "url": checkout.url,
               "created_at": checkout.created_at or self._clock.now()}
        async with self._write_lock, self._engine.begin() as conn:
            await conn.execute(sa.insert(CHECKOUTS).values(row))

    async def apply(self, provider: Provider, event_id: str, event_type: str, *,
                    subscriptions: Sequence[Subscription] = (), payment: Payment | None = None,
                    completed_checkout: str | None = None) -> Applied:
        """Process one provider event exactly once (see the module docstring); returns the tier changes."""
        now = self._clock.now()
        async with self._write_lock, self._engine.begin() as conn:
            stmt = self._insert(EVENTS).values(provider=provider.value, event_id=event_id, event_type=event_type,
                                               received_at=now).on_conflict_do_nothing()
            if (await conn.execute(stmt)).rowcount == 0:
                return Applied(duplicate=True)
            users: set[int] = set()
            for update in subscriptions:
                await self._merge_subscription(conn, update, now)
                users.add(update.user_id)
            if payment is not None:
                await conn.execute(self._insert(PAYMENTS).values(_payment_row(payment)).on_conflict_do_nothing())
                users.add(payment.user_id)
            if completed_checkout is not None:
                await conn.execute(sa.update(CHECKOUTS).where(CHECKOUTS.c.id == completed_checkout).values(
                    status=CheckoutStatus.COMPLETE.value, completed_at=now))
            changes = [c for u in sorted(users) if (c := await self._reevaluate(conn, u, now)) is not None]
        self._after_commit(changes)
        return Applied(duplicate=False, changes=tuple(changes))

    async def review(self, now: datetime | None = None) -> list[TierChange]:
        """Re-evaluate users whose tier can change with time alone (grace ended, Stars expired)."""
        now = now or self._clock.now()
        async with self._engine.connect() as conn:
            subs = await _subscriptions(conn, sa.true())
        due = sorted({s.user_id for s in subs if (at := needs_review_at(s)) is not None and at <= now})
        if not due:
            return []
        async with self._write_lock, self._engine.begin() as conn:
            await conn.execute(sa.update(SUBSCRIPTIONS).where(  # lapsed Stars periods leave the review set
                SUBSCRIPTIONS.c.provider == Provider.TELEGRAM_STARS.value,
                SUBSCRIPTIONS.c.status == SubscriptionStatus.ACTIVE.value,
                SUBSCRIPTIONS.c.current_period_end <= now).values(status=SubscriptionStatus.EXPIRED.value,
                                                                  updated_at=now))
            changes = [c for u in due if (c := await self._reevaluate(conn, u, now)) is not None]
        self._after_commit(changes)
        return changes

    def _after_commit(self, changes: Sequence[TierChange]) -> None:
        if changes and self._users_changed is not None:
            self._users_changed()

    async def _merge_subscription(self, conn: AsyncConnection, update: Subscription, now: datetime) -> None:
        key = (SUBSCRIPTIONS.c.provider == update.provider.value) & (SUBSCRIPTIONS.c.external_id == update.external_id)
        found = await _subscriptions(conn, key)
        merged = apply_update(found[0] if found else None, update)
        values = _subscription_row(merged, now)
        if found:
            await conn.execute(sa.update(SUBSCRIPTIONS).where(key).values(values))
        else:
            await conn.execute(sa.insert(SUBSCRIPTIONS).values(values))

    async def _reevaluate(self, conn: AsyncConnection, user_id: int, now: datetime) -> TierChange | None:
        subs = await _subscriptions(conn, SUBSCRIPTIONS.c.user_id == user_id)
        new = effective_tier(subs, now)
        account = (await conn.execute(sa.select(ACCOUNTS.c.tier).where(ACCOUNTS.c.user_id == user_id))).first()
        billed = Tier(account[0]) if account is not None else Tier.FREE
        stmt = self._insert(ACCOUNTS).values(user_id=user_id, tier=new.value, evaluated_at=now)
        await conn.execute(stmt.on_conflict_do_update(index_elements=[ACCOUNTS.c.user_id],
                                                      set_={"tier": new.value, "evaluated_at": now}))
        if new is billed:
            return None
        current = (await conn.execute(sa.select(USERS.c.tier).where(USERS.c.id == user_id))).first()
        if current is None:
            return None
        # every identity linked to this one (Telegram + Discord of one person) shares the tier
        await conn.execute(sa.update(USERS).where(USERS.c.id.in_(users_in_account_of(user_id))).values(tier=new.value))
        old = Tier(current[0])
        if old is new:
            return None
        return TierChange(user_id, old, new, change_reason(old, new, subs, now))


# -- rows <-> values ------------------------------------------------------------------------------------
async def _subscriptions(conn: AsyncConnection, where: Any) -> list[Subscription]:
    rows = (await conn.execute(sa.select(SUBSCRIPTIONS).where(where).order_by(SUBSCRIPTIONS.c.id))).mappings().all()
    return [_subscription(r) for r in rows]


def _subscription(m: Any) -> Subscription:
    return Subscription(
        user_id=m["user_id"], provider=Provider(m["provider"]), external_id=m["external_id"], tier=Tier(m["tier"]),
        status=SubscriptionStatus(m["status"]), current_period_end=m["current_period_end"],
        past_due_since=m["past_due_since"], cancel_at_period_end=bool(m["cancel_at_period_end"]),
        customer_id=m["customer_id"], status_at=m["status_at"])


def _subscription_row(s: Subscription, now: datetime) -> dict[str, Any]:
    return {"user_id": s.user_id, "provider": s.provider.value, "external_id": s.external_id, "tier": s.tier.value,
            "status": s.status.value, "current_period_end": s.current_period_end, "past_due_since": s.past_due_since,
            "cancel_at_period_end": s.cancel_at_period_end, "customer_id": s.customer_id, "status_at": s.status_at,
            "updated_at": now}


def _payment_row(p: Payment) -> dict[str, Any]:
    return {"provider": p.provider.value, "charge_id": p.charge_id, "user_id": p.user_id, "tier": p.tier.value,
            "amount": p.amount, "currency": p.currency, "provider_charge_id": p.provider_charge_id,
            "recurring": p.recurring, "paid_at": p.paid_at, "period_end": p.period_end}


def _payment(m: Any) -> Payment:
    return Payment(provider=Provider(m["provider"]), charge_id=m["charge_id"], user_id=m["user_id"],
                   tier=Tier(m["tier"]), amount=m["amount"], currency=m["currency"], paid_at=m["paid_at"],
                   recurring=bool(m["recurring"]), provider_charge_id=m["provider_charge_id"],
                   period_end=m["period_end"])


def _rejected(m: Any) -> RejectedEvent:
    return RejectedEvent(provider=Provider(m["provider"]), event_id=m["event_id"], event_type=m["event_type"],
                         reason=m["reason"], deliveries=m["deliveries"], first_received_at=m["first_received_at"],
                         last_received_at=m["last_received_at"])


def _checkout(m: Any) -> Checkout:
    return Checkout(id=m["id"], provider=Provider(m["provider"]), user_id=m["user_id"], tier=Tier(m["tier"]),
                    amount=m["amount"], currency=m["currency"], status=CheckoutStatus(m["status"]), url=m["url"],
                    created_at=m["created_at"])

