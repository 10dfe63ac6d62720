"""The rest of the seed's endpoints, on the same commands and stores as the chat:

    GET  /api/v1/market/{symbol}/current           the latest close (the finest timeframe scanned) and day change
    GET  /api/v1/market/{symbol}/history           bars with indicators (?timeframe=1d&limit=100&indicators=rsi_14)
    GET  /api/v1/subscriptions                     the key owner's preferences, digest hour and extra channels
    PUT  /api/v1/subscriptions                     change preferences: each field through /prefs, as in chat
    POST /api/v1/subscriptions/test                a test message to the owner's chat
    GET  /api/v1/analytics/signal-history          closed signals and their summary after costs
    GET  /api/v1/analytics/portfolio-impact        the paper portfolio (the same as /portfolio)
    POST /api/v1/admin/generate                    administrators: /admin generate [SYMBOLS]
    GET  /api/v1/admin/models                      administrators: /admin models
    POST /api/v1/admin/retrain                     administrators: /admin retrain
"""
# no `from __future__ import annotations`: FastAPI reads the routes' annotations
import asyncio
import math
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated, Any, Literal

import pandas as pd
from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query

from bot.api import schemas
from bot.api.access import Principal, caller_of
from bot.api.follow import summary_out
from bot.commands.follow import day_move, last_close
from bot.commands.registry import dispatch
from bot.views.doc import Doc
from core.domain import Signal, Timeframe
from core.errors import SignalBotError, UnknownSymbolError
from core.indicators import default_engine
from core.indicators.catalogue import output_columns

if TYPE_CHECKING:
    from bot.services import Services

HISTORY_WARMUP = 250  # bars read before the ones returned, so the indicators are defined on all of them
EVERYTHING = datetime(1970, 1, 1, tzinfo=timezone.utc)
TimeframeName = Literal["1h", "4h", "1d"]


def doc_out(doc: Doc) -> schemas.DocOut:
    table = None if doc.table is None else schemas.TableOut(headers=list(doc.table.headers),
                                                             rows=[list(r) for r in doc.table.rows])
    return schemas.DocOut(heading=doc.heading, body=doc.body, fields=[[k, v] for k, v in doc.fields], table=table,
                          note=doc.note, tone=doc.tone)


