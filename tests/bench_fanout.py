"""Benchmark (not a test): choosing the recipients of a signal and queueing their deliveries, 10,000 subscribers.

    .venv/bin/python -m tests.bench_fanout [-n 10000] [--runs 15] [--send 5000] [--json OUT.json]

A SQLite file in WAL mode (the service's default) holds N users with mixed tiers and preferences. Each run
issues a new signal through Notifier.on_signal_issued (the design's budget: under 100 ms for 10,000 users) and
times its parts: choosing (active users from the store's cache, the monthly quota query, admission) and
queueing (Stores.enqueue). The reference, measured in the same run: the bare DB-API executemany of the same
rows (pre-built tuples, the same INSERT ... ON CONFLICT DO NOTHING, one transaction) on the same engine. The first run also
reads the users from the database (the cache is cold), so it is reported on its own; figures are medians.

With --send N, also the outbox's sending rate: N queued deliveries drained by DeliveryWorker through
TelegramTransport (python-telegram-bot, no client-side rate limit, 32 in flight, claims of 1,000: a batch ends
when its slowest send does, so small claims leave the pipe idle between them) to the fake Bot API running in a
child process, next to the reference of the same transport sending the same messages with 32 in flight and no
outbox (no claims, no records). The difference is what the outbox costs per message.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from bot.delivery.notifier import Notifier
from bot.delivery.worker import DeliveryWorker
from bot.transports.telegram import TelegramTransport
from bot.views.signals import signal_doc
from tests.bench_telegram import start_server
from tests.fakes.telegram_bot_api import DEFAULT_TOKEN
from core.clock import FixedClock
from core.domain import AssetClass, DeliveryKind, DeliveryStatus, Direction, Signal, Tier, Timeframe
from core.events import SignalIssued
from storage import Database, Stores
from storage.tables import DELIVERIES, PREFERENCES, USERS
from tests.conftest import utc

NOW = utc(2025, 6, 2, 20)
TIERS = tuple(Tier)


def signal(i: int) -> Signal:
    return Signal(id=f"BENCH-{i:04d}", symbol="AAPL", asset_class=AssetClass.EQUITY, timeframe=Timeframe.D1,
                  direction=Direction.LONG, entry=100, target=104, stop=98, confidence=70, position_size=0.05,
                  issued_at=NOW, expires_at=NOW + timedelta(days=3), reasoning="bench", strategy="bench")


async def seed(store: Stores, db: Database, n: int) -> None:
    users = [{"id": i + 1, "platform": "telegram", "platform_user_id": str(i), "chat_id": str(i), "display_name": "",
              "tier": TIERS[i % 4].value, "active": i % 23 != 0, "created_at": NOW} for i in range(n)]
    prefs = [{"user_id": i + 1, "symbols": '["MSFT"]' if i % 10 == 7 else "[]", "asset_classes": "[]",
              "timeframes": "[]", "min_confidence": 80 if i % 10 == 3 else 50 + i % 7,
              "risk": ("low", "medium", "high")[i % 3],
              "quiet_start": "22:00" if i % 9 == 0 else None, "quiet_end": "07:00" if i % 9 == 0 else None,
              "quiet_tz": "Europe/Berlin" if i % 9 == 0 else None} for i in range(n)]
    async with db.engine.begin() as conn:
        await conn.execute(USERS.insert(), users)
        await conn.execute(PREFERENCES.insert(), prefs)
    store.users.invalidate_users()


async def timed(fn: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = await fn()
    return (time.perf_counter() - t0) * 1e3, result


async def bench(n: int, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}")
        await db.upgrade()
        clock = FixedClock(NOW)
        store = Stores.over(db, clock)
        await seed(store, db, n)
        notifier = Notifier(store, clock, {"telegram"}, wake=lambda: None)
        bulk = store.outbox._deliveries_insert  # the statement enqueue runs, compiled for the dialect
        totals, choose, queue, bare, recipients = [], [], [], [], 0
        for i in range(runs):
            s, ref = signal(2 * i), signal(2 * i + 1)
            await store.signals.add_signals([s, ref])
            if i > 0:  # run 0 measures the whole path with a cold cache; later runs measure the parts too
                ms, rows = await timed(lambda: notifier.recipients(SignalIssued(s)))
                choose.append(ms)
                ms, _ = await timed(lambda: store.outbox.enqueue(rows))
                queue.append(ms)
                async with db.engine.begin() as conn:  # undo, so the full path below queues the same rows again
                    await conn.execute(DELIVERIES.delete().where(DELIVERIES.c.signal_id == s.id))
            ms, inserted = await timed(lambda: notifier.on_signal_issued(SignalIssued(s)))
            totals.append(ms)
            recipients = inserted
            # reference: the same rows for another signal as pre-built tuples, one executemany
            rows = await notifier.recipients(SignalIssued(ref))
            columns = {k: list(v) for k, v in zip(("signal_id", "user_id", "kind", "channel", "not_before",
                                                   "reply_to"), zip(*rows), strict=True)}
            columns["kind"] = [str(k) for k in columns["kind"]]
            tuples = bulk.rows(columns, {"status": "pending", "attempts": 0, "created_at": NOW})
            t0 = time.perf_counter()
            async with db.engine.begin() as conn:  # the transaction and its commit included, as in enqueue
                await conn.exec_driver_sql(bulk.sql, tuples)
            bare.append((time.perf_counter() - t0) * 1e3)
        await store.close()
    return {
        "users": n, "recipients": recipients, "runs": runs,
        "cold_ms": round(totals[0], 1),
        "notify_ms_median": round(statistics.median(totals[1:]), 1),
        "choose_ms_median": round(statistics.median(choose), 1),
        "enqueue_ms_median": round(statistics.median(queue), 1),
        "bare_executemany_ms_median": round(statistics.median(bare[1:]), 1),
        "budget_ms": 100,
    }


async def bench_send(n: int, concurrency: int = 32, batch: int = 1000) -> dict[str, Any]:
    proc, port = start_server(validate=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db = Database(f"sqlite+aiosqlite:///{Path(tmp) / 'send.db'}")
            await db.upgrade()
            clock = FixedClock(NOW)
            store = Stores.over(db, clock)
            await seed(store, db, n)
            s = signal(9_999)
            await store.signals.add_signal(s)
            rows = [(s.id, u.id, DeliveryKind.SIGNAL, "telegram", None, None) for u in await store.users.active_users()]
            await store.outbox.enqueue(rows)
            transport = TelegramTransport(DEFAULT_TOKEN, base_url=f"http://127.0.0.1:{port}/bot", messages_per_second=0,
                                          connection_pool_size=64)
            await transport.initialize()
            try:
                worker = DeliveryWorker(transport, store, clock, batch=batch, concurrency=concurrency)
                t0 = time.perf_counter()
                while await worker.process_due():
                    pass
                outbox_s = time.perf_counter() - t0
                sent = (await store.outbox.delivery_counts("telegram")).get(DeliveryStatus.SENT, 0)
                doc, slots = signal_doc(s), asyncio.Semaphore(concurrency)

                async def one(chat: str) -> None:
                    async with slots:
                        await transport.send(chat, doc)
                t0 = time.perf_counter()
                await asyncio.gather(*(one(str(i)) for i in range(len(rows))))
                bare_s = time.perf_counter() - t0
            finally:
                await transport.stop()
                await store.close()
    finally:
        proc.kill()
        proc.wait()
    return {"messages": sent, "outbox_msgs_per_s": round(sent / outbox_s), "bare_send_msgs_per_s":
            round(len(rows) / bare_s), "concurrency": concurrency, "batch": batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--send", type=int, default=0, help="also drain N deliveries through the worker (0: skip)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.runs < 3:
        parser.error("--runs must be at least 3")
    r = asyncio.run(bench(args.n, args.runs))
    print(f"fan-out to {r['users']:,} users ({r['recipients']:,} recipients), median of {r['runs'] - 1} runs:")
    print(f"  choose + queue (Notifier.on_signal_issued) {r['notify_ms_median']:7.1f} ms   (budget {r['budget_ms']} ms)")
    print(f"    choose (cached users, quota, admission)  {r['choose_ms_median']:7.1f} ms")
    print(f"    queue (Stores.enqueue)                 {r['enqueue_ms_median']:7.1f} ms")
    print(f"  reference: bare executemany + commit       {r['bare_executemany_ms_median']:7.1f} ms   "
          f"(enqueue / bare = {r['enqueue_ms_median'] / r['bare_executemany_ms_median']:.2f}x)")
    print(f"  first run, users read from the database    {r['cold_ms']:7.1f} ms")
    print(f"  choose + queue / bare executemany          {r['notify_ms_median'] / r['bare_executemany_ms_median']:7.2f}x"
          "  (the machine's load cancels out of this one)")
    if args.send:
        r["send"] = asyncio.run(bench_send(args.send))
        x = r["send"]
        print(f"sending {x['messages']:,} deliveries to a local Bot API (child process), {x['concurrency']} in flight, "
              f"claims of {x['batch']}:")
        print(f"  outbox: DeliveryWorker + TelegramTransport      {x['outbox_msgs_per_s']:7,} messages/s")
        print(f"  reference: TelegramTransport.send alone       {x['bare_send_msgs_per_s']:7,} messages/s")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
