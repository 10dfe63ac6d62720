"""The optional daily digest: once a day, at the hour a user chose (/digest HH, UTC), the signals they received
in the last 24 hours and how each stands, sent in their chat; on Mondays beside it the weekly report (the same
as /weekly): what closed of what they received in the last 7 days, and the whole service's week, losers included.

`send_digests` is a scheduled job (every few minutes is enough). A digest is claimed for the day before it is
sent and released when sending fails transiently, so it goes out at most once a day; a crash between claim
and send loses that day's digest (a summary, not a signal: every signal itself went through the outbox).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from bot.transports.base import Transport
from bot.views.doc import Doc, Table
from bot.views.formatting import pct, price
from core.clock import Clock
from core.domain import Signal, SignalOutcome, SignalStatus
from core.errors import DeliveryError
from core.performance import PerformanceSummary, summarize
from core.ports import DigestRepository, Repositories

log = logging.getLogger(__name__)

DIGEST_WINDOW = timedelta(hours=24)


async def send_digests(store: Repositories, digests: DigestRepository, transports: Mapping[str, Transport],
                       clock: Clock, market_clock: Clock | None = None) -> int:
    """Send every digest due now through the user's chat transport; returns how many were sent. `clock` is wall
    time (the hour a user asked for, when a signal was sent to them), `market_clock` the signals' (when one
    closed; default the same)."""
    now = clock.now()
    market_now = (market_clock or clock).now()
    due = await digests.claim_due(now)
    if not due:
        return 0
    users = await store.users.users_by_ids(due)
    sent = 0
    for user_id in due:
        user = users.get(user_id)
        transport = transports.get(user.platform) if user is not None else None
        if user is None or not user.active or transport is None:
            continue  # unsubscribed or their platform is not served: nothing today
        items = await store.outbox.received_since(user_id, now - DIGEST_WINDOW, closed_since=market_now - DIGEST_WINDOW)
        docs = [digest_doc(items, now)] if items else []  # a quiet day: no daily message
        if now.weekday() == 0:
            week = await weekly_report(store, user_id, now, market_now, only_if_received=True)
            if week is not None:
                docs.append(week)
        if not docs:
            continue
        try:
            for doc in docs:
                await transport.send(user.chat_id, doc)
        except DeliveryError as exc:
            if not exc.permanent:
                await digests.release(user_id)  # due again at the next run
            log.warning("digest for user %s not sent: %s", user_id, exc)
            continue
        sent += 1
    log.info("daily digests: %d sent of %d due", sent, len(due))
    return sent


def digest_doc(items: Sequence[tuple[Signal, SignalOutcome | None]], now: datetime) -> Doc:
    rows = tuple((s.symbol, f"{s.direction.verb} {s.timeframe}", price(s.entry), price(s.target), price(s.stop),
                  _status(o)) for s, o in items)
    closed = [o for _, o in items if o is not None]
    wins = sum(1 for o in closed if o.net_return > 0)
    return Doc(
        heading=f"Your daily digest · {now.strftime('%Y-%m-%d')}",
        body=f"{len(items)} signal{'s' if len(items) != 1 else ''} in the last 24 hours; "
             f"{len(closed)} closed ({wins} with a gain after costs).",
        table=Table(("symbol", "idea", "entry", "target", "stop", "now"), rows),
        note="Send /digest off to stop the digest.",
    )


WEEK = timedelta(days=7)


async def weekly_report(store: Repositories, user_id: int, now: datetime, market_now: datetime, *,
                        only_if_received: bool = False) -> Doc | None:
    """The last 7 days for one user (None: nothing to report; with `only_if_received`, also when the user received
    no signal in the week). `now` is wall time (deliveries), `market_now` the signals' clock (outcomes)."""
    mine = await store.outbox.received_since(user_id, now - WEEK, closed_since=market_now - WEEK)
    if only_if_received and not mine:
        return None
    everyone = [(s, o) for s, o in await store.signals.outcomes_since(market_now - WEEK) if not s.shadow]
    if not mine and not everyone:
        return None
    return weekly_doc(mine, everyone, now)


def weekly_doc(mine: Sequence[tuple[Signal, SignalOutcome | None]],
               everyone: Sequence[tuple[Signal, SignalOutcome]], now: datetime) -> Doc:
    closed = [o for _, o in mine if o is not None]
    start = (now - WEEK).strftime("%Y-%m-%d")
    fields = [("Your signals", f"{len(mine)} received, {len(closed)} closed")]
    you = summarize(closed)
    if you is not None:
        fields.append(("Yours closed", _line(you)))
    service = summarize([o for _, o in everyone])
    fields.append(("Service, all closed", _line(service) if service is not None else "none closed this week"))
    rows = tuple((s.symbol, f"{s.direction.verb} {s.timeframe}", price(s.entry), _status(o))
                 for s, o in sorted(mine, key=lambda p: p[0].issued_at)[-15:])
    return Doc(heading=f"Your weekly report · {start} to {now.strftime('%Y-%m-%d')}", fields=tuple(fields),
               table=Table(("symbol", "idea", "entry", "now"), rows) if rows else None,
               note="Returns after costs; every signal that closed counts, losers included. /portfolio has the "
                    "signals you took; /performance the whole record.")


def _line(p: PerformanceSummary) -> str:
    pf = "n/a" if p.profit_factor is None else f"{p.profit_factor:.2f}"
    return (f"{p.count} closed, {p.wins} won ({p.hit_rate:.0%}), average {pct(p.avg_return)}, "
            f"sum {pct(p.avg_return * p.count)}, profit factor {pf}, worst {pct(p.worst)}")


def _status(o: SignalOutcome | None) -> str:
    if o is None:
        return "open"
    word = {SignalStatus.TARGET: "target", SignalStatus.STOP: "stop", SignalStatus.EXPIRED: "expired"}.get(
        o.status, str(o.status))
    return f"{word} {pct(o.net_return)}"
