"""/admin SUBCOMMAND: the operators' commands. Allowed for configured numeric ids only (Services.is_admin);
dispatch refuses everybody else and audits every attempt (Command.audited).

What they use of the services (bot.commands.registry.CommandServices):
- `retrain: async () -> object | None` runs a retraining and returns a summary (a mapping is shown as fields);
  None where there is no retraining (offline markets);
- `notices` (bot.notices.Notices) delivers a broadcast to the users on the chat transports that are running
  and returns how many got it.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bot.commands.parsing import UserRef, parse_list, parse_symbol, parse_tier, parse_user_ref
from bot.commands.registry import Command, CommandContext
from bot.views.doc import Doc, Table
from core.domain import DeliveryStatus, Tier, User
from core.errors import MarketDataError, UnknownSymbolError, UserInputError
from core.signals.narrative import Narrator
from core.signals.service import ScanReport, SignalService
from core.tiers import entitlements

log = logging.getLogger(__name__)

MAX_GENERATE_SYMBOLS = 20
MAX_BROADCAST_CHARS = 900
SUBCOMMANDS = ("stats", "generate", "models", "retrain", "broadcast", "grant", "user")
ADMIN_USAGE = ("/admin stats | generate [SYMBOLS] | models | retrain | broadcast TEXT | grant USER TIER | user USER "
               "(USER: our user id or platform:id)")

Broadcaster = Callable[[Sequence[User], str], Awaitable[int]]


# ---------------------------------------------------------------------- arguments

@dataclass(frozen=True, slots=True)
class AdminRequest:
    action: str  # one of SUBCOMMANDS, or "help"
    symbols: tuple[str, ...] = ()
    text: str = ""
    user: UserRef | None = None
    tier: Tier | None = None


def parse_admin_args(args: Sequence[str]) -> AdminRequest:
    if not args:
        return AdminRequest("help")
    action, rest = args[0].lower(), tuple(args[1:])
    if action not in SUBCOMMANDS:
        raise UserInputError(f"Unknown admin command '{args[0][:20]}' (one of {', '.join(SUBCOMMANDS)}).")
    match action:
        case "stats" | "models" | "retrain":
            if rest:
                raise UserInputError(f"/admin {action} takes no arguments.")
            return AdminRequest(action)
        case "generate":
            symbols = [parse_symbol(s) for s in parse_list(" ".join(rest))]
            if len(symbols) > MAX_GENERATE_SYMBOLS:
                raise UserInputError(f"At most {MAX_GENERATE_SYMBOLS} symbols at once.")
            return AdminRequest(action, symbols=tuple(dict.fromkeys(symbols)))
        case "broadcast":
            text = " ".join(rest).strip()
            if not text:
                raise UserInputError("Give the text to broadcast.")
            if len(text) > MAX_BROADCAST_CHARS:
                raise UserInputError(f"A broadcast is at most {MAX_BROADCAST_CHARS} characters (this is {len(text)}).")
            return AdminRequest(action, text=text)
        case "grant":
            if len(rest) != 2:
                raise UserInputError("Give a user and a tier: /admin grant USER TIER.")
            return AdminRequest(action, user=parse_user_ref(rest[0]), tier=parse_tier(rest[1]))
        case _:  # "user"
            if len(rest) != 1:
                raise UserInputError("Give one user: /admin user USER.")
            return AdminRequest(action, user=parse_user_ref(rest[0]))


async def run_admin(ctx: CommandContext, req: AdminRequest) -> Doc:
    match req.action:
        case "stats":
            return await show_stats(ctx)
        case "generate":
            return await generate_signals(ctx, req.symbols)
        case "models":
            return await list_models(ctx)
        case "retrain":
            return await retrain_models(ctx)
        case "broadcast":
            return await broadcast_message(ctx, req.text)
        case "grant":
            assert req.user is not None and req.tier is not None
            return await grant_tier(ctx, req.user, req.tier)
        case "user":
            assert req.user is not None
            return await show_user(ctx, req.user)
    return Doc(heading="Admin commands", body=ADMIN_USAGE)


# ---------------------------------------------------------------------- stats

async def show_stats(ctx: CommandContext) -> Doc:
    svc = ctx.services
    admins = svc.store.admin
    await admins.ensure_schema()
    counts = await admins.user_counts()
    by_key: dict[tuple[str, str], list[int]] = {}
    for c in counts:
        total_active = by_key.setdefault((c.platform, c.tier), [0, 0])
        total_active[0] += c.count
        total_active[1] += c.count if c.active else 0
    tier_order = {t.value: t.rank for t in Tier}
    rows = tuple((platform, tier, str(n), str(active)) for (platform, tier), (n, active)
                 in sorted(by_key.items(), key=lambda kv: (kv[0][0], tier_order.get(kv[0][1], 99))))
    signals = await admins.signal_counts()
    deliveries = await svc.store.outbox.delivery_counts()
    queue = deliveries.get(DeliveryStatus.PENDING, 0) + deliveries.get(DeliveryStatus.SENDING, 0)
    last_scan = svc.signal_service.last_scan_at
    last_signal = await admins.last_signal_at()
    fields = (
        ("Users", f"{sum(c.count for c in counts)} ({sum(c.count for c in counts if c.active)} active)"),
        ("Signals", f"{sum(signals.values())} issued, {signals.get('open', 0)} open, "
                    f"{sum(n for s, n in signals.items() if s != 'open')} closed"),
        ("Closed by", ", ".join(f"{s} {n}" for s, n in sorted(signals.items()) if s != "open") or "-"),
        ("Deliveries", ", ".join(f"{s.value} {n}" for s, n in sorted(deliveries.items())) or "none"),
        ("Queue depth", str(queue)),
        ("Last scan", _when(last_scan) if last_scan is not None else "not recorded"),
        ("Last signal", _when(last_signal) if last_signal is not None else "none yet"),
        ("Breaker", await breaker_line(svc.signal_service)),
    )
    return Doc(heading="Service statistics", fields=fields,
               table=Table(("platform", "tier", "users", "active"), rows) if rows else None)


async def breaker_line(service: SignalService) -> str:
    """Each strategy scope's breaker: issuing or paused, its followed drawdown and its recent mean after costs."""
    breaker = await service.refresh_breaker()
    if breaker is None:
        return "off"
    parts = []
    for scope in breaker.scopes():
        st = breaker.state(scope)
        recent = "n/a" if st.rolling_expectancy is None else f"{st.rolling_expectancy:+.2%}"
        status = f"paused since {st.since:%Y-%m-%d}, {st.shadow_closed} shadows closed" if st.tripped else "issuing"
        parts.append(f"{scope} {status}; drawdown {st.drawdown:.1%}, recent mean {recent} ({st.live_closed} closed)")
    return "; ".join(parts) or "on, nothing closed yet"


