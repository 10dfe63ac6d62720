"""Benchmark (not a test): the REST API's requests/s and latency on loopback, next to a bare FastAPI endpoint.

    .venv/bin/python -m tests.bench_api [--requests 3000] [--concurrency 1,50,500] [--signals 40] [--json OUT]

A child process runs the service's HTTP server as `signalbot run` builds it (bot.api on FastAPI/uvicorn, the
key checked, the owner's tier read, the rate limit and the usage counted; SQLite file in WAL mode) over a
database holding `--signals` active signals and a professional user's key, and, in the same process and event
loop, a bare FastAPI app on uvicorn that answers the same JSON documents from memory (no key, no database):
the reference. This process is the client (aiohttp, one connection per concurrent client, keep-alive), so the
server's figures are not the client's CPU. Reported per endpoint and concurrency: requests/s, p50/p95/p99 in
ms, and the API's p95 as a multiple of the bare endpoint's. Goals (issue 16): p95 < 50 ms at 500 concurrent
clients, within 2x of the bare endpoint. The key's rate limit is lifted for the run (it would answer 429).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    target: str
    endpoint: str
    concurrency: int
    requests: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


async def serve(n_signals: int) -> None:
    """The child: the API and the bare reference on two ports; prints `PORTS api bare KEY id` and serves."""
    import uvicorn
    from fastapi import FastAPI

    from bot.api.routes import Api
    from bot.app import build_services
    from bot.commands.caller import Caller
    from bot.commands.registry import dispatch
    from bot.http_server import start_http
    from bot.settings import Settings
    from bot.views.text import render_text
    from core.clock import FixedClock
    from core.domain import Tier
    from core.market_data.simulated import SimulatedMarket
    from tests.test_delivery import NOW, signal

    tmp = Path(tempfile.mkdtemp())
    settings = Settings(_env_file=None, database_url=f"sqlite+aiosqlite:///{tmp / 'bench.db'}", http_port=0)
    clock = FixedClock(NOW)
    services = await build_services(settings, SimulatedMarket(seed=7, start=NOW, history_days=60, clock=clock), clock)
    store = services.store
    for i in range(n_signals):
        s = signal(f"SYM{i:03d}-1d-20240305-L")
        await store.signals.add_signal(type(s)(**{**{f: getattr(s, f) for f in s.__dataclass_fields__},
                                                  "symbol": f"SYM{i:03d}", "issued_at": NOW - timedelta(hours=i)}))
    caller = Caller("telegram", "101", "101", "Bench")
    await dispatch(services.registry, services, caller, "/start")
    user = await store.users.find_user("telegram", "101")
    await store.users.set_tier(user.id, Tier.PROFESSIONAL)
    text = render_text(await dispatch(services.registry, services, caller, "/apikey create bench"))
    key = next(w for w in text.split() if w.startswith("sb_"))
    api = Api(services)
    api.limiter.check = lambda key_id, per_minute: 0.0  # type: ignore[method-assign]  # measure, not throttle
    server = await start_http(settings, services, routers=[api.router])
    assert server is not None
    api.start_flushing()
    # the reference: the same documents, from memory
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
        async with http.get(f"{server.url}/api/v1/signals") as r:
            listing = await r.json()
        detail_id = listing["signals"][0]["id"]
        async with http.get(f"{server.url}/api/v1/signals/{detail_id}") as r:
            detail = await r.json()
    bare = FastAPI()

    @bare.get("/api/v1/signals")
    async def bare_list() -> dict[str, Any]:
        return listing

    @bare.get("/api/v1/signals/{signal_id}")
    async def bare_detail(signal_id: str) -> dict[str, Any]:
        return detail

    config = uvicorn.Config(bare, host="127.0.0.1", port=0, lifespan="off", log_config=None, access_log=False,
                            backlog=2048, limit_concurrency=2048)
    reference = uvicorn.Server(config)
    import socket
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    config.load()
    reference.lifespan = config.lifespan_class(config)
    await reference.startup(sockets=[sock])
    ticks = asyncio.create_task(reference.main_loop())
    print(f"PORTS {server.port} {sock.getsockname()[1]} {key} {detail_id}", flush=True)
    try:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    finally:
        reference.should_exit = True
        await ticks
        await server.stop()
        await api.close()
        await services.store.close()


async def load(base: str, path: str, target: str, n: int, concurrency: int, headers: dict[str, str]) -> Result:
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(base, connector=connector, headers=headers) as http:
        async def one() -> None:
            nonlocal errors
            t0 = time.perf_counter()
            async with http.get(path) as r:
                await r.read()
                if r.status != 200:
                    errors += 1
            latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(one() for _ in range(min(n, concurrency))))  # connections up, caches warm
        latencies.clear()
        queue = iter(range(n))

        async def client() -> None:
            for _ in queue:
                await one()

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        seconds = time.perf_counter() - began
    latencies.sort()

    def q(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1e3

    return Result(target, path.split("/")[-1] if "signals/" in path else "signals", concurrency, n, seconds,
                  statistics.median(latencies) * 1e3, q(0.95), q(0.99), errors)


async def run(args: argparse.Namespace) -> list[Result]:
    child = subprocess.Popen([sys.executable, "-m", "tests.bench_api", "--serve", "--signals", str(args.signals)],
                             cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdin is not None
    line = child.stdout.readline()
    if not line.startswith("PORTS "):
        child.kill()
        raise RuntimeError(f"the server did not start: {line!r}")
    _, api_port, bare_port, key, detail_id = line.split()
    results: list[Result] = []
    try:
        for concurrency in args.concurrency:
            for path in ("/api/v1/signals", f"/api/v1/signals/{detail_id}"):
                n = max(args.requests, concurrency * 4)
                results.append(await load(f"http://127.0.0.1:{bare_port}", path, "bare", n, concurrency, {}))
                results.append(await load(f"http://127.0.0.1:{api_port}", path, "api", n, concurrency,
                                          {"Authorization": f"Bearer {key}"}))
    finally:
        child.stdin.close()
        child.wait(30)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 50, 500])
    p.add_argument("--signals", type=int, default=40)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if args.serve:
        asyncio.run(serve(args.signals))
        return
    results = asyncio.run(run(args))
    print(f"{'endpoint':<22} {'clients':>7} {'target':<6} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
          f"{'errors':>6} {'p95 / bare':>10}")
    bare: dict[tuple[str, int], Result] = {}
    for r in results:
        if r.target == "bare":
            bare[(r.endpoint, r.concurrency)] = r
        ref = bare.get((r.endpoint, r.concurrency))
        ratio = f"{r.p95_ms / ref.p95_ms:.2f}x" if r.target == "api" and ref is not None else ""
        name = "signals" if r.endpoint == "signals" else "signals/{id}"
        print(f"{name:<22} {r.concurrency:>7} {r.target:<6} {r.rate:>8.0f} {r.p50_ms:>8.2f} {r.p95_ms:>8.2f} "
              f"{r.p99_ms:>8.2f} {r.errors:>6} {ratio:>10}")
    if args.json:
        args.json.write_text(json.dumps([{**asdict(r), "rate": r.rate} for r in results], indent=1))


if __name__ == "__main__":
    main()
