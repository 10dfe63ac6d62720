"""Docs for signals, their exits, on-demand analyses and the track record."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from bot.views.doc import Button, Doc, Table
from bot.views.formatting import pct, price, when
from bot.views.track import BACKTEST_NOTE, backtest_section
from core.backtest.metrics import calibration, has_probability
from core.domain import Direction, RiskTolerance, Signal, SignalOutcome, SignalStatus, SignalUpdate
from core.performance import PerformanceSummary, summarize
from core.risk import resize
from core.signals.engine import Analysis
from core.signals.ensemble import Vote
from core.signals.reasoning import DISCLAIMER, describe, shows_record
from storage.backtest_reports import PublishedBacktest


def signal_doc(s: Signal, tolerance: RiskTolerance = RiskTolerance.MEDIUM) -> Doc:
    size = resize(s.position_size, tolerance)
    return Doc(
        heading=f"{s.direction.verb} {s.symbol} ({s.timeframe}) · confidence {s.confidence}/100",
        fields=(
            ("Entry", f"{price(s.entry)} (next bar's open)"),
            ("Target", f"{price(s.target)} ({pct(s.direction.sign * (s.target / s.entry - 1))})"),
            ("Stop", f"{price(s.stop)} ({pct(s.direction.sign * (s.stop / s.entry - 1))})"),
            ("Risk-reward", f"{s.risk_reward:.2f}"),
            *book_fields(s),
            ("Position size", f"{size * 100:.1f}% of equity ({tolerance} risk)"),
            ("Expires", when(s.expires_at)),
            ("Signal", s.id),
        ),
        body=s.reasoning,
        buttons=(Button("Details", f"/signal {s.symbol} {s.timeframe}"), Button("Track record", "/performance"),
                 Button("Similar setups", f"/similar {s.id}"), *feedback_buttons(s)),
        note=DISCLAIMER,
        tone="success",
    )


def book_fields(s: Signal) -> tuple[tuple[str, str], ...]:
    """What the confidence is, and for a book's signal (core.books) its expected return and worst case after
    costs: both from the record of the rule's own trades that closed before the signal."""
    record, expected, worst = s.evidence.get("record"), s.evidence.get("expected_return"), s.evidence.get("worst_case")
    if not (isinstance(record, dict) and isinstance(expected, (int, float)) and isinstance(worst, (int, float))):
        return (("Confidence", confidence_meaning(s.evidence.get("model_probability"),
                                                  s.evidence.get("model_reliability"))),)
    return (("Confidence", f"{s.confidence}% of the last {record.get('trades')} trades of this rule won after costs "
                           f"({record.get('scope')})"),
            ("Expected return", f"{pct(expected)} a trade after costs, the mean of that record"),
            ("Worst case", f"{pct(worst)} (the worst 5 % of that record's trades lost at least this)"))


def confidence_meaning(probability: object, reliability: object = None) -> str:
    """What the confidence number is: a model's chance (shrunk to what its out-of-sample calls bore out); the
    record of past setups like it where no model has shown it can tell them apart (reliability 0: the chance is
    their share of wins); or, where neither covers the market and timeframe, the rules' agreement score."""
    if isinstance(probability, (int, float)) and shows_record(reliability):
        return f"{probability:.0%} chance of a win after costs (the record of past setups like this)"
    if isinstance(probability, (int, float)):
        return f"{probability:.0%} chance of a win after costs (model, out-of-sample calibrated)"
    return "rule agreement score, not a probability (no model for this market and timeframe)"


EXIT_WORDS = {SignalStatus.TARGET: "Target reached", SignalStatus.STOP: "Stopped out", SignalStatus.EXPIRED: "Expired",
              SignalStatus.EXIT: "Closed by its rule"}


def exit_doc(s: Signal, o: SignalOutcome, reason: str | None = None) -> Doc:
    """An exit, posted as a reply to the signal. `reason`: why its book closed it (a rule's exit)."""
    why: tuple[tuple[str, str], ...] = (("Why", reason),) if reason else ()
    return Doc(
        heading=f"{EXIT_WORDS[o.status]}: {s.direction.verb} {s.symbol} ({s.timeframe}) {pct(o.net_return)}",
        fields=why + (
            ("Filled", f"{price(o.fill_price)} at {when(o.fill_time)}"),
            ("Exit", f"{price(o.exit_price)} at {when(o.exit_time)}"),
            ("Net return", f"{pct(o.net_return)} after costs"),
            ("Best / worst", f"{pct(o.mfe)} / {pct(o.mae)}"),
            ("Held", f"{o.bars_held} bars"),
            ("Signal", s.id),
        ),
        tone="success" if o.net_return > 0 else "warning",
    )


