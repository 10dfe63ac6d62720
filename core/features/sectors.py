"""Sector relative strength by day: how the symbol's sector did against its benchmark, and how the symbol did
against its sector.

Groups (the "sector" of a symbol, `sector_group`):
- an equity: its sector (`Instrument.sector`, else the built-in registry's; GICS sectors of the S&P 500), against
  SPX. Equities of unknown sector form one group of their own ("equity:?").
- a crypto pair: the whole crypto universe is its sector, against BTC (the pair whose base is BTC): the sector's
  strength is then "altcoins against bitcoin".
- an FX pair (and anything else): its asset class is its sector; there is no benchmark, so the sector's
  strength is NaN (the symbol's strength against its group is still computed).

A sector's index is the equal-weight index of its members' daily closes (the mean of the members' daily returns,
each day over the members that have a return that day; the symbol itself is a member). Every return is read
over a finite window of daily closes (`_window_return`), so a row depends only on the last 61 closes, not on where
the history starts.

Like `MarketContext`, each day's row is usable from that day's close on (the daily bar of day D closes at D+1
00:00 UTC); `at_ns(symbols, t)` returns, per symbol, the last row closed at or before t (NaN before the first row,
for an unknown symbol, and where the row is older than MAX_AGE_NS). Intraday rows (crypto 1h, 4h) read the last
completed day.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from core.domain import AssetClass
from core.features.regime import DAY_NS, MAX_AGE_NS

SECTOR_FEATURES: tuple[str, ...] = (
    "sector_rs_20",  # the sector's 20-day return minus its benchmark's (SPX, BTC; NaN without one)
    "sector_rs_60",  # the same over 60 days
    "rs_vs_sector_20",  # the symbol's 20-day return minus its sector's
)
SHORT, LONG = 20, 60
UNKNOWN_SECTOR = "?"


@lru_cache(maxsize=4096)
def _registry_sector(symbol: str) -> str:
    from core.instruments import default_registry

    rec = default_registry().find(symbol)
    return rec.sector if rec is not None and rec.asset_class is AssetClass.EQUITY else ""


def sector_group(symbol: str, asset_class: AssetClass, sector: str = "") -> str:
    """The group whose equal-weight index is the symbol's "sector" (see the module docstring)."""
    if asset_class is AssetClass.EQUITY:
        return f"equity:{sector or _registry_sector(symbol) or UNKNOWN_SECTOR}"
    return str(asset_class.value)


def benchmark_symbol(group: str, symbols: Sequence[str]) -> str | None:
    """The benchmark of a group among the symbols available: SPX for equity sectors, the BTC pair for crypto."""
    if group.startswith("equity:"):
        return "SPX" if "SPX" in symbols else None
    if group == AssetClass.CRYPTO.value:
        return next((s for s in symbols if s.upper().startswith("BTC") and s.upper()[3:4] in ("-", "/", "U")), None)
    return None


def _window_return(close: np.ndarray, n: int) -> np.ndarray:
    """close[t] / close[t - n] - 1 (NaN where either is missing, and for the first n rows)."""
    out = np.full(close.shape, np.nan)
    if len(close) > n:
        with np.errstate(divide="ignore", invalid="ignore"):
            out[n:] = close[n:] / close[:-n] - 1.0
    return out


def _compound(daily: np.ndarray, n: int) -> np.ndarray:
    """prod(1 + daily[t - n + 1 .. t]) - 1: the n-day return of an index from its daily returns (NaN when a day of
    the window has none)."""
    out = np.full(daily.shape, np.nan)
    if len(daily) >= n:
        out[n - 1:] = np.prod(1.0 + sliding_window_view(daily, n), axis=-1) - 1.0
    return out


@dataclass(frozen=True, slots=True)
class _Group:
    close_ns: np.ndarray  # int64, close time of each day's row (its open + one day), ascending
    sector: np.ndarray  # (days, 2): the sector's 20- and 60-day returns minus its benchmark's
    relative: dict[str, np.ndarray]  # symbol -> (days,): its 20-day return minus the sector's


