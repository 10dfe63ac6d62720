"""Benchmark (not a test): messages/s from the client to a local Bot API.

    .venv/bin/python -m tests.bench_telegram [-n 2000] [--concurrency 64] [--profile] [--uvloop]

The fake Bot API (tests/fakes/telegram_bot_api.py) runs in a child process, so the figures are the client's:
stock python-telegram-bot (Bot.send_message over its default httpx request: the starting point) and
TelegramTransport.send (PTB with its AIORateLimiter set to no limit, the answer kept as JSON; over httpx and
over the aiohttp request class), one message after another and with a bounded number in flight, next to a
bare aiohttp client posting the same sendMessage. CPU ms per message is the client process's CPU time / N.
The design's budget: >= 1,000 messages/s from the client (Telegram's own limit, ~30/s per bot, is then the
only bound). Lives under tests/ because it drives the test fake, and scripts/ may not import bot.
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bot.transports.telegram import TelegramTransport
from bot.views.doc import Button, Doc
from bot.views.telegram_html import render_html
from tests.fakes.telegram_bot_api import DEFAULT_TOKEN

REPO = Path(__file__).resolve().parents[1]
SIGNAL_DOC = Doc(
    heading="BUY AAPL (1d) · confidence 72/100",
    body="Oversold: z-score -2.4, RSI 24 and a volume spike after a 3.1% gap down; price 2.2 ATR under its "
         "20-day average. Trend context is neutral.",
    fields=(("Entry", "187.20 (next bar's open)"), ("Target", "193.90 (+3.6%)"), ("Stop", "183.10 (-2.2%)"),
            ("Risk-reward", "1.63"), ("Position size", "4.5% of equity (medium risk)"),
            ("Expires", "2025-06-09 20:00 UTC"), ("Signal", "sig_01J0ZK3M8Q")),
    buttons=(Button("Details", "/signal AAPL 1d"), Button("Track record", "/performance")),
    note="Signals are ideas, not investment advice.",
)


@dataclass
class Result:
    name: str
    n: int
    seconds: float
    cpu: float

    @property
    def rate(self) -> float:
        return self.n / self.seconds

    def line(self, reference: Result | None) -> str:
        ratio = f"{self.rate / reference.rate:5.2f}x bare" if reference else ""
        return (f"  {self.name:<46} {self.rate:8,.0f} msg/s   {self.cpu / self.n * 1000:6.3f} ms CPU/msg   "
                f"{ratio}")


def start_server(validate: bool) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, "-m", "tests.fakes.telegram_bot_api", "--port", "0", "--uvloop"]
    if not validate:
        cmd.append("--no-validate")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"fake Bot API did not start: {line!r}")
    return proc, int(line.split()[1])


async def timed(name: str, n: int, concurrency: int, send: Callable[[int], Awaitable[object]]) -> Result:
    for i in range(20):  # warm up connections and caches
        await send(i)
    cpu0, t0 = time.process_time(), time.perf_counter()
    if concurrency <= 1:
        for i in range(n):
            await send(i)
    else:
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with sem:
                await send(i)
        await asyncio.gather(*(one(i) for i in range(n)))
    return Result(name, n, time.perf_counter() - t0, time.process_time() - cpu0)


def chat_of(i: int) -> int:
    return 100_000 + i % 10_000  # a fan-out: many private chats


async def bare_aiohttp(api: str, n: int, concurrency: int) -> list[Result]:
    text = render_html(SIGNAL_DOC)[0]
    markup = {"inline_keyboard": [[{"text": b.label, "callback_data": b.command} for b in SIGNAL_DOC.buttons]]}
    out = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max(concurrency, 1))) as session:
        async def send(i: int) -> str:
            body = json.dumps({"chat_id": chat_of(i), "text": text, "parse_mode": "HTML", "reply_markup": markup,
                               "link_preview_options": {"is_disabled": True}})
            async with session.post(f"{api}/sendMessage", data=body,
                                    headers={"Content-Type": "application/json"}) as r:
                payload = json.loads(await r.read())
                assert payload["ok"], payload
                return str(payload["result"]["message_id"])
        out.append(await timed("bare aiohttp, sequential", n, 1, send))
        out.append(await timed(f"bare aiohttp, {concurrency} in flight", n, concurrency, send))
    return out


async def stock_ptb(base_url: str, n: int, concurrency: int, profile: bool) -> list[Result]:
    """The starting point: PTB's Bot.send_message over its default HTTPXRequest (a Message object back)."""
    from telegram import InlineKeyboardButton, InlineKeyboardMarkup, LinkPreviewOptions
    from telegram.ext import AIORateLimiter, Application

    app = (Application.builder().token(DEFAULT_TOKEN).base_url(base_url).connection_pool_size(max(concurrency, 8))
           .rate_limiter(AIORateLimiter(overall_max_rate=0, max_retries=0)).job_queue(None).build())
    text = render_html(SIGNAL_DOC)[0]
    markup = InlineKeyboardMarkup([[InlineKeyboardButton(b.label, callback_data=b.command) for b in SIGNAL_DOC.buttons]])
    no_preview = LinkPreviewOptions(is_disabled=True)
    await app.initialize()
    try:
        async def send(i: int) -> str:
            message = await app.bot.send_message(chat_of(i), text, parse_mode="HTML", reply_markup=markup,
                                                 link_preview_options=no_preview)
            return str(message.message_id)
        out = []
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        out.append(await timed("stock PTB Bot.send_message (httpx), sequential", n, 1, send))
        if profiler:
            profiler.disable()
            report(profiler, "cProfile of stock PTB Bot.send_message over httpx, sequential")
        out.append(await timed(f"stock PTB Bot.send_message (httpx), {concurrency} in flight", n, concurrency, send))
        return out
    finally:
        await app.shutdown()


