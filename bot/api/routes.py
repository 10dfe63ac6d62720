"""The REST API under /api/v1 (FastAPI, in the service's loop on the HTTP server's port), over the same stores,
services and entitlements as the chat commands. Every route needs an API key of a user whose tier includes the
API (core.tiers: professional), answers 401 without a valid one, 403 when the owner's tier does not include
it (or the route is for administrators), 429 with Retry-After over the tier's rate; 404 and 422 explain
themselves. Every answer to a key is counted per endpoint and day (api_usage).

    GET /api/v1/signals                 active (default), closed or all; filters: symbol, asset_class,
                                        timeframe, direction, min_confidence; limit
    GET /api/v1/signals/{signal_id}     one signal and, once closed, its outcome
    GET /api/v1/performance             the live track record after costs: period 30d, 90d or all
    GET /api/v1/instruments             search (q) or list by asset class
    GET /api/v1/instruments/{symbol}    one instrument
    GET /api/v1/subscription            the key owner's plan and what it includes
    GET /api/v1/usage                   the key owner's requests per key, endpoint and day
    GET /api/v1/admin/system            administrators: process, role, outbox, active signals, users
"""
# no `from __future__ import annotations`: FastAPI reads the routes' annotations, and `Auth` is local to _routes
import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.routing import APIRoute

from bot.api import schemas
from bot.api.follow import add_follow_routes
from bot.api.seed import add_seed_routes
from bot.api.access import (ADMIN_PER_MINUTE, Principal, RateLimiter, bearer_key, caller_of, entitled, forbidden_tier,
                            per_minute, too_many, unauthorized)
from bot.commands.handlers import followed
from core.domain import AssetClass, Direction, Signal, SignalOutcome, Timeframe
from core.performance import summarize
from core.risk import resize
from core.tiers import entitlements

if TYPE_CHECKING:
    from bot.health import Health
    from bot.services import Services

log = logging.getLogger(__name__)

MAX_LIMIT = 200
PERIODS = {"30d": 30, "90d": 90, "all": None}
PRINCIPAL_SECONDS = 2.0  # a key's owner (tier, preferences) read again after this, or at once after a local write
READ_SECONDS = 1.0  # the signal lists and details a request reads: at most this old