@dataclass(frozen=True, slots=True)
class SectorContext:
    groups: dict[str, _Group] = field(default_factory=dict)
    group_of: dict[str, str] = field(default_factory=dict)  # symbol -> group

    @classmethod
    def empty(cls) -> SectorContext:
        return cls()

    @classmethod
    def build(cls, closes: Mapping[str, pd.Series], groups: Mapping[str, str],
              benchmarks: Mapping[str, pd.Series] | None = None) -> SectorContext:
        """From the daily closes of every symbol (UTC day index), each symbol's group (`sector_group`) and the
        daily closes of each group's benchmark (groups without one get NaN sector strength)."""
        members: dict[str, dict[str, pd.Series]] = {}
        for sym, close in closes.items():
            if sym in groups and close is not None and len(close):
                members.setdefault(groups[sym], {})[sym] = close.astype(float)
        out: dict[str, _Group] = {}
        for group, series in members.items():
            panel = pd.DataFrame(series).sort_index()
            panel = panel[~panel.index.duplicated(keep="last")]
            values = panel.to_numpy(dtype=np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                daily = np.full(values.shape, np.nan)
                daily[1:] = values[1:] / values[:-1] - 1.0
            counted = np.isfinite(daily).sum(axis=1)
            with np.errstate(invalid="ignore"):
                mean = np.where(counted > 0, np.nansum(daily, axis=1) / np.maximum(counted, 1), np.nan)
            sector_ret = {n: _compound(mean, n) for n in (SHORT, LONG)}
            bench = (benchmarks or {}).get(group)
            if bench is not None and len(bench):
                unique = bench.astype(float)[~bench.index.duplicated(keep="last")]
                b = unique.reindex(panel.index).to_numpy(dtype=np.float64)
                sector = np.column_stack([sector_ret[n] - _window_return(b, n) for n in (SHORT, LONG)])
            else:
                sector = np.full((len(panel), 2), np.nan)
            relative = {sym: _window_return(values[:, j], SHORT) - sector_ret[SHORT]
                        for j, sym in enumerate(panel.columns)}
            days = pd.DatetimeIndex(panel.index)
            days = days.tz_localize("UTC") if days.tz is None else days.tz_convert("UTC")
            out[group] = _Group(days.as_unit("ns").asi8 + DAY_NS, sector, relative)
        return cls(out, {sym: g for sym, g in groups.items() if g in out})

    def at_ns(self, symbols: Sequence[str] | np.ndarray, times_ns: np.ndarray) -> np.ndarray:
        """(len(times), len(SECTOR_FEATURES)): for each (symbol, time), its row closed at or before the time."""
        times_ns = np.asarray(times_ns, dtype=np.int64)
        symbols = np.asarray(symbols, dtype=object)
        out = np.full((len(times_ns), len(SECTOR_FEATURES)), np.nan)
        if not self.groups or len(times_ns) == 0:
            return out
        for sym in set(symbols.tolist()):
            group = self.groups.get(self.group_of.get(sym, ""))
            if group is None or len(group.close_ns) == 0:
                continue
            rows = np.flatnonzero(symbols == sym)
            t = times_ns[rows]
            pos = np.searchsorted(group.close_ns, t, side="right") - 1
            ok = pos >= 0
            ok[ok] = t[ok] - group.close_ns[pos[ok]] <= MAX_AGE_NS
            rows, pos = rows[ok], pos[ok]
            out[rows, :2] = group.sector[pos]
            rel = group.relative.get(sym)
            if rel is not None:
                out[rows, 2] = rel[pos]
        out[~np.isfinite(out)] = np.nan
        return out

    def cut(self, end_ns: int) -> SectorContext:
        """The context as it was at `end_ns` (rows closing after it dropped): for look-ahead tests."""
        groups = {}
        for name, g in self.groups.items():
            keep = g.close_ns <= end_ns
            groups[name] = _Group(g.close_ns[keep], g.sector[keep], {s: r[keep] for s, r in g.relative.items()})
        return SectorContext(groups, dict(self.group_of))
