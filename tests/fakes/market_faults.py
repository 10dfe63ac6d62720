"""Fault injection and the server plumbing shared by the fake market-data vendors (Yahoo, Binance).

A fake runs an aiohttp.web server on 127.0.0.1 (a free port), records every request, and can be told
to misbehave on the next N requests whose path contains a fragment:

    fake.faults.add("timeout", delay=2.0)             # sleep past the client's timeout
    fake.faults.add("status", status=503, times=3)    # 5xx with the vendor's error body
    fake.faults.add("rate_limit", retry_after=1)      # 429 with Retry-After
    fake.faults.add("malformed")                      # 200 with truncated JSON
    fake.faults.add("wrong_shape")                    # 200 with valid JSON of the wrong structure
    fake.faults.add("status", status=500, times=-1)   # every request, until faults.clear()

Deterministic prices: `price_at(symbol, t)` is a smooth function of time, so any two requests that
overlap return identical bars (resumed backfills, idempotent upserts), with no outliers or jumps.
"""
from __future__ import annotations

import asyncio
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Fault:
    kind: str  # "timeout" | "status" | "rate_limit" | "malformed" | "wrong_shape"
    path: str = ""
    times: int = 1  # -1: unlimited
    status: int = 500
    retry_after: float | None = None
    delay: float = 2.0


@dataclass
class Faults:
    pending: list[Fault] = field(default_factory=list)

    def add(self, kind: str, *, path: str = "", times: int = 1, **kw: Any) -> Fault:
        fault = Fault(kind, path, times, **kw)
        self.pending.append(fault)
        return fault

    def clear(self) -> None:
        self.pending.clear()

    def take(self, path: str) -> Fault | None:
        for fault in self.pending:
            if fault.path in path:
                if fault.times > 0:
                    fault.times -= 1
                    if fault.times == 0:
                        self.pending.remove(fault)
                return fault
        return None


@dataclass(frozen=True)
class Seen:
    path: str
    query: dict[str, str]
    fault: str | None


class FakeServer:
    """Start/stop an aiohttp app on 127.0.0.1; subclasses add routes in `routes()`."""

    def __init__(self) -> None:
        self.faults = Faults()
        self.requests: list[Seen] = []
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def count(self, fragment: str) -> int:
        return sum(1 for r in self.requests if fragment in r.path)

    async def start(self) -> FakeServer:
        app = web.Application()
        self.routes(app)
        self._closing = asyncio.Event()
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def pause(self, seconds: float) -> None:
        """Sleep, but wake early when the server shuts down (teardown never waits on a hung handler)."""
        try:
            await asyncio.wait_for(self._closing.wait(), seconds)
        except TimeoutError:
            pass

    def note(self, request: web.Request) -> Fault | None:
        fault = self.faults.take(request.path)
        self.requests.append(Seen(request.path, dict(request.query), fault.kind if fault else None))
        return fault


def stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def price_at(symbol: str, t: int) -> float:
    """A smooth, deterministic price for `symbol` at epoch second `t`."""
    h = stable_hash(symbol)
    base = 20 + h % 400
    phase = (h >> 16) % 1000 / 159.0
    hours = t / 3600.0
    return base * (1 + 0.04 * math.sin(hours / 97.0 + phase) + 0.01 * math.sin(hours / 7.3 + 2 * phase))


def bar_at(symbol: str, t: int, step: int) -> tuple[float, float, float, float, float]:
    o, c = price_at(symbol, t), price_at(symbol, t + step)
    return o, max(o, c) * 1.001, min(o, c) * 0.999, c, float(1000 + (t // step) % 97 * 10)
