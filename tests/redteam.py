"""Red-team run (issue 19): real faults against the real service process, on loopback only, bounded in time.

    .venv/bin/python -m tests.redteam [--users 5000] [--quick] [--json OUT.json] [--keep DIR]

Every attack starts `python -m bot.cli run` as a child process (a scrubbed environment: none of the caller's
tokens, keys or proxies; its own temporary working directory, database and logs) and talks to it only through
127.0.0.1: the fakes of tests/fakes (Telegram Bot API, Stripe API) listen on 127.0.0.1 in this process, the
service's HTTP server is bound to 127.0.0.1, and nothing else is contacted.

1. Fan-out with faults and kill -9. N Telegram users (40 % on tiers with charts) and two signals are seeded in a
   SQLite file through the store and the Notifier (the real fan-out path: outbox rows), then the service sends
   them to the fake Bot API, which answers 403 to ~1 % of the chats (blocked the bot), 429 with retry_after, 500
   at random, 500 to the text part after a photo for a few chats, and (not with --quick) a few answers later than
   the client's 10 s read timeout (two not taken, one taken late). One signal's text does not fit a photo caption,
   so its chart tiers get a photo and then a text message. At about a third of the messages the process is killed
   with SIGKILL; the rows SENDING at that moment are the documented send/record window (bot/delivery/worker.py).
   It is started again on the same database and runs until the outbox is drained. Then, per (chat, signal), the
   messages the fake received (a delivery counted once per first part: the photo, or the text when it has no
   photo) are compared with the deliveries table. Lost: an eligible delivery never received and not FAILED for
   a permanent reason. Duplicated: received more than once; inside the window when its row was SENDING at the
   kill, or its chat was the one answered after the timeout (the other documented ambiguity, tests/test_fanout.py);
   outside otherwise (must be 0). Doubled parts: a part (photo or text) received more than once.
2. Stripe webhook corpus against POST /stripe/webhook: no signature, a wrong one, a stale timestamp, a valid event
   and its replay (200, then 200 "duplicate"), a 2 MB body (413), signed `[]` and `null`, an event created at
   10**20, a signature timestamp beyond the tolerance in the future and one at 10**20, a 60 KB header. Each bad one
   must get a 4xx, never a 500, and /healthz must still answer 200 afterwards.
3. Database faults against the same running process while a fan-out is in flight: a write lock held by another
   connection (BEGIN EXCLUSIVE, longer than the service's 10 s busy timeout); the database made read-only with
   `chattr +i` on the database and its -wal file (as root, chmod 0444 does not stop writes, and open descriptors
   keep their mode anyway; the -shm file is left alone: it is memory-mapped and an immutable mapping would kill
   the process with SIGBUS, which is no read-only database); a full disk (the database lives on a small tmpfs,
   filled up by a file). A probe write from a second connection shows whether writes really fail. /healthz (and
   /readyz if the server has one) must answer 503 during the fault and 200 after, the process must stay up, and
   after a stop and a start (which sends what a failed write left SENDING) nothing may be lost. The lock needs
   nothing special; chattr and mount need root (otherwise the row says why it was skipped).
4. Console fuzz: 10,001 lines (printable and unicode noise, control characters, empty lines, a 100 KiB line, valid
   commands interleaved) piped into `run --for N`; every non-blank, non-comment line must be answered (an echoed
   "> " line; the over-long one may be refused, but answered) and the process must exit 0.

Prints one table (attack | expected | observed | holds) and exits 1 when a row does not hold (a skipped row does
not count). --json writes the rows. --quick (600 users, 2,001 console lines, shorter faults, no read timeouts)
runs in about a minute and a half; the default in about five.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import json
import os
import random
import re
import shutil
import signal as os_signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any

import aiohttp

from bot.delivery.notifier import Notifier
from core.clock import SystemClock
from core.domain import AssetClass, Direction, Signal, Tier, Timeframe
from core.events import SignalIssued
from storage import Database, Stores
from storage.tables import PREFERENCES, USERS
from tests.fakes.stripe_api import API_KEY, API_VERSION, WEBHOOK_SECRET, FakeStripe, WebhookSender
from tests.fakes.telegram_bot_api import FakeBotApi

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
CHAT_BASE = 500_000  # chat id of user i: CHAT_BASE + i
PAID = (Tier.HOBBYIST, Tier.TRADER, Tier.PROFESSIONAL)  # the tiers with charts
SERVICE_READ_TIMEOUT = 10.0  # TelegramTransport's default read timeout, which the service uses
SQLITE_BUSY_TIMEOUT = 10.0  # storage.database.SQLITE_BUSY_TIMEOUT_MS
_SCRUBBED = ("SIGNALBOT_", "TELEGRAM_", "DISCORD_", "STRIPE_", "OPENAI_", "ANTHROPIC_")
_PROXIES = {"http_proxy", "https_proxy", "all_proxy", "ftp_proxy"}
_DB_ERRORS = re.compile(r"database is locked|readonly database|read-only|disk I/O error|disk is full|"
                        r"database or disk|OperationalError", re.IGNORECASE)


# -- sizes ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Plan:
    users: int
    quick: bool
    db_users: int  # Telegram users of the database-fault phase (free tier: text only)
    db_rate: float  # messages per second there (the service's own limiter): a fan-out spans each fault
    console_lines: int
    lock_seconds: float  # the write lock (longer than the service's busy timeout)
    fault_seconds: float  # read-only and full disk
    read_timeouts: bool  # inject answers later than the client's read timeout (each stalls a batch ~10 s)
    fanout_budget: float  # seconds for the fan-out to drain after the restart

    @classmethod
    def make(cls, users: int | None, quick: bool) -> Plan:
        if quick:
            return cls(users or 600, True, 120, 20.0, 2_001, SQLITE_BUSY_TIMEOUT + 1.5, 5.0, False, 45.0)
        return cls(users or 5_000, False, 300, 15.0, 10_001, SQLITE_BUSY_TIMEOUT + 5.0, 10.0, True, 150.0)


@dataclass(slots=True)
class Row:
    attack: str
    expected: str
    observed: str
    holds: bool | None  # None: skipped (observed says why)

    @property
    def verdict(self) -> str:
        return "skipped" if self.holds is None else ("yes" if self.holds else "no")


# -- the service as a child process ---------------------------------------------------------------------------
SOURCE = REPO  # the source tree the service runs from (--source)


def service_env(workdir: Path, db: Path, **settings: str) -> dict[str, str]:
    """The child's environment: the caller's without tokens, keys and proxies; a file database; no model store,
    no LLM; the scan and the tracker run once at start (their own signals and exits would only add traffic)."""
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith(_SCRUBBED) and k.lower() not in _PROXIES}
    path = [str(SOURCE), *filter(None, [env.get("PYTHONPATH")])]
    env.update({
        "PYTHONPATH": os.pathsep.join(path), "PYTHONUNBUFFERED": "1", "NO_PROXY": f"{LOOPBACK},localhost",
        "no_proxy": f"{LOOPBACK},localhost",
        "SIGNALBOT_DATABASE_URL": f"sqlite+aiosqlite:///{db}", "SIGNALBOT_HTTP_HOST": LOOPBACK,
        "SIGNALBOT_MODELS_DIR": str(workdir / "models"), "SIGNALBOT_BACKTEST_REPORTS_DIR": str(workdir / "backtests"),
        "SIGNALBOT_LLM_REASONING": "false", "SIGNALBOT_SCAN_INTERVAL": "100000",
        "SIGNALBOT_TRACK_INTERVAL": "100000", "SIGNALBOT_LOG_LEVEL": "INFO",
    })
    env.update(settings)
    return env


class Service:
    """One `python -m bot.cli run` child: its own session (signals go to it by pid only), logs in files."""

    def __init__(self, name: str, workdir: Path, env: Mapping[str, str], args: Sequence[str] = ()) -> None:
        self.name = name
        self.workdir = workdir
        self.env = dict(env)
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._files: list[IO[bytes]] = []

    @property
    def stdout_path(self) -> Path:
        return self.workdir / f"{self.name}.{self.starts}.stdout"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / f"{self.name}.{self.starts}.stderr"

    def start(self, stdin: int = subprocess.DEVNULL) -> None:
        self.starts += 1
        out, err = open(self.stdout_path, "wb"), open(self.stderr_path, "wb")  # noqa: SIM115 - closed in close()
        self._files += [out, err]
        self.proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "run", *self.args], cwd=self.workdir,
                                     env=self.env, stdin=stdin, stdout=out, stderr=err, start_new_session=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def tail(self, lines: int = 5) -> str:
        return " / ".join(line[-200:] for line in self.log().strip().splitlines()[-lines:])

    async def wait_for_log(self, pattern: str, timeout: float) -> re.Match[str] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.log())
            if found or not self.alive():
                return found
            await asyncio.sleep(0.1)
        return None

    def kill9(self) -> None:
        if self.alive():
            os.kill(self.pid, os_signal.SIGKILL)
            assert self.proc is not None
            self.proc.wait()

    async def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait; the exit status, or None when it had to be killed."""
        if not self.alive():
            return self.returncode
        os.kill(self.pid, os_signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if self.alive():
            self.kill9()
            return None
        return self.returncode

    def close(self) -> None:
        self.kill9()
        for f in self._files:
            f.close()
        self._files.clear()


# -- the fake Bot API, for thousands of photos ----------------------------------------------------------------
class RecordingBotApi(FakeBotApi):
    """The fake Bot API keeping no photo bytes (thousands of charts) and counting the sends in flight."""

    def __init__(self) -> None:
        super().__init__(validate=False)
        self.in_flight = 0

    def _send_photo(self, params: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        answer = super()._send_photo(params, files)
        self.sent[-1].photo = None  # recorded just now (no await in between); its size is in the answer already
        return answer

    async def _apply_faults(self, method: str, chat_id: Any) -> None:
        if not method.startswith("send"):
            return await super()._apply_faults(method, chat_id)
        self.in_flight += 1
        try:
            await super()._apply_faults(method, chat_id)
        finally:
            self.in_flight -= 1  # the handler records synchronously right after this returns

    async def idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return not self.in_flight


# -- seeding through the store --------------------------------------------------------------------------------
LONG_REASONING = " ".join(["The red-team signal: its text does not fit a photo caption, so a chart tier gets the "
                           "photo first and this text in a second message."] * 14)


def make_signal(sid: str, symbol: str, *, long: bool = False) -> Signal:
    issued = SystemClock().now() - timedelta(hours=3)  # before the simulated clock's start: its bars exist
    reasoning = (LONG_REASONING if long else "A short red-team signal.") + f"\nref:{sid}:end"
    return Signal(id=sid, symbol=symbol, asset_class=AssetClass.EQUITY, timeframe=Timeframe.D1,
                  direction=Direction.LONG, entry=100, target=104, stop=98, confidence=70, position_size=0.05,
                  issued_at=issued, expires_at=issued + timedelta(days=3), reasoning=reasoning, strategy="redteam")


def tier_of(i: int, paid_share: float) -> Tier:
    return PAID[i % 3] if (i * 7919) % 100 < paid_share * 100 else Tier.FREE


async def seed_users(db: Path, n: int, paid_share: float) -> dict[str, tuple[int, Tier]]:
    """n active Telegram users in bulk; chat -> (user id, tier)."""
    database = Database(f"sqlite+aiosqlite:///{db}")
    await database.upgrade()
    now = SystemClock().now()
    users = [{"id": i + 1, "platform": "telegram", "platform_user_id": str(CHAT_BASE + i),
              "chat_id": str(CHAT_BASE + i), "display_name": f"red {i}", "tier": tier_of(i, paid_share).value,
              "active": True, "created_at": now} for i in range(n)]
    prefs = [{"user_id": i + 1, "symbols": "[]", "asset_classes": "[]", "timeframes": "[]", "min_confidence": 1,
              "risk": ("low", "medium", "high")[i % 3]} for i in range(n)]
    async with database.engine.begin() as conn:
        await conn.execute(USERS.insert(), users)
        await conn.execute(PREFERENCES.insert(), prefs)
    await database.close()
    return {str(CHAT_BASE + i): (i + 1, tier_of(i, paid_share)) for i in range(n)}


async def issue(db: Path, signals: Sequence[Signal]) -> int:
    """Store the signals and queue their fan-out through the Notifier (what SignalIssued does in the service).
    Works while the service runs on the same file (SQLite WAL: one writer at a time, waiting its turn)."""
    database = Database(f"sqlite+aiosqlite:///{db}")
    store = Stores.over(database, SystemClock())
    try:
        await store.signals.add_signals(list(signals))
        notifier = Notifier(store, SystemClock(), {"telegram"}, wake=lambda: None)
        return sum([await notifier.on_signal_issued(SignalIssued(s)) for s in signals])
    finally:
        await store.close()


# -- reading the outcome --------------------------------------------------------------------------------------
def connect(db: Path, timeout: float = 15.0) -> sqlite3.Connection:
    return sqlite3.connect(db, timeout=timeout, isolation_level=None, check_same_thread=False)


def outbox_counts(db: Path) -> Counter[str]:
    with contextlib.closing(connect(db)) as conn:
        return Counter({status: n for status, n in conn.execute(
            "SELECT status, count(*) FROM deliveries WHERE channel = 'telegram' GROUP BY status")})


def sending_rows(db: Path) -> set[tuple[int, str]]:
    with contextlib.closing(connect(db)) as conn:
        return {(int(u), str(s)) for u, s in conn.execute(
            "SELECT user_id, signal_id FROM deliveries WHERE channel = 'telegram' AND status = 'sending'")}


@dataclass(frozen=True, slots=True)
class Fact:
    user_id: int
    chat: str
    active: bool
    signal_id: str
    status: str
    error: str


def delivery_facts(db: Path, signal_ids: Sequence[str]) -> list[Fact]:
    marks = ",".join("?" * len(signal_ids))
    with contextlib.closing(connect(db)) as conn:
        rows = conn.execute(
            f"SELECT d.user_id, u.chat_id, u.active, d.signal_id, d.status, coalesce(d.error, '') FROM deliveries d "
            f"JOIN users u ON u.id = d.user_id WHERE d.channel = 'telegram' AND d.kind = 'signal' "
            f"AND d.signal_id IN ({marks})", list(signal_ids)).fetchall()
    return [Fact(int(u), str(c), bool(a), str(s), str(st), str(e)) for u, c, a, s, st, e in rows]


async def drained(db: Path, service: Service, timeout: float, *, allow_sending: bool = False) -> bool:
    """No row PENDING (nor SENDING unless allowed) for Telegram, within `timeout`; False if not (or the service
    died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and service.alive():
        with contextlib.suppress(sqlite3.Error):
            counts = outbox_counts(db)
            if not counts["pending"] and (allow_sending or not counts["sending"]):
                return True
        await asyncio.sleep(0.5)
    return False


@dataclass
class Tally:
    """What the fake received, per (chat, signal), against the outbox."""

    deliveries: int = 0
    status: Counter[str] = field(default_factory=Counter)
    lost: list[tuple[str, str, str]] = field(default_factory=list)  # chat, signal, status
    unrecorded: list[tuple[str, str, str]] = field(default_factory=list)  # received, row not SENT
    dup_window: list[tuple[str, str, int]] = field(default_factory=list)  # chat, signal, times received
    dup_timeout: list[tuple[str, str, int]] = field(default_factory=list)
    dup_outside: list[tuple[str, str, int]] = field(default_factory=list)
    parts_window: list[tuple[str, str, str]] = field(default_factory=list)  # chat, signal, "photos x, texts y"
    parts_outside: list[tuple[str, str, str]] = field(default_factory=list)
    partial_resends: int = 0  # a photo sent again without its whole message (the text part had failed)
    multipart: int = 0  # deliveries received as photo + text
    blocked_wrong: list[str] = field(default_factory=list)

    @property
    def duplicated(self) -> int:
        return len(self.dup_window) + len(self.dup_timeout) + len(self.dup_outside)


def message_parts(fake: FakeBotApi, signals: Sequence[Signal]) -> dict[tuple[str, str], tuple[int, int]]:
    """(chat, signal id) -> (photos, text messages) received. A photo's caption names the signal by its heading
    ("BUY AAPL (1d)", one symbol per signal here), a text by its "Signal" field or the reasoning's last line."""
    keys = [(s.id, (s.id, f"ref:{s.id}:end", f"{s.symbol} ({s.timeframe})")) for s in signals]
    parts: dict[tuple[str, str], list[int]] = {}
    for m in fake.sent:
        for sid, marks in keys:
            if any(k in m.raw for k in marks):
                counts = parts.setdefault((str(m.chat_id), sid), [0, 0])
                counts[0 if m.method == "sendphoto" else 1] += 1
                break
    return {k: (v[0], v[1]) for k, v in parts.items()}


def tally(facts: Sequence[Fact], parts: Mapping[tuple[str, str], tuple[int, int]], *, window: set[tuple[int, str]],
          late_chats: AbstractSet[str] = frozenset(), blocked: AbstractSet[str] = frozenset()) -> Tally:
    t = Tally(deliveries=len(facts), status=Counter(f.status for f in facts))
    texts_after_photo: dict[str, Counter[int]] = {}
    for (chat, sid), (photos, texts) in parts.items():
        if photos:
            texts_after_photo.setdefault(sid, Counter())[texts // photos] += 1
    per_photo = {sid: c.most_common(1)[0][0] for sid, c in texts_after_photo.items()}  # text parts after a photo
    for f in facts:
        photos, texts = parts.get((f.chat, f.signal_id), (0, 0))
        received = photos if photos else texts
        key = (f.chat, f.signal_id)
        if f.chat in blocked:
            if received or f.active or f.status not in ("failed", "skipped"):
                t.blocked_wrong.append(f"{f.chat}/{f.signal_id}: {f.status}, received {received}, active {f.active}")
            continue
        if received == 0:
            if not (f.status == "failed" and _permanent(f.error)):
                t.lost.append((*key, f.status))
            continue
        if f.status != "sent":
            t.unrecorded.append((*key, f.status))
        in_window = (f.user_id, f.signal_id) in window
        if received > 1:
            bucket = t.dup_window if in_window else t.dup_timeout if f.chat in late_chats else t.dup_outside
            bucket.append((*key, received))
        if photos:
            k = per_photo.get(f.signal_id, 0)
            if k:
                t.multipart += 1
            if photos > 1 or texts > k:
                label = f"photos {photos}, texts {texts}"
                (t.parts_window if in_window or f.chat in late_chats else t.parts_outside).append((*key, label))
            if k and photos > texts // k:
                t.partial_resends += photos - texts // k
    return t


def _permanent(error: str) -> bool:
    return "forbidden" in error.lower() or "blocked" in error.lower()


def _some(items: Sequence[Any], n: int = 3) -> str:
    return ", ".join(str(x) for x in items[:n]) + (" ..." if len(items) > n else "")


# -- 1. fan-out with faults and kill -9 ----------------------------------------------------------------------
async def attack_fanout(plan: Plan, work: Path) -> list[Row]:
    db = work / "fanout.db"
    chats = await seed_users(db, plan.users, paid_share=0.4)
    run_id = uuid.uuid4().hex[:6]
    signals = [make_signal(f"RT{run_id}-LONG", "AAPL", long=True), make_signal(f"RT{run_id}-SHORT", "MSFT")]
    queued = await issue(db, signals)
    ordered = sorted(chats)
    blocked = set(ordered[::97])
    paid = [c for c in ordered if chats[c][1] in PAID and c not in blocked]
    free = [c for c in ordered if chats[c][1] is Tier.FREE and c not in blocked]
    text_fails = paid[5::max(1, len(paid) // 6)][:5]  # the text part after the photo fails once
    late = set(free[7:8]) if plan.read_timeouts else set()  # answered after the client's read timeout, but taken
    fake = RecordingBotApi()
    await fake.start()
    service: Service | None = None
    rows: list[Row] = []
    try:
        for chat in blocked:
            fake.block(chat)
        for chat in text_fails:
            fake.fail(500, method="sendmessage", chat_id=chat, times=1)
        for chat in late:
            fake.slow(SERVICE_READ_TIMEOUT + 1.5, chat_id=chat, times=1)
        if plan.read_timeouts:  # no answer within the read timeout, then a 504: the message was not taken
            fake.fail(504, "Gateway Timeout", delay=SERVICE_READ_TIMEOUT + 1.0, times=2, probability=0.001)
        fake.rate_limit(retry_after=2, times=3, probability=0.002)
        fake.fail(500, times=None, probability=0.02)
        env = service_env(work, db, TELEGRAM_TOKEN=fake.token, SIGNALBOT_TELEGRAM_BASE_URL=fake.base_url,
                          SIGNALBOT_TELEGRAM_BASE_FILE_URL=fake.base_file_url,
                          SIGNALBOT_TELEGRAM_MESSAGES_PER_SECOND="0")
        service = Service("fanout", work, env, ["--speed", "1"])
        t0 = time.monotonic()
        service.start()
        target = int(queued * 0.35)
        deadline = time.monotonic() + 90
        while len(fake.sent) < target and service.alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        first_alive = service.alive()
        service.kill9()
        killed_at = len(fake.sent)
        window = sending_rows(db)
        sent_rows = outbox_counts(db)["sent"]
        service.start()  # the same database: requeues what was SENDING, sends the rest
        done = await drained(db, service, plan.fanout_budget)
        await fake.idle(SERVICE_READ_TIMEOUT + 5)
        requeued = re.search(r"(\d+) deliveries interrupted by the last stop are queued again", service.log())
        rc = await service.stop()
        elapsed = time.monotonic() - t0
        facts = delivery_facts(db, [s.id for s in signals])
        t = tally(facts, message_parts(fake, signals), window=window, late_chats=late, blocked=blocked)
        calls = Counter(c.status for c in fake.calls if c.method.startswith("send"))
        unsubscribed = sum(1 for f in facts if f.chat in blocked and not f.active and f.status == "failed")
        failed_texts = sum(1 for c in fake.calls if c.method == "sendmessage" and c.status == 500
                           and str(c.params.get("chat_id")) in set(text_fails))
        faults = (f"faults answered: 403 x{calls[403]}, 429 x{calls[429]}, 500 x{calls[500]}, 504 x{calls[504]}, "
                  f"late-but-taken x{len(late)}")
        head = f"fan-out {len(chats):,} users x {len(signals)} signals, faults, kill -9, restart"
        kill = (f"killed (SIGKILL) at {killed_at:,} messages received, {sent_rows:,} rows SENT, {len(window)} SENDING"
                + ("" if first_alive else f"; the first process had died already: {service.tail(2)}"))
        state = ", ".join(f"{k} {v:,}" for k, v in sorted(t.status.items()))
        rows.append(Row(f"{head}: lost",
                        "0 lost: every eligible delivery received, except FAILED for a permanent reason (403)",
                        f"{len(t.lost)} lost{': ' + _some(t.lost) if t.lost else ''}; {t.deliveries:,} deliveries "
                        f"({state}); {kill}; {faults}; drained {'yes' if done else 'NO'} in {elapsed:.0f} s",
                        not t.lost and done and first_alive))
        rows.append(Row(f"{head}: duplicated (by first part)",
                        "only inside the send/record window (rows SENDING at the kill; a reply after the read "
                        "timeout), counted; 0 outside",
                        f"{t.duplicated} duplicated: {len(t.dup_window)} in the kill window (of {len(window)} "
                        f"SENDING, {requeued.group(1) if requeued else 0} requeued at start), {len(t.dup_timeout)} "
                        f"after a late reply, {len(t.dup_outside)} outside"
                        + (f": {_some(t.dup_outside)}" if t.dup_outside else "")
                        + (f"; {len(t.unrecorded)} received but not SENT: {_some(t.unrecorded)}" if t.unrecorded
                           else ""),
                        not t.dup_outside and not t.unrecorded))
        rows.append(Row("fan-out: multi-part messages (photo, then text)",
                        "no part received twice outside the window (a failed text part does not resend the photo)",
                        f"{t.multipart:,} photo+text deliveries; doubled parts: {len(t.parts_window)} inside the "
                        f"window, {len(t.parts_outside)} outside"
                        + (f" ({_some(t.parts_outside)})" if t.parts_outside else "")
                        + f"; {t.partial_resends} photos resent without their whole message ({failed_texts} of "
                          f"{len(text_fails)} chats chosen had the text part after their photo fail with 500, other "
                          f"parts failed with 500 at random)",
                        not t.parts_outside and t.multipart > 0))
        rows.append(Row("fan-out: 403 (blocked the bot)",
                        "FAILED, user unsubscribed, their other rows cancelled, nothing received",
                        f"{len(blocked)} blocked chats: {unsubscribed} FAILED and unsubscribed"
                        + (f"; wrong: {_some(t.blocked_wrong)}" if t.blocked_wrong else ""),
                        not t.blocked_wrong and unsubscribed == len(blocked)))
        rows.append(Row("fan-out: restart after kill -9, then SIGTERM", "exit status 0",
                        f"exit status {rc}" + ("" if rc == 0 else f": {service.tail(3)}"), rc == 0))
    finally:
        if service is not None:
            service.close()
        await fake.close()
    return rows


# -- 2. webhook corpus ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Reply:
    status: int | None  # None: no answer
    body: str


async def post(session: aiohttp.ClientSession, url: str, body: bytes, headers: Mapping[str, str]) -> Reply:
    try:
        async with session.post(url, data=body, headers=dict(headers),
                                timeout=aiohttp.ClientTimeout(total=15)) as response:
            return Reply(response.status, (await response.text(errors="replace"))[:160])
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Reply(None, f"{type(exc).__name__}: {exc}"[:160])


async def get_status(session: aiohttp.ClientSession, url: str, timeout: float = 5.0) -> int | None:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            await response.read()
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return None


def stripe_event(event_type: str = "customer.subscription.updated", created: int | None = None) -> dict[str, Any]:
    """A well-formed event Stripe could send, for a subscription nobody here owns: recorded, no effect."""
    sub = {"id": f"sub_redteam_{uuid.uuid4().hex[:8]}", "object": "subscription", "status": "active",
           "customer": "cus_redteam", "cancel_at_period_end": False, "metadata": {},
           "items": {"object": "list", "data": []}}
    return {"id": f"evt_redteam_{uuid.uuid4().hex}", "object": "event", "api_version": API_VERSION,
            "created": int(time.time()) if created is None else created, "data": {"object": sub}, "livemode": False,
            "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None}, "type": event_type}


async def attack_webhooks(session: aiohttp.ClientSession, base: str, service: Service) -> list[Row]:
    url = f"{base}/stripe/webhook"

    def signed(payload: bytes, *, t: int | None = None, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
        stamp = int(time.time()) if t is None else t
        return {"Content-Type": "application/json", "Stripe-Signature": WebhookSender.sign(payload.decode(), secret,
                                                                                           stamp)}

    def body(event: object) -> bytes:
        return json.dumps(event).encode()

    now = int(time.time())
    valid = body(stripe_event())
    big = json.dumps({**stripe_event(), "padding": "x" * (2 * 1024 * 1024)}).encode()
    cases: list[tuple[str, bytes, dict[str, str], set[int], str]] = [
        ("no Stripe-Signature header", valid, {"Content-Type": "application/json"}, {400}, "400"),
        ("wrong signature (another secret)", valid, signed(valid, secret="whsec_not_ours"), {400}, "400"),
        ("stale timestamp (t = now - 600 s, tolerance 300 s)", valid, signed(valid, t=now - 600), {400}, "400"),
        ("2 MB body", big, signed(big), {413}, "413"),
        ("signed []", b"[]", signed(b"[]"), {400}, "400"),
        ("signed null", b"null", signed(b"null"), {400}, "400"),
        ("signed event with created = 10**20", body(stripe_event(created=10**20)),
         {}, {400}, "400"),
        ("signed with t = now + 3600 s (future, beyond tolerance)", body(stripe_event()), {}, {400}, "400"),
        ("signed with t = 10**20", body(stripe_event()), {}, {400}, "400"),
        ("60 KB Stripe-Signature header", valid,
         {"Content-Type": "application/json", "Stripe-Signature": f"t={now},v1=" + "0" * 60_000},
         {400, 413, 431}, "4xx (400/413/431)"),
    ]
    stamps = {"signed with t = now + 3600 s (future, beyond tolerance)": now + 3600, "signed with t = 10**20": 10**20}
    rows: list[Row] = []
    statuses: list[int | None] = []
    for name, payload, headers, ok, expected in cases:
        if not headers:  # signed here: the body was made above
            headers = signed(payload, t=stamps.get(name))
        reply = await post(session, url, payload, headers)
        statuses.append(reply.status)
        rows.append(Row(f"webhook: {name}", expected, f"{reply.status or 'no answer'} {reply.body}",
                        reply.status in ok))
    first = await post(session, url, valid, signed(valid))
    again = await post(session, url, valid, signed(valid))
    statuses += [first.status, again.status]
    rows.append(Row("webhook: a valid event, then its replay (same id)", "200, then 200 \"duplicate\" (no effect)",
                    f"{first.status} {first.body} / {again.status} {again.body}",
                    first.status == 200 and again.status == 200 and '"duplicate"' in again.body))
    health = await get_status(session, f"{base}/healthz")
    fives = sum(1 for s in statuses if s is not None and s >= 500)
    rows.append(Row("webhook corpus: the service afterwards", "never a 500; /healthz 200; process up",
                    f"{fives} answers 5xx of {len(statuses)}; /healthz {health}; process "
                    f"{'up' if service.alive() else 'DOWN: ' + service.tail(2)}",
                    fives == 0 and health == 200 and service.alive()))
    return rows


# -- 3. database faults --------------------------------------------------------------------------------------
@dataclass
class Fault:
    name: str
    apply: Callable[[], Awaitable[str]]  # returns what was done; raises Skip when it cannot be done here
    release: Callable[[], Awaitable[None]]
    seconds: float
    probe_writes: bool = True  # a second connection's write shows whether writes fail (not under the lock)


class Skip(Exception):
    pass


def probe_write(db: Path) -> str:
    """Try a write that needs new space from another connection; what happened."""
    try:
        with contextlib.closing(connect(db, timeout=2.0)) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS redteam_probe (x BLOB)")
            conn.execute("INSERT INTO redteam_probe VALUES (randomblob(1048576))")
            conn.execute("DELETE FROM redteam_probe")
        return "a probe write succeeded"
    except sqlite3.Error as exc:
        return f"a probe write failed ({exc})"


def chattr(flag: str, *paths: Path) -> None:
    for p in paths:
        if p.exists():
            subprocess.run(["chattr", flag, str(p)], check=True, capture_output=True, timeout=10)


def write_lock(db: Path, seconds: float) -> Fault:
    holder: dict[str, Any] = {}

    async def apply() -> str:
        holder["conn"] = conn = connect(db, timeout=SQLITE_BUSY_TIMEOUT + 5)
        await asyncio.to_thread(conn.execute, "BEGIN EXCLUSIVE")
        return f"BEGIN EXCLUSIVE held {seconds:.0f} s by another connection"

    async def release() -> None:
        conn = holder.pop("conn", None)
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            conn.close()
    return Fault("write lock held by another connection", apply, release, seconds, probe_writes=False)


def read_only(db: Path, seconds: float) -> Fault:
    files = [db, db.with_name(db.name + "-wal")]

    async def apply() -> str:
        if os.geteuid() != 0 or shutil.which("chattr") is None:
            raise Skip("skipped: needs root and chattr (chmod 0444 does not stop root's writes, nor open files)")
        canary = db.with_name("redteam.canary")
        try:
            with open(canary, "wb", buffering=0) as f:  # open before, like the service's files
                f.write(b"a")
                chattr("+i", canary)
                try:
                    f.write(b"b")
                    blocks = False
                except OSError:
                    blocks = True
                finally:
                    chattr("-i", canary)
            canary.unlink()
            if not blocks:
                raise Skip("skipped: on this filesystem chattr +i does not stop writes through files already open")
            chattr("+i", *files)
        except (subprocess.CalledProcessError, OSError) as exc:
            raise Skip(f"skipped: chattr +i refused here ({exc})") from None
        return "chattr +i on the database and its -wal (it stops writes through open files here)"

    async def release() -> None:
        with contextlib.suppress(subprocess.CalledProcessError, OSError):
            chattr("-i", *files)
    return Fault("database read-only", apply, release, seconds)


def full_disk(db: Path, mounted: Path | None, fs_kind: str, seconds: float) -> Fault:
    filler = db.with_name("redteam.filler")

    async def apply() -> str:
        if mounted is None:
            raise Skip(f"skipped: needs root mount (the database must live on a small filesystem): {fs_kind}")
        # the -wal file keeps its size and SQLite reuses it: emptied first, every write then needs new blocks
        truncated = await asyncio.to_thread(_truncate_wal, db)
        written = await asyncio.to_thread(_fill, filler)
        return f"the {fs_kind} filesystem filled ({written // 1024:,} KiB of filler, after {truncated})"

    async def release() -> None:
        with contextlib.suppress(FileNotFoundError):
            filler.unlink()
    return Fault("disk full", apply, release, seconds)


def _truncate_wal(db: Path) -> str:
    try:
        with contextlib.closing(connect(db, timeout=5.0)) as conn:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        wal = db.with_name(db.name + "-wal")
        return f"a checkpoint that {'could not' if busy else 'did'} truncate the -wal ({wal.stat().st_size:,} bytes)"
    except (sqlite3.Error, OSError) as exc:
        return f"a checkpoint that failed ({exc})"


def _fill(path: Path) -> int:
    written = 0
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 14, 1 << 9):
            block = b"\0" * chunk
            while True:
                try:
                    f.write(block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
                written += chunk
    return written


@contextlib.contextmanager
def scratch_fs(where: Path, megabytes: int) -> Iterator[tuple[Path | None, str]]:
    """A small filesystem mounted at `where` for the database, unmounted after: ext4 on a loop device (it fills up,
    and chattr +i stops writes through files already open), else tmpfs (fills up; there chattr +i does not stop
    open files); (None, why) when nothing can be mounted (not root)."""
    where.mkdir(parents=True, exist_ok=True)
    image = where.with_name(where.name + ".ext4")
    kind = ""
    if os.geteuid() == 0 and shutil.which("mount"):
        if shutil.which("mkfs.ext4"):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                with open(image, "wb") as f:
                    f.truncate(megabytes << 20)
                made = subprocess.run(["mkfs.ext4", "-q", "-m", "0", "-F", str(image)], capture_output=True, timeout=60)
                if made.returncode == 0 and _mount(["-o", "loop", str(image), str(where)]):
                    kind = "ext4 (loop)"
        if not kind and _mount(["-t", "tmpfs", "-o", f"size={megabytes}m,mode=0700", "tmpfs", str(where)]):
            kind = "tmpfs"
    try:
        yield (where, kind) if kind else (None, "not root, or mount refused")
    finally:
        if kind:
            for p in where.iterdir():
                with contextlib.suppress(subprocess.SubprocessError, OSError):
                    chattr("-i", p)
            if subprocess.run(["umount", str(where)], capture_output=True, timeout=30).returncode != 0:
                subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)
        image.unlink(missing_ok=True)


def _mount(args: list[str]) -> bool:
    try:
        return subprocess.run(["mount", *args], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


PROBE_LIMIT = 5.0  # seconds a health check may take to say 503 (an orchestrator's probe gives up sooner still)


async def timed_status(session: aiohttp.ClientSession, url: str, timeout: float = 12.0) -> tuple[int | None, float]:
    t0 = time.monotonic()
    status = await get_status(session, url, timeout)
    return status, time.monotonic() - t0


async def run_fault(fault: Fault, *, session: aiohttp.ClientSession, base: str, checks: Sequence[str],
                    service: Service, db: Path, fake: RecordingBotApi, signal: Signal) -> Row:
    """Apply the fault while a fan-out is in flight; probe the health checks during it and after its release."""
    expected = (" and ".join(checks) + f" 503 during (within {PROBE_LIMIT:.0f} s), 200 after; process up")
    await issue(db, [signal])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and sum(signal.id in m.raw for m in fake.sent) < 3:
        await asyncio.sleep(0.1)
    log_start = len(service.log())
    try:
        what = await fault.apply()
    except Skip as exc:
        return Row(f"db fault: {fault.name}", expected, str(exc), None)
    during: list[str] = []
    ok = True
    effect = ""
    try:
        if fault.probe_writes:
            effect = await asyncio.to_thread(probe_write, db)
        end = time.monotonic() + fault.seconds
        await asyncio.sleep(0.5)
        while time.monotonic() < end:
            answers = await asyncio.gather(*(timed_status(session, f"{base}{c}") for c in checks))
            during.append("/".join(f"{st}" for st, _ in answers) + f" in {max(t for _, t in answers):.1f} s")
            ok = ok and all(st == 503 and t <= PROBE_LIMIT for st, t in answers)
            await asyncio.sleep(1.0)
    finally:
        await fault.release()
    released = time.monotonic()
    after: list[int | None] = []
    while time.monotonic() < released + 20:
        after = [st for st, _ in await asyncio.gather(*(timed_status(session, f"{base}{c}") for c in checks))]
        if all(st == 200 for st in after):
            break
        await asyncio.sleep(0.5)
    errors = len(_DB_ERRORS.findall(service.log()[log_start:]))
    alive = service.alive()
    observed = (f"{what}; {effect + '; ' if effect else ''}{errors} database errors in the service's log; "
                f"during ({' and '.join(checks)}): {_runs(during)}; after: {'/'.join(map(str, after))} in "
                f"{time.monotonic() - released:.1f} s; process {'up' if alive else 'DOWN: ' + service.tail(2)}")
    if effect.startswith("a probe write succeeded"):  # the fault did not take: nothing to judge the checks by
        return Row(f"db fault: {fault.name}", expected, f"inconclusive, writes did not fail: {observed}", None)
    return Row(f"db fault: {fault.name}", expected, observed,
               bool(during) and ok and all(st == 200 for st in after) and alive)


def _runs(items: Sequence[str]) -> str:
    """["503 in 0.1 s", "503 in 0.0 s", "200 in 0.0 s"] -> "503 x2, 200" (latencies: the slowest of each)."""
    out: list[str] = []
    for item in items:
        status, _, secs = item.partition(" in ")
        if out and out[-1].split(" (")[0].split(" x")[0] == status:
            head = out[-1].split(" (")[0]
            n = int(head.split(" x")[1]) + 1 if " x" in head else 2
            slowest = max(float(out[-1].split("(slowest ")[1].rstrip(" s)")), float(secs.rstrip(" s")))
            out[-1] = f"{status} x{n} (slowest {slowest:.1f} s)"
        else:
            out.append(f"{status} (slowest {float(secs.rstrip(' s')):.1f} s)")
    return ", ".join(out) or "no probe"


async def attack_http_and_db(plan: Plan, work: Path) -> list[Row]:
    rows: list[Row] = []
    with scratch_fs(work / "dbfs", 48) as (mounted, fs_kind):
        home = mounted or (work / "dbfaults")
        home.mkdir(exist_ok=True)
        db = home / "service.db"
        await seed_users(db, plan.db_users, paid_share=0.0)
        fake = RecordingBotApi()
        stripe = FakeStripe()
        await fake.start()
        await stripe.start()
        service: Service | None = None
        try:
            env = service_env(work, db, TELEGRAM_TOKEN=fake.token, SIGNALBOT_TELEGRAM_BASE_URL=fake.base_url,
                              SIGNALBOT_TELEGRAM_BASE_FILE_URL=fake.base_file_url,
                              SIGNALBOT_TELEGRAM_MESSAGES_PER_SECOND=str(plan.db_rate), SIGNALBOT_HTTP_PORT="0",
                              STRIPE_API_KEY=API_KEY, STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
                              SIGNALBOT_STRIPE_API_BASE=stripe.api_base, SIGNALBOT_PUBLIC_URL=f"http://{LOOPBACK}:9",
                              SIGNALBOT_STRIPE_PRICES="hobbyist=price_rt_h,trader=price_rt_t,professional=price_rt_p")
            service = Service("http", work, env, ["--speed", "1"])
            service.start()
            listening = await service.wait_for_log(r"http: listening on (http://127\.0\.0\.1:\d+)", 60)
            if listening is None:
                return [Row("http server", "listening on 127.0.0.1", f"did not start: {service.tail(3)}", False)]
            base = listening.group(1)
            async with aiohttp.ClientSession() as session:
                rows += await attack_webhooks(session, base, service)
                checks = ["/healthz"] + [c for c in ("/readyz",)
                                         if await get_status(session, f"{base}{c}") not in (None, 404, 405)]
                run_id = uuid.uuid4().hex[:6]
                faults = [(write_lock(db, plan.lock_seconds), "JPM"), (read_only(db, plan.fault_seconds), "XOM"),
                          (full_disk(db, mounted, fs_kind, plan.fault_seconds), "JNJ")]
                signals: list[Signal] = []
                for fault, symbol in faults:
                    sig = make_signal(f"RT{run_id}-{symbol}", symbol)
                    signals.append(sig)
                    if not service.alive():
                        rows.append(Row(f"db fault: {fault.name}", "process up", "the service is down", False))
                        continue
                    try:
                        rows.append(await run_fault(fault, session=session, base=base, checks=checks,
                                                    service=service, db=db, fake=fake, signal=sig))
                    except Exception as exc:  # noqa: BLE001 - a fault that breaks the attack is reported, the rest run
                        rows.append(Row(f"db fault: {fault.name}", "runs", f"the attack failed: {exc!r}", False))
                rows.append(await nothing_lost_after_db_faults(plan, service, db, fake, signals))
        finally:
            if service is not None:
                service.close()
            await fake.close()
            await stripe.close()
    return rows


async def nothing_lost_after_db_faults(plan: Plan, service: Service, db: Path, fake: RecordingBotApi,
                                       signals: Sequence[Signal]) -> Row:
    """Let the fan-outs finish, stop (what a failed write left SENDING stays so), start again, drain, count."""
    budget = plan.db_users / plan.db_rate * len(signals) + 30
    await drained(db, service, budget, allow_sending=True)
    await fake.idle(15)
    rc = await service.stop()
    stuck = sending_rows(db)
    service.start()
    await service.wait_for_log(r"signalbot running", 60)  # up (a SIGTERM during Python's imports is not a stop)
    done = await drained(db, service, 60)
    await fake.idle(15)
    rc2 = await service.stop()
    t = tally(delivery_facts(db, [s.id for s in signals]), message_parts(fake, signals), window=stuck)
    return Row("db faults: nothing lost (then a stop and a start)",
               "0 lost; duplicates only of rows a failed write left SENDING; both stops exit 0",
               f"{len(t.lost)} lost{': ' + _some(t.lost) if t.lost else ''} of {t.deliveries} deliveries; "
               f"{len(stuck)} rows left SENDING by failed writes, {len(t.dup_window)} of them received twice; "
               f"{len(t.dup_outside)} duplicated outside; drained {'yes' if done else 'NO'}; exit {rc}, {rc2}",
               not t.lost and not t.dup_outside and done and rc == 0 and rc2 == 0)


# -- 4. console fuzz -----------------------------------------------------------------------------------------
COMMANDS = ("/help", "/start", "/signals", "/prefs", "/instruments bank", "/history", "/prefs risk low",
            "/account", "/nosuchcommand", "/signal")
LONG_LINE_CHARS = 100 * 1024


def fuzz_lines(n: int, rng: random.Random) -> tuple[list[str], int]:
    """n lines (no newline inside) and the index of the 100 KiB one."""
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x590, 0x6FF), (0x4E00, 0x4FFF), (0x1F300, 0x1F64F),
              (0x2000, 0x206F), (0xFE00, 0xFE0F), (0x10000, 0x1007F)]
    controls = [chr(c) for c in [*range(0x00, 0x0A), *range(0x0B, 0x20), 0x7F, 0x85, 0x2028, 0x2029, 0xFEFF]]
    long_at = n // 2
    lines: list[str] = []
    for i in range(n):
        kind = i % 10
        if i == long_at:
            lines.append("x" * LONG_LINE_CHARS)
        elif i % 97 == 0:
            lines.append("/signal AAPL" if i % 2 else "/instruments " + rng.choice(["oil", "bank", "☃", ""]))
        elif kind in (0, 5):
            lines.append(rng.choice(COMMANDS) + rng.choice(["", "", " " + "".join(chr(rng.randint(33, 126))
                                                                                 for _ in range(rng.randint(1, 20)))]))
        elif kind in (1, 6):
            lines.append("".join(chr(rng.randint(0x20, 0x7E)) for _ in range(rng.randint(1, 200))))
        elif kind in (2, 7):
            lo, hi = rng.choice(ranges)
            lines.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 120))))
        elif kind == 3:
            lines.append("".join(rng.choice(controls + ["a", " ", "/"]) for _ in range(rng.randint(1, 40))))
        elif kind == 4:
            lines.append(rng.choice(["", "   ", "\t", "# a comment", "  # indented comment", "\r"]))
        elif kind == 8:
            lines.append("/" + "".join(chr(rng.randint(0x21, 0x2FF)) for _ in range(rng.randint(1, 30))))
        else:
            lines.append(rng.choice(["/start", "/help", "/signals"]) + "".join(rng.choice(controls)
                                                                               for _ in range(3)))
    return lines, long_at


def answered(text: str) -> bool:
    t = text.strip()
    return bool(t) and not t.startswith("#")


async def attack_console(plan: Plan, work: Path) -> list[Row]:
    lines, long_at = fuzz_lines(plan.console_lines, random.Random(19))
    expected = [f"> {line.strip()}" for line in lines if answered(line)]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    duration = 120 if plan.quick else 240
    service = Service("console", work, service_env(work, work / "console.db"), ["--speed", "1", "--for",
                                                                               str(duration)])
    t0 = time.monotonic()
    service.start(stdin=subprocess.PIPE)
    assert service.proc is not None and service.proc.stdin is not None
    stdin = service.proc.stdin

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            stdin.write(data)
        with contextlib.suppress(BrokenPipeError, OSError):
            stdin.close()
    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    # answered in a few seconds; stop once the output has been still for 4 s after the input was all written
    size, still_since = -1, time.monotonic()
    while service.alive() and time.monotonic() - t0 < duration:
        now_size = service.stdout_path.stat().st_size
        if now_size != size:
            size, still_since = now_size, time.monotonic()
        elif not writer.is_alive() and time.monotonic() - still_since > 4:
            break
        await asyncio.sleep(0.25)
    rc = await service.stop()
    writer.join(5)
    out = service.stdout_path.read_bytes().decode("utf-8", errors="replace").split("\n")
    echoes = [line for line in out if line.startswith("> ")]
    long_pos = sum(1 for line in lines[:long_at] if answered(line))  # its place among the answered lines
    done, long_answer, unanswered = align(echoes, expected, long_pos)
    crash = re.search(r"(Traceback|LimitOverrun\w*|Separator is \w+)[^\n]*", service.log())
    observed = (f"{done:,} of {len(expected):,} answered (sent {len(lines):,} lines, {len(lines) - len(expected):,} "
                f"blank or comments); the {LONG_LINE_CHARS // 1024} KiB line (#{long_at + 1}): "
                + (repr(long_answer[:60]) if long_answer is not None else "not answered")
                + (f"; unanswered: {len(unanswered):,}, the first line #{_nth_answered(lines, unanswered[0])}"
                   if unanswered else "")
                + (f"; log: {crash.group(0)[:120]}" if crash else "")
                + f"; exit status {rc} after {time.monotonic() - t0:.0f} s (SIGTERM once the output was still)")
    service.close()
    return [Row(f"console fuzz: {len(lines):,} lines piped into run --for {duration}",
                "every non-blank line answered (an over-long one refused), exit 0", observed,
                done == len(expected) and rc == 0)]


def align(echoes: Sequence[str], expected: Sequence[str], long_pos: int) -> tuple[int, str | None, list[int]]:
    """Walk the echoed lines in order against the expected ones: (how many were answered, the echo given to the
    over-long line at `long_pos`, the positions left unanswered). Any echo in the over-long line's place counts as
    its answer (a refusal); an echo that matches a later line skips the ones in between (unanswered)."""
    j, done, long_answer, unanswered = 0, 0, None, list[int]()
    for e in echoes:
        if j >= len(expected):
            break
        if j == long_pos and e != expected[j]:
            long_answer, j, done = e, j + 1, done + 1
            continue
        if e == expected[j]:
            j, done = j + 1, done + 1
            continue
        ahead = [k for k in range(j + 1, min(len(expected), j + 200)) if expected[k] == e]
        if ahead:
            unanswered += range(j, ahead[0])
            j, done = ahead[0] + 1, done + 1
    unanswered += range(j, len(expected))
    return done, long_answer, unanswered


def _nth_answered(lines: Sequence[str], k: int | None) -> int:
    if k is None:
        return -1
    seen = -1
    for i, line in enumerate(lines):
        if answered(line):
            seen += 1
            if seen == k:
                return i + 1
    return -1


# -- the run -------------------------------------------------------------------------------------------------
PHASES: dict[str, tuple[str, Callable[[Plan, Path], Awaitable[list[Row]]]]] = {
    "fanout": ("fan-out with faults and kill -9", attack_fanout),
    "http": ("webhook corpus and database faults", attack_http_and_db),
    "console": ("console fuzz", attack_console),
}


async def run(plan: Plan, work: Path, progress: Callable[[str], None],
              only: Sequence[str] = tuple(PHASES)) -> list[Row]:
    rows: list[Row] = []
    for name, phase in (PHASES[k] for k in only):
        t0 = time.monotonic()
        progress(f"redteam: {name} ...")
        try:
            rows += await phase(plan, work)
        except Exception as exc:  # a phase that breaks is a finding too; the others still run
            rows.append(Row(name, "runs to the end", f"the attack itself failed: {type(exc).__name__}: {exc}", False))
        progress(f"redteam: {name} done in {time.monotonic() - t0:.0f} s")
    return rows


def table(rows: Sequence[Row]) -> str:
    head = ("attack", "expected", "observed", "holds")
    body = [(r.attack, r.expected, r.observed, r.verdict) for r in rows]
    esc = [tuple(c.replace("|", "\\|").replace("\n", " ") for c in r) for r in [head, *body]]
    widths = [max(len(r[i]) for r in esc) if i != 2 else 0 for i in range(4)]
    lines = [f"| {r[0]:<{widths[0]}} | {r[1]:<{widths[1]}} | {r[2]} | {r[3]:<{widths[3]}} |" for r in esc]
    lines.insert(1, f"|{'-' * (widths[0] + 2)}|{'-' * (widths[1] + 2)}|---|{'-' * (widths[3] + 2)}|")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--users", type=int, help="Telegram users of the fan-out (default 5,000; --quick 600)")
    parser.add_argument("--quick", action="store_true", help="a bounded short run (about 90 s), e.g. for a test")
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    parser.add_argument("--keep", type=Path, help="keep the databases and logs in this directory")
    parser.add_argument("--only", default=",".join(PHASES),
                        help=f"attacks to run, comma-separated ({', '.join(PHASES)})")
    parser.add_argument("--source", type=Path, help="run the service from this source tree (default: this "
                        "checkout), e.g. an older commit unpacked with git archive, to see a fix make a row hold")
    args = parser.parse_args(argv)
    if args.source is not None:
        global SOURCE
        SOURCE = args.source.resolve()
    only = [p.strip() for p in args.only.split(",") if p.strip()]
    if not only or set(only) - set(PHASES):
        parser.error(f"--only takes {', '.join(PHASES)}")
    if args.users is not None and args.users < 100:
        parser.error("--users must be at least 100")
    plan = Plan.make(args.users, args.quick)
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:5.0f} s] {message}", file=sys.stderr, flush=True)

    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="redteam-", dir=args.keep))
    else:
        work = Path(tempfile.mkdtemp(prefix="signalbot-redteam-"))
    try:
        rows = asyncio.run(run(plan, work, progress, only))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(table(rows))
    failed = [r for r in rows if r.holds is False]
    print(f"\n{len(rows) - len(failed)} of {len(rows)} rows hold ({sum(r.holds is None for r in rows)} skipped); "
          f"{time.monotonic() - started:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"plan": dataclasses.asdict(plan), "generated": datetime.now(timezone.utc)
                                         .isoformat(timespec="seconds"), "seconds": round(time.monotonic() - started),
                                         "rows": [{**dataclasses.asdict(r), "verdict": r.verdict} for r in rows]},
                                        indent=2, ensure_ascii=False))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
