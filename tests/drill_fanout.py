"""Drill 1 of issue 17 (not a test; tests/test_drill_fanout.py runs a bounded one): several `signalbot run`
processes on one database, many Telegram subscribers, the signal burst of a scan, a local Bot API that answers
some sends with 429, 500, 403 (blocked) and late (after the client's timeout), and the leader killed with
SIGKILL while the burst is being delivered. Every message the Bot API receives is recorded and checked
against the signals in the database: each eligible user must get each signal exactly once.

    .venv/bin/python -m tests.drill_fanout [--users 10000] [--procs 3] [--db postgresql|sqlite]
                                           [--no-faults] [--no-kill] [--json OUT.json]

The subscribers are professional Telegram users whose preferences take every signal; 1 in 97 has blocked the
bot (its first send gets 403 and the service deactivates it: not eligible). The processes run the offline
market at `--speed` 30 (the burst is the first scan's; a new hourly bar closes every 2 minutes of wall time)
with the families `setups,trend,ranking` and no client-side rate limit (the platform's ~30 messages/s per bot
is configured off for the fake). The leader is killed once a tenth of the queued deliveries is sent, at a moment it holds rows in SENDING.

Counted: lost (an eligible user's signal never received), duplicated (received twice), and of those the ones
inside the documented send/record window: the Bot API took a message but its answer came after the client's
10 s timeout (the client cannot know it arrived, so it sends again), or the killed process had the row in
SENDING (sent, not yet recorded). Anything else is an unexplained duplicate. Also: the fail-over time, the
latency from a signal's queueing at issue to the Bot API receiving it (p50/p95/max), the alerts the admins got
in chat, and figures scraped from each process's /metrics during the drill. With `--procs 1 --no-faults
--no-kill` it is the delivery-latency measurement for the README.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal as signals
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from storage import Database
from storage.tables import DELIVERIES, PREFERENCES, SIGNALS, USERS
from tests.fakes.telegram_bot_api import FakeBotApi, SentMessage

REPO = Path(__file__).resolve().parents[1]
FAMILIES = "setups,trend,ranking"
ADMIN_CHAT = 999_999_999
FIRST_CHAT = 1_000_000
CLIENT_TIMEOUT = 10.0  # TelegramTransport's read timeout
LATE = CLIENT_TIMEOUT + 0.5
TAG = re.compile(r"<[^>]+>")
SIGNAL_ID = re.compile(r"^Signal:\s*(\S+)\s*$", re.M)
EXIT_HEADING = re.compile(r"^(Target reached|Stopped out|Expired|Closed by its rule): ", re.M)


@dataclass
class Received:
    chat: int
    signal_id: str
    kind: str  # signal | exit
    at: float  # wall clock, time.time()
    late: bool  # answered after the client's timeout


class DrillBotApi(FakeBotApi):
    """The fake Bot API, keeping only what the drill checks per message (a 10,000-user burst would otherwise
    hold every message's text and markup)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(record_calls=False, validate=False, **kwargs)
        self.received: list[Received] = []
        self.admin_messages: list[str] = []
        self.sends = 0
        self._late = False

    async def _apply_faults(self, method: str, chat_id: Any) -> None:
        t0 = time.monotonic()
        try:
            await super()._apply_faults(method, chat_id)
        finally:
            self._late = time.monotonic() - t0 >= CLIENT_TIMEOUT  # read before the next await: no other task between

    def _record(self, method: str, chat_id: int | str, raw: str, text: str, entities: list[dict[str, Any]],
                params: dict[str, Any]) -> SentMessage:
        self.sends += 1
        chat = int(chat_id)
        text = TAG.sub("", text)  # the fake keeps the markup when it does not validate
        found = SIGNAL_ID.search(text)
        if chat == ADMIN_CHAT and not found:
            self.admin_messages.append(text)
        if found:  # an exit's heading is in its first part, with the id line (a signal's id may be in a later part)
            kind = "exit" if EXIT_HEADING.search(text) else "signal"
            self.received.append(Received(chat, found.group(1), kind, time.time(), self._late))
        message_id = next(self._message_ids[chat_id])
        return SentMessage(method, chat_id, message_id, text, raw, params.get("parse_mode"), entities, None, None,
                           None, params=params)


@dataclass
class Report:
    backend: str
    users: int
    procs: int
    faults: bool
    blocked: int = 0
    signals: int = 0
    eligible_pairs: int = 0
    received_pairs: int = 0
    lost: int = 0
    duplicated: int = 0
    duplicated_late_answer: int = 0
    duplicated_kill_window: int = 0
    duplicated_unexplained: int = 0
    in_flight_at_kill: int = 0
    exits_received: int = 0
    exits_duplicated: int = 0
    failed_rows: dict[str, int] = field(default_factory=dict)
    outbox_final: dict[str, int] = field(default_factory=dict)
    failover_seconds: float | None = None
    killed_at_sent_fraction: float | None = None
    drain_seconds: float = 0.0
    messages_per_second: float = 0.0
    latency_p50: float = 0.0
    latency_p95: float = 0.0
    latency_max: float = 0.0
    last_recipient_by_signal: dict[str, float] = field(default_factory=dict)
    admin_alerts: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    log_errors: int = 0
    bot_api_sends: int = 0

    def lines(self) -> list[str]:
        kill = (f"leader SIGKILLed at {self.killed_at_sent_fraction:.0%} sent, {self.in_flight_at_kill} rows in "
                f"flight; new leader after {self.failover_seconds:.2f} s" if self.failover_seconds is not None
                else "no kill")
        return [f"{self.backend}, {self.procs} process(es), {self.users:,} users ({self.blocked} blocked), "
                f"faults {'on' if self.faults else 'off'}; {kill}",
                f"signals issued {self.signals}; eligible (user, signal) pairs {self.eligible_pairs:,}; "
                f"received {self.received_pairs:,}; lost {self.lost}; duplicated {self.duplicated} (late answer "
                f"{self.duplicated_late_answer}, kill window {self.duplicated_kill_window}, unexplained "
                f"{self.duplicated_unexplained})",
                f"exits received {self.exits_received:,} (duplicated {self.exits_duplicated}); outbox at the end "
                f"{self.outbox_final}; failed rows by reason {self.failed_rows}",
                f"drained in {self.drain_seconds:.1f} s ({self.messages_per_second:.0f} messages/s at the Bot API, "
                f"{self.bot_api_sends:,} sends); latency queued -> received p50 {self.latency_p50:.2f} s, p95 "
                f"{self.latency_p95:.2f} s, max {self.latency_max:.2f} s",
                f"admin alerts: {self.admin_alerts or 'none'}", f"metrics: {self.metrics}",
                f"ERROR/Traceback lines in the logs: {self.log_errors}"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def seed(db: Database, users: int) -> dict[int, int]:
    """The users and their preferences; user id -> chat id."""
    now = datetime.now(timezone.utc)
    rows = [{"platform": "telegram", "platform_user_id": str(FIRST_CHAT + i),
             "chat_id": str(FIRST_CHAT + i), "display_name": f"user {i}", "tier": "professional", "active": True,
             "created_at": now} for i in range(users)]
    async with db.engine.begin() as conn:
        for k in range(0, users, 2000):
            await conn.execute(USERS.insert(), rows[k:k + 2000])
        # the admin, a free user who gets the alerts (and what a free tier gets: not counted)
        await conn.execute(USERS.insert(), [{"platform": "telegram", "platform_user_id": str(ADMIN_CHAT),
                                             "chat_id": str(ADMIN_CHAT), "display_name": "admin", "tier": "free",
                                             "active": True, "created_at": now}])
    chats = {int(r[0]): int(r[1]) for r in await db.fetch(sa.select(USERS.c.id, USERS.c.chat_id))}
    prefs = [{"user_id": uid, "symbols": "[]", "asset_classes": "[]", "timeframes": "[]", "min_confidence": 1,
              "risk": "high"} for uid in chats]
    async with db.engine.begin() as conn:
        for k in range(0, users, 2000):
            await conn.execute(PREFERENCES.insert(), prefs[k:k + 2000])
    return chats


def blocked_chats(users: int) -> set[int]:
    return {FIRST_CHAT + i for i in range(users) if i % 97 == 50}


async def _sending_of(db: Database, chats: dict[int, int], pid: int) -> set[tuple[int, str, str]]:
    rows = await db.fetch(sa.select(DELIVERIES.c.user_id, DELIVERIES.c.signal_id, DELIVERIES.c.kind)
                          .where(DELIVERIES.c.status == "sending", DELIVERIES.c.claimed_by.like(f"%:{pid}")))
    return {(chats[int(r[0])], str(r[1]), str(r[2])) for r in rows}


async def outbox_counts(db: Database) -> dict[str, int]:
    rows = await db.fetch(sa.select(DELIVERIES.c.status, sa.func.count()).group_by(DELIVERIES.c.status))
    return {str(r[0]): int(r[1]) for r in rows}


def start_process(url: str, fake: FakeBotApi, cwd: Path, log: Path, port: int, speed: float) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SIGNALBOT_DATABASE_URL": url, "SIGNALBOT_LOG_LEVEL": "INFO", "SIGNALBOT_FAMILIES": FAMILIES,
           "SIGNALBOT_LEADER_INTERVAL": "1", "SIGNALBOT_HTTP_PORT": str(port), "PYTHONPATH": str(REPO),
           "TELEGRAM_TOKEN": fake.token, "SIGNALBOT_TELEGRAM_BASE_URL": fake.base_url,
           "SIGNALBOT_TELEGRAM_BASE_FILE_URL": fake.base_file_url, "SIGNALBOT_TELEGRAM_MESSAGES_PER_SECOND": "0",
           "SIGNALBOT_ADMINS": f"telegram:{ADMIN_CHAT}", "SIGNALBOT_LLM_REASONING": "false"}
    for secret in ("DISCORD_TOKEN", "STRIPE_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_API_KEY", "SIGNALBOT_METRICS_TOKEN"):
        env.pop(secret, None)
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "bot.cli", "run", "--speed", str(speed)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=out, cwd=cwd, env=env)


