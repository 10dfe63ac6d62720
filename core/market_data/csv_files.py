"""MarketData over CSV files (plain or gzip) in the layout of ``../shared/data``, or one CSV file.

Directory layout: ``equities/*.csv.gz`` long files (``date,symbol,open,high,low,close,volume``),
``crypto/<BASE>-USDT_<tf>.csv.gz``, ``fx/<PAIR>_<tf>_*.csv.gz``, ``benchmarks/SPX_daily_*.csv.gz`` and
``VIX_daily_*`` (AssetClass.INDEX); other sub-directories are ignored. Files directly in the directory,
or a single file given as the path, are classified by name and header: a ``symbol`` column makes a long
file, otherwise the symbol is the file name up to the first ``_``; the timeframe comes from a name token
(``1h``, ``daily``...) or, failing that, ``date`` means 1d and a ``time`` column its typical spacing.

Times: ``date`` values are stamped 00:00 UTC; ``time`` values are bar open times, naive ones taken as UTC
(the FX file is UTC: its week opens Sunday 21:00 in summer, 22:00 in winter). A file is parsed on first
use, so asking for equities never parses the crypto files. Bad rows are dropped, counted and logged
(one warning per file); duplicate timestamps keep the file's last row. Files missing a column, unreadable,
or without one valid row raise DataValidationError naming the file. Timeframes absent from the files
(FX 4h and 1d) are resampled from the largest native timeframe that divides them (`resample_bars`).
"""
from __future__ import annotations

import asyncio
import difflib
import gzip
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from typing import Literal

import pandas as pd

from core.domain import BAR_COLUMNS, AssetClass, Instrument, Timeframe
from core.errors import DataValidationError, MarketDataError, UnknownSymbolError
from core.market_data.resample import (
    BarArrays,
    bars_from_arrays,
    default_anchor,
    index_ns,
    resample_bars,
    tail_until,
    to_utc_ns,
)

logger = logging.getLogger(__name__)

_SECTIONS = {"equities": AssetClass.EQUITY, "crypto": AssetClass.CRYPTO, "fx": AssetClass.FX,
             "benchmarks": AssetClass.INDEX, "indices": AssetClass.INDEX}
_TIME_COLUMNS = ("time", "date", "datetime", "timestamp")
_PRICES = ("open", "high", "low", "close")
_DERIVABLE = (Timeframe.H1, Timeframe.H4, Timeframe.D1)
_CRYPTO_QUOTES = ("USDT", "USDC", "BUSD", "USD", "BTC", "ETH")
_CURRENCIES = frozenset("USD EUR JPY GBP CHF CAD AUD NZD SEK NOK DKK HKD SGD CNH MXN ZAR TRY PLN".split())
_INDEX_NAMES = {"SPX": "S&P 500 Index", "VIX": "CBOE Volatility Index", "NDX": "Nasdaq 100 Index",
                "DJI": "Dow Jones Industrial Average", "RUT": "Russell 2000 Index"}


