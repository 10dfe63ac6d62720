"""The API's view of what a subscriber does with signals (bot.commands.follow, the same functions as the chat's):

    POST   /api/v1/signals/{signal_id}/feedback   {"action": "took" | "skipped" | "closed"}
    GET    /api/v1/portfolio                      the paper portfolio of the signals the key owner took
    GET    /api/v1/watchlist                      watched symbols, their latest close and open signals
    PUT    /api/v1/watchlist/{symbol}             add one
    DELETE /api/v1/watchlist/{symbol}             remove one
    GET    /api/v1/market/screener?q=rsi<30 sector=tech   the screener (bot.commands.screener)
    GET    /api/v1/reports/daily-summary, /api/v1/reports/weekly-performance   the digest's and /weekly's figures
"""
# no `from __future__ import annotations`: FastAPI reads the routes' annotations
import math
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from bot.api import schemas
from bot.api.access import Principal
from bot.commands.follow import (NoSuchSignal, change_watchlist, portfolio_of, record_feedback, watch_quotes)
from bot.commands.screener import screen_rows
from bot.delivery.digest import DIGEST_WINDOW, WEEK
from core.domain import Signal, SignalOutcome
from core.performance import summarize
from core.screener import parse_filters
from core.errors import UnknownSymbolError, UserInputError

if TYPE_CHECKING:
    from bot.services import Services


def summary_out(outcomes: Sequence[SignalOutcome]) -> schemas.Summary | None:
    p = summarize(outcomes)
    return None if p is None else schemas.Summary(closed=p.count, wins=p.wins, hit_rate=p.hit_rate,
                                                  avg_return=p.avg_return, profit_factor=p.profit_factor,
                                                  best=p.best, worst=p.worst)