ELECTED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .* became the leader \(lock scheduler-leader\)", re.M)


def elections(log: Path) -> list[float]:
    """When the process became the scheduler's leader (its log's local-time stamps, as time.time())."""
    return [datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f").timestamp() for t in ELECTED.findall(log.read_text())]


METRIC_LINE = re.compile(r"^(signalbot_[a-z_]+)(\{[^}]*\})? ([0-9.e+-]+|NaN)$", re.M)


def scrape(text: str, into: dict[str, float], peaks: dict[str, float]) -> None:
    """Delivery outcomes summed over channels and kinds (per process), and the outbox depth's peak."""
    for name, labels, value in METRIC_LINE.findall(text):
        v = float(value)
        if name == "signalbot_deliveries_total":
            status = re.search(r'status="(\w+)"', labels or "")
            if status:
                key = f"deliveries_{status.group(1)}"
                into[key] = into.get(key, 0.0) + v
        elif name == "signalbot_outbox_depth":
            peaks["outbox_depth_peak"] = max(peaks.get("outbox_depth_peak", 0.0), v)


async def drill(url: str, users: int, procs: int, *, faults: bool, kill: bool, workdir: Path, speed: float = 30.0,
                max_seconds: float = 1200.0, backend: str = "") -> Report:
    report = Report(backend or url.split(":", 1)[0], users, procs, faults)
    db = Database(url)
    await db.upgrade()
    chats = await seed(db, users)
    blocked = blocked_chats(users) if faults else set()
    report.blocked = len(blocked)
    async with DrillBotApi() as fake:
        for chat in sorted(blocked):
            fake.block(chat)
        if faults:
            fake.fail(429, retry_after=1, times=None, probability=0.002)  # Telegram's 429 pauses the whole bot
            fake.fail(500, times=None, probability=0.01)
            fake.slow(LATE, times=None, probability=0.0005)
        ports = [_free_port() for _ in range(procs)]
        logs = [workdir / f"p{i}.log" for i in range(procs)]
        live = [start_process(url, fake, workdir, logs[i], ports[i], speed) for i in range(procs)]
        last_scrape: dict[int, dict[str, float]] = {}
        peaks: dict[str, float] = {}
        killed: int | None = None
        killed_at = 0.0
        in_flight: set[tuple[int, str, str]] = set()
        started = time.monotonic()
        first_sent_at: float | None = None
        quiet_since: float | None = None
        try:
            async with httpx.AsyncClient(timeout=3) as http:
                while time.monotonic() - started < max_seconds:
                    await asyncio.sleep(1.0)
                    for i, p in enumerate(live):
                        if p.poll() is not None and i != killed:
                            raise RuntimeError(f"process {i} exited {p.returncode}: {logs[i].read_text()[-3000:]}")
                        if i == killed:
                            continue
                        try:
                            text = (await http.get(f"http://127.0.0.1:{ports[i]}/metrics")).text
                        except httpx.HTTPError:
                            continue
                        last_scrape[i] = {}
                        scrape(text, last_scrape[i], peaks)
                    counts = await outbox_counts(db)
                    queued = sum(counts.values())
                    busy = counts.get("pending", 0) + counts.get("sending", 0)
                    if counts.get("sent") and first_sent_at is None:
                        first_sent_at = time.monotonic()
                    if kill and killed is None and queued and counts.get("sent", 0) >= queued / 10 and busy:
                        leader = next((i for i, lg in enumerate(logs) if elections(lg)), None)
                        running = all("signalbot running" in lg.read_text() for lg in logs)
                        held = await _sending_of(db, chats, live[leader].pid) if leader is not None else set()
                        if leader is not None and running and held:  # it has sends in flight
                            killed, killed_at = leader, time.time()
                            live[leader].send_signal(signals.SIGKILL)
                            await asyncio.to_thread(live[leader].wait, 10)  # the fake answers meanwhile
                            report.killed_at_sent_fraction = counts.get("sent", 0) / queued
                            # the rows it held just before and still holds after (the new leader may already
                            # have requeued them): SENDING at the kill, sent or not
                            in_flight = held | await _sending_of(db, chats, live[leader].pid)
                            report.in_flight_at_kill = len(in_flight)
                    if killed is not None and report.failover_seconds is None:
                        after = [t for i, lg in enumerate(logs) if i != killed for t in elections(lg) if t > killed_at]
                        if after:
                            report.failover_seconds = min(after) - killed_at
                    done_killing = not kill or report.failover_seconds is not None
                    if queued and not busy and done_killing:
                        quiet_since = quiet_since or time.monotonic()
                        if time.monotonic() - quiet_since >= 5:
                            break
                    else:
                        quiet_since = None
            report.drain_seconds = (quiet_since or time.monotonic()) - (first_sent_at or started)
        finally:
            for i, p in enumerate(live):
                if p.poll() is None:
                    p.send_signal(signals.SIGTERM)
            for p in live:
                try:
                    await asyncio.to_thread(p.wait, 60)  # not p.wait(): the fake in this loop serves their last calls
                except subprocess.TimeoutExpired:
                    p.kill()
                    await asyncio.to_thread(p.wait, 10)
        await _analyse(report, db, fake, blocked, in_flight, users)
        report.metrics = {**peaks}
        for values in last_scrape.values():
            for k, v in values.items():
                report.metrics[k] = report.metrics.get(k, 0.0) + v
        report.admin_alerts = [" ".join(m.split("\n")[:3])[:200] for m in fake.admin_messages]
        report.log_errors = sum(len(re.findall(r" ERROR |Traceback", lg.read_text(errors="replace"))) for lg in logs)
    await db.close()
    return report


async def _analyse(report: Report, db: Database, fake: DrillBotApi, blocked: set[int],
                   in_flight: set[tuple[int, str, str]], users: int) -> None:
    signal_ids = [str(r[0]) for r in await db.fetch(sa.select(SIGNALS.c.id))]
    report.signals = len(signal_ids)
    rows = await db.fetch(sa.select(DELIVERIES.c.user_id, DELIVERIES.c.signal_id, DELIVERIES.c.kind,
                                    DELIVERIES.c.status, DELIVERIES.c.created_at, DELIVERIES.c.error))
    queued_at: dict[str, float] = {}
    failed: dict[str, int] = {}
    for user_id, signal_id, kind, status, created, error in rows:
        if kind == "signal":
            t = (created if created.tzinfo else created.replace(tzinfo=timezone.utc)).timestamp()
            queued_at[signal_id] = min(queued_at.get(signal_id, t), t)
        if status == "failed":
            reason = (error or "")[:60]
            failed[reason] = failed.get(reason, 0) + 1
    report.failed_rows = failed
    report.outbox_final = await outbox_counts(db)
    eligible = [FIRST_CHAT + i for i in range(users) if FIRST_CHAT + i not in blocked]
    got: dict[tuple[int, str, str], list[Received]] = {}
    for r in fake.received:
        got.setdefault((r.chat, r.signal_id, r.kind), []).append(r)
    report.eligible_pairs = len(eligible) * len(signal_ids)
    latencies = []
    for sid in signal_ids:
        last = 0.0
        for chat in eligible:
            copies = got.get((chat, sid, "signal"), [])
            if not copies:
                report.lost += 1
                continue
            report.received_pairs += 1
            lat = copies[0].at - queued_at.get(sid, copies[0].at)
            latencies.append(lat)
            last = max(last, lat)
            if len(copies) > 1:
                report.duplicated += 1
                if any(c.late for c in copies[:-1]):
                    report.duplicated_late_answer += 1
                elif (chat, sid, "signal") in in_flight:
                    report.duplicated_kill_window += 1
                else:
                    report.duplicated_unexplained += 1
        report.last_recipient_by_signal[sid] = round(last, 2)
    report.exits_received = sum(1 for (c, _, k) in got if k == "exit")
    report.exits_duplicated = sum(1 for (c, _, k), v in got.items() if k == "exit" and len(v) > 1)
    report.bot_api_sends = fake.sends
    if latencies:
        latencies.sort()
        report.latency_p50 = statistics.median(latencies)
        report.latency_p95 = latencies[int(0.95 * (len(latencies) - 1))]
        report.latency_max = latencies[-1]
    if report.drain_seconds > 0:
        report.messages_per_second = fake.sends / report.drain_seconds


async def main_async(args: argparse.Namespace) -> Report:
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.db == "sqlite":
            return await drill(f"sqlite+aiosqlite:///{work / 'drill.db'}", args.users, args.procs,
                               faults=not args.no_faults, kill=not args.no_kill, workdir=work, speed=args.speed)
        from tests import postgres as pg

        srv = pg.server()
        try:
            name = f"drill_{os.getpid()}"
            url = pg.create_database(srv, name)
            try:
                return await drill(url, args.users, args.procs, faults=not args.no_faults, kill=not args.no_kill,
                                   workdir=work, speed=args.speed, backend="postgresql")
            finally:
                pg.drop_database(srv, name)
        finally:
            srv.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--procs", type=int, default=3)
    p.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql")
    p.add_argument("--speed", type=float, default=30.0)
    p.add_argument("--no-faults", action="store_true")
    p.add_argument("--no-kill", action="store_true")
    p.add_argument("--json", type=Path)
    p.add_argument("--workdir", type=Path, help="keep the processes' logs (and the SQLite file) here")
    args = p.parse_args()
    report = asyncio.run(main_async(args))
    print("\n".join(report.lines()))
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=1))


if __name__ == "__main__":
    main()