def _when(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# ---------------------------------------------------------------------- generate

async def generate_signals(ctx: CommandContext, symbols: Sequence[str]) -> Doc:
    """No symbols: an immediate scan. Symbols: an analysis of each now, and the setups found go through the
    same risk review, storage and SignalIssued publication as a scan's (SignalService)."""
    service = ctx.services.signal_service
    if not symbols:
        report: ScanReport = await service.scan()
        return _report_doc("Scan run now", report, [])
    candidates, notes, evaluated = [], [], 0
    for symbol in symbols:
        try:
            analysis = await service.analyse(symbol)
        except (UnknownSymbolError, MarketDataError) as exc:
            notes.append(f"{symbol}: {exc}")
            continue
        evaluated += 1
        candidate = service.engine.candidate(analysis)
        if candidate is None:
            notes.append(f"{analysis.instrument.symbol} {analysis.timeframe}: no setup now")
        else:
            candidates.append(candidate)
    report = await _issue(service, candidates)
    report.evaluated = evaluated
    return _report_doc(f"Generated for {', '.join(symbols)}", report, notes)


async def _issue(service: Any, candidates: list[Any]) -> ScanReport:
    """Risk review, store and publish, the way a scan does."""
    result = await service.issue(candidates)
    assert isinstance(result, ScanReport)
    return result


def _report_doc(heading: str, report: ScanReport, notes: Sequence[str]) -> Doc:
    rows = tuple((s.symbol, s.timeframe.value, s.direction.value, f"{s.entry:.4g}", f"{s.target:.4g}",
                  f"{s.stop:.4g}", str(s.confidence)) for s in report.issued)
    lines = [*notes, *(f"rejected {cid}: {reason}" for cid, reason in report.rejected[:10]),
             *(f"error {sym}: {err}" for sym, err in report.errors[:10])]
    return Doc(heading=heading,
               fields=(("Evaluated", str(report.evaluated)), ("Issued", str(len(report.issued))),
                       ("Rejected", str(len(report.rejected))), ("Errors", str(len(report.errors)))),
               table=Table(("symbol", "tf", "side", "entry", "target", "stop", "conf"), rows) if rows else None,
               body="\n".join(lines), tone="success" if report.issued else "info",
               note="Issued signals go to subscribers through the normal delivery path.")


# ---------------------------------------------------------------------- models

LIVE_WINDOW_DAYS = 90


async def list_models(ctx: CommandContext) -> Doc:
    svc = ctx.services
    root = Path(svc.settings.models_dir)
    manifests = await asyncio.to_thread(read_manifests, root)
    since = svc.clock.now() - timedelta(days=LIVE_WINDOW_DAYS)
    closed = await svc.store.signals.outcomes_since(since)
    live = live_accuracy([(s.evidence, o.net_return) for s, o in closed])
    engine = svc.signal_service.engine.version
    news = news_part(svc.news, [(s.evidence, s.direction.value, o.net_return) for s, o in closed])
    writers = reasoning_part(svc.signal_service.narrator)
    fields = (("Engine now", engine), *live, *news, *writers)
    if not manifests:
        return Doc(heading="No models", body=f"No model manifests under {root}/.", fields=fields)
    rows = tuple((m.get("name", "?"), m.get("version", "?"), m.get("created_at", "?"), m.get("role", "-"),
                  m.get("metrics", "-")) for m in manifests)
    return Doc(heading=f"{len(rows)} model version{'s' if len(rows) != 1 else ''}", fields=fields,
               table=Table(("name", "version", "created", "role", "key metrics"), rows),
               note=f"From {root}/*/manifest.json, newest first. Live: signals closed in the last "
                    f"{LIVE_WINDOW_DAYS} days, after costs.")


def live_accuracy(closed: Sequence[tuple[Mapping[str, Any], float]]) -> list[tuple[str, str]]:
    """How the voters did on closed live signals: (evidence, net return) pairs, grouped by whether a model voted.
    A win is a positive net return. For model-voted signals also the mean predicted probability and the Brier
    score of that probability against the outcome (lower is better; 0.25 is a coin's)."""
    rules = [r for e, r in closed if "model_probability" not in e]
    voted = [(float(e["model_probability"]), r) for e, r in closed if "model_probability" in e]
    out: list[tuple[str, str]] = []
    if rules:
        out.append(("Live, rules alone", f"{len(rules)} closed, hit {sum(r > 0 for r in rules) / len(rules):.0%}"))
    if voted:
        wins = [1.0 if r > 0 else 0.0 for _, r in voted]
        mean_p = sum(p for p, _ in voted) / len(voted)
        brier = sum((p - w) ** 2 for (p, _), w in zip(voted, wins, strict=True)) / len(voted)
        out.append(("Live, with model", f"{len(voted)} closed, hit {sum(wins) / len(wins):.0%}, predicted "
                                         f"{mean_p:.0%}, Brier {brier:.3f}"))
    return out or [("Live", "no signal has closed in the window")]


def news_part(job: Any, closed: Sequence[tuple[Mapping[str, Any], str, float]]) -> list[tuple[str, str]]:
    """The news analysts of the chain (breaker, calls, failures, mean latency, tokens and cost today against the
    daily quota) and the news voter's hit rate on closed signals it voted on (evidence, direction, net return)."""
    from core.news.voter import news_track_record

    if job is None:
        return [("News analysts", "no news source configured: the engine decides without news")]
    out: list[tuple[str, str]] = []
    for h in job.analysis.health():
        tokens = f"{h.tokens_today:,} tokens" + (f" of {h.tokens_quota:,}" if h.tokens_quota is not None else "")
        cost = f"${h.cost_today_usd:.2f}" + (f" of ${h.cost_quota_usd:.2f}" if h.cost_quota_usd is not None else "")
        error = f"; last error: {h.last_error[:80]}" if h.last_error else ""
        out.append((f"News analyst {h.provider}",
                    f"{h.model}; breaker {h.breaker}; {h.calls} calls, {h.failures} failures, {h.skipped} skipped, "
                    f"{h.cache_hits} cached; mean {h.mean_latency_ms:.0f} ms; today {tokens}, {cost}{error}"))
    if not out:
        out.append(("News analysts", "none in the chain: news items get no verdict (technical only)"))
    track = news_track_record(closed)
    rate = track.hit_rate
    weight = getattr(job.index, "skill", 1.0)
    out.append(("News vote, live", f"voted on {track.voted} closed signals, {track.calls} leaning calls, "
                                    f"hit {'n/a' if rate is None else f'{rate:.0%}'}; skill {weight:.2f} "
                                    f"(scales its weight); {len(job.index)} verdicts held"))
    return out


def reasoning_part(narrator: Narrator | None) -> list[tuple[str, str]]:
    """Who writes the signals' reasoning: each LLM writer's breaker, calls, successes, failures, rejected answers
    (they did not validate), skips and today's tokens and cost against its quota; or the template."""
    slots = narrator.slots if narrator is not None else []
    if not slots:
        return [("Reasoning", "the engine's template (no LLM key, or SIGNALBOT_LLM_REASONING=false)")]
    out = []
    for slot in slots:
        st = slot.stats
        breaker = str(slot.breaker.state) if slot.breaker is not None else "closed"
        today = ""
        if slot.quota is not None:
            tokens, cost = slot.quota.usage()
            today = f"; today {tokens:,} of {slot.quota.tokens:,} tokens, ${cost:.2f} of ${slot.quota.cost_usd:.2f}"
        error = f"; last error: {st.last_error[:80]}" if st.last_error else ""
        out.append((f"Reasoning by {slot.name}", f"breaker {breaker}; {st.calls} calls, {st.successes} used, "
                                                 f"{st.failures} failed, {st.rejected} rejected, {st.skipped} skipped"
                                                 f"{today}{error}"))
    return out


def read_manifests(root: Path) -> list[dict[str, str]]:
    """name, version, created_at, role and key metrics of every root/*/manifest.json, newest first. A manifest
    that cannot be read is listed with the reason."""
    out: list[dict[str, str]] = []
    for path in sorted(root.glob("*/manifest.json")) if root.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            out.append({"name": path.parent.name, "version": "?", "created_at": "", "role": "-",
                        "metrics": f"unreadable manifest: {type(exc).__name__}"})
            continue
        out.append({
            "name": str(data.get("name", path.parent.name)), "version": str(data.get("version", "?")),
            "created_at": str(data.get("created_at", "")), "role": str(data.get("role") or "-"),
            "metrics": key_metrics(data) or "-",
        })
    return sorted(out, key=lambda m: m["created_at"], reverse=True)


KEY_METRICS = ("rows", "base_rate", "cv_auc", "cv_slope_low")
"""What says most about a reversion model: its rows, base rate, out-of-sample AUC (its vote's weight) and the lower
bound of its out-of-sample calibration slope (how far its confidence may leave the base rate)."""


def key_metrics(manifest: Mapping[str, Any], limit: int = 4) -> str:
    """The KEY_METRICS present in `metrics` (or another top-level '*metrics' object), then its first other numeric
    values, up to `limit`: e.g. 'rows 7.6e+04, base_rate 0.399, cv_auc 0.501, cv_slope_low -0.22'."""
    source = manifest.get("metrics")
    if not isinstance(source, Mapping):
        source = next((v for k, v in manifest.items() if k.endswith("metrics") and isinstance(v, Mapping)), None)
    if source is None:
        return ""
    values = [(k, v) for k, v in source.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    values.sort(key=lambda kv: KEY_METRICS.index(kv[0]) if kv[0] in KEY_METRICS else len(KEY_METRICS))
    return ", ".join(f"{k} {v:.4g}" for k, v in values[:limit])


# ---------------------------------------------------------------------- retrain

async def retrain_models(ctx: CommandContext) -> Doc:
    hook = ctx.services.retrain
    if hook is None:
        return Doc(heading="Retraining is not available",
                   body="This server has no retraining hook configured; train with `signalbot train --data PATH`.",
                   tone="warning")
    result = await hook()
    if isinstance(result, Mapping):
        return Doc(heading="Retraining finished", fields=tuple((str(k), str(v)[:200]) for k, v in result.items()),
                   tone="success")
    return Doc(heading="Retraining finished", body=str(result)[:1000] if result is not None else "", tone="success")


# ---------------------------------------------------------------------- broadcast

async def broadcast_message(ctx: CommandContext, text: str) -> Doc:
    notices = ctx.services.notices
    if not notices.platforms:
        return Doc(heading="Broadcasting is not available", body="No chat transport is running on this server.",
                   tone="warning")
    users = await ctx.services.store.users.active_users()
    delivered = await notices.broadcast(users, text)
    return Doc(heading=f"Broadcast to {delivered} of {len(users)} active users",
               tone="success" if delivered == len(users) else "warning")


# ---------------------------------------------------------------------- users

async def find_user(ctx: CommandContext, ref: UserRef) -> User:
    store = ctx.services.store
    user: User | None = None
    if ref.user_id is not None:
        user = await store.users.get_user(ref.user_id)
    elif ref.platform is not None and ref.platform_user_id is not None:
        user = await store.users.find_user(ref.platform, ref.platform_user_id)
    if user is None:
        raise UserInputError(f"No user {ref}.")
    return user


async def grant_tier(ctx: CommandContext, ref: UserRef, tier: Tier) -> Doc:
    """Set the tier of the user's whole account (every linked identity)."""
    user = await find_user(ctx, ref)
    admins = ctx.services.store.admin
    await admins.ensure_schema()
    members = await admins.members(user.id)
    for uid in members:
        await ctx.services.store.users.set_tier(uid, tier)
    also = f" and {len(members) - 1} linked identit{'y' if len(members) == 2 else 'ies'}" if len(members) > 1 else ""
    return Doc(heading=f"User {user.id} ({user.platform}:{user.platform_user_id}){also}: {user.tier.value} -> "
                       f"{tier.value}", tone="success",
               note="Billing changes this again when the user's subscription changes.")


async def show_user(ctx: CommandContext, ref: UserRef) -> Doc:
    user = await find_user(ctx, ref)
    svc = ctx.services
    admins = svc.store.admin
    await admins.ensure_schema()
    members = await admins.members(user.id)
    identities = await svc.store.users.users_by_ids(members)
    now = svc.wall.now()
    account = await admins.account_of(user.id)
    used = await admins.requests_used(f"account:{account}", now.astimezone(timezone.utc).date())
    month_start = now.astimezone(timezone.utc).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    received = await svc.store.outbox.sent_count_since(user.id, month_start)
    ent = entitlements(user.tier)
    p = user.preferences
    return Doc(
        heading=f"User {user.id}: {user.display_name or user.platform_user_id}",
        fields=(
            ("Identity", f"{user.platform}:{user.platform_user_id} (chat {user.chat_id})"),
            ("Linked", ", ".join(f"{u.platform}:{u.platform_user_id} (user {u.id})"
                                 for uid, u in sorted(identities.items()) if uid != user.id) or "none"),
            ("Tier", user.tier.value),
            ("Active", "yes" if user.active else "no"),
            ("Since", _when(user.created_at) if user.created_at else "-"),
            ("Requests today", f"{used} of {_allowance(ent.requests_per_day)}"),
            ("Signals this month", f"{received} of {_allowance(ent.signals_per_month)}"),
            ("Preferences", f"confidence >= {p.min_confidence}, risk {p.risk.value}, "
                            f"symbols {', '.join(sorted(p.symbols)) or 'all'}"),
        ),
    )


def _allowance(limit: int | None) -> str:
    return "unlimited" if limit is None else str(limit)


def admin_commands() -> list[Command[Any]]:
    return [Command("admin", "operator commands: stats, generate, models, retrain, broadcast, grant, user",
                    ADMIN_USAGE, parse_admin_args, run_admin, admin_only=True, needs_user=False, audited=True)]
