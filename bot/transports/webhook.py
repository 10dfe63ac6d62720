"""Webhooks: a JSON body POSTed to the user's URL, signed with HMAC-SHA256 under their secret (aiohttp).

Headers: `Content-Type: application/json`, `X-Signalbot-Signature: sha256=<hex HMAC-SHA256 of the raw body>`,
`X-Signalbot-Delivery: <id>` (the same on every retry of one delivery: receivers can drop repeats) and
`X-Signalbot-Event`. Answers become core.errors.DeliveryError:
  2xx                        -> sent (the reference is the delivery id)
  410 Gone                   -> permanent (the user's webhook is removed)
  5xx, 408, 429, timeouts,
  connection failures        -> transient (retried with backoff)
  other 4xx                  -> transient too: retried until the worker gives up (a receiver misconfigured for a
                                while should not lose its signals); the status is recorded
The secret never appears in an error or a log line.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
from urllib.parse import urlsplit

import aiohttp

from core.errors import DeliveryError

SIGNATURE_HEADER = "X-Signalbot-Signature"
DELIVERY_HEADER = "X-Signalbot-Delivery"
EVENT_HEADER = "X-Signalbot-Event"


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: `sha256=` + hex HMAC-SHA256 of the raw body under the secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """For receivers (and tests): constant-time check of a signature header."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


class WebhookTransport:
    name = "webhook"

    def __init__(self, timeout: float = 10.0, *, user_agent: str = "signalbot-webhooks/1") -> None:
        if timeout <= 0:
            raise ValueError("webhook timeout must be positive")
        self.timeout = timeout
        self.user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout),
                                                  headers={"User-Agent": self.user_agent})

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, url: str, secret: str, body: bytes, *, delivery_id: str, event: str) -> str:
        """POST the signed body; the delivery id on success. Raises DeliveryError."""
        if self._session is None or self._session.closed:
            await self.start()
        assert self._session is not None
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, body),
                   DELIVERY_HEADER: delivery_id, EVENT_HEADER: event}
        where = _host(url)
        try:
            async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as response:
                status = response.status
                await response.read()
        except (TimeoutError, asyncio.TimeoutError):
            raise DeliveryError(f"webhook {where}: no answer within {self.timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise DeliveryError(f"webhook {where}: {type(exc).__name__}") from None
        if 200 <= status < 300:
            return delivery_id
        if status == 410:
            raise DeliveryError(f"webhook {where}: 410 Gone (unsubscribed)", permanent=True)
        raise DeliveryError(f"webhook {where}: HTTP {status}")


def _host(url: str) -> str:
    """Scheme and host only: a URL's path or query may carry a token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}" if parts.scheme and parts.netloc else "<invalid url>"
