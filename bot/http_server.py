"""The HTTP server inside the service's event loop (aiohttp AppRunner + TCPSite, never web.run_app).

    POST /stripe/webhook   400 bad signature or malformed; 200 processed, duplicate (no effect) or ignored;
                           500 when applying failed (nothing was recorded, so Stripe's retry is processed in full)
    GET  /livez            liveness: the process and its loop answer (always 200 while they do)
    GET  /readyz           readiness (bot.health): a write that commits, the scan and track jobs succeeding, the
                           outbox age, each chat transport connected; 503 with the failing check's detail
    GET  /healthz          the same as /readyz (kept: monitors already poll it)
    GET  /billing/success  the page Stripe Checkout returns to after paying
    GET  /billing/cancel   ... and after giving up
"""
from __future__ import annotations

import html
import logging
import time

from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from bot.commands.registry import CommandServices
from bot.health import Health
from bot.metrics import CONTENT_TYPE, MetricsEndpoint
from bot.payments import Payments, WebhookRejected
from bot.settings import Settings
from core.clock import SystemClock

log = logging.getLogger(__name__)

DEFAULT_PORT = 8080


class _MalformedRequests(logging.Filter):
    """aiohttp logs a full traceback for every malformed request (a 60 KB header: LineTooLong); it is the
    client's fault, answered 400 by aiohttp: one warning line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = "http: refused a malformed request (%s): %s", (
                record.args[0] if isinstance(record.args, tuple) and record.args else "?",
                str(exc).splitlines()[0][:200])
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_AIOHTTP_SERVER = logging.getLogger("aiohttp.server")
if not any(isinstance(f, _MalformedRequests) for f in _AIOHTTP_SERVER.filters):
    _AIOHTTP_SERVER.addFilter(_MalformedRequests())
MAX_WEBHOOK_BYTES = 1024 * 1024  # Stripe events are a few kB


class HttpServer:
    def __init__(self, host: str, port: int, *, health: Health, payments: Payments | None,
                 metrics: MetricsEndpoint | None = None) -> None:
        self.host = host
        self.metrics = metrics
        self._requested_port = port
        self.health = health
        self._payments = payments
        self._runner: web.AppRunner | None = None
        self.port = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_WEBHOOK_BYTES,
                              middlewares=[self._timed] if self.metrics is not None else [])
        app.router.add_post("/stripe/webhook", self._stripe_webhook)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/healthz", self._readyz)
        app.router.add_get("/billing/success", self._success)
        app.router.add_get("/billing/cancel", self._cancel)
        return app

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> HttpServer:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._requested_port, reuse_address=True)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        log.info("http: listening on %s", self.url)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- handlers ----------------------------------------------------------------------------------
    async def _stripe_webhook(self, request: web.Request) -> web.Response:
        if self._payments is None or self._payments.stripe is None:
            return web.json_response({"error": "stripe is not configured"}, status=404)
        try:
            payload = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": "payload too large"}, status=413)
        try:
            result = await self._payments.handle_stripe_webhook(payload, request.headers.get("Stripe-Signature"))
        except WebhookRejected as exc:
            log.warning("http: stripe webhook refused: %s", exc)
            return web.json_response({"error": str(exc)}, status=400)
        except Exception:
            log.exception("http: stripe webhook failed; Stripe will retry it")
            return web.json_response({"error": "internal error"}, status=500)
        body: dict[str, Any] = {"received": True, "id": result.event_id, "type": result.event_type,
                                "outcome": result.outcome}
        return web.json_response(body)

    @web.middleware
    async def _timed(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Every request's duration, by route (the route's pattern, so ids do not make new series)."""
        began = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            route = request.match_info.route.resource
            name = route.canonical if route is not None else "unmatched"
            assert self.metrics is not None
            self.metrics.metrics.http_duration.labels(request.method, name, str(status)).observe(
                time.perf_counter() - began)

    async def _metrics(self, request: web.Request) -> web.Response:
        if self.metrics is None:
            return web.json_response({"error": "metrics are off"}, status=404)
        if not self.metrics.allowed(request.headers.get("Authorization")):
            return web.json_response({"error": "a bearer token is required"}, status=401,
                                     headers={"WWW-Authenticate": "Bearer"})
        body = await self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def _livez(self, request: web.Request) -> web.Response:
        return web.json_response(self.health.live())

    async def _readyz(self, request: web.Request) -> web.Response:
        ok, body = await self.health.ready()
        if not ok:
            log.warning("http: not ready: %s", "; ".join(f"{k}: {v['detail']}" for k, v in body["checks"].items()
                                                        if not v["ok"]))
        return web.json_response(body, status=200 if ok else 503)

    async def _success(self, request: web.Request) -> web.Response:
        return _page("Thank you!", "Your payment went through. Your plan changes as soon as Stripe confirms it "
                     "(usually within seconds); the bot will tell you. You can close this page.")

    async def _cancel(self, request: web.Request) -> web.Response:
        return _page("Payment cancelled", "Nothing was charged. Send /subscribe to the bot whenever you like.")


def _page(title: str, text: str) -> web.Response:
    body = (f"<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport content='width=device-width'>"
            f"<title>{html.escape(title)}</title><body style='font-family:sans-serif;max-width:32em;margin:3em auto'>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>")
    return web.Response(text=body, content_type="text/html")


async def start_http(settings: Settings, services: CommandServices, *, payments: Payments | None = None,
                     health: Health | None = None, metrics: MetricsEndpoint | None = None) -> HttpServer | None:
    """Start the server when a port is configured or Stripe is (webhooks need it); None otherwise.
    `services` is bot.services.Services; `health` what /readyz checks (default: the store's database only)."""
    if settings.http_port is None and settings.stripe_api_key is None:
        return None
    port = settings.http_port if settings.http_port is not None else DEFAULT_PORT
    health = health or Health(services.store.outbox, SystemClock())
    server = HttpServer(settings.http_host, port, health=health, payments=payments, metrics=metrics)
    return await server.start()
