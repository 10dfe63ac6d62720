"""A small SMTP server on 127.0.0.1 for tests (RFC 5321 subset: EHLO/HELO, AUTH PLAIN, MAIL, RCPT, DATA, RSET,
NOOP, QUIT; no STARTTLS), with every accepted message parsed and recorded, and faults on demand.

    async with FakeSmtpServer() as smtp:
        smtp.refuse("gone@example.com")              # 550 for that recipient, for good
        smtp.fail_next(451, times=1)                 # the next MAIL FROM gets a temporary error
        ...
        [msg] = await smtp.wait_for(1)               # email.message.EmailMessage
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: EmailMessage
    raw: bytes


@dataclass
class _Session:
    sender: str | None = None
    recipients: list[str] = field(default_factory=list)
    authenticated: bool = False


class FakeSmtpServer:
    def __init__(self, *, user: str | None = None, password: str | None = None, hostname: str = "fake-smtp") -> None:
        """With `user`, AUTH PLAIN is required before MAIL and checked against user/password."""
        self.user = user
        self.password = password
        self.hostname = hostname
        self.received: list[Received] = []
        self.refused: set[str] = set()
        self.port = 0
        self._temporary: list[int] = []  # codes for the next MAIL FROM commands
        self._server: asyncio.Server | None = None
        self._event = asyncio.Event()

    async def start(self) -> FakeSmtpServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def __aenter__(self) -> FakeSmtpServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- faults and records -------------------------------------------------------------------------
    def refuse(self, recipient: str) -> None:
        """RCPT TO this address answers 550 (no such user)."""
        self.refused.add(recipient.lower())

    def fail_next(self, code: int = 451, times: int = 1) -> None:
        """The next `times` MAIL FROM commands answer `code` (4xx: try again later)."""
        self._temporary.extend([code] * times)

    def to(self, recipient: str) -> list[EmailMessage]:
        return [r.message for r in self.received if recipient.lower() in (x.lower() for x in r.recipients)]

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                self._event.clear()
                await self._event.wait()
        return [r.message for r in self.received]

    # -- the protocol --------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(authenticated=self.user is None)

        async def reply(line: str) -> None:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()
        try:
            await reply(f"220 {self.hostname} ESMTP ready")
            while True:
                raw = await reader.readline()
                if not raw:
                    return
                line = raw.decode(errors="replace").rstrip("\r\n")
                verb, _, rest = line.partition(" ")
                verb = verb.upper()
                if verb == "EHLO":
                    auth = ["250-AUTH PLAIN"] if self.user is not None else []
                    for text in [f"250-{self.hostname}", "250-8BITMIME", "250-SMTPUTF8", *auth, "250 SIZE 10485760"]:
                        await reply(text)
                elif verb == "HELO":
                    await reply(f"250 {self.hostname}")
                elif verb == "AUTH":
                    await reply(self._auth(rest, session))
                elif verb == "MAIL":
                    if not session.authenticated:
                        await reply("530 5.7.0 Authentication required")
                    elif self._temporary:
                        await reply(f"{self._temporary.pop(0)} 4.3.0 Try again later")
                    else:
                        session.sender, session.recipients = _address(rest), []
                        await reply("250 2.1.0 Ok")
                elif verb == "RCPT":
                    rcpt = _address(rest)
                    if session.sender is None:
                        await reply("503 5.5.1 MAIL first")
                    elif rcpt.lower() in self.refused:
                        await reply(f"550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown")
                    else:
                        session.recipients.append(rcpt)
                        await reply("250 2.1.5 Ok")
                elif verb == "DATA":
                    if not session.recipients:
                        await reply("503 5.5.1 RCPT first")
                        continue
                    await reply("354 End data with <CR><LF>.<CR><LF>")
                    data = await _read_data(reader)
                    message = BytesParser(policy=policy.default).parsebytes(data)
                    assert isinstance(message, EmailMessage)
                    self.received.append(Received(session.sender or "", list(session.recipients), message, data))
                    session.sender, session.recipients = None, []
                    self._event.set()
                    await reply("250 2.0.0 Ok: queued")
                elif verb == "RSET":
                    session.sender, session.recipients = None, []
                    await reply("250 2.0.0 Ok")
                elif verb == "NOOP":
                    await reply("250 2.0.0 Ok")
                elif verb == "QUIT":
                    await reply("221 2.0.0 Bye")
                    return
                else:
                    await reply("502 5.5.2 Command not recognized")
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _auth(self, rest: str, session: _Session) -> str:
        mechanism, _, initial = rest.partition(" ")
        if mechanism.upper() != "PLAIN" or not initial:
            return "504 5.5.4 Unrecognized authentication type"
        try:
            _, user, password = base64.b64decode(initial).decode().split("\0")
        except (ValueError, UnicodeDecodeError):
            return "501 5.5.2 Cannot decode response"
        if user == self.user and password == self.password:
            session.authenticated = True
            return "235 2.7.0 Authentication successful"
        return "535 5.7.8 Error: authentication failed"


def _address(rest: str) -> str:
    """`FROM:<a@b> SIZE=..` / `TO:<a@b>` -> a@b."""
    _, _, value = rest.partition(":")
    value = value.strip()
    if value.startswith("<"):
        value = value[1:value.find(">")]
    return value.split()[0] if value else ""


async def _read_data(reader: asyncio.StreamReader) -> bytes:
    lines: list[bytes] = []
    while True:
        line = await reader.readline()
        if not line or line in (b".\r\n", b".\n"):
            break
        lines.append(line[1:] if line.startswith(b"..") else line)  # dot-unstuffing
    return b"".join(lines)
