"""What a subscriber does with signals: /feedback (the "I took it" / "I skipped it" / "Closed at market" buttons
under each signal), /portfolio (the paper portfolio of the signals they took) and /watchlist.

A taken signal's fill is the last close when the signal reached the user (their first delivery: quiet hours
delay it), or when they tapped, if it never reached them (asked with /signal, seen on the web); a close at market
is the last close when they tapped. Prices come from the scan's market data; without one nothing is recorded.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from datetime import datetime, timedelta

from bot.commands.registry import Command, CommandContext, CommandServices
from bot.commands.parsing import parse_list, parse_symbol
from bot.commands.track import SIGNAL_ID_EXAMPLE, parse_signal_id
from bot.views.doc import Doc
from bot.delivery.digest import weekly_report
from bot.views.follow import feedback_doc, portfolio_doc, watchlist_doc
from core.clock import Clock
from core.domain import Decision, Feedback, Signal, SignalOutcome, Timeframe, User
from core.errors import SignalBotError, UserInputError
from core.portfolio import PaperPortfolio, paper_portfolio

ACTIONS = {"took": "took", "take": "took", "taken": "took", "skipped": "skipped", "skip": "skipped",
           "closed": "closed", "close": "closed"}
FEEDBACK_USAGE = "/feedback SIGNAL_ID took|skipped|closed"
PRICE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class FeedbackArgs:
    signal_id: str
    action: str  # "took" | "skipped" | "closed"


def parse_feedback(args: Sequence[str]) -> FeedbackArgs:
    if len(args) != 2 or args[1].lower() not in ACTIONS:
        raise UserInputError(f"Say which signal and what you did: {FEEDBACK_USAGE}, e.g. "
                             f"/feedback {SIGNAL_ID_EXAMPLE} took.")
    return FeedbackArgs(parse_signal_id(args[:1]), ACTIONS[args[1].lower()])


def market_time(wall_then: datetime, wall: Clock, market: Clock) -> datetime:
    """The market clock's reading at the wall-clock moment `wall_then` (they differ in an offline replay, where
    the market clock runs `speed` times faster)."""
    speed = float(getattr(market, "speed", 1.0))
    return market.now() - (wall.now() - wall_then) * speed


async def last_close(svc: CommandServices, symbol: str, at: datetime) -> tuple[float, datetime] | None:
    """The latest close of `symbol` at or before `at` on its finest scanned timeframe, and when its bar closed."""
    market = svc.signal_service.market
    try:
        offered = list(market.timeframes(symbol))
        tf = min(offered, key=lambda t: t.duration) if offered else Timeframe.D1
        bars = await market.get_bars(symbol, tf, end=at, limit=1)
    except SignalBotError:
        return None
    if not len(bars):
        return None
    return float(bars["close"].iloc[-1]), bars.index[-1].to_pydatetime() + tf.duration


class NoSuchSignal(UserInputError):
    pass


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    signal: Signal
    feedback: Feedback
    outcome: SignalOutcome | None
    said: str  # what happened, in words
    changed: bool  # whether this call stored anything


async def record_feedback(svc: CommandServices, user: User, signal_id: str, action: str) -> FeedbackResult:
    """The user's "took" / "skipped" / "closed" on a signal (chat, web and API alike). Bad requests raise
    UserInputError (NoSuchSignal for an unknown id) and store nothing."""
    store = svc.store
    signal = await store.signals.get_signal(signal_id)
    if signal is None or signal.shadow:
        raise NoSuchSignal(f"There is no signal {signal_id}. The id is shown under each signal.")
    outcome = await store.signals.get_outcome(signal.id)
    if action == "closed":
        mine = await store.feedback.get(user.id, signal.id)
        if mine is None or mine.decision is not Decision.TOOK:
            raise UserInputError("You have not said you took this signal: nothing to close. Tap \"I took it\" first.")
        if mine.closed_at is not None:
            return FeedbackResult(signal, mine, outcome, "You had already closed it.", False)
        if outcome is not None:
            return FeedbackResult(signal, mine, outcome, f"The signal had already closed ({outcome.status.value}); "
                                                         "your paper position closed with it.", False)
        now = svc.clock.now()
        priced = await last_close(svc, signal.symbol, now)
        if priced is None:
            raise UserInputError(f"No price for {signal.symbol} right now; nothing recorded. Try again shortly.")
        closed = await store.feedback.close(user.id, signal.id, priced[0], now)
        if closed is None:  # closed by another tap in the meantime
            again = await store.feedback.get(user.id, signal.id)
            assert again is not None
            return FeedbackResult(signal, again, outcome, "You had already closed it.", False)
        return FeedbackResult(signal, closed, outcome, "Closed at market in your paper portfolio.", True)
    decision = Decision(action)
    fill_price = fill_at = None
    if decision is Decision.TOOK:
        if outcome is not None:
            raise UserInputError(f"This signal has already closed ({outcome.status.value} at "
                                 f"{outcome.exit_time:%Y-%m-%d %H:%M} UTC); there is nothing left to take.")
        fill_price, fill_at = await _fill(svc, user, signal)
    fb, stored = await store.feedback.decide(user.id, signal.id, decision, fill_price=fill_price, fill_at=fill_at)
    if stored:
        said = "Recorded." + (" It follows the signal in /portfolio." if decision is Decision.TOOK else "")
    elif fb.decision is decision:
        said = "Already recorded; nothing changed."
    else:
        said = f"You had said you {fb.decision.value} it; a decision is kept as first given."
    return FeedbackResult(signal, fb, outcome, said, stored)


async def give_feedback(ctx: CommandContext, args: FeedbackArgs) -> Doc:
    user: User = ctx.user  # type: ignore[assignment]  # needs_user
    r = await record_feedback(ctx.services, user, args.signal_id, args.action)
    return feedback_doc(r.signal, r.feedback, r.outcome, r.said)


async def _fill(svc: CommandServices, user: User, signal: Signal) -> tuple[float, datetime]:
    sent = await svc.store.outbox.first_sent_at(signal.id, user.id)
    at = svc.clock.now() if sent is None else min(svc.clock.now(), market_time(sent, svc.wall, svc.clock))
    at = max(at, signal.issued_at)
    priced = await last_close(svc, signal.symbol, at)
    if priced is None:
        raise UserInputError(f"No price for {signal.symbol} right now; nothing recorded. Try again shortly.")
    return priced[0], at


async def portfolio_of(svc: CommandServices, user: User) -> PaperPortfolio:
    """The user's paper portfolio from their stored records, open positions marked at the latest close."""
    store = svc.store
    records = await store.feedback.of_user(user.id)
    signals: dict[str, Signal] = {}
    outcomes: dict[str, SignalOutcome] = {}
    for fb in records:
        s = await store.signals.get_signal(fb.signal_id)
        if s is not None:
            signals[s.id] = s
            o = await store.signals.get_outcome(s.id)
            if o is not None:
                outcomes[s.id] = o
    now = svc.clock.now()
    marks: dict[str, float] = {}
    for sym in sorted({signals[f.signal_id].symbol for f in records if f.signal_id in signals
                       and f.signal_id not in outcomes and f.decision is Decision.TOOK and f.closed_at is None}):
        priced = await last_close(svc, sym, now)
        if priced is not None:
            marks[sym] = priced[0]
    return paper_portfolio(records, signals, outcomes, marks, costs_bps=svc.settings.costs_bps)