def add_seed_routes(r: APIRouter, services: "Services", principal_of: Callable[..., Awaitable[Principal]],
                    admin_of: Callable[..., Awaitable[Principal]], entitled: Callable[[Principal, Signal], bool],
                    signal_out: Callable[..., schemas.SignalOut]) -> None:
    Auth = Annotated[Principal, Depends(principal_of)]
    Admin = Annotated[Principal, Depends(admin_of)]

    async def run(principal: Principal, text: str) -> Doc:
        return await dispatch(services.registry, services, caller_of(principal.user), text)

    def known(symbol: str) -> str:
        try:
            return services.signal_service.instrument(symbol).symbol
        except UnknownSymbolError as exc:
            raise HTTPException(404, str(exc)) from None

    @r.get("/market/{symbol}/current", response_model=schemas.Quote, summary="The latest close of a symbol",
           responses={404: {"model": schemas.Error}, 503: {"model": schemas.Error}})
    async def current(principal: Auth, symbol: Annotated[str, Path(max_length=32)]) -> schemas.Quote:
        sym = known(symbol)
        now = services.clock.now()
        priced = await last_close(services, sym, now)
        if priced is None:
            raise HTTPException(503, f"no price for {sym} right now")
        move = await day_move(services, sym, now)
        offered = list(services.signal_service.market.timeframes(sym))
        tf = min(offered, key=lambda t: t.duration) if offered else Timeframe.D1
        return schemas.Quote(symbol=sym, timeframe=tf.value, last=priced[0], closed_at=priced[1],
                             day_change=None if move is None else move[1])

    @r.get("/market/{symbol}/history", response_model=schemas.History, summary="Bars with indicators",
           responses={400: {"model": schemas.Error}, 404: {"model": schemas.Error}, 503: {"model": schemas.Error}})
    async def history(principal: Auth, symbol: Annotated[str, Path(max_length=32)], timeframe: TimeframeName = "1d",
                      limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                      indicators: Annotated[str, Query(max_length=500)] = "") -> schemas.History:
        sym = known(symbol)
        wanted = [n.strip() for n in indicators.split(",") if n.strip()]
        columns = set(output_columns())
        unknown = [n for n in wanted if n not in columns]
        if unknown:
            raise HTTPException(400, f"unknown indicator {unknown[0][:40]!r}; e.g. rsi_14, sma_20, macd_hist, "
                                     "atr_14, adx_14 (the /signal analysis' names)")
        tf = Timeframe(timeframe)
        try:
            bars = await services.signal_service.market.get_bars(sym, tf, end=services.clock.now(),
                                                                  limit=limit + (HISTORY_WARMUP if wanted else 0))
        except SignalBotError as exc:
            raise HTTPException(503, f"no {tf.value} bars for {sym}: {exc}") from None
        values = None
        if wanted and len(bars):
            values = (await asyncio.to_thread(default_engine().compute, bars))[wanted]
        tail = bars.tail(limit)
        out = []
        for i, (t, row) in enumerate(zip(tail.index, tail.to_dict("records"))):
            ind: dict[str, float | None] = {}
            if values is not None:
                for name, x in values.iloc[len(bars) - len(tail) + i].items():
                    ind[str(name)] = None if x is None or not math.isfinite(float(x)) else float(x)
            out.append(schemas.Bar(time=pd.Timestamp(t).to_pydatetime(), open=float(row["open"]), high=float(row["high"]),
                                   low=float(row["low"]), close=float(row["close"]), volume=float(row["volume"]),
                                   indicators=ind))
        return schemas.History(symbol=sym, timeframe=tf.value, bars=out)

    async def subscription_of(principal: Principal) -> schemas.Preferences:
        user = await services.store.users.get_user(principal.user.id) or principal.user
        p = user.preferences
        quiet = None if p.quiet_hours is None else \
            f"{p.quiet_hours.start}-{p.quiet_hours.end} {p.quiet_hours.timezone}"
        channels = [c for c in ("email", "webhook") if await services.store.channels.get(user.id, c) is not None]
        return schemas.Preferences(symbols=sorted(p.symbols), asset_classes=sorted(a.value for a in p.asset_classes),
                                   timeframes=[t.value for t in Timeframe if t in p.timeframes],
                                   min_confidence=p.min_confidence, risk=p.risk.value, quiet_hours=quiet,
                                   digest_hour_utc=await services.store.digests.hour_of(user.id), channels=channels)

    @r.get("/subscriptions", response_model=schemas.Preferences, summary="Your preferences and channels")
    async def get_subscriptions(principal: Auth) -> schemas.Preferences:
        return await subscription_of(principal)

    @r.put("/subscriptions", response_model=schemas.Preferences, summary="Change your preferences (as /prefs)",
           responses={400: {"model": schemas.Error}})
    async def put_subscriptions(principal: Auth, body: schemas.PreferencesIn) -> schemas.Preferences:
        changes: list[tuple[str, str]] = []
        for field, key in (("symbols", "symbols"), ("asset_classes", "assets"), ("timeframes", "timeframes")):
            value = getattr(body, field)
            if value is not None:
                changes.append((key, ",".join(v.strip() for v in value if v.strip()) or "all"))
        for field, key in (("min_confidence", "confidence"), ("risk", "risk"), ("quiet_hours", "quiet")):
            value = getattr(body, field)
            if value is not None:
                changes.append((key, " ".join(value.split())))
        for key, value in changes:  # validated one by one, like the chat; nothing after a refusal is applied
            if any(ch in value for ch in "\n\r"):
                raise HTTPException(400, f"{key}: one line only")
            doc = await run(principal, f"/prefs {key} {value}")
            if doc.tone == "error":
                raise HTTPException(400, f"{key}: {doc.body}")
        return await subscription_of(principal)

    @r.post("/subscriptions/test", response_model=schemas.TestSent, summary="A test message to your chat")
    async def test_subscription(principal: Auth) -> schemas.TestSent:
        user = principal.user
        doc = Doc(heading="Test message", body="Your signals reach you here. Nothing to do.", tone="success")
        sent = await services.notices.send(user, doc)
        detail = "sent" if sent else f"no {user.platform} connection is running in this process, or the send failed"
        return schemas.TestSent(sent=sent, channel=user.platform, detail=detail)

    @r.get("/analytics/signal-history", response_model=schemas.SignalHistory,
           summary="Closed signals, newest first, and their summary after costs",
           responses={404: {"model": schemas.Error}})
    async def signal_history(principal: Auth, symbol: Annotated[str | None, Query(max_length=32)] = None,
                             timeframe: TimeframeName | None = None,
                             limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> schemas.SignalHistory:
        sym = known(symbol) if symbol else None
        pairs = [(s, o) for s, o in await services.store.signals.outcomes_since(EVERYTHING)
                 if not s.shadow and entitled(principal, s) and (sym is None or s.symbol == sym)
                 and (timeframe is None or s.timeframe.value == timeframe)]
        pairs.sort(key=lambda p: p[1].exit_time, reverse=True)
        shown = pairs[:limit]
        return schemas.SignalHistory(signals=[signal_out(s, o, principal) for s, o in shown],
                                     summary=summary_out([o for _, o in shown]))

    @r.post("/admin/generate", response_model=schemas.DocOut, responses={400: {"model": schemas.Error}}, summary="Administrators: scan now (/admin generate)")
    async def generate(principal: Admin, body: Annotated[schemas.GenerateIn, Body()] = schemas.GenerateIn()
                       ) -> Any:
        symbols = [s.strip() for s in body.symbols if s.strip()]
        if any(len(s) > 32 or not s.replace("-", "").replace(".", "").replace("/", "").replace("=", "")
               .replace("^", "").isalnum() for s in symbols):
            raise HTTPException(400, "a symbol is letters, digits and - . / = ^ only")
        return answer(await run(principal, "/admin generate " + " ".join(symbols)))

    @r.get("/admin/models", response_model=schemas.DocOut, responses={400: {"model": schemas.Error}}, summary="Administrators: the models (/admin models)")
    async def models(principal: Admin) -> Any:
        return answer(await run(principal, "/admin models"))

    @r.post("/admin/retrain", response_model=schemas.DocOut, responses={400: {"model": schemas.Error}}, summary="Administrators: retrain (/admin retrain)")
    async def retrain(principal: Admin) -> Any:
        return answer(await run(principal, "/admin retrain"))


def answer(doc: Doc) -> schemas.DocOut:
    if doc.tone == "error":
        raise HTTPException(400, (doc.body or doc.heading)[:500])
    return doc_out(doc)
