"""Docs for what a subscriber does with signals: a feedback receipt, the paper portfolio and the watchlist."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from bot.views.doc import Button, Doc, Table
from bot.views.formatting import pct, price, when
from core.domain import Decision, Feedback, Signal, SignalOutcome
from core.portfolio import PaperPortfolio

PORTFOLIO_ROWS = 30


def feedback_doc(s: Signal, fb: Feedback, outcome: SignalOutcome | None, said: str) -> Doc:
    fields: list[tuple[str, str]] = [("Signal", s.id), ("You", f"{fb.decision.value} it, {when(fb.decided_at)}")]
    if fb.decision is Decision.TOOK and fb.fill_price is not None and fb.fill_at is not None:
        fields.append(("Your fill", f"{price(fb.fill_price)} (the last close at {when(fb.fill_at)})"))
    if fb.closed_price is not None and fb.closed_at is not None:
        fields.append(("Closed", f"{price(fb.closed_price)} at {when(fb.closed_at)}"))
    elif outcome is not None:
        fields.append(("Signal closed", f"{outcome.status.value} at {price(outcome.exit_price)}"))
    buttons: tuple[Button, ...] = (Button("Portfolio", "/portfolio"),)
    if fb.decision is Decision.TOOK and fb.closed_at is None and outcome is None:
        buttons = (Button("Closed at market", f"/feedback {s.id} closed"),) + buttons
    return Doc(heading=f"{s.direction.verb} {s.symbol} ({s.timeframe})", body=said, fields=tuple(fields),
               buttons=buttons, tone="success")


def portfolio_doc(book: PaperPortfolio, costs_bps: float) -> Doc:
    if not book.positions:
        extra = f" You skipped {book.skipped}." if book.skipped else ""
        return Doc(heading="Your paper portfolio is empty",
                   body="Tap \"I took it\" under a signal you follow, and it is tracked here from the price when it "
                        f"reached you.{extra}")
    rows = []
    ordered = sorted(book.positions, key=lambda p: (not p.open, -p.fill_at.timestamp()))
    for p in ordered[:PORTFOLIO_ROWS]:
        s = p.signal
        rows.append((s.symbol, s.timeframe.value, s.direction.verb, f"{p.size * 100:.1f}%", price(p.fill_price),
                     "-" if p.exit_price is None else price(p.exit_price), p.how,
                     "-" if p.net_return is None else pct(p.net_return), pct(p.contribution)))
    closed = book.closed_positions
    fields = (
        ("Open", f"{len(book.open_positions)} positions, {book.exposure * 100:.1f}% of equity"),
        ("Unrealised", pct(book.unrealised)),
        ("Realised", f"{pct(book.realised)} from {len(closed)} closed ({book.wins} won)"),
        ("Total", pct(book.realised + book.unrealised)),
        ("Skipped", str(book.skipped)),
    )
    more = f" The {PORTFOLIO_ROWS} most recent are shown." if len(ordered) > PORTFOLIO_ROWS else ""
    return Doc(heading="Your paper portfolio", fields=fields,
               table=Table(("symbol", "tf", "side", "size", "fill", "now/exit", "how", "return", "P&L"), tuple(rows)),
               note=f"Each position at the signal's suggested size, from the last close when the signal reached you "
                    f"to its exit (or yours), after {costs_bps:g} bps a side; P&L in % of equity.{more}",
               buttons=(Button("Active signals", "/signals"), Button("Track record", "/performance")))


def watchlist_doc(rows: Sequence[tuple[str, tuple[float, float | None] | None]],
                  open_by_symbol: Mapping[str, Sequence[Signal]], done: str = "") -> Doc:
    if not rows:
        return Doc(heading="Your watchlist is empty", body=(done + "\n\n" if done else "")
                   + "Add symbols with /watchlist add NVDA BTC-USDT: every signal on them reaches you, whatever "
                     "your symbol, class, timeframe and confidence preferences (your tier and quiet hours still apply).")
    table = []
    for sym, quote in rows:
        opens = open_by_symbol.get(sym, ())
        signal = ", ".join(f"{s.direction.verb} {s.timeframe}" for s in opens) or "-"
        if quote is None:
            table.append((sym, "-", "-", signal))
        else:
            table.append((sym, price(quote[0]), "-" if quote[1] is None else pct(quote[1]), signal))
    return Doc(heading=f"Your watchlist ({len(rows)})", body=done, table=Table(("symbol", "last", "day", "open signal"),
                                                                                tuple(table)),
               note="Every signal on these symbols reaches you (tier and quiet hours apply). "
                    "/watchlist remove SYMBOL takes one off.",
               buttons=tuple(Button(sym, f"/signal {sym}") for sym, _ in rows[:5]))
