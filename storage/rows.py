"""Rows <-> core's frozen dataclasses, and the statements several stores share.

Every statement is portable between SQLite and PostgreSQL. Bulk inserts (bars, deliveries) are compiled once
for the dialect and run as an executemany of plain tuples (`BulkInsert`).
"""
from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Dialect, Row

from core.domain import (
    BAR_COLUMNS,
    AssetClass,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Direction,
    Instrument,
    Preferences,
    QuietHours,
    RiskTolerance,
    Signal,
    SignalOutcome,
    SignalStatus,
    Tier,
    Timeframe,
    User,
)
from core.errors import DataValidationError
from storage.database import Insert
from storage.tables import OUTCOMES, PREFERENCES, SIGNALS, USERS

BULK_CHUNK_ROWS = 10_000


# ---------------------------------------------------------------------- queries

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
N_SIGNAL_COLS = len(SIGNALS.c)


def closed_signals() -> sa.Select[Any]:
    return sa.select(SIGNALS, OUTCOMES).join(OUTCOMES, OUTCOMES.c.signal_id == SIGNALS.c.id)


def users_query() -> sa.Select[Any]:
    return sa.select(*_USER_COLUMNS).select_from(
        USERS.outerjoin(PREFERENCES, PREFERENCES.c.user_id == USERS.c.id)
    )


def require_aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: storage needs tz-aware datetimes")
    return value


# ---------------------------------------------------------------------- bulk inserts

