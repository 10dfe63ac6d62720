"""The console: commands from standard input, replies and deliveries on standard output."""
from __future__ import annotations

import asyncio
import itertools
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TextIO

from bot.commands.registry import Caller
from bot.views.doc import Doc
from bot.views.text import render_text

log = logging.getLogger(__name__)
CONSOLE_CALLER = Caller(platform="console", platform_user_id="operator", chat_id="console", display_name="operator")


class ConsoleTransport:
    name = "console"

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out or sys.stdout
        self._ids = itertools.count(1)

    async def send(self, chat_id: str, doc: Doc, reply_to: str | None = None) -> str:
        ref = f"c{next(self._ids)}"
        prefix = f"[message {ref}" + (f", reply to {reply_to}" if reply_to else "") + "]"
        self.write(f"{prefix}\n{render_text(doc)}")
        return ref

    def write(self, text: str) -> None:
        self._out.write(text.rstrip("\n") + "\n\n")
        self._out.flush()

    async def serve(self, handle: Callable[[Caller, str], Awaitable[Doc]], stream: TextIO | None = None) -> None:
        """Read commands line by line until end of input; each reply is printed before the next is read."""
        async for line in read_lines(stream or sys.stdin):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            doc = await handle(CONSOLE_CALLER, text)
            self.write(f"> {text}\n{render_text(doc)}")
        log.info("console input closed")


async def read_lines(stream: TextIO) -> AsyncIterator[str]:
    """Lines of a pipe or terminal without blocking the loop (no thread); a regular file is read directly."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        stream.fileno()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stream)
    except (ValueError, OSError, AttributeError):  # a regular file (or a test's StringIO): reading cannot block
        for line in stream:
            yield line
            await asyncio.sleep(0)
        return
    while line_bytes := await reader.readline():
        yield line_bytes.decode("utf-8", errors="replace")
