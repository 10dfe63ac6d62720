"""What the structured channels carry: the webhook's JSON document and the email's text and HTML parts."""
from __future__ import annotations

import json
from datetime import datetime
from html import escape
from typing import Any

from bot.delivery.channel import Outgoing
from bot.views.telegram_html import render_html
from bot.views.text import render_text
from core.domain import DeliveryKind, Signal, SignalOutcome, SignalUpdate
from core.risk import resize

WEBHOOK_VERSION = 1
EVENTS = {DeliveryKind.SIGNAL: "signal.issued", DeliveryKind.EXIT: "signal.exit", DeliveryKind.UPDATE: "signal.update"}
SEED_EVENTS = {DeliveryKind.SIGNAL: "new_signal", DeliveryKind.EXIT: "signal_closed",
               DeliveryKind.UPDATE: "signal_update"}


def webhook_payload(message: Outgoing, sent_at: datetime) -> dict[str, Any]:
    """The webhook's JSON document (times ISO 8601 UTC; returns and sizes as fractions)."""
    body: dict[str, Any] = {
        "version": WEBHOOK_VERSION,
        "event": EVENTS[message.kind],
        "delivery_id": str(message.delivery_id),
        "sent_at": sent_at.isoformat(),
        "signal": signal_fields(message.signal, message),
    }
    if message.outcome is not None:
        body["exit"] = outcome_fields(message.outcome)
    if message.update is not None:
        body["update"] = update_fields(message.update)
    return body


def signal_fields(s: Signal, message: Outgoing) -> dict[str, Any]:
    return {
        "id": s.id,
        "symbol": s.symbol,
        "asset_class": s.asset_class.value,
        "timeframe": s.timeframe.value,
        "direction": s.direction.value,
        "entry": s.entry,
        "target": s.target,
        "stop": s.stop,
        "confidence": s.confidence,
        "risk_reward": round(s.risk_reward, 4),
        "position_size": resize(s.position_size, message.risk),  # fraction of equity for the user's risk setting
        "risk_tolerance": message.risk.value,
        "expires_at": s.expires_at.isoformat(),
        "reasoning": s.reasoning,
        "issued_at": s.issued_at.isoformat(),
    }


def outcome_fields(o: SignalOutcome) -> dict[str, Any]:
    return {
        "status": o.status.value,
        "fill_price": o.fill_price,
        "fill_time": o.fill_time.isoformat(),
        "exit_price": o.exit_price,
        "exit_time": o.exit_time.isoformat(),
        "gross_return": o.gross_return,
        "net_return": o.net_return,
        "mfe": o.mfe,
        "mae": o.mae,
        "bars_held": o.bars_held,
    }


def update_fields(u: SignalUpdate) -> dict[str, Any]:
    return {"at": u.at.isoformat(), "changes": list(u.changes)}


WEBHOOK_FORMATS = ("v1", "seed")


def seed_payload(message: Outgoing, sent_at: datetime) -> dict[str, Any]:
    """The seed's webhook document (`/webhook URL seed`): flat, with its names (`new_signal`, `entry_price`, ...);
    the same facts as version 1. Prices in the quote currency, returns and sizes as fractions, times ISO 8601 UTC."""
    s, o = message.signal, message.outcome
    body: dict[str, Any] = {
        "format": "seed-1",
        "event": SEED_EVENTS[message.kind],
        "delivery_id": str(message.delivery_id),
        "timestamp": sent_at.isoformat(),
        "signal_id": s.id,
        "symbol": s.symbol,
        "asset_class": s.asset_class.value,
        "timeframe": s.timeframe.value,
        "action": "BUY" if s.direction.sign > 0 else "SELL",
        "entry_price": s.entry,
        "target_price": s.target,
        "stop_loss": s.stop,
        "risk_reward": round(s.risk_reward, 4),
        "confidence": s.confidence,
        "position_size": resize(s.position_size, message.risk),
        "expires_at": s.expires_at.isoformat(),
        "reasoning": s.reasoning,
    }
    if o is not None:
        body.update({"status": o.status.value, "fill_price": o.fill_price, "exit_price": o.exit_price,
                     "exit_time": o.exit_time.isoformat(), "pnl": o.net_return})
    if message.update is not None:
        body.update({"update_time": message.update.at.isoformat(), "changes": list(message.update.changes)})
    return body


def webhook_body(message: Outgoing, sent_at: datetime, format: str | None = None) -> bytes:
    """The exact bytes that are signed and sent, in the address' format (None: "v1")."""
    payload = seed_payload(message, sent_at) if format == "seed" else webhook_payload(message, sent_at)
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def email_parts(message: Outgoing) -> tuple[str, str, str]:
    """(subject, plain text, HTML) of a signal or exit email."""
    doc = message.doc
    text = render_text(doc)
    inner = "\n".join(render_html(doc, limit=1_000_000))
    html = ('<!doctype html><html><head><meta charset="utf-8"><title>' + escape(doc.heading) + "</title></head>"
            '<body><div style="font-family:sans-serif;white-space:pre-wrap">' + inner + "</div></body></html>")
    return doc.heading, text, html