def default_data_dir() -> Path:
    """The shared data directory: $SIGNALS_DATA_DIR, else ``../shared/data`` beside the repository."""
    configured = os.environ.get("SIGNALS_DATA_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


@dataclass(frozen=True, slots=True)
class _Source:
    """One CSV file: a long file (symbol is None) or one instrument's bars."""

    path: Path
    asset_class: AssetClass | None  # None: guessed per symbol
    symbol: str | None
    timeframe: Timeframe | None  # None: found when parsed


@dataclass(slots=True)
class _Parsed:
    timeframe: Timeframe
    frames: dict[str, pd.DataFrame]


class CsvMarketData:
    """MarketData over a directory of CSV files or one CSV file (see the module docstring)."""

    name = "csv"

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_data_dir()
        if not self.path.exists():
            raise MarketDataError(f"market data path not found: {self.path}")
        self._sources = _scan(self.path)
        if not self._sources:
            raise MarketDataError(f"no CSV files under {self.path}")
        self._parsed: dict[Path, Timeframe] = {}
        self._bars: dict[str, dict[Timeframe, pd.DataFrame]] = {}
        self._classes: dict[str, AssetClass] = {}
        self._cache: dict[tuple[str, Timeframe], tuple[pd.DataFrame, np.ndarray]] = {}
        self._arrays: dict[tuple[str, Timeframe], BarArrays] = {}  # built on first get_bar_arrays
        self._plans: dict[str, dict[Timeframe, Timeframe]] = {}  # per symbol; cleared when a file is parsed
        self._timeframes: dict[str, tuple[Timeframe, ...]] = {}  # likewise (the plan's keys in order)
        self._instruments: tuple[Instrument, ...] | None = None  # likewise
        self._lock = threading.RLock()
        for src in self._sources:
            if src.symbol is not None:
                self._classes.setdefault(src.symbol, src.asset_class or _guess_class(src.symbol))

    # -- the MarketData protocol -----------------------------------------------------------------

    def instruments(self) -> Sequence[Instrument]:
        self._load_long_files()
        listed = self._instruments
        if listed is None:  # the same (immutable) instruments until a file adds symbols
            listed = self._instruments = tuple(_instrument(s, self._classes[s]) for s in sorted(self._classes))
        return list(listed)

    def instrument(self, symbol: str) -> Instrument:
        sym = self._resolve(symbol)
        return _instrument(sym, self._classes[sym])

    def timeframes(self, symbol: str) -> Sequence[Timeframe]:
        return list(self._ordered_timeframes(self._resolve(symbol)))

    async def get_bars(self, symbol: str, timeframe: Timeframe, *, end: datetime,
                       limit: int | None = None) -> pd.DataFrame:
        """Bars of `symbol` whose close time is <= `end`, the last `limit` of them.

        A first request that has to parse a file does so in a worker thread, off the event loop."""
        tf, end_ns = Timeframe(timeframe), to_utc_ns(end)
        cached = self._cache.get((symbol, tf))
        frame, times = cached if cached is not None else await asyncio.to_thread(self._lookup, symbol, tf)
        return tail_until(frame, times, tf, end_ns, limit)

    # -- extras ----------------------------------------------------------------------------------

    async def get_bar_arrays(self, symbol: str, timeframe: Timeframe, *, end: datetime,
                             limit: int | None = None) -> BarArrays:
        """`get_bars` as numpy arrays (the same bars, without building a frame): what a scan reads."""
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        arrays = self._arrays.get((symbol, timeframe))
        if arrays is None:
            arrays = await asyncio.to_thread(self._arrays_of, symbol, Timeframe(timeframe))
        stop = int(arrays.times.searchsorted(_utc_ns(end) - _DURATION_NS[timeframe], side="right"))
        return arrays[(0 if limit is None else max(0, stop - limit)): stop]

    def data_range(self, tradable_only: bool = False) -> tuple[datetime, datetime]:
        """Earliest bar open and latest bar close over the loaded instruments (loads all if none is);
        `tradable_only` leaves out indices (VIX history reaches back decades before any stock here)."""
        if not self._bars:
            self.load_all()
        firsts, lasts = [], []
        for symbol, per_tf in self._bars.items():
            if tradable_only and self._classes.get(symbol) is AssetClass.INDEX:
                continue
            for tf, frame in per_tf.items():
                firsts.append(frame.index[0])
                lasts.append(frame.index[-1] + tf.duration)
        return min(firsts).to_pydatetime(), max(lasts).to_pydatetime()

    def load_all(self, asset_classes: Iterable[AssetClass] | None = None) -> None:
        """Parse every file now (of the given asset classes only, when given)."""
        wanted = set(asset_classes) if asset_classes is not None else None
        for src in self._sources:
            cls = src.asset_class or (_guess_class(src.symbol) if src.symbol else None)
            if wanted is None or cls is None or cls in wanted:
                self._parse(src)

    # -- resolution and loading ------------------------------------------------------------------

    def _resolve(self, symbol: str) -> str:
        key = symbol.strip().upper()
        found = _match(key, self._classes)
        if found is None and self._load_long_files():
            found = _match(key, self._classes)
        if found is None:
            raise UnknownSymbolError(symbol, difflib.get_close_matches(key, list(self._classes), n=3, cutoff=0.6))
        return found

    def _load_long_files(self) -> bool:
        """Parse the long (multi-symbol) files not parsed yet; True if any was."""
        pending = [s for s in self._sources if s.symbol is None and s.path not in self._parsed]
        for src in pending:
            self._parse(src)
        return bool(pending)

    def _lookup(self, symbol: str, timeframe: Timeframe) -> tuple[pd.DataFrame, np.ndarray]:
        return self._frame(self._resolve(symbol), timeframe)

    def _arrays_of(self, symbol: str, timeframe: Timeframe) -> BarArrays:
        with self._lock:
            key = (self._resolve(symbol), timeframe)
            if key not in self._arrays:
                frame, times = self._frame(*key)
                self._arrays[key] = BarArrays(times, BarArrays.of(frame).block)
            return self._arrays[key]

    def _ordered_timeframes(self, symbol: str) -> tuple[Timeframe, ...]:
        with self._lock:
            ordered = self._timeframes.get(symbol)
            if ordered is None:
                ordered = tuple(sorted(self._plan(symbol), key=lambda tf: tf.duration))
                self._timeframes[symbol] = ordered
            return ordered

    def _plan(self, symbol: str) -> dict[Timeframe, Timeframe]:
        """Available timeframes of `symbol`, each mapped to the native timeframe it is built from."""
        with self._lock:
            plan = self._plans.get(symbol)
            if plan is None:
                plan = self._make_plan(symbol)
                self._plans[symbol] = plan
            return plan

    def _make_plan(self, symbol: str) -> dict[Timeframe, Timeframe]:
        native = set(self._native_timeframes(symbol))
        plan = {tf: tf for tf in native}
        for target in _DERIVABLE:
            sources = [s for s in native if s.duration < target.duration and target.duration % s.duration == timedelta(0)]
            if target not in plan and sources:
                plan[target] = max(sources, key=lambda tf: tf.duration)
        return plan

    def _native_timeframes(self, symbol: str) -> set[Timeframe]:
        found = set(self._bars.get(symbol, {}))
        for src in self._sources:
            if src.symbol == symbol:
                found.add(src.timeframe if src.timeframe is not None else self._parse(src))
        return found

    def _frame(self, symbol: str, timeframe: Timeframe) -> tuple[pd.DataFrame, np.ndarray]:
        key = (symbol, timeframe)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = self._build(symbol, timeframe)
            return self._cache[key]

    def _build(self, symbol: str, timeframe: Timeframe) -> tuple[pd.DataFrame, np.ndarray]:
        plan = self._plan(symbol)
        if timeframe not in plan:
            have = ", ".join(tf.value for tf in sorted(plan, key=lambda t: t.duration))
            raise MarketDataError(f"{symbol}: no {timeframe.value} bars (available: {have})")
        source = plan[timeframe]
        for src in self._sources:
            if src.symbol == symbol and src.timeframe in (source, None):
                self._parse(src)
        frame = self._bars[symbol][source]
        if source is not timeframe:
            anchor = default_anchor(self._classes[symbol], timeframe)
            frame = resample_bars(frame, source, timeframe, anchor)
        return frame, index_ns(frame)

    def _parse(self, src: _Source) -> Timeframe:
        """Parse one file into the store (once); returns its timeframe."""
        with self._lock:
            if src.path in self._parsed:
                return self._parsed[src.path]
            parsed = _read_source(src)
            for sym, frame in parsed.frames.items():
                self._classes.setdefault(sym, src.asset_class or _guess_class(sym))
                per_tf = self._bars.setdefault(sym, {})
                per_tf[parsed.timeframe] = _merge(per_tf.get(parsed.timeframe), frame)
            self._cache = {k: v for k, v in self._cache.items() if k[0] not in parsed.frames}
            self._arrays = {k: v for k, v in self._arrays.items() if k[0] not in parsed.frames}
            self._plans, self._timeframes = {}, {}
            self._instruments = None
            self._parsed[src.path] = parsed.timeframe
            return parsed.timeframe


# -- scanning ------------------------------------------------------------------------------------


def _scan(path: Path) -> list[_Source]:
    if path.is_file():
        return [_classify(path, None)]
    sources = []
    for entry in sorted(path.iterdir()):
        if entry.is_dir() and entry.name.lower() in _SECTIONS:
            cls = _SECTIONS[entry.name.lower()]
            sources += [_classify(f, cls) for f in sorted(entry.iterdir()) if _is_csv(f)]
        elif _is_csv(entry):
            sources.append(_classify(entry, None))
    return sources


def _is_csv(path: Path) -> bool:
    return path.is_file() and (path.name.endswith(".csv") or path.name.endswith(".csv.gz"))


def _classify(path: Path, asset_class: AssetClass | None) -> _Source:
    tokens = _stem(path).split("_")
    timeframe = _timeframe_token(tokens[1:])
    if "symbol" in _header(path):
        return _Source(path, asset_class, None, timeframe)
    symbol = tokens[0].strip().upper()
    if not symbol:
        raise DataValidationError(f"{path.name}: cannot derive a symbol from the file name")
    return _Source(path, asset_class or _guess_class(symbol), symbol, timeframe)


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(".csv.gz")] if name.endswith(".csv.gz") else name[: -len(".csv")]