@dataclass(frozen=True, slots=True)
class BulkInsert:
    """An INSERT compiled once for one dialect and run as a DB-API executemany of plain tuples.

    For thousands of rows SQLAlchemy's per-row parameter handling costs about three times the
    insert itself; here each column's bind processor (the dialect's own) runs in one pass.
    """

    sql: str
    keys: tuple[str, ...]  # the statement's positional parameters, in order
    processors: tuple[Callable[[Any], Any] | None, ...]

    @classmethod
    def compile(cls, stmt: Insert, dialect: Dialect, keys: Sequence[str]) -> BulkInsert:
        compiled = stmt.compile(dialect=dialect, column_keys=list(keys), for_executemany=True)
        order = tuple(compiled.positiontup or ())
        if sorted(order) != sorted(keys):
            raise NotImplementedError(f"bulk insert needs a positional paramstyle; got parameters {order!r}")
        table = stmt.table
        assert isinstance(table, sa.Table)
        processors = tuple(table.c[k].type.dialect_impl(dialect).bind_processor(dialect) for k in order)
        return cls(compiled.string, order, processors)

    def rows(self, columns: Mapping[str, Iterable[Any]], constants: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Parameter tuples from per-row `columns` and per-batch `constants` (processed once)."""
        streams: list[Iterable[Any]] = []
        for key, process in zip(self.keys, self.processors, strict=True):
            if key in constants:
                value = constants[key]
                streams.append(itertools.repeat(process(value) if process else value))
            else:
                streams.append(columns[key] if process is None else [process(v) for v in columns[key]])
        return list(zip(*streams, strict=False))  # the constants' repeat() streams are endless


# ---------------------------------------------------------------------- JSON

def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if isinstance(value, datetime):
        return value.isoformat()
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        return tolist()
    raise TypeError(f"cannot store {type(value).__name__} as JSON")


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default, separators=(",", ":"))


def _str_set(values: Iterable[str]) -> str:
    return _dumps(sorted(str(v) for v in values))


def _load_set(text: str | None) -> list[str]:
    return [] if not text or text == "[]" else list(json.loads(text))


# ---------------------------------------------------------------------- converters

def instrument_row(i: Instrument) -> dict[str, Any]:
    return {
        "symbol": i.symbol,
        "asset_class": AssetClass(i.asset_class).value,
        "name": i.name,
        "exchange": i.exchange,
        "quote_currency": i.quote_currency,
        "sector": i.sector,
    }


def to_instrument(m: Mapping[Any, Any]) -> Instrument:
    return Instrument(
        symbol=m["symbol"],
        asset_class=AssetClass(m["asset_class"]),
        name=m["name"],
        exchange=m["exchange"],
        quote_currency=m["quote_currency"],
        sector=m["sector"],
    )


def bar_columns(symbol: str, tf: Timeframe, df: pd.DataFrame) -> dict[str, Iterable[Any]] | None:
    """The bars table's columns for `df` (None when it is empty); refuses frames that break BAR_COLUMNS."""
    if df.empty:
        return None
    missing = [c for c in BAR_COLUMNS if c not in df.columns]
    if missing:
        raise DataValidationError(f"bars of {symbol} {tf}: missing columns {missing}")
    index = pd.DatetimeIndex(df.index)
    if index.tz is None:
        raise DataValidationError(f"bars of {symbol} {tf}: index must be tz-aware UTC")
    nanoseconds = index.as_unit("ns").asi8  # since the Unix epoch, UTC, whatever the index's zone
    if (nanoseconds % 1_000_000_000).any():
        raise DataValidationError(f"bars of {symbol} {tf}: open times must be whole seconds")
    values = df[list(BAR_COLUMNS)].to_numpy(dtype=float)
    if np.isnan(values).any():
        raise DataValidationError(f"bars of {symbol} {tf}: NaN in OHLCV")
    columns: dict[str, Iterable[Any]] = {c: values[:, i].tolist() for i, c in enumerate(BAR_COLUMNS)}
    columns["time"] = (nanoseconds // 1_000_000_000).tolist()
    return columns


def bars_frame(rows: Sequence[Row[Any]]) -> pd.DataFrame:
    values = np.array([tuple(r) for r in rows], dtype=float).reshape(len(rows), 1 + len(BAR_COLUMNS))
    seconds = values[:, 0].astype(np.int64).astype("datetime64[s]").astype("datetime64[us]")
    index = pd.DatetimeIndex(seconds, tz="UTC", name="time")
    return pd.DataFrame(values[:, 1:], index=index, columns=list(BAR_COLUMNS))


def epoch_seconds(value: datetime) -> int:
    return int((value - EPOCH).total_seconds() // 1)


def signal_row(s: Signal) -> dict[str, Any]:
    return {
        "id": s.id,
        "symbol": s.symbol,
        "asset_class": AssetClass(s.asset_class).value,
        "timeframe": Timeframe(s.timeframe).value,
        "direction": Direction(s.direction).value,
        "entry": float(s.entry),
        "target": float(s.target),
        "stop": float(s.stop),
        "confidence": int(s.confidence),
        "position_size": float(s.position_size),
        "issued_at": s.issued_at,
        "expires_at": s.expires_at,
        "reasoning": s.reasoning,
        "strategy": s.strategy,
        "evidence": _dumps(s.evidence),
        "status": SignalStatus.OPEN.value,
    }


def to_signal(m: Mapping[Any, Any]) -> Signal:
    return Signal(
        id=m["id"],
        symbol=m["symbol"],
        asset_class=AssetClass(m["asset_class"]),
        timeframe=Timeframe(m["timeframe"]),
        direction=Direction(m["direction"]),
        entry=m["entry"],
        target=m["target"],
        stop=m["stop"],
        confidence=m["confidence"],
        position_size=m["position_size"],
        issued_at=m["issued_at"],
        expires_at=m["expires_at"],
        reasoning=m["reasoning"],
        strategy=m["strategy"],
        evidence=json.loads(m["evidence"]) if m["evidence"] else {},
    )


def outcome_row(o: SignalOutcome) -> dict[str, Any]:
    return {
        "signal_id": o.signal_id,
        "status": SignalStatus(o.status).value,
        "fill_price": float(o.fill_price),
        "fill_time": o.fill_time,
        "exit_price": float(o.exit_price),
        "exit_time": o.exit_time,
        "gross_return": float(o.gross_return),
        "net_return": float(o.net_return),
        "mfe": float(o.mfe),
        "mae": float(o.mae),
        "bars_held": int(o.bars_held),
    }


def to_outcome(m: Mapping[Any, Any]) -> SignalOutcome:
    return SignalOutcome(
        signal_id=m["signal_id"],
        status=SignalStatus(m["status"]),
        fill_price=m["fill_price"],
        fill_time=m["fill_time"],
        exit_price=m["exit_price"],
        exit_time=m["exit_time"],
        gross_return=m["gross_return"],
        net_return=m["net_return"],
        mfe=m["mfe"],
        mae=m["mae"],
        bars_held=m["bars_held"],
    )


def split_row(row: Row[Any], first: sa.Table, n_first: int, second: sa.Table) -> tuple[dict[str, Any], dict[str, Any]]:
    """A joined row as two name->value dicts (the tables share column names such as `status`)."""
    values = tuple(row)
    left = dict(zip(first.c.keys(), values[:n_first], strict=True))
    right = dict(zip(second.c.keys(), values[n_first:], strict=True))
    return left, right


def signal_and_outcome(row: Row[Any]) -> tuple[Signal, SignalOutcome]:
    signal, outcome = split_row(row, SIGNALS, N_SIGNAL_COLS, OUTCOMES)
    return to_signal(signal), to_outcome(outcome)


def preferences_row(user_id: int, p: Preferences) -> dict[str, Any]:
    quiet = p.quiet_hours
    return {
        "user_id": user_id,
        "symbols": _str_set(p.symbols),
        "asset_classes": _str_set(AssetClass(a).value for a in p.asset_classes),
        "timeframes": _str_set(Timeframe(t).value for t in p.timeframes),
        "min_confidence": int(p.min_confidence),
        "risk": RiskTolerance(p.risk).value,
        "quiet_start": quiet.start if quiet else None,
        "quiet_end": quiet.end if quiet else None,
        "quiet_tz": quiet.timezone if quiet else None,
    }


_USER_COLUMNS = (
    USERS.c.id, USERS.c.platform, USERS.c.platform_user_id, USERS.c.chat_id, USERS.c.display_name,
    USERS.c.tier, USERS.c.active, USERS.c.created_at,
    PREFERENCES.c.user_id, PREFERENCES.c.symbols, PREFERENCES.c.asset_classes, PREFERENCES.c.timeframes,
    PREFERENCES.c.min_confidence, PREFERENCES.c.risk, PREFERENCES.c.quiet_start, PREFERENCES.c.quiet_end,
    PREFERENCES.c.quiet_tz,
)  # to_user() unpacks rows in this order
TIERS = {t.value: t for t in Tier}
_DEFAULT_PREFERENCES = Preferences()


@functools.lru_cache(maxsize=4096)
def _preferences(
    symbols: str, asset_classes: str, timeframes: str, min_confidence: int, risk: str,
    quiet_start: str | None, quiet_end: str | None, quiet_tz: str | None,
) -> Preferences:
    """Preferences from their stored columns. Cached: most users share a few combinations."""
    quiet = None
    if quiet_start is not None and quiet_end is not None:
        quiet = QuietHours(start=quiet_start, end=quiet_end, timezone=quiet_tz or "UTC")
    return Preferences(
        symbols=frozenset(_load_set(symbols)),
        asset_classes=frozenset(AssetClass(a) for a in _load_set(asset_classes)),
        timeframes=frozenset(Timeframe(t) for t in _load_set(timeframes)),
        min_confidence=min_confidence,
        risk=RiskTolerance(risk),
        quiet_hours=quiet,
    )


def to_user(row: Sequence[Any]) -> User:
    uid, platform, platform_user_id, chat_id, display_name, tier, active, created_at, pref_uid, *prefs = row
    return User(
        id=uid,
        platform=platform,
        platform_user_id=platform_user_id,
        chat_id=chat_id,
        display_name=display_name,
        tier=TIERS[tier],
        active=bool(active),
        created_at=created_at,
        preferences=_DEFAULT_PREFERENCES if pref_uid is None else _preferences(*prefs),
    )


DELIVERY_INPUT_KEYS = ("signal_id", "user_id", "kind", "channel", "not_before", "reply_to")


def delivery_columns(
    deliveries: Sequence[tuple[str, int, DeliveryKind, str, datetime | None, str | None]],
) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """enqueue()'s input as (columns, constants): a column whose value is the same in every row (in a fan-out:
    signal, kind, channel, usually not_before and reply_to) becomes a constant, converted once, not per row."""
    columns: dict[str, list[Any]] = {k: list(v) for k, v in zip(DELIVERY_INPUT_KEYS, zip(*deliveries), strict=True)}
    constants: dict[str, Any] = {}
    for key in _UNIFORM_CANDIDATES:
        values = columns[key]
        first = values[0]
        if all(v == first for v in values):
            constants[key] = first
            del columns[key]
    if "kind" in constants:
        constants["kind"] = DeliveryKind(constants["kind"]).value
    else:
        columns["kind"] = [DeliveryKind(k).value for k in columns["kind"]]
    return columns, constants


_UNIFORM_CANDIDATES = ("signal_id", "kind", "channel", "not_before", "reply_to")


def to_delivery(m: Mapping[Any, Any]) -> Delivery:
    return Delivery(
        id=m["id"],
        signal_id=m["signal_id"],
        user_id=m["user_id"],
        kind=DeliveryKind(m["kind"]),
        channel=m["channel"],
        status=DeliveryStatus(m["status"]),
        attempts=m["attempts"],
        not_before=m["not_before"],
        message_ref=m["message_ref"],
        reply_to=m["reply_to"],
        error=m["error"],
        created_at=m["created_at"],
        sent_at=m["sent_at"],
    )