def update_doc(s: Signal, u: SignalUpdate) -> Doc:
    """What turned against an open signal (core.thesis), posted as a reply to it: the levels stand (the service
    changes no signal once issued); the subscriber decides, and one tap records a close at market."""
    return Doc(
        heading=f"Thesis changed: {s.direction.verb} {s.symbol} ({s.timeframe})",
        fields=tuple(("What changed", c) for c in u.changes) + (
            ("Seen", when(u.at)),
            ("Levels", f"entry {price(s.entry)}, target {price(s.target)}, stop {price(s.stop)} (unchanged)"),
            ("Signal", s.id),
        ),
        note="The signal stays tracked to its target, stop or expiry in the record. "
             "If you hold it, this is the moment to decide.",
        buttons=(Button("Closed at market", f"/feedback {s.id} closed"),),
        tone="warning",
    )


def analysis_doc(a: Analysis, active: Signal | None, risk_check: str | None = None) -> Doc:
    """/signal's answer. `risk_check`: the risk manager's verdict on the idea itself ("" passes, else why it
    fails: then the service issues no signal for it); None when there is no idea to check."""
    snap = a.snapshot
    verdict = a.verdict
    if verdict is not None:
        heading = f"{a.instrument.symbol} {a.timeframe}: {verdict.verb} setup · confidence {a.ensemble.confidence}/100"
    else:
        heading = f"{a.instrument.symbol} {a.timeframe}: no trade ({'leaning ' + a.leaning.verb.lower() if a.setup.score >= 0.3 else 'neutral'})"
    fields = [
        ("Last close", f"{price(snap['close'])} (bar closed {when(a.as_of)})"),
        ("RSI(14)", _num(snap["rsi_14"], 1)),
        ("Z-score (20)", _num(snap["zscore_20"], 2)),
        ("Bollinger %B", _num(snap["bb_pctb"], 2)),
        ("vs SMA20", f"{_num(snap['dist_sma20_atr'], 2)} ATR"),
        ("ATR(14)", f"{price(snap['atr_14'])} ({pct(snap['atr_14'] / snap['close'], signed=False)})"),
        ("MACD hist", _num(snap["macd_hist"], 4)),
        ("ADX(14)", _num(snap["adx_14"], 1)),
        ("Trend", a.trend.text),
        ("Setup score", f"{a.setup.score:.2f} (1.00: every criterion fully met)"),
        ("Ensemble vote", f"{a.ensemble.score:+.2f} (-1 sell .. +1 buy)"),
        ("Votes", vote_breakdown(a.ensemble.votes)),
    ]
    if a.levels is not None:
        lv = a.levels
        label = "Levels" if verdict is not None else f"Levels if {a.leaning.verb.lower()}"
        fields.append((label, f"entry {price(lv.entry)}, target {price(lv.target)}, stop {price(lv.stop)}, R:R {lv.risk_reward:.2f}"))
    if risk_check is not None:
        fields.append(("Risk check", f"fails, so no signal is issued: {risk_check}" if risk_check else
                       "passes (R:R, costs, and the expected value or, without a probability, the minimum score)"))
    if active is not None:
        fields.append(("Active signal", f"{active.id}: {active.direction.verb} {price(active.entry)} -> {price(active.target)}, stop {price(active.stop)}"))
    criteria = Table(("criterion", "value", "met"), tuple(
        (e.label, describe(e), f"{e.strength * 100:.0f}%") for e in a.setup.evidence))
    buttons = () if active is None else feedback_buttons(active)
    return Doc(heading=heading, fields=tuple(fields), table=criteria, note=DISCLAIMER, buttons=buttons)


def feedback_buttons(s: Signal) -> tuple[Button, ...]:
    """Under a signal: what the subscriber did with it (bot.commands.follow)."""
    return (Button("I took it", f"/feedback {s.id} took"), Button("I skipped it", f"/feedback {s.id} skipped"))


def vote_breakdown(votes: Sequence[Vote]) -> str:
    """Each voter's say and weight, so a vote that leans against the setup's side shows where it comes from
    (e.g. "mean reversion +0.00 x0.70, trend +1.00 x0.30")."""
    return ", ".join(f"{v.voter.replace('_', ' ')} {v.score:+.2f} x{v.weight:.2f}" for v in votes) or "none"


