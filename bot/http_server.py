"""The HTTP server inside the service's event loop: one FastAPI application served by uvicorn on one port (the
REST API of bot/api beside these routes), never uvicorn.run (the service owns the loop and the signals).

    POST /stripe/webhook   400 bad signature or malformed; 200 processed, duplicate (no effect) or ignored;
                           413 over 1 MB; 500 when applying failed (nothing was recorded, so Stripe's retry is
                           processed in full)
    GET  /livez            liveness: the process and its loop answer (always 200 while they do)
    GET  /readyz           readiness (bot.health): a write that commits, the scan and track jobs succeeding, the
                           outbox age, each chat transport connected; 503 with the failing check's detail
    GET  /healthz          the same as /readyz (kept: monitors already poll it)
    GET  /metrics          Prometheus exposition (bot.metrics), optionally behind a bearer token
    GET  /billing/success  the page Stripe Checkout returns to after paying
    GET  /billing/cancel   ... and after giving up
    /api/v1/...            the REST API (bot/api), its schema at /openapi.json and its docs at /api/docs
"""
from __future__ import annotations

import asyncio
import html
import logging
import socket
import time
from collections.abc import Sequence
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.commands.registry import CommandServices
from bot.health import Health
from bot.metrics import CONTENT_TYPE, MetricsEndpoint
from bot.payments import Payments, WebhookRejected
from bot.settings import Settings
from core.clock import SystemClock

log = logging.getLogger(__name__)

DEFAULT_PORT = 8080
MAX_WEBHOOK_BYTES = 1024 * 1024  # Stripe events are a few kB
MAX_HEADER_BYTES = 16 * 1024


class _Timed:
    """Every request's duration, by route (the route's template, so ids do not make new series): pure ASGI, so
    a streamed or failed response is timed too."""

    def __init__(self, app: ASGIApp, metrics: MetricsEndpoint) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began, status = time.perf_counter(), 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            self.metrics.metrics.http_duration.labels(scope.get("method", "?"), name, str(status)).observe(
                time.perf_counter() - began)


