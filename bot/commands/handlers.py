"""The commands. Each is `async (ctx, args) -> Doc`; none sees a transport."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd

from bot.commands.parsing import (
    parse_asset_class, parse_confidence, parse_count, parse_hhmm, parse_list, parse_period_days, parse_risk,
    parse_symbol, parse_timeframe,
)
from bot.commands.account import account_commands
from bot.commands.apikeys import apikey_commands
from bot.commands.verify import verify_commands
from bot.commands.web import web_commands
from bot.commands.admin import admin_commands
from bot.commands.registry import Command, CommandContext, CommandRegistry
from bot.commands.track import published_backtests, track_commands
from bot.commands.follow import follow_commands
from bot.commands.screener import screener_commands
from bot.views.charts import ChartError, render_equity_chart
from bot.views.doc import Button, Doc, Image, Table
from bot.views.signal_chart import signal_chart_image
from bot.views.signals import analysis_doc, history_doc, performance_doc, signals_list_doc
from bot.views.track import track_record_doc
from core.breaker import BreakerState
from core.domain import Preferences, QuietHours, Signal, Tier, Timeframe, User
from core.errors import SignalBotError, UserInputError
from core.performance import summarize
from core.signals.engine import Analysis
from core.tiers import OFFERED_TIMEFRAMES, entitlements


log = logging.getLogger(__name__)


def _no_args(args: Sequence[str]) -> None:
    if args:
        raise UserInputError("This command takes no arguments.")


def _start_args(args: Sequence[str]) -> str | None:
    """/start takes an optional payload (Telegram deep links send `/start CODE`)."""
    if len(args) > 1:
        raise UserInputError("/start takes at most one code.")
    return args[0] if args else None


def _user(ctx: CommandContext) -> User:
    assert ctx.user is not None, "dispatch guarantees a user for needs_user commands"
    return ctx.user


# /start -------------------------------------------------------------------------------------------
async def start(ctx: CommandContext, _payload: str | None) -> Doc:
    store = ctx.services.store
    c = ctx.caller
    user = await store.users.upsert_user(c.platform, c.platform_user_id, c.chat_id, c.display_name)
    if not user.active:
        await store.users.set_active(user.id, True)
    if ctx.is_admin and user.tier is not Tier.PROFESSIONAL:
        # the people who run the service see everything it issues
        await store.users.set_tier(user.id, Tier.PROFESSIONAL)
        user = dataclasses.replace(user, tier=Tier.PROFESSIONAL)
    ent = entitlements(user.tier)
    return Doc(
        heading=f"Welcome{', ' + c.display_name if c.display_name else ''}! You are subscribed ({user.tier} tier).",
        body="You will receive trading signals that match your tier and preferences, each with entry, target, "
             "stop, confidence and an honest reasoning. Signals are ideas, not advice.",
        fields=(
            ("Asset classes", ", ".join(sorted(ent.asset_classes))),
            ("Timeframes", ", ".join(t.value for t in Timeframe if t in ent.timeframes)),
            ("Signals per month", "unlimited" if ent.signals_per_month is None else str(ent.signals_per_month)),
        ),
        buttons=(Button("Preferences", "/prefs"), Button("Active signals", "/signals"), Button("Help", "/help")),
        tone="success",
    )


# /help --------------------------------------------------------------------------------------------
async def show_help(ctx: CommandContext, _: None) -> Doc:
    # one line a command, not a table: the admin usage alone is 170 characters, and a <pre> table that wide
    # scrolls sideways on a phone; plain lines wrap in every client
    lines = (f"{c.usage} \N{EM DASH} {c.summary}" for c in ctx.services.registry.visible(ctx.is_admin))
    return Doc(heading="Commands", body="\n".join(lines),
               note="Symbols: stocks (AAPL), crypto (BTC-USDT), forex (EURUSD). Timeframes: "
                    + " ".join(t.value for t in OFFERED_TIMEFRAMES) + ".")


# /signal SYMBOL [TIMEFRAME] -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SignalArgs:
    symbol: str
    timeframe: Timeframe | None


def parse_signal_args(args: Sequence[str]) -> SignalArgs:
    if not 1 <= len(args) <= 2:
        raise UserInputError("Give a symbol and optionally a timeframe.")
    return SignalArgs(parse_symbol(args[0]), parse_timeframe(args[1]) if len(args) == 2 else None)


async def show_signal(ctx: CommandContext, args: SignalArgs) -> Doc:
    svc = ctx.services
    analysis = await svc.signal_service.analyse(args.symbol, args.timeframe)
    active = next((s for s in await svc.store.signals.open_signals()
                   if not s.shadow and s.symbol == analysis.instrument.symbol and s.timeframe == analysis.timeframe), None)
    check = None  # the risk manager's view of the idea itself, where the engine has one and none is open
    if analysis.verdict is not None and active is None:
        candidate = svc.signal_service.engine.candidate(analysis)
        if candidate is not None:
            check = svc.signal_service.risk.quality(candidate) or ""
    doc = analysis_doc(analysis, active, check)
    if not ctx.allows("charts"):
        return doc
    return await _with_signal_chart(ctx, doc, analysis, active)


async def _with_signal_chart(ctx: CommandContext, doc: Doc, analysis: Analysis, active: Signal | None) -> Doc:
    """The analysis with its candlestick chart: the active signal's levels, else the analysis' own. A chart that
    cannot be drawn (too few bars, a provider failing on the second read) leaves the text answer as it is."""
    sym, tf = analysis.instrument.symbol, analysis.timeframe
    lv = active or analysis.levels
    try:
        image = await signal_chart_image(ctx.services.signal_service.on_demand, sym, tf, analysis.as_of,
                                         (lv.entry, lv.target, lv.stop) if lv else None)
    except (ChartError, SignalBotError) as exc:
        log.warning("no chart for %s %s: %s", sym, tf, exc)
        return doc
    return dataclasses.replace(doc, image=image)


# /signals -----------------------------------------------------------------------------------------
LAST_PRICE_SECONDS = 2.0  # /signals waits at most this long for the latest closes (then shows none)


async def list_signals(ctx: CommandContext, _: None) -> Doc:
    active = [s for s in await ctx.services.store.signals.open_signals() if not s.shadow]
    updates = await ctx.services.store.signals.updates([s.id for s in active]) if active else {}
    doc = signals_list_doc(active, await last_closes(ctx, active), updates)
    return with_pauses(doc, ctx.services.signal_service.paused())


async def last_closes(ctx: CommandContext, signals: Sequence[Signal]) -> dict[str, float]:
    """Signal id -> the latest close of its symbol and timeframe from the scan's market data (stored bars when
    live); a symbol that cannot be read is left out, and all of them after LAST_PRICE_SECONDS."""
    market, now = ctx.services.signal_service.market, ctx.services.clock.now()

    async def one(s: Signal) -> tuple[str, float] | None:
        try:
            bars = await market.get_bars(s.symbol, s.timeframe, end=now, limit=1)
        except SignalBotError:
            return None
        return (s.id, float(bars["close"].iloc[-1])) if len(bars) else None

    try:
        found = await asyncio.wait_for(asyncio.gather(*(one(s) for s in signals)), LAST_PRICE_SECONDS)
    except TimeoutError:
        log.warning("/signals: no latest prices within %.0f s", LAST_PRICE_SECONDS)
        return {}
    return dict(pair for pair in found if pair is not None)


# /prefs [KEY VALUE...] ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PrefsArgs:
    key: str | None
    values: tuple[str, ...]


PREF_KEYS = ("symbols", "assets", "timeframes", "confidence", "risk", "quiet", "reset")
PREFS_USAGE = ("/prefs [symbols AAPL,BTC-USDT|all] [assets equity,crypto|all] [timeframes 1h,1d|all] "
               "[confidence 45|off] [risk low|medium|high] [quiet 22:00-07:00 Europe/Berlin|off] [reset]")


def parse_prefs_args(args: Sequence[str]) -> PrefsArgs:
    if not args:
        return PrefsArgs(None, ())
    key = args[0].lower()
    aliases = {"symbol": "symbols", "instruments": "symbols", "asset": "assets", "classes": "assets",
               "timeframe": "timeframes", "tf": "timeframes", "min_confidence": "confidence", "conf": "confidence"}
    key = aliases.get(key, key)
    if key not in PREF_KEYS:
        raise UserInputError(f"Unknown preference '{args[0][:20]}' (one of {', '.join(PREF_KEYS)}).")
    if key != "reset" and len(args) < 2:
        raise UserInputError(f"Give a value for {key}.")
    return PrefsArgs(key, tuple(args[1:]))


async def set_preferences(ctx: CommandContext, args: PrefsArgs) -> Doc:
    user = _user(ctx)
    if args.key is None:
        return prefs_doc(user.preferences, "Your preferences")
    new = apply_preference(user.preferences, args.key, args.values, ctx.services.signal_service.instrument)
    admins = ctx.services.store.admin
    await admins.ensure_schema()
    for uid in await admins.members(user.id):  # linked identities share preferences
        await ctx.services.store.users.set_preferences(uid, new)
    return prefs_doc(new, "Preferences saved")


def apply_preference(p: Preferences, key: str, values: Sequence[str], lookup) -> Preferences:  # noqa: ANN001
    joined = ",".join(values)
    everything = joined.lower() in ("all", "any", "*")
    match key:
        case "reset":
            return Preferences()
        case "symbols":
            syms = frozenset() if everything else frozenset(lookup(parse_symbol(s)).symbol for s in parse_list(joined))
            return dataclasses.replace(p, symbols=syms)
        case "assets":
            acs = frozenset() if everything else frozenset(parse_asset_class(a) for a in parse_list(joined))
            return dataclasses.replace(p, asset_classes=acs)
        case "timeframes":
            tfs = frozenset() if everything else frozenset(parse_timeframe(t) for t in parse_list(joined))
            return dataclasses.replace(p, timeframes=tfs)
        case "confidence":
            return dataclasses.replace(p, min_confidence=parse_confidence(values[0]))
        case "risk":
            return dataclasses.replace(p, risk=parse_risk(values[0]))
        case "quiet":
            return dataclasses.replace(p, quiet_hours=parse_quiet(values))
    raise UserInputError(f"Unknown preference '{key}'.")


def parse_quiet(values: Sequence[str]) -> QuietHours | None:
    if values[0].lower() in ("off", "none", "no"):
        return None
    window = values[0]
    if "-" not in window:
        raise UserInputError("Quiet hours look like 22:00-07:00, optionally followed by a time zone.")
    start, end = (parse_hhmm(x) for x in window.split("-", 1))
    tz = values[1] if len(values) > 1 else "UTC"
    if not valid_timezone(tz):
        raise UserInputError(f"Unknown time zone '{tz[:40]}' (use an IANA name such as Europe/Berlin or America/New_York).")
    if start == end:
        raise UserInputError("Quiet hours must start and end at different times.")
    return QuietHours(start, end, tz)


def valid_timezone(name: str) -> bool:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def prefs_doc(p: Preferences, heading: str) -> Doc:
    q = p.quiet_hours
    return Doc(
        heading=heading,
        fields=(
            ("Symbols", ", ".join(sorted(p.symbols)) or "all"),
            ("Asset classes", ", ".join(sorted(p.asset_classes)) or "all in your tier"),
            ("Timeframes", ", ".join(t.value for t in Timeframe if t in p.timeframes) or "all in your tier"),
            ("Minimum confidence", str(p.min_confidence) if p.min_confidence > 1 else "off"),
            ("Risk tolerance", p.risk.value),
            ("Quiet hours", f"{q.start}-{q.end} {q.timezone}" if q else "off"),
        ),
        note=f"Change with {PREFS_USAGE}",
    )


# /performance [30d|90d|all] -----------------------------------------------------------------------
def parse_period(args: Sequence[str]) -> int | None | str:
    if len(args) > 1:
        raise UserInputError("Give at most one period.")
    return parse_period_days(args[0]) if args else "overview"


async def show_performance(ctx: CommandContext, period: int | None | str) -> Doc:
    store, now = ctx.services.store, ctx.services.clock.now()
    backtests = await published_backtests(ctx.services)  # shown apart from the live figures, never mixed in
    if period == "overview":
        live = []
        for label, days in (("30 days", 30), ("90 days", 90), ("all time", None)):
            since = now - timedelta(days=days) if days else now - timedelta(days=365 * 100)
            live.append((label, summarize([o for _, o in followed(await store.signals.outcomes_since(since))])))
        return with_pauses(track_record_doc(live, backtests), ctx.services.signal_service.paused())
    days = period if isinstance(period, int) else None
    since = now - timedelta(days=days) if days else now - timedelta(days=365 * 100)
    pairs = followed(await store.signals.outcomes_since(since))
    label = f"last {days} days" if days else "all time"
    doc = with_pauses(performance_doc(label, summarize([o for _, o in pairs]), backtests, pairs),
                      ctx.services.signal_service.paused())
    if not pairs or not ctx.allows("charts"):
        return doc
    try:
        png = await render_equity_chart(equity_curve(pairs), title=f"Closed signals, {label}")
    except ChartError as exc:
        log.warning("no equity chart: %s", exc)
        return doc
    return dataclasses.replace(doc, image=Image(png, "equity.png", "Equity if every signal had been taken at its "
                                                                   "suggested size, after costs"))


def followed(pairs: Sequence[tuple[Signal, Any]]) -> list[tuple[Signal, Any]]:
    """The closed signals a subscriber could have followed: shadow signals (issued while their scope's strategy
    breaker was tripped, never delivered) are kept out of every track-record figure."""
    return [(s, o) for s, o in pairs if not s.shadow]


def with_pauses(doc: Doc, paused: Sequence[BreakerState]) -> Doc:
    """The view with a line per paused strategy scope and why, in plain words."""
    if not paused:
        return doc
    lines = [f"{st.scope}: {st.reason} ({st.shadow_closed} shadow signals closed so far)" for st in paused]
    return dataclasses.replace(doc, note="\n".join(filter(None, [doc.note, *lines])))


def equity_curve(pairs: Sequence[tuple[Signal, Any]]) -> pd.Series:
    """Compounded equity (1.0 at the first fill) of taking every closed signal at its suggested position size
    (a fraction of capital), booked at its exit, after costs. Signals that overlap are booked independently."""
    first = min(o.fill_time for _, o in pairs)
    steps = sorted((o.exit_time, 1.0 + s.position_size * o.net_return) for s, o in pairs)
    index = pd.DatetimeIndex([first, *(t for t, _ in steps)])
    return pd.Series(np.cumprod([1.0, *(g for _, g in steps)]), index=index)


# /history [N] -------------------------------------------------------------------------------------
def parse_history(args: Sequence[str]) -> int:
    if len(args) > 1:
        raise UserInputError("Give at most one number.")
    return parse_count(args[0], 1, 50, "The number of signals") if args else 10


async def show_history(ctx: CommandContext, limit: int) -> Doc:
    pairs = followed(await ctx.services.store.signals.recent_outcomes(limit * 4))  # shadows are not in the record
    return history_doc(pairs[:limit])


# /instruments [QUERY] -----------------------------------------------------------------------------
def parse_query(args: Sequence[str]) -> str:
    query = " ".join(args).strip()
    if len(query) > 60:
        raise UserInputError("That search is too long (at most 60 characters).")
    return query


async def find_instruments(ctx: CommandContext, query: str) -> Doc:
    registry = ctx.services.instruments
    if not query:
        counts: dict[str, int] = {}
        for r in registry.records():
            counts[r.instrument.asset_class.value] = counts.get(r.instrument.asset_class.value, 0) + 1
        return Doc(heading=f"{sum(counts.values())} instruments",
                   fields=tuple((k, str(v)) for k, v in sorted(counts.items())),
                   note="Search with /instruments QUERY (a symbol, a name, a sector or an industry such as bank).")
    found = registry.search(query, limit=INSTRUMENT_ROWS + 1)
    if not found:
        return Doc(heading=f"No instrument matches '{query}'", body="Try a symbol (AAPL), a name or a sector.")
    rows = tuple((r.instrument.symbol, r.instrument.name[:32], r.instrument.asset_class.value,
                  r.instrument.sector[:22], r.instrument.exchange) for r in found[:INSTRUMENT_ROWS])
    more = f"Showing the first {INSTRUMENT_ROWS}; narrow the search for the rest." if len(found) > INSTRUMENT_ROWS else ""
    return Doc(heading=f"Instruments matching '{query}'",
               table=Table(("symbol", "name", "class", "sector", "exchange"), rows), note=more)


INSTRUMENT_ROWS = 25


# /stop --------------------------------------------------------------------------------------------
async def stop(ctx: CommandContext, _: None) -> Doc:
    await ctx.services.store.users.set_active(_user(ctx).id, False)
    return Doc(heading="Unsubscribed", body="You will receive no more signals. Send /start to come back; "
               "your preferences are kept.")


def build_registry(extra: Iterable[Command[Any]] = ()) -> CommandRegistry:
    """Every command; `extra` adds more (e.g. bot.commands.billing.billing_commands())."""
    r = CommandRegistry()
    commands: tuple[Command[Any], ...] = (
        Command("start", "subscribe (free tier) and see what you get", "/start", _start_args, start, needs_user=False),
        Command("help", "this list", "/help", _no_args, show_help, needs_user=False),
        Command("signal", "analysis of a symbol now: indicators, verdict, levels", "/signal SYMBOL [TIMEFRAME]",
                parse_signal_args, show_signal, needs_user=False, metered=True),
        Command("signals", "the active signals", "/signals", _no_args, list_signals, needs_user=False),
        Command("prefs", "view or change your preferences", PREFS_USAGE, parse_prefs_args, set_preferences),
        Command("performance", "track record: live signals (hit rate, average return, profit factor), backtests apart",
                "/performance [30d|90d|all]", parse_period, show_performance, needs_user=False),
        Command("history", "the last closed signals and how they ended", "/history [N]", parse_history,
                show_history, needs_user=False),
        Command("instruments", "search the instruments by symbol, name, sector or industry", "/instruments [QUERY]",
                parse_query, find_instruments, needs_user=False),
        Command("stop", "unsubscribe", "/stop", _no_args, stop),
        *account_commands(),
        *apikey_commands(),
        *verify_commands(),
        *web_commands(),
        *admin_commands(),
        *track_commands(),
        *follow_commands(),
        *screener_commands(),
        *extra,
    )
    for cmd in commands:
        r.register(cmd)
    return r