class TtlCache:
    """Values kept for `seconds`: the API's reads of a few rows that every request asks for. One load at a time
    per key: the requests that find it expired together wait for the same read (no stampede on the database)."""

    def __init__(self, seconds: float, size: int = 4096) -> None:
        self.seconds, self.size = seconds, size
        self._items: dict[Any, tuple[float, Any]] = {}
        self._loading: dict[Any, asyncio.Future[Any]] = {}

    async def get(self, key: Any, load: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        hit = self._items.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.seconds:
            return hit[1]
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            value = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        else:
            future.set_result(value)
            if len(self._items) >= self.size:
                self._items.clear()
            self._items[key] = (time.monotonic(), value)
            return value
        finally:
            del self._loading[key]

    def clear(self) -> None:
        self._items.clear()


def signal_out(s: Signal, outcome: SignalOutcome | None, principal: Principal) -> schemas.SignalOut:
    o = None
    if outcome is not None:
        o = schemas.Outcome(status=outcome.status.value, fill_price=outcome.fill_price, fill_time=outcome.fill_time,
                            exit_price=outcome.exit_price, exit_time=outcome.exit_time,
                            gross_return=outcome.gross_return, net_return=outcome.net_return, mfe=outcome.mfe,
                            mae=outcome.mae, bars_held=outcome.bars_held)
    return schemas.SignalOut(
        id=s.id, symbol=s.symbol, asset_class=s.asset_class.value, timeframe=s.timeframe.value,
        direction=s.direction.value, entry=s.entry, target=s.target, stop=s.stop, risk_reward=round(s.risk_reward, 4),
        confidence=s.confidence, position_size=resize(s.position_size, principal.user.preferences.risk),
        strategy=s.strategy, issued_at=s.issued_at, expires_at=s.expires_at, reasoning=s.reasoning,
        status=outcome.status.value if outcome is not None else "active", outcome=o)


class Api:
    """The router and what it needs: `services` (bot.services.Services), `health` for the admin view."""

    def __init__(self, services: "Services", health: "Health | None" = None) -> None:
        self.services = services
        self.health = health
        self.limiter = RateLimiter()
        self.principals = TtlCache(PRINCIPAL_SECONDS, size=10_000)
        self.reads = TtlCache(READ_SECONDS)
        self.pages = TtlCache(READ_SECONDS, size=1024)
        self.router = APIRouter(prefix="/api/v1", route_class=_counted(self), responses={
            401: {"model": schemas.Error}, 403: {"model": schemas.Error}, 429: {"model": schemas.Error}})
        self._flusher: asyncio.Task[None] | None = None
        self._routes()

    # -- access ----------------------------------------------------------------------------------
    async def principal(self, request: Request) -> Principal:
        key_text = bearer_key(request)
        if not key_text:
            raise unauthorized("an API key is required: Authorization: Bearer <key> (get one with /apikey in chat)")
        principal = await self._principal_of(key_text)
        request.state.principal = principal
        return self._admit(principal)

    async def authorize(self, key_text: str) -> Principal:
        """The key's principal, admitted as a request is (tier, rate): the stream's check at connection."""
        return self._admit(await self._principal_of(key_text))

    def _admit(self, principal: Principal) -> Principal:
        limit = per_minute(principal.tier)
        if not principal.is_admin and limit <= 0:
            raise forbidden_tier(principal.tier)
        wait = self.limiter.check(principal.key.id, max(limit, ADMIN_PER_MINUTE) if principal.is_admin else limit)
        if wait > 0:
            raise too_many(wait, limit)
        return principal

    async def _principal_of(self, key_text: str) -> Principal:
        """The key's record and owner, cached for PRINCIPAL_SECONDS and read once for all the requests that
        find it expired: a revocation or a user write in this process is seen at once (the generations), one in
        another process within that time."""
        store = self.services.store
        generations = (getattr(store.users, "generation", 0), getattr(store.api_keys, "generation", 0))

        async def load() -> Principal | str:
            key = await store.api_keys.lookup(key_text)
            if key is None:
                return "unknown or revoked API key"
            user = await store.users.get_user(key.user_id)
            if user is None or not user.active:
                return "the key's owner has unsubscribed"
            return Principal(key, user, self.services.is_admin(caller_of(user)))

        found = await self.principals.get((key_text, generations), load)
        if isinstance(found, str):
            raise unauthorized(found)
        return found

    def entitled(self, principal: Principal, s: Signal) -> bool:
        return entitled(principal, s.asset_class, s.timeframe)

    # -- usage -----------------------------------------------------------------------------------
    def count(self, request: Request, route: APIRoute, status: int) -> None:
        principal = getattr(request.state, "principal", None)
        if principal is not None:
            method = next(iter(route.methods or {"GET"}))
            self.services.store.api_keys.count(principal.key.id, f"{method} {route.path}", status >= 400)

    def start_flushing(self, every: float = 5.0) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(every)
                try:
                    await self.services.store.api_keys.flush()
                except Exception as exc:  # the counts are kept for the next try
                    log.warning("api: usage not recorded yet: %s", exc)

        self._flusher = asyncio.create_task(loop(), name="api-usage-flush")

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        try:
            await self.services.store.api_keys.flush()
        except Exception as exc:
            log.warning("api: the last usage counts were lost: %s", exc)

    # -- routes ----------------------------------------------------------------------------------
    def _routes(self) -> None:  # noqa: C901 (one closure per route keeps them beside their parameters)
        r, services = self.router, self.services
        Auth = Annotated[Principal, Depends(self.principal)]

        async def administrator(principal: Auth) -> Principal:
            if not principal.is_admin:
                raise HTTPException(403, "for administrators only")
            return principal

        Admin = Annotated[Principal, Depends(administrator)]

        @r.get("/signals", response_model=schemas.SignalList, summary="Signals, newest first")
        async def list_signals(
                principal: Auth,
                status: Literal["active", "closed", "all"] = "active",
                symbol: Annotated[str | None, Query(max_length=32)] = None,
                asset_class: AssetClass | None = None, timeframe: Timeframe | None = None,
                direction: Direction | None = None,
                min_confidence: Annotated[int, Query(ge=1, le=100)] = 1,
                limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50) -> Response:
            store = services.store.signals
            scope = "admin" if principal.is_admin else principal.tier.value
            page_key = (status, symbol, asset_class, timeframe, direction, min_confidence, limit,
                        principal.user.preferences.risk, scope)

            async def build() -> bytes:
                pairs: list[tuple[Signal, SignalOutcome | None]] = []
                if status in ("active", "all"):
                    pairs += [(s, None) for s in await self.reads.get("open", store.open_signals)]
                if status in ("closed", "all"):
                    pairs += list(await self.reads.get("closed", lambda: store.recent_outcomes(MAX_LIMIT * 5)))
                wanted = symbol.strip().upper() if symbol else None
                keep = [(s, o) for s, o in pairs
                        if not s.shadow and self.entitled(principal, s) and (wanted is None or s.symbol == wanted)
                        and (asset_class is None or s.asset_class is asset_class)
                        and (timeframe is None or s.timeframe is timeframe)
                        and (direction is None or s.direction is direction) and s.confidence >= min_confidence]
                keep.sort(key=lambda p: (p[0].issued_at, p[0].id), reverse=True)
                items = [signal_out(s, o, principal) for s, o in keep[:limit]]
                return schemas.SignalList(signals=items, count=len(items)).model_dump_json().encode()

            # the page itself is kept as long as the rows it was made of: built (and validated) once, sent as is
            return Response(await self.pages.get(page_key, build), media_type="application/json")

        @r.get("/signals/{signal_id}", response_model=schemas.SignalOut, summary="One signal and its outcome",
               responses={404: {"model": schemas.Error}})
        async def get_signal(principal: Auth,
                             signal_id: Annotated[str, Path(max_length=80)]) -> schemas.SignalOut:
            store = services.store.signals

            async def read() -> tuple[Signal | None, SignalOutcome | None]:
                found = await store.get_signal(signal_id)
                return found, (await store.get_outcome(signal_id) if found is not None else None)

            s, outcome = await self.reads.get(("signal", signal_id), read)
            if s is None or s.shadow:
                raise HTTPException(404, f"no signal {signal_id}")
            if not self.entitled(principal, s):
                raise HTTPException(403, f"{s.asset_class.value} {s.timeframe.value} signals are not in the "
                                         f"{principal.tier.value} plan")
            return signal_out(s, outcome, principal)

        @r.get("/performance", response_model=schemas.Performance, summary="The live track record after costs")
        async def performance(principal: Auth,
                              period: Literal["30d", "90d", "all"] = "30d") -> schemas.Performance:
            days = PERIODS[period]
            now = services.clock.now()
            since = now - timedelta(days=days) if days else now - timedelta(days=365 * 100)
            pairs = followed(await services.store.signals.outcomes_since(since))
            summary = summarize([o for _, o in pairs])
            paused = [f"{st.scope}: {st.reason}" for st in services.signal_service.paused()]
            if summary is None:
                return schemas.Performance(period=period, closed=0, wins=0, hit_rate=None, target_rate=None,
                                           avg_return=None, median_return=None, profit_factor=None,
                                           avg_bars_held=None, best=None, worst=None, paused_scopes=paused)
            return schemas.Performance(period=period, closed=summary.count, wins=summary.wins,
                                       hit_rate=summary.hit_rate, target_rate=summary.target_rate,
                                       avg_return=summary.avg_return, median_return=summary.median_return,
                                       profit_factor=summary.profit_factor, avg_bars_held=summary.avg_bars_held,
                                       best=summary.best, worst=summary.worst, paused_scopes=paused)

        @r.get("/instruments", response_model=schemas.InstrumentList, summary="Search or list instruments")
        async def instruments(principal: Auth, q: Annotated[str | None, Query(max_length=100)] = None,
                              asset_class: AssetClass | None = None,
                              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> schemas.InstrumentList:
            registry = services.instruments
            classes = [asset_class] if asset_class is not None else None
            found = (registry.search(q, limit=limit, asset_classes=classes) if q and q.strip()
                     else sorted(registry.records(classes), key=lambda rec: rec.symbol)[:limit])
            items = [instrument_out(rec) for rec in found]
            return schemas.InstrumentList(instruments=items, count=len(items))

        @r.get("/instruments/{symbol}", response_model=schemas.InstrumentOut, summary="One instrument",
               responses={404: {"model": schemas.Error}})
        async def instrument(principal: Auth, symbol: Annotated[str, Path(max_length=32)]) -> schemas.InstrumentOut:
            rec = services.instruments.find(symbol)
            if rec is None:
                hint = ", ".join(services.instruments.suggest(symbol))
                raise HTTPException(404, f"unknown symbol {symbol}" + (f"; did you mean {hint}?" if hint else ""))
            return instrument_out(rec)

        @r.get("/subscription", response_model=schemas.Subscription, summary="The key owner's plan")
        async def subscription(principal: Auth) -> schemas.Subscription:
            ent = entitlements(principal.tier)
            return schemas.Subscription(
                user_id=principal.user.id, tier=principal.tier.value, signals_per_month=ent.signals_per_month,
                asset_classes=sorted(a.value for a in ent.asset_classes),
                timeframes=[t.value for t in Timeframe if t in ent.timeframes], channels=sorted(ent.channels),
                api_requests_per_minute=ent.api_per_minute)

        @r.get("/usage", response_model=schemas.Usage, summary="Requests per key, endpoint and day")
        async def usage(principal: Auth, days: Annotated[int, Query(ge=1, le=366)] = 30) -> schemas.Usage:
            keys = services.store.api_keys
            await keys.flush()
            since = (services.wall.now() - timedelta(days=days - 1)).strftime("%Y-%m-%d")
            mine = [k.id for k in await keys.keys_of(principal.user.id)]
            rows = [schemas.UsageRow(key_id=u.key_id, day=u.day, endpoint=u.endpoint, count=u.count, errors=u.errors)
                    for u in await keys.usage(mine, since)]
            return schemas.Usage(since=since, rows=rows, total=sum(u.count for u in rows))

        @r.get("/admin/system", response_model=schemas.System, summary="Administrators: the process and its queue")
        async def system(principal: Admin) -> schemas.System:
            live = self.health.live() if self.health is not None else {"process": "?"}
            counts = await services.store.outbox.delivery_counts()
            open_now = [s for s in await services.store.signals.open_signals() if not s.shadow]
            users = await services.store.users.active_users()
            return schemas.System(process=str(live.get("process", "?")), role=str(live.get("role", "single")),
                                  outbox={k.value: v for k, v in counts.items()}, active_signals=len(open_now),
                                  users=len(users))

        add_follow_routes(r, services, self.principal, self.entitled)
        add_seed_routes(r, services, self.principal, administrator, self.entitled, signal_out)


def instrument_out(rec: Any) -> schemas.InstrumentOut:
    return schemas.InstrumentOut(symbol=rec.symbol, asset_class=rec.asset_class.value, name=rec.name,
                                 exchange=rec.exchange, quote_currency=rec.quote_currency, sector=rec.sector,
                                 industry=rec.industry)


def _counted(api: Api) -> type[APIRoute]:
    """A route class whose every answer to an authenticated key is counted (429s and other errors included)."""

    class CountedRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            original = super().get_route_handler()
            route = self

            async def handler(request: Request) -> Response:
                try:
                    response = await original(request)
                except HTTPException as exc:
                    api.count(request, route, exc.status_code)
                    raise
                except Exception:
                    api.count(request, route, 500)
                    raise
                api.count(request, route, response.status_code)
                return response

            return handler

    return CountedRoute
