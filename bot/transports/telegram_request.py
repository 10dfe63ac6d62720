"""A lean HTTP client for the Bot API over one aiohttp session.

python-telegram-bot's default request class (httpx) costs about 1 ms of CPU per call on the client side;
aiohttp does the same request in about a quarter of that. This module knows nothing about `telegram`: the
transport adapts it to PTB's BaseRequest (bot.transports.telegram.AiohttpRequest), so PTB keeps building
the requests, parsing the answers and raising its own errors.

Errors leave as HttpTimeout (no answer in time; a request that was written may have been processed) or
HttpFailure (the connection failed); an HTTP error status is not an error here, it is returned.
"""
from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import EllipsisType
from typing import Any

import aiohttp

Seconds = float | None | EllipsisType  # ... = the client's default


class HttpTimeout(Exception):
    pass


class HttpFailure(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float | None = 5.0
    read: float | None = 10.0
    write: float | None = 10.0
    media_write: float | None = 30.0  # uploads
    pool: float | None = 5.0  # waiting for a free connection


_JSON = {"Content-Type": "application/json"}
_TOKEN_IN_URL = re.compile(r"/bot[^/\s]+")


class AiohttpBotClient:
    def __init__(self, timeouts: Timeouts = Timeouts(), *, connection_limit: int = 64,
                 user_agent: str = "signalbot (python-telegram-bot over aiohttp)") -> None:
        self.timeouts = timeouts
        self.connection_limit = connection_limit
        self.user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self._timeout_cache: dict[tuple[Any, ...], aiohttp.ClientTimeout] = {}

    @property
    def closed(self) -> bool:
        return self._session is None or self._session.closed

    async def open(self) -> None:
        if not self.closed:
            return
        connector = aiohttp.TCPConnector(limit=self.connection_limit, limit_per_host=0, ttl_dns_cache=300,
                                         keepalive_timeout=30.0)
        self._session = aiohttp.ClientSession(connector=connector, headers={"User-Agent": self.user_agent},
                                              timeout=self._timeout(..., ..., ..., ..., False),
                                              skip_auto_headers=("Accept-Encoding",), raise_for_status=False)

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def request(self, method: str, url: str, *, json_body: bytes | None = None,
                      fields: Mapping[str, str] | None = None, files: Mapping[str, Any] | None = None,
                      read: Seconds = ..., write: Seconds = ..., connect: Seconds = ..., pool: Seconds = ...,
                      media: bool = False) -> tuple[int, bytes]:
        """One request; (status, body). `json_body` is sent as application/json; `fields` + `files` (name ->
        (filename, content, mime type)) as multipart/form-data."""
        session = self._session
        if session is None or session.closed:
            raise HttpFailure("the HTTP session is not open (initialize() first)")
        data: Any = None
        headers = None
        if files:
            form = aiohttp.FormData(quote_fields=False)
            for key, value in (fields or {}).items():
                form.add_field(key, value)
            for key, spec in files.items():
                filename, content, mime = (spec + (None, None))[:3] if isinstance(spec, tuple) else (key, spec, None)
                form.add_field(key, content, filename=filename, content_type=mime or "application/octet-stream")
            data = form
        elif json_body is not None:
            data, headers = json_body, _JSON
        timeout = self._timeout(read, write, connect, pool, media)
        try:
            async with session.request(method, url, data=data, headers=headers, timeout=timeout) as response:
                return response.status, await response.read()
        except (TimeoutError, asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise HttpTimeout(f"no answer in time from {_host(url)}") from exc
        except aiohttp.ClientError as exc:
            raise HttpFailure(_TOKEN_IN_URL.sub("/bot<token>", f"{type(exc).__name__}: {exc}")) from exc

    def _timeout(self, read: Seconds, write: Seconds, connect: Seconds, pool: Seconds,
                 media: bool) -> aiohttp.ClientTimeout:
        key = (read, write, connect, pool, media)
        cached = self._timeout_cache.get(key)
        if cached is not None:
            return cached
        t = self.timeouts
        r = t.read if read is ... else read
        w = (t.media_write if media else t.write) if write is ... else write
        c = t.connect if connect is ... else connect
        p = t.pool if pool is ... else pool
        # aiohttp has no write timeout: it bounds the whole exchange instead (write + read + connecting)
        parts = (r, w, c, p)
        total = None if any(x is None for x in parts) else sum(x for x in parts if x is not None)
        timeout = aiohttp.ClientTimeout(total=total, sock_read=r, sock_connect=c,
                                        connect=None if c is None or p is None else c + p)
        if len(self._timeout_cache) < 64:
            self._timeout_cache[key] = timeout
        return timeout


def _host(url: str) -> str:
    return _TOKEN_IN_URL.sub("/bot<token>", url)  # never log the token