async def transport(base_url: str, http: str, n: int, concurrency: int, profile: bool) -> list[Result]:
    t = TelegramTransport(DEFAULT_TOKEN, base_url=base_url, messages_per_second=0, http=http,  # type: ignore[arg-type]
                          connection_pool_size=max(concurrency, 8))
    await t.initialize()
    try:
        async def send(i: int) -> str:
            return await t.send(str(chat_of(i)), SIGNAL_DOC)
        out = []
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        out.append(await timed(f"TelegramTransport.send ({http}), sequential", n, 1, send))
        if profiler:
            profiler.disable()
            report(profiler, f"cProfile of TelegramTransport.send over {http}, sequential")
        out.append(await timed(f"TelegramTransport.send ({http}), {concurrency} in flight", n, concurrency, send))
        return out
    finally:
        await t.stop()


def report(profiler: cProfile.Profile, title: str, top: int = 25) -> None:
    buf = io.StringIO()
    stats = pstats.Stats(profiler, stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    print(f"\n--- {title}: top {top} by own time ---")
    print("\n".join(line for line in buf.getvalue().splitlines() if line.strip())[:6000])
    # own time grouped by package: where the CPU goes
    by_pkg: dict[str, float] = {}
    total = 0.0
    for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        key = package_of(filename)
        by_pkg[key] = by_pkg.get(key, 0.0) + tottime
        total += tottime
    print(f"\n--- own time by package ({total:.2f} s total) ---")
    for key, seconds in sorted(by_pkg.items(), key=lambda kv: -kv[1])[:14]:
        print(f"  {key:<28} {seconds:6.2f} s  {seconds / total * 100:5.1f}%")


def package_of(filename: str) -> str:
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    if filename.startswith("<") or "/lib/python3" not in filename:
        return "project/other" if str(REPO) in filename else filename.split("/")[-1][:28]
    return "stdlib:" + filename.rsplit("/", 1)[-1]


async def run(args: argparse.Namespace) -> None:
    proc, port = start_server(validate=not args.no_validate)
    base_url = f"http://127.0.0.1:{port}/bot"
    try:
        bare = await bare_aiohttp(base_url + DEFAULT_TOKEN, args.n, args.concurrency)
        results = list(bare)
        if not args.skip_stock:
            results += await stock_ptb(base_url, args.n, args.concurrency, args.profile)
        for http in args.http:
            results += await transport(base_url, http, args.n, args.concurrency, args.profile)
    finally:
        proc.terminate()
        proc.wait(5)
    print(f"\nN = {args.n} sendMessage calls per row, fake Bot API in a child process "
          f"({'no validation' if args.no_validate else 'HTML parsed and checked'}); loop: "
          f"{'uvloop' if args.uvloop else 'asyncio'}")
    for r in results:
        reference = bare[0] if "sequential" in r.name else bare[1]
        print(r.line(None if r.name.startswith("bare") else reference))
    best = max((r for r in results if not r.name.startswith("bare")), key=lambda r: r.rate)
    print(f"  budget >= 1,000 msg/s from the client: best transport row {best.rate:,.0f} msg/s "
          f"({'met' if best.rate >= 1000 else 'NOT met'})")


def main() -> None:
    parser = argparse.ArgumentParser(description="messages/s to a local Bot API")
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--http", nargs="+", default=["httpx", "aiohttp"], choices=["httpx", "aiohttp"])
    parser.add_argument("--profile", action="store_true", help="cProfile the sequential transport runs")
    parser.add_argument("--skip-stock", action="store_true", help="leave out stock PTB (Bot.send_message, httpx)")
    parser.add_argument("--no-validate", action="store_true", help="the fake skips HTML parsing")
    parser.add_argument("--uvloop", action="store_true", help="run the client on uvloop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.run(run(args))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
