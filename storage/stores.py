"""Every store on one database, as one frozen bundle: `await open_stores(url)` (schema created) or
`Stores.over(db)` (on a database whose schema the caller made).

One store per aggregate: bars (instruments and OHLCV), signals (signals, outcomes, exit decisions), users
(users and preferences), outbox (fan-outs, deliveries, heartbeats), billing, admin (audit, quotas, accounts),
channels and digests (e-mail/webhook addresses, daily digests) and news (the LLM verdicts). They share the
database's engine; a transaction never spans two of them except where one module says so (a signal and its
pending fan-out are recorded together: storage.outbox.record_fanouts).
"""
from __future__ import annotations

from dataclasses import dataclass

from core.clock import Clock, SystemClock
from storage.admin import AdminStore
from storage.api_keys import ApiKeyStore, WebLogins
from storage.bars import BarStore
from storage.billing import BillingStore
from storage.chain import ChainStore
from storage.channels import ChannelStore, DigestStore
from storage.database import Database
from storage.follow import FeedbackStore, WatchlistStore
from storage.news import SqlVerdictStore
from storage.outbox import OutboxStore
from storage.signals import SignalStore
from storage.users import UserStore



@dataclass(frozen=True, slots=True)
class Stores:
    database: Database
    bars: BarStore
    signals: SignalStore
    users: UserStore
    outbox: OutboxStore
    billing: BillingStore
    admin: AdminStore
    channels: ChannelStore
    digests: DigestStore
    news: SqlVerdictStore
    api_keys: ApiKeyStore
    chain: ChainStore
    web_logins: WebLogins
    feedback: FeedbackStore
    watchlist: WatchlistStore

    @classmethod
    def over(cls, db: Database, clock: Clock | None = None, *, users_cache_seconds: float = 30.0) -> Stores:
        """The stores on `db`, sharing one clock. A tier change committed by billing drops the users' cache."""
        clock = clock or SystemClock()
        users = UserStore(db, clock, cache_seconds=users_cache_seconds)
        return cls(
            database=db,
            bars=BarStore(db),
            signals=SignalStore(db, clock),
            users=users,
            outbox=OutboxStore(db, clock),
            billing=BillingStore(db, clock, users_changed=users.invalidate_users),
            admin=AdminStore(db, clock),
            channels=ChannelStore(db, clock),
            digests=DigestStore(db),
            news=SqlVerdictStore(db),
            api_keys=ApiKeyStore(db, clock),
            chain=ChainStore(db),
            web_logins=WebLogins(db, clock),
            feedback=FeedbackStore(db, clock),
            watchlist=WatchlistStore(db, clock),
        )

    async def close(self) -> None:
        await self.database.close()


async def open_stores(url: str, clock: Clock | None = None) -> Stores:
    """The stores on the database at `url`, its schema created or migrated to the newest revision
    (storage.migrate; SQLite by default, PostgreSQL by URL)."""
    db = Database(url)
    await db.upgrade()
    return Stores.over(db, clock)