def _timeframe_token(tokens: Sequence[str]) -> Timeframe | None:
    for token in tokens:
        try:
            return Timeframe.parse(token)
        except ValueError:
            continue
    return None


def _header(path: Path) -> list[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig") as fh:
            line = fh.readline()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataValidationError(f"{path.name}: unreadable ({exc})") from exc
    return [c.strip().strip('"').lower() for c in line.split(",")]


def _guess_class(symbol: str) -> AssetClass:
    if symbol in _INDEX_NAMES or symbol.startswith("^"):
        return AssetClass.INDEX
    base, _, quote = symbol.partition("-")
    if quote in _CRYPTO_QUOTES and base:
        return AssetClass.CRYPTO
    if len(symbol) == 6 and symbol[:3] in _CURRENCIES and symbol[3:] in _CURRENCIES:
        return AssetClass.FX
    return AssetClass.EQUITY


def _instrument(symbol: str, asset_class: AssetClass) -> Instrument:
    if asset_class is AssetClass.CRYPTO:
        base, _, quote = symbol.partition("-")
        return Instrument(symbol, asset_class, base, "binance", quote or "USDT")
    if asset_class is AssetClass.FX:
        return Instrument(symbol, asset_class, f"{symbol[:3]}/{symbol[3:]}", "FX", symbol[3:])
    if asset_class is AssetClass.INDEX:
        return Instrument(symbol, asset_class, _INDEX_NAMES.get(symbol, symbol), "INDEX", "USD")
    return Instrument(symbol, asset_class, "", "US", "USD")


def _match(key: str, known: dict[str, AssetClass]) -> str | None:
    """Exact symbol, else the one equal ignoring separators (``BTC/USDT``, ``btcusdt``, ``EUR/USD``)."""
    if key in known:
        return key
    compact = "".join(ch for ch in key if ch.isalnum())
    for sym in known:
        if "".join(ch for ch in sym if ch.isalnum()) == compact:
            return sym
    return None


# -- parsing and validation ----------------------------------------------------------------------


def _read_source(src: _Source) -> _Parsed:
    raw = _read_csv(src.path)
    times = _parse_times(raw, src.path)
    symbols = _symbols(raw, src)
    values = {c: _numeric(raw, c) for c in BAR_COLUMNS}
    bad, counts = _bad_rows(times, symbols, values)
    _require_rows(src.path, len(raw), bad, counts)
    keep = ~bad
    times, symbols = times[keep], symbols[keep]
    values = {c: v[keep] for c, v in values.items()}
    order, dup = _order_and_duplicates(times, symbols)
    counts["duplicate time"] = int(dup.sum())
    _log_drops(src.path, len(raw), counts)
    order = order[~dup]
    timeframe = src.timeframe or _infer_timeframe(raw, times[order], symbols[order], src.path)
    return _Parsed(timeframe, _split(times[order], symbols[order], {c: v[order] for c, v in values.items()}))


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        raw = pd.read_csv(path, skipinitialspace=True)
    except (OSError, EOFError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
        raise DataValidationError(f"{path.name}: unreadable CSV ({exc})") from exc
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    missing = [c for c in _PRICES if c not in raw.columns]
    if not any(c in raw.columns for c in _TIME_COLUMNS):
        missing.append("time or date")
    if missing:
        raise DataValidationError(f"{path.name}: missing column(s) {', '.join(missing)}")
    return raw


def _time_column(raw: pd.DataFrame) -> str:
    return next(c for c in _TIME_COLUMNS if c in raw.columns)


def _parse_times(raw: pd.DataFrame, path: Path) -> np.ndarray:
    """Bar open times as int64 UTC ns; unparseable cells become the int64 minimum (NaT)."""
    col = raw[_time_column(raw)]
    if pd.api.types.is_numeric_dtype(col):
        unit: Literal["ms", "s"] = "ms" if col.abs().max() > 1e11 else "s"
        parsed = pd.to_datetime(col, unit=unit, utc=True, errors="coerce")
    else:
        parsed = pd.to_datetime(col.astype(str), format="ISO8601", utc=True, errors="coerce")
    return parsed.dt.as_unit("ns").to_numpy(dtype="datetime64[ns]").view(np.int64)


def _symbols(raw: pd.DataFrame, src: _Source) -> np.ndarray:
    if src.symbol is not None:
        return np.full(len(raw), src.symbol, dtype=object)
    cells = raw["symbol"].astype("string").str.strip().str.upper()
    return cells.fillna("").to_numpy(dtype=object)


def _numeric(raw: pd.DataFrame, column: str) -> np.ndarray:
    if column not in raw.columns:  # an index without volume (VIX)
        return np.zeros(len(raw))
    values = raw[column]
    if not pd.api.types.is_numeric_dtype(values):
        values = pd.to_numeric(values, errors="coerce")
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def _bad_rows(times: np.ndarray, symbols: np.ndarray, v: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, int]]:
    """Mask of rows to drop and how many failed each check (first failing check counts)."""
    nat = np.iinfo(np.int64).min
    checks = {
        "bad time or symbol": (times == nat) | (symbols == ""),
        "empty or non-numeric": ~np.isfinite(np.column_stack([v[c] for c in BAR_COLUMNS])).all(axis=1),
    }
    with np.errstate(invalid="ignore"):
        checks["non-positive price"] = (np.column_stack([v[c] for c in _PRICES]) <= 0).any(axis=1) | (v["volume"] < 0)
        checks["high/low inconsistent"] = (v["high"] < np.maximum(v["open"], v["close"])) | (
            v["low"] > np.minimum(v["open"], v["close"]))
    bad = np.zeros(len(times), dtype=bool)
    counts: dict[str, int] = {}
    for reason, mask in checks.items():
        counts[reason] = int((mask & ~bad).sum())
        bad |= mask
    return bad, counts


def _require_rows(path: Path, total: int, bad: np.ndarray, counts: dict[str, int]) -> None:
    if total == 0 or bad.all():
        detail = ", ".join(f"{k}: {n}" for k, n in counts.items() if n)
        raise DataValidationError(f"{path.name}: no valid rows out of {total} ({detail or 'empty file'})")


def _order_and_duplicates(times: np.ndarray, symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stable (symbol, time) order and, in that order, the rows superseded by a later duplicate."""
    codes, _ = pd.factorize(symbols)
    order = np.lexsort((times, codes))
    t, c = times[order], codes[order]
    dup = np.r_[(t[:-1] == t[1:]) & (c[:-1] == c[1:]), False]
    return order, dup


def _log_drops(path: Path, total: int, counts: dict[str, int]) -> None:
    dropped = sum(counts.values())
    if dropped:
        detail = ", ".join(f"{k}: {n}" for k, n in counts.items() if n)
        logger.warning("%s: dropped %d of %d rows (%s)", path.name, dropped, total, detail)


def _infer_timeframe(raw: pd.DataFrame, times: np.ndarray, symbols: np.ndarray, path: Path) -> Timeframe:
    """1d for a date column, else the most common spacing between consecutive bars of a symbol."""
    if _time_column(raw) == "date":
        return Timeframe.D1
    same = symbols[1:] == symbols[:-1]
    steps = np.diff(times)[same]
    steps = steps[steps > 0]
    if len(steps):
        values, counts = np.unique(steps, return_counts=True)
        step = timedelta(microseconds=int(values[np.argmax(counts)]) // 1000)
        for tf in Timeframe:
            if tf.duration == step:
                return tf
    raise DataValidationError(f"{path.name}: cannot tell the bar timeframe (name it like SYMBOL_1h.csv)")


def _split(times: np.ndarray, symbols: np.ndarray, values: dict[str, np.ndarray]) -> dict[str, pd.DataFrame]:
    """One conventional bar frame per symbol; inputs are sorted by (symbol, time)."""
    starts = np.flatnonzero(np.r_[True, symbols[1:] != symbols[:-1]])
    ends = np.r_[starts[1:], len(symbols)]
    return {
        str(symbols[a]): bars_from_arrays(times[a:b], {c: v[a:b] for c, v in values.items()})
        for a, b in zip(starts, ends, strict=True)
    }


_MICROSECOND = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DURATION_NS = {tf: (tf.duration // _MICROSECOND) * 1000 for tf in Timeframe}


def _utc_ns(when: datetime) -> int:
    """`to_utc_ns` without building a Timestamp for a plain tz-aware datetime (a scan asks with one)."""
    if type(when) is datetime and when.tzinfo is not None:
        return ((when - _EPOCH) // _MICROSECOND) * 1000
    return to_utc_ns(when)


def _merge(old: pd.DataFrame | None, new: pd.DataFrame) -> pd.DataFrame:
    """Bars of the same instrument and timeframe from two files; the later file wins on overlap."""
    if old is None:
        return new
    both = pd.concat([old, new])
    return both[~both.index.duplicated(keep="last")].sort_index(kind="stable")