class _HeaderLimit:
    """Requests whose headers exceed MAX_HEADER_BYTES get 431 and one warning line (h11 takes any size that
    arrives in one read)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            size = sum(len(k) + len(v) for k, v in scope.get("headers", ()))
            if size > MAX_HEADER_BYTES:
                log.warning("http: refused a malformed request (%s %s): %d bytes of headers, over %d",
                            scope.get("method", "GET"), scope.get("path", "?")[:100], size, MAX_HEADER_BYTES)
                if scope["type"] == "http":
                    await JSONResponse({"error": "request headers too large"}, status_code=431)(scope, receive, send)
                else:
                    await send({"type": "websocket.close", "code": 1009})
                return
        await self.app(scope, receive, send)


class HttpServer:
    def __init__(self, host: str, port: int, *, health: Health, payments: Payments | None,
                 metrics: MetricsEndpoint | None = None, routers: Sequence[APIRouter] = ()) -> None:
        self.host = host
        self.metrics = metrics
        self._requested_port = port
        self.health = health
        self._payments = payments
        self._routers = tuple(routers)
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._ticks: asyncio.Task[None] | None = None
        self.port = 0

    def app(self) -> FastAPI:
        app = FastAPI(title="signalbot", summary="Trading signals: REST API", docs_url="/api/docs", redoc_url=None,
                      openapi_url="/openapi.json")
        app.add_api_route("/stripe/webhook", self._stripe_webhook, methods=["POST"], include_in_schema=False)
        app.add_api_route("/metrics", self._metrics, methods=["GET"], include_in_schema=False)
        app.add_api_route("/livez", self._livez, methods=["GET"], include_in_schema=False)
        app.add_api_route("/readyz", self._readyz, methods=["GET"], include_in_schema=False)
        app.add_api_route("/healthz", self._readyz, methods=["GET"], include_in_schema=False)
        app.add_api_route("/billing/success", self._success, methods=["GET"], include_in_schema=False)
        app.add_api_route("/billing/cancel", self._cancel, methods=["GET"], include_in_schema=False)
        for router in self._routers:
            app.include_router(router)
        if self.metrics is not None:
            app.add_middleware(_Timed, metrics=self.metrics)
        app.add_middleware(_HeaderLimit)  # the last added is the outermost
        return app

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> HttpServer:
        """Bind (an error here is the caller's: port taken, bad host), then serve in this loop."""
        # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only then (without it every
        # answer waited ~40 ms for the client's delayed ACK: Nagle)
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM,
                             socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._requested_port))
        except OSError:
            sock.close()
            raise
        sock.set_inheritable(False)
        config = uvicorn.Config(self.app(), lifespan="off", log_config=None, access_log=False, server_header=False,
                                timeout_graceful_shutdown=5, limit_concurrency=2048, backlog=2048)
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        self._server, self._socket = server, sock
        self._ticks = asyncio.create_task(server.main_loop(), name="http-server-ticks")  # the Date header
        self.port = int(sock.getsockname()[1])
        log.info("http: listening on %s", self.url)
        return self

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.should_exit = True
        if self._ticks is not None:
            await self._ticks
        await server.shutdown(sockets=[self._socket] if self._socket is not None else None)

    # -- handlers ----------------------------------------------------------------------------------
    async def _stripe_webhook(self, request: Request) -> Response:
        if self._payments is None or self._payments.stripe is None:
            return JSONResponse({"error": "stripe is not configured"}, status_code=404)
        payload = await _body_within(request, MAX_WEBHOOK_BYTES)
        if payload is None:
            return JSONResponse({"error": "payload too large"}, status_code=413)
        try:
            result = await self._payments.handle_stripe_webhook(payload, request.headers.get("Stripe-Signature"))
        except WebhookRejected as exc:
            log.warning("http: stripe webhook refused: %s", exc)
            return JSONResponse({"error": str(exc)}, status_code=400)
        except Exception:
            log.exception("http: stripe webhook failed; Stripe will retry it")
            return JSONResponse({"error": "internal error"}, status_code=500)
        body: dict[str, Any] = {"received": True, "id": result.event_id, "type": result.event_type,
                                "outcome": result.outcome}
        return JSONResponse(body)

    async def _metrics(self, request: Request) -> Response:
        if self.metrics is None:
            return JSONResponse({"error": "metrics are off"}, status_code=404)
        if not self.metrics.allowed(request.headers.get("Authorization")):
            return JSONResponse({"error": "a bearer token is required"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        body = await self.metrics.render()
        return Response(content=body, headers={"Content-Type": CONTENT_TYPE})

    async def _livez(self) -> Response:
        return JSONResponse(self.health.live())

    async def _readyz(self) -> Response:
        ok, body = await self.health.ready()
        if not ok:
            log.warning("http: not ready: %s", "; ".join(f"{k}: {v['detail']}" for k, v in body["checks"].items()
                                                        if not v["ok"]))
        return JSONResponse(body, status_code=200 if ok else 503)

    async def _success(self) -> Response:
        return _page("Thank you!", "Your payment went through. Your plan changes as soon as Stripe confirms it "
                     "(usually within seconds); the bot will tell you. You can close this page.")

    async def _cancel(self) -> Response:
        return _page("Payment cancelled", "Nothing was charged. Send /subscribe to the bot whenever you like.")


async def _body_within(request: Request, limit: int) -> bytes | None:
    """The request body, or None once it is over `limit` bytes (read no further)."""
    declared = request.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _page(title: str, text: str) -> Response:
    body = (f"<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport content='width=device-width'>"
            f"<title>{html.escape(title)}</title><body style='font-family:sans-serif;max-width:32em;margin:3em auto'>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>")
    return HTMLResponse(body)


async def start_http(settings: Settings, services: CommandServices, *, payments: Payments | None = None,
                     health: Health | None = None, metrics: MetricsEndpoint | None = None,
                     routers: Sequence[APIRouter] = ()) -> HttpServer | None:
    """Start the server when a port is configured or Stripe is (webhooks need it); None otherwise.
    `services` is bot.services.Services; `health` what /readyz checks (default: the store's database only)."""
    if settings.http_port is None and settings.stripe_api_key is None:
        return None
    port = settings.http_port if settings.http_port is not None else DEFAULT_PORT
    health = health or Health(services.store.outbox, SystemClock())
    server = HttpServer(settings.http_host, port, health=health, payments=payments, metrics=metrics, routers=routers)
    return await server.start()
