"""Email over SMTP (the standard library's smtplib, run off the event loop): the one module that speaks SMTP.

`EmailTransport.send()` delivers one multipart/alternative message (plain text + HTML) and returns its
Message-ID (what a later exit refers to with In-Reply-To). SMTP errors become core.errors.DeliveryError:
  5xx refusing the recipient (550 no such user, 551, 553 ...)  -> permanent (the address is removed)
  4xx, connection failures, timeouts, any other refusal         -> transient (retried with backoff)
The password never appears in an error or a log line.
"""
from __future__ import annotations

import asyncio
import smtplib
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from core.errors import DeliveryError


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    port: int = 587
    user: str | None = None
    password: str | None = None
    sender: str = "signals@localhost"
    starttls: bool = True
    timeout: float = 20.0


class EmailTransport:
    name = "email"

    def __init__(self, config: SmtpConfig) -> None:
        if not config.host:
            raise ValueError("SMTP host is empty")
        self.config = config
        self._domain = config.sender.rpartition("@")[2] or "localhost"

    async def send(self, to: str, subject: str, text: str, html: str | None = None,
                   in_reply_to: str | None = None) -> str:
        """Deliver one email; return its Message-ID. Raises DeliveryError."""
        message = self.compose(to, subject, text, html, in_reply_to)
        await asyncio.to_thread(self._send_blocking, message, to)
        return str(message["Message-ID"])

    def compose(self, to: str, subject: str, text: str, html: str | None = None,
                in_reply_to: str | None = None) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.config.sender
        message["To"] = to
        message["Subject"] = " ".join(subject.split())  # no line breaks in a header
        message["Date"] = formatdate(localtime=False, usegmt=True)
        message["Message-ID"] = make_msgid(domain=self._domain)
        if in_reply_to:
            message["In-Reply-To"] = in_reply_to
            message["References"] = in_reply_to
        message.set_content(text)
        if html is not None:
            message.add_alternative(html, subtype="html")
        return message

    def _send_blocking(self, message: EmailMessage, to: str) -> None:
        c = self.config
        try:
            with smtplib.SMTP(c.host, c.port, timeout=c.timeout) as smtp:
                if c.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if c.user:
                    smtp.login(c.user, c.password or "")
                smtp.send_message(message, from_addr=c.sender, to_addrs=[to])
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()), (0, b""))
            raise DeliveryError(f"smtp: recipient refused ({code} {_text(reply)})",
                                permanent=500 <= code < 600) from None
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(f"smtp: login refused ({exc.smtp_code}); check the SMTP user and password") from None
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"smtp: {exc.smtp_code} {_text(exc.smtp_error)}") from None
        except (smtplib.SMTPException, OSError, socket.timeout) as exc:  # connection refused, reset, timed out
            raise DeliveryError(f"smtp: {type(exc).__name__}: {exc}") from None


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
