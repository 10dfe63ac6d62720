"""The console: commands from standard input, replies and deliveries on standard output.

Input is read without blocking the loop: a pipe, a socket or a terminal through the loop's reader, anything
else (a regular file, /dev/null, a test's StringIO) directly, since reading it cannot block. A line longer
than MAX_LINE_BYTES is refused with a clear reply and skipped to its end; the lines after it are read as usual.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import stat
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TextIO

from bot.commands.registry import Caller
from bot.views.doc import Doc
from bot.views.text import render_text

log = logging.getLogger(__name__)
CONSOLE_CALLER = Caller(platform="console", platform_user_id="operator", chat_id="console", display_name="operator")
MAX_LINE_BYTES = 64 * 1024  # far beyond any command (a broadcast is at most a few kB); a longer line is refused
_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class OverlongLine:
    """A line that exceeded MAX_LINE_BYTES: its length in bytes (it was read to its end and dropped)."""

    size: int


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
            if isinstance(line, OverlongLine):
                log.warning("console: refused a line of %d bytes (limit %d)", line.size, MAX_LINE_BYTES)
                self.write(f"> (a line of {line.size:,} bytes)\n"
                           + render_text(Doc.error(f"That line is {line.size:,} bytes long; the console reads "
                                                   f"commands of at most {MAX_LINE_BYTES:,} bytes.",
                                                   "Nothing was done. Send a shorter command.")))
                continue
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            doc = await handle(CONSOLE_CALLER, text)
            self.write(f"> {text}\n{render_text(doc)}")
        log.info("console input closed")


def _readable_by_loop(stream: TextIO) -> bool:
    """True for a pipe, a socket or a terminal: input that can block, so it is read through the loop's reader.
    /dev/null, regular files and objects without a descriptor are read directly (epoll refuses files and
    /dev/null with EPERM, which would surface as a traceback from inside the loop)."""
    try:
        fd = stream.fileno()
        mode = os.fstat(fd).st_mode
    except (ValueError, OSError, AttributeError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or (stat.S_ISCHR(mode) and os.isatty(fd))


async def read_lines(stream: TextIO) -> AsyncIterator[str | OverlongLine]:
    """Lines of the input (with their newline), or OverlongLine for one longer than MAX_LINE_BYTES."""
    if not _readable_by_loop(stream):
        for line in stream:
            size = len(line.encode("utf-8", errors="replace"))
            yield OverlongLine(size) if size > MAX_LINE_BYTES else line
            await asyncio.sleep(0)
        return
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_CHUNK)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stream)
    async for piece in split_lines(reader):
        yield piece


async def split_lines(reader: asyncio.StreamReader) -> AsyncIterator[str | OverlongLine]:
    """The reader's lines, read in chunks so that no line, however long, can overrun the reader's buffer."""
    pending = bytearray()
    overlong = 0  # bytes of the current line already dropped (0: the line is within the limit so far)
    while chunk := await reader.read(_CHUNK):
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            part = chunk[start:end + 1]
            if overlong or len(pending) + len(part) > MAX_LINE_BYTES + 1:
                yield OverlongLine(overlong + len(pending) + len(part) - 1)
            else:
                pending += part
                yield pending.decode("utf-8", errors="replace")
            pending, overlong, start = bytearray(), 0, end + 1
        rest = chunk[start:]
        if overlong or len(pending) + len(rest) > MAX_LINE_BYTES:
            overlong += len(pending) + len(rest)
            pending = bytearray()
        else:
            pending += rest
    if overlong:
        yield OverlongLine(overlong + len(pending))
    elif pending:
        yield pending.decode("utf-8", errors="replace")