async def show_portfolio(ctx: CommandContext, _: None) -> Doc:
    user: User = ctx.user  # type: ignore[assignment]
    return portfolio_doc(await portfolio_of(ctx.services, user), ctx.services.settings.costs_bps)


# /watchlist [add|remove SYMBOL...] -----------------------------------------------------------------
WATCH_USAGE = "/watchlist [add|remove SYMBOL...]"


@dataclass(frozen=True, slots=True)
class WatchArgs:
    action: str | None  # None: show
    symbols: tuple[str, ...] = ()


def parse_watch(args: Sequence[str]) -> WatchArgs:
    if not args:
        return WatchArgs(None)
    action = args[0].lower()
    if action in ("rm", "del", "delete"):
        action = "remove"
    if action not in ("add", "remove") or len(args) < 2:
        raise UserInputError(f"Usage: {WATCH_USAGE}, e.g. /watchlist add NVDA BTC-USDT.")
    symbols = tuple(parse_symbol(s) for s in parse_list(",".join(args[1:])))
    if not symbols or len(symbols) > 20:
        raise UserInputError("Give 1 to 20 symbols.")
    return WatchArgs(action, symbols)


async def change_watchlist(svc: CommandServices, user: User, action: str, symbols: Sequence[str]) -> str:
    """Add or remove symbols (any spelling the instruments know; an unknown one: a clear error, nothing changed);
    what was done, in words."""
    canonical = [svc.signal_service.instrument(s).symbol for s in symbols]
    if action == "add":
        new = await svc.store.watchlist.add(user.id, canonical)  # a full list: TooManyWatched, a UserInputError
        return f"Added {', '.join(new)}." if new else "Already on your watchlist."
    gone = await svc.store.watchlist.remove(user.id, canonical)
    return f"Removed {', '.join(gone)}." if gone else "None of those was on your watchlist."