def signals_list_doc(signals: Sequence[Signal], last: Mapping[str, float] | None = None,
                     updates: Mapping[str, SignalUpdate] | None = None) -> Doc:
    """The active signals; with `last` (signal id -> the latest close), the price now and the open P&L from the
    entry level (direction-adjusted, before costs); with `updates`, what turned against those whose thesis
    changed (core.thesis)."""
    if not signals:
        return Doc(heading="No active signals", body="Nothing is open right now. /signal SYMBOL analyses any instrument on demand.")
    last = last or {}

    def now_and_pnl(s: Signal) -> tuple[str, ...]:
        if not last:
            return ()
        close = last.get(s.id)
        if close is None or s.entry <= 0:
            return ("-", "-")
        move = (close - s.entry) / s.entry * (1 if s.direction is Direction.LONG else -1)
        return (price(close), pct(move))

    rows = tuple((s.symbol, s.timeframe.value, s.direction.verb, price(s.entry), *now_and_pnl(s), price(s.target),
                  price(s.stop), str(s.confidence), when(s.expires_at))
                 for s in sorted(signals, key=lambda s: s.issued_at, reverse=True))
    headers = ("symbol", "tf", "side", "entry", *(("now", "P&L") if last else ()), "target", "stop", "conf", "expires")
    changed = [f"{s.symbol} {s.timeframe} {s.direction.verb}: thesis changed {when(u.at)}: {u.text}"
               for s in signals if (u := (updates or {}).get(s.id)) is not None]
    return Doc(heading=f"{len(signals)} active signal{'s' if len(signals) != 1 else ''}", table=Table(headers, rows),
               body="\n".join(changed),
               note="P&L: from the entry level to the latest close, before costs." if last else "")


def calibration_line(pairs: Sequence[tuple[Signal, SignalOutcome]]) -> str:
    """The closed signals whose confidence was a probability, by confidence band: how many, the mean confidence
    and how often they won, so anyone can check that "40 %" means 40 % (rule scores are counted apart)."""
    probable = [(s, o) for s, o in pairs if has_probability(s)]
    scores = len(pairs) - len(probable)
    bands = []
    for b in calibration(probable):
        if b.count and b.hit_rate is not None and b.mean_confidence is not None:
            bands.append(f"{b.low}-{b.high}: {b.count} (said {b.mean_confidence:.0f}%, won {b.hit_rate * 100:.0f}%)")
    text = "; ".join(bands) or "no closed signal had a model probability"
    return text + (f"; {scores} with a rule score, not a probability" if scores else "")


def setup_line(pairs: Sequence[tuple[Signal, SignalOutcome]]) -> str:
    """The closed signals of each setup family (strategy): how many, how often they won, their profit factor."""
    parts = []
    for name in sorted({s.strategy for s, _ in pairs}):
        st = summarize([o for s, o in pairs if s.strategy == name])
        if st is None:
            continue
        pf = "n/a" if st.profit_factor is None else f"{st.profit_factor:.2f}"
        parts.append(f"{name.replace('_', ' ')} {st.count} (hit {st.hit_rate * 100:.0f}%, PF {pf})")
    return "; ".join(parts)


def performance_doc(label: str, summary: PerformanceSummary | None,
                    backtests: Sequence[PublishedBacktest] = (),
                    pairs: Sequence[tuple[Signal, SignalOutcome]] = ()) -> Doc:
    """Live signals closed in the period (with their calibration when `pairs` are given); after them, apart and
    labelled, the latest published backtests."""
    bt_fields, bt_table = backtest_section(backtests)
    if summary is None:
        return Doc(heading=f"Track record, {label}", body="No signal has closed in this period yet.",
                   fields=bt_fields, table=bt_table, note=BACKTEST_NOTE)
    pf = "n/a (no losing signal)" if summary.profit_factor is None else f"{summary.profit_factor:.2f}"
    return Doc(
        heading=f"Track record, {label}",
        fields=(
            ("Closed signals", str(summary.count)),
            ("Hit rate", f"{summary.hit_rate * 100:.1f}% ({summary.wins} of {summary.count} with net return > 0)"),
            ("At target", f"{summary.target_rate * 100:.1f}%"),
            ("Average return", pct(summary.avg_return)),
            ("Median return", pct(summary.median_return)),
            ("Profit factor", pf),
            ("Best / worst", f"{pct(summary.best)} / {pct(summary.worst)}"),
            ("Average holding", f"{summary.avg_bars_held:.1f} bars"),
            *((("By setup", setup_line(pairs)), ("Calibration", calibration_line(pairs))) if pairs else ()),
            *bt_fields,
        ),
        table=bt_table,
        note="Live: every closed signal counts, after costs; nothing is removed. " + BACKTEST_NOTE,
    )


def history_doc(items: Sequence[tuple[Signal, SignalOutcome]]) -> Doc:
    if not items:
        return Doc(heading="History", body="No signal has closed yet.")
    rows = tuple((s.symbol, s.timeframe.value, s.direction.verb, o.status.value, pct(o.net_return),
                  when(o.exit_time)) for s, o in items)
    return Doc(heading=f"Last {len(items)} closed signals",
               table=Table(("symbol", "tf", "side", "exit", "net", "closed"), rows))


def _num(x: float, digits: int) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.{digits}f}"