def add_follow_routes(r: APIRouter, services: "Services", principal_of: Callable[..., Awaitable[Principal]],
                      entitled: Callable[[Principal, Signal], bool]) -> None:
    Auth = Annotated[Principal, Depends(principal_of)]

    @r.post("/signals/{signal_id}/feedback", response_model=schemas.FeedbackOut,
            summary="Say what you did with a signal: took it, skipped it, or closed it at market",
            responses={404: {"model": schemas.Error}, 409: {"model": schemas.Error}})
    async def feedback(principal: Auth, signal_id: Annotated[str, Path(max_length=80)],
                       body: schemas.FeedbackIn) -> schemas.FeedbackOut:
        found = await services.store.signals.get_signal(signal_id)
        if found is None or found.shadow:
            raise HTTPException(404, f"no signal {signal_id}")
        if not entitled(principal, found):
            raise HTTPException(403, f"{found.asset_class.value} {found.timeframe.value} signals are not in the "
                                     f"{principal.tier.value} plan")
        try:
            done = await record_feedback(services, principal.user, signal_id, body.action)
        except NoSuchSignal as exc:
            raise HTTPException(404, str(exc)) from None
        except UserInputError as exc:
            raise HTTPException(409, str(exc)) from None
        fb = done.feedback
        return schemas.FeedbackOut(signal_id=fb.signal_id, decision=fb.decision.value, decided_at=fb.decided_at,
                                   fill_price=fb.fill_price, fill_at=fb.fill_at, closed_price=fb.closed_price,
                                   closed_at=fb.closed_at, message=done.said, changed=done.changed)

    @r.get("/analytics/portfolio-impact", response_model=schemas.Portfolio, summary="The same as /portfolio")
    @r.get("/portfolio", response_model=schemas.Portfolio,
           summary="The paper portfolio: the signals you took, from your fill, after costs")
    async def portfolio(principal: Auth) -> schemas.Portfolio:
        book = await portfolio_of(services, principal.user)
        rows = [schemas.PositionOut(signal_id=p.signal.id, symbol=p.signal.symbol, timeframe=p.signal.timeframe.value,
                                    direction=p.signal.direction.value, size=p.size, fill_price=p.fill_price,
                                    fill_at=p.fill_at, exit_price=p.exit_price, exit_at=p.exit_at, how=p.how,
                                    net_return=p.net_return, contribution=p.contribution) for p in book.positions]
        return schemas.Portfolio(positions=rows, open=len(book.open_positions), closed=len(book.closed_positions),
                                 wins=book.wins, skipped=book.skipped, exposure=book.exposure,
                                 realised=book.realised, unrealised=book.unrealised,
                                 total=book.realised + book.unrealised, costs_bps=services.settings.costs_bps)

    async def watched(principal: Principal, message: str = "") -> schemas.Watchlist:
        rows, open_by_symbol = await watch_quotes(services, principal.user)
        return schemas.Watchlist(message=message, symbols=[
            schemas.WatchedOut(symbol=sym, last=None if q is None else q[0], day_change=None if q is None else q[1],
                               open_signals=[s.id for s in open_by_symbol.get(sym, ())]) for sym, q in rows])

    @r.get("/market/screener", response_model=schemas.Screener, summary="Instruments by indicator filters",
           responses={400: {"model": schemas.Error}})
    async def market_screener(principal: Auth, q: Annotated[str, Query(max_length=200)] = "") -> schemas.Screener:
        try:
            filters = parse_filters(q.split())
        except UserInputError as exc:
            raise HTTPException(400, str(exc)) from None
        rows, screened = await screen_rows(services, filters)

        def num(x: float) -> float | None:
            return None if math.isnan(x) else x

        return schemas.Screener(filters=[str(f) for f in filters], screened=screened, rows=[
            schemas.ScreenRowOut(symbol=r.symbol, name=r.name, asset_class=r.asset_class, sector=r.sector,
                                 price=r.price, rsi=num(r.rsi), adx=num(r.adx), z=num(r.z), trend=r.trend_word,
                                 score=r.score, side=r.side, confidence=r.confidence, setup=r.setup) for r in rows])

    async def report(principal: Principal, span: timedelta) -> schemas.Report:
        now, market_now = services.wall.now(), services.clock.now()
        mine = await services.store.outbox.received_since(principal.user.id, now - span,
                                                           closed_since=market_now - span)
        everyone = [o for s, o in await services.store.signals.outcomes_since(market_now - span) if not s.shadow]
        closed = [o for _, o in mine if o is not None]
        return schemas.Report(start=now - span, end=now, received=len(mine), received_closed=len(closed),
                              yours=summary_out(closed), service=summary_out(everyone),
                              signals=[s.id for s, _ in sorted(mine, key=lambda p: p[0].issued_at)])

    @r.get("/reports/daily-summary", response_model=schemas.Report, summary="The last 24 hours (the daily digest)")
    async def daily_summary(principal: Auth) -> schemas.Report:
        return await report(principal, DIGEST_WINDOW)

    @r.get("/reports/weekly-performance", response_model=schemas.Report, summary="The last 7 days (/weekly)")
    async def weekly_performance(principal: Auth) -> schemas.Report:
        return await report(principal, WEEK)

    @r.get("/watchlist", response_model=schemas.Watchlist, summary="Your watched symbols")
    async def get_watchlist(principal: Auth) -> schemas.Watchlist:
        return await watched(principal)

    async def change(principal: Principal, action: str, symbol: str) -> schemas.Watchlist:
        try:
            said = await change_watchlist(services, principal.user, action, [symbol])
        except UnknownSymbolError as exc:
            raise HTTPException(404, str(exc)) from None
        except UserInputError as exc:
            raise HTTPException(409, str(exc)) from None
        return await watched(principal, said)

    @r.put("/watchlist/{symbol}", response_model=schemas.Watchlist, summary="Watch a symbol",
           responses={404: {"model": schemas.Error}, 409: {"model": schemas.Error}})
    async def watch(principal: Auth, symbol: Annotated[str, Path(max_length=32)]) -> schemas.Watchlist:
        return await change(principal, "add", symbol)

    @r.delete("/watchlist/{symbol}", response_model=schemas.Watchlist, summary="Stop watching a symbol",
              responses={404: {"model": schemas.Error}, 409: {"model": schemas.Error}})
    async def unwatch(principal: Auth, symbol: Annotated[str, Path(max_length=32)]) -> schemas.Watchlist:
        return await change(principal, "remove", symbol)