async def watch_quotes(svc: CommandServices, user: User) -> tuple[list[tuple[str, tuple[float, float | None] | None]],
                                                                  dict[str, list[Signal]]]:
    """The user's watched symbols with (latest close, change from the last daily close), and their open signals."""
    symbols = await svc.store.watchlist.symbols_of(user.id)
    now = svc.clock.now()
    rows = [(sym, await day_move(svc, sym, now)) for sym in symbols]
    open_by_symbol: dict[str, list[Signal]] = {}
    for s in await svc.store.signals.open_signals():
        if not s.shadow and s.symbol in symbols:
            open_by_symbol.setdefault(s.symbol, []).append(s)
    return rows, open_by_symbol


async def watchlist(ctx: CommandContext, args: WatchArgs) -> Doc:
    user: User = ctx.user  # type: ignore[assignment]
    done = "" if args.action is None else await change_watchlist(ctx.services, user, args.action, args.symbols)
    rows, open_by_symbol = await watch_quotes(ctx.services, user)
    return watchlist_doc(rows, open_by_symbol, done)


async def day_move(svc: CommandServices, symbol: str, now: datetime) -> tuple[float, float | None] | None:
    """The latest close and its change from the last daily close before it (None: no price)."""
    last = await last_close(svc, symbol, now)
    if last is None:
        return None
    price, closed_at = last
    try:
        days = await svc.signal_service.market.get_bars(symbol, Timeframe.D1, end=now, limit=2)
    except SignalBotError:
        return price, None
    refs = [float(c) for t, c in zip(days.index, days["close"]) if t.to_pydatetime() + timedelta(days=1) < closed_at]
    return price, (price / refs[-1] - 1.0) if refs and refs[-1] > 0 else None


async def show_weekly(ctx: CommandContext, _: None) -> Doc:
    user: User = ctx.user  # type: ignore[assignment]
    svc = ctx.services
    doc = await weekly_report(svc.store, user.id, svc.wall.now(), svc.clock.now())
    return doc if doc is not None else Doc(heading="Your weekly report", body="Nothing was issued or closed in the "
                                                                               "last 7 days.")


def follow_commands() -> tuple[Command[Any], ...]:
    return (
        Command("feedback", "say what you did with a signal (the buttons under it): took, skipped, or closed at market",
                FEEDBACK_USAGE, parse_feedback, give_feedback),
        Command("portfolio", "your paper portfolio: the signals you took, from the fill you got, after costs",
                "/portfolio", _no_args, show_portfolio),
        Command("weekly", "the last 7 days: your signals and the whole service's, losers included (Mondays with "
                "/digest)", "/weekly", _no_args, show_weekly),
        Command("watchlist", "symbols you watch: their price today, and every signal on them reaches you",
                WATCH_USAGE, parse_watch, watchlist),
    )


def _no_args(args: Sequence[str]) -> None:
    if args:
        raise UserInputError("This command takes no arguments.")
