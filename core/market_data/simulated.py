"""A built-in, seeded market: realistic-looking hourly bars for equities, crypto, FX and the SPX index.

The path of a symbol depends only on (seed, symbol, origin): it is generated forward in fixed
28-day chunks, each drawn from its own generator ``default_rng([seed, stable_hash(symbol), chunk])``,
so asking for any end times in any order yields the same bars. `origin` is midnight UTC of the Monday
on or before ``start - history_days``.

Model per 1h bar: Student-t(5) shocks mixed with a per-class factor (equities and SPX share one,
crypto one, FX a signed USD factor), GARCH(1,1) variance, Markov trend regimes (bull / bear / range,
about 30 days each), occasional sharp drops over 1-3 bars that partly revert over the next 8-40 bars,
overnight and weekend gaps for equities (weekend gaps for FX), a slow pull back toward the start level.

Calendars (UTC, no holidays, no daylight-saving shift):
  crypto 24/7; FX Monday 00:00 to Friday 24:00; equities and SPX weekdays, seven 1h bars opening
  14:30, 15:30, ..., 20:30 (the last one nominally closes 21:30). 4h and 1d bars are resampled from
  1h with `resample_bars`: crypto/FX bins anchored at 00:00 UTC, equity 4h bins at 14:30 (14:30, 18:30),
  equity daily bars labelled 00:00 UTC of their date and usable from the next midnight.
"""
from __future__ import annotations

import difflib
import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd

from core.clock import Clock
from core.domain import BAR_COLUMNS, AssetClass, Instrument, Timeframe
from core.errors import MarketDataError, UnknownSymbolError
from core.market_data.resample import (
    EQUITY_SESSION_OPEN,
    bars_from_block,
    empty_bars,
    resample_arrays,
    tail_until,
    to_utc_ns,
)

DEFAULT_START = datetime(2025, 1, 6, tzinfo=timezone.utc)
CHUNK_DAYS = 28
MAX_YEARS = 50
_HOUR_NS = 3_600 * 10**9
_DAY_NS = 24 * _HOUR_NS
_CHUNK_NS = CHUNK_DAYS * _DAY_NS
_TIMEFRAMES = (Timeframe.H1, Timeframe.H4, Timeframe.D1)
_T_DF = 5.0
_GARCH_ALPHA, _GARCH_BETA, _GARCH_CAP = 0.05, 0.94, 30.0


def stable_hash(text: str) -> int:
    """A process-independent 64-bit hash (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


@dataclass(frozen=True, slots=True)
class _ClassModel:
    """Per-asset-class behaviour."""

    factor: str  # name of the shared factor
    bars_per_day: float  # 1h bars per trading day
    bars_per_year: float
    trend: float  # annual log drift in a bull (+) / bear (-) regime
    gap_share: float  # share of daily variance in the overnight gap (equities)
    drop_every_days: float  # mean trading days between sharp drops of one symbol
    drop_depth: tuple[float, float]  # total drop for a symbol of reference volatility, fraction
    ref_vol: float  # daily volatility at which drop depths are as stated (scaled 0.75x..1.5x)
    pull_half_life_years: float = 1.5  # slow pull of the log price back to its start level


_MODELS = {
    AssetClass.EQUITY: _ClassModel("us_equity", 7, 252 * 7, 0.30, 0.25, 60, (0.04, 0.12), 0.018),
    AssetClass.INDEX: _ClassModel("us_equity", 7, 252 * 7, 0.18, 0.25, 200, (0.025, 0.06), 0.010),
    AssetClass.CRYPTO: _ClassModel("crypto", 24, 365 * 24, 1.00, 0.0, 30, (0.06, 0.15), 0.055),
    AssetClass.FX: _ClassModel("usd", 24, 260 * 24, 0.08, 0.0, 120, (0.01, 0.03), 0.0070),
}


@dataclass(frozen=True, slots=True)
class _Spec:
    instrument: Instrument
    price: float  # level at the origin
    daily_vol: float  # daily return std of the diffusive part
    volume: float  # typical volume of one 1h bar
    loading: float  # signed loading on the class factor
    tick: float


def _eq(sym: str, name: str, sector: str, exch: str, price: float, vol: float, volume: float, rho: float) -> _Spec:
    return _Spec(Instrument(sym, AssetClass.EQUITY, name, exch, "USD", sector), price, vol, volume, rho, 0.01)


def _cx(base: str, name: str, price: float, vol: float, volume: float, rho: float, tick: float) -> _Spec:
    return _Spec(Instrument(f"{base}-USDT", AssetClass.CRYPTO, name, "binance", "USDT"), price, vol, volume, rho, tick)


def _fx(pair: str, price: float, vol: float, volume: float, loading: float) -> _Spec:
    tick = 0.001 if pair.endswith("JPY") else 0.00001
    inst = Instrument(pair, AssetClass.FX, f"{pair[:3]}/{pair[3:]}", "FX", pair[3:])
    return _Spec(inst, price, vol, volume, loading, tick)


_UNIVERSE: tuple[_Spec, ...] = (
    _eq("AAPL", "Apple Inc.", "Information Technology", "NASDAQ", 190.0, 0.016, 8.0e6, 0.70),
    _eq("MSFT", "Microsoft Corp.", "Information Technology", "NASDAQ", 410.0, 0.015, 3.5e6, 0.70),
    _eq("NVDA", "NVIDIA Corp.", "Information Technology", "NASDAQ", 120.0, 0.032, 4.0e7, 0.60),
    _eq("AMZN", "Amazon.com Inc.", "Consumer Discretionary", "NASDAQ", 180.0, 0.020, 6.0e6, 0.65),
    _eq("GOOGL", "Alphabet Inc. Class A", "Communication Services", "NASDAQ", 165.0, 0.018, 4.0e6, 0.65),
    _eq("META", "Meta Platforms Inc.", "Communication Services", "NASDAQ", 500.0, 0.024, 2.5e6, 0.60),
    _eq("TSLA", "Tesla Inc.", "Consumer Discretionary", "NASDAQ", 220.0, 0.035, 1.4e7, 0.50),
    _eq("JPM", "JPMorgan Chase & Co.", "Financials", "NYSE", 200.0, 0.014, 1.3e6, 0.60),
    _eq("XOM", "Exxon Mobil Corp.", "Energy", "NYSE", 110.0, 0.015, 2.2e6, 0.45),
    _eq("JNJ", "Johnson & Johnson", "Health Care", "NYSE", 155.0, 0.010, 1.0e6, 0.45),
    _eq("KO", "Coca-Cola Co.", "Consumer Staples", "NYSE", 62.0, 0.009, 2.0e6, 0.45),
    _eq("BAC", "Bank of America Corp.", "Financials", "NYSE", 38.0, 0.018, 5.5e6, 0.60),
    _Spec(Instrument("SPX", AssetClass.INDEX, "S&P 500 Index", "INDEX", "USD"), 5000.0, 0.010, 4.0e8, 0.98, 0.01),
    _cx("BTC", "Bitcoin", 60000.0, 0.038, 1200.0, 0.85, 0.01),
    _cx("ETH", "Ethereum", 3000.0, 0.048, 12000.0, 0.80, 0.01),
    _cx("SOL", "Solana", 150.0, 0.065, 1.5e5, 0.70, 0.01),
    _cx("BNB", "BNB", 550.0, 0.045, 2.0e4, 0.65, 0.1),
    _cx("XRP", "XRP", 0.55, 0.058, 4.0e7, 0.60, 0.0001),
    _cx("ADA", "Cardano", 0.45, 0.060, 2.5e7, 0.65, 0.0001),
    _cx("DOGE", "Dogecoin", 0.12, 0.070, 2.0e8, 0.60, 0.00001),
    _cx("LTC", "Litecoin", 75.0, 0.055, 6.0e4, 0.70, 0.01),
    _fx("EURUSD", 1.08, 0.0060, 3000.0, 0.70),
    _fx("GBPUSD", 1.27, 0.0070, 2500.0, 0.60),
    _fx("USDJPY", 150.0, 0.0080, 2500.0, -0.50),
    _fx("AUDUSD", 0.66, 0.0085, 2000.0, 0.60),
    _fx("USDCHF", 0.88, 0.0065, 1500.0, -0.65),
    _fx("USDCAD", 1.36, 0.0060, 1800.0, -0.50),
)


@dataclass(frozen=True, slots=True)
class _Calendar:
    """Bar open offsets inside one chunk (the same for every chunk: chunks start on a Monday)."""

    offsets: np.ndarray  # int64 ns from the chunk start
    gap: np.ndarray  # float: 0 no gap, 1 overnight gap, weekend multiplier on Mondays
    profile: np.ndarray  # intraday volume multiplier


def _calendar(asset_class: AssetClass) -> _Calendar:
    days = np.arange(CHUNK_DAYS)
    if asset_class is AssetClass.CRYPTO:
        hours = np.arange(CHUNK_DAYS * 24)
        offsets = hours * _HOUR_NS
        profile = 1.0 + 0.25 * np.sin(2 * np.pi * ((hours % 24) - 8) / 24)
        return _Calendar(offsets, np.zeros(len(hours)), profile)
    weekdays = days[days % 7 < 5]
    if asset_class is AssetClass.FX:
        hod = np.tile(np.arange(24), len(weekdays))
        day = np.repeat(weekdays, 24)
        gap = np.where((day % 7 == 0) & (hod == 0), 1.0, 0.0)
        profile = np.where((hod >= 7) & (hod < 17), 1.5, 0.7)
        return _Calendar(day * _DAY_NS + hod * _HOUR_NS, gap, profile)
    slot = np.tile(np.arange(7), len(weekdays))
    day = np.repeat(weekdays, 7)
    open_ns = 14 * _HOUR_NS + 30 * 60 * 10**9
    gap = np.where(slot == 0, np.where(day % 7 == 0, 1.4, 1.0), 0.0)
    profile = np.array([1.8, 1.1, 0.85, 0.75, 0.8, 1.0, 1.6])[slot]
    return _Calendar(day * _DAY_NS + open_ns + slot * _HOUR_NS, gap, profile)


_CALENDARS = {ac: _calendar(ac) for ac in AssetClass}


@dataclass(slots=True)
class _State:
    """What carries from one chunk to the next."""

    log_close: float
    h: float = 1.0  # GARCH variance relative to the unconditional one
    shock: float = 0.0  # last normalised shock
    regime: int = 0  # 0 range, 1 bull, 2 bear
    pending: np.ndarray = field(default_factory=lambda: np.zeros(0))  # drop/revert returns still to come


@dataclass(slots=True)
class _Series:
    """One timeframe's bars as arrays, complete up to `until_ns`; the frame is built on demand."""

    times: np.ndarray  # int64 UTC ns of bar opens
    values: np.ndarray  # (n, 5) float64 in BAR_COLUMNS order
    until_ns: int
    frame: pd.DataFrame | None = None


@dataclass(slots=True)
class _Path:
    spec: _Spec
    state: _State
    chunks: int = 0
    series: dict[Timeframe, _Series] = field(default_factory=dict)


_REGIME_DRIFT = np.array([0.0, 1.0, -1.0])
_REGIME_VOL = np.array([1.0, 0.9, 1.25])
_REGIME_VAR = float(np.mean(_REGIME_VOL**2))


class SimulatedMarket:
    """MarketData over a deterministic simulated universe (see the module docstring)."""

    name = "simulated"

    def __init__(self, seed: int = 7, start: datetime = DEFAULT_START, history_days: int = 400,
                 clock: Clock | None = None) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be tz-aware")
        if history_days < 0:
            raise ValueError("history_days must be >= 0")
        self.seed = seed
        self.start = start.astimezone(timezone.utc)
        self._clock = clock
        first = pd.Timestamp(self.start - timedelta(days=history_days)).floor("D")
        self._origin_ns = to_utc_ns(first - pd.Timedelta(days=first.weekday()))
        self._paths = {s.instrument.symbol: _Path(s, _State(float(np.log(s.price)))) for s in _UNIVERSE}
        self._factors: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    def instruments(self) -> Sequence[Instrument]:
        return [p.spec.instrument for p in self._paths.values()]

    def instrument(self, symbol: str) -> Instrument:
        return self._path(symbol).spec.instrument

    def timeframes(self, symbol: str) -> Sequence[Timeframe]:
        self._path(symbol)
        return _TIMEFRAMES

    async def get_bars(self, symbol: str, timeframe: Timeframe, *, end: datetime,
                       limit: int | None = None) -> pd.DataFrame:
        """Bars closed by `end` (and by the clock's now, when a clock was given)."""
        return self._bars(symbol, timeframe, end, limit)

    # -- internals -------------------------------------------------------------------------------

    def _bars(self, symbol: str, timeframe: Timeframe, end: datetime, limit: int | None) -> pd.DataFrame:
        path = self._path(symbol)
        timeframe = Timeframe(timeframe)
        if timeframe not in _TIMEFRAMES:
            raise MarketDataError(f"{symbol}: timeframe {timeframe} not available (use 1h, 4h or 1d)")
        end_ns = self._effective_end(end)
        if end_ns <= self._origin_ns:
            return tail_until(empty_bars(), np.empty(0, dtype=np.int64), timeframe, end_ns, limit)
        with self._lock:
            self._extend(path, end_ns)
            series = self._series(path, timeframe)
            if series.frame is None:
                series.frame = bars_from_block(series.times, series.values)
        return tail_until(series.frame, series.times, timeframe, end_ns, limit)

    def _path(self, symbol: str) -> _Path:
        key = symbol.strip().upper().replace("/", "-")
        if key in self._paths:
            return self._paths[key]
        compact = {"".join(ch for ch in s if ch.isalnum()): s for s in self._paths}
        alnum = "".join(ch for ch in key if ch.isalnum())
        if alnum in compact:
            return self._paths[compact[alnum]]
        raise UnknownSymbolError(symbol, difflib.get_close_matches(key, list(self._paths), n=3, cutoff=0.5))

    def _effective_end(self, end: datetime) -> int:
        end_ns = to_utc_ns(end)
        if self._clock is not None:
            end_ns = min(end_ns, to_utc_ns(self._clock.now()))
        if end_ns > self._origin_ns + MAX_YEARS * 365 * _DAY_NS:
            raise MarketDataError(f"end {end} is more than {MAX_YEARS} years past the simulation origin")
        return end_ns

    def _extend(self, path: _Path, end_ns: int) -> None:
        """Generate 1h chunks until they cover every bar that closes by end_ns."""
        needed = -(-(end_ns - self._origin_ns) // _CHUNK_NS)
        if path.chunks >= needed:
            return
        new = []
        for k in range(path.chunks, needed):
            chunk_start = self._origin_ns + k * _CHUNK_NS
            new.append(_generate_chunk(path.spec, path.state, self.seed, k, chunk_start, self._factor(path.spec, k)))
        old = path.series.get(Timeframe.H1)
        times = np.concatenate(([] if old is None else [old.times]) + [c["time"] for c in new])
        values = np.vstack(([] if old is None else [old.values])
                           + [np.column_stack([c[col] for col in BAR_COLUMNS]) for c in new])
        path.chunks = needed
        path.series[Timeframe.H1] = _Series(times, values, self._horizon(path))

    def _factor(self, spec: _Spec, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Shared standardised shocks (bars, gaps) of the spec's class factor for chunk k."""
        model = _MODELS[spec.instrument.asset_class]
        key = (model.factor, k)
        if key not in self._factors:
            n = len(_CALENDARS[spec.instrument.asset_class].offsets)
            rng = np.random.default_rng([self.seed, stable_hash(f"factor:{model.factor}"), k])
            self._factors[key] = (_student_t(rng, n), _student_t(rng, n))
        return self._factors[key]

    def _horizon(self, path: _Path) -> int:
        return self._origin_ns + path.chunks * _CHUNK_NS

    def _series(self, path: _Path, timeframe: Timeframe) -> _Series:
        """The series of `timeframe`, brought up to the generated horizon (resampling only new bins)."""
        horizon = self._horizon(path)
        have = path.series.get(timeframe)
        if have is not None and have.until_ns == horizon:
            return have
        base = path.series[Timeframe.H1]
        span = timeframe.duration // timedelta(microseconds=1) * 1000
        cut = int(have.times[-1]) + span if have is not None and len(have.times) else self._origin_ns
        first = int(np.searchsorted(base.times, cut, side="left"))
        anchor = _sim_anchor(path.spec.instrument.asset_class, timeframe)
        times, values = resample_arrays(base.times[first:], base.values[first:], Timeframe.H1, timeframe,
                                        anchor, horizon)
        if have is not None:
            times, values = np.concatenate([have.times, times]), np.vstack([have.values, values])
        path.series[timeframe] = _Series(times, values, horizon)
        return path.series[timeframe]


def _sim_anchor(asset_class: AssetClass, target: Timeframe) -> timedelta:
    """The simulated exchange keeps its equity session at 14:30-21:30 UTC all year (no daylight saving), so its
    intraday equity bins anchor at a fixed 14:30 UTC; everything else at midnight UTC."""
    if asset_class in (AssetClass.EQUITY, AssetClass.INDEX) and target.duration < timedelta(days=1):
        return EQUITY_SESSION_OPEN
    return timedelta(0)


def _student_t(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-variance Student-t shocks (fat tails)."""
    return rng.standard_t(_T_DF, n) / np.sqrt(_T_DF / (_T_DF - 2))


def _generate_chunk(spec: _Spec, state: _State, seed: int, k: int, chunk_start_ns: int,
                    factor: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """The bars of chunk k; advances `state` in place."""
    ac = spec.instrument.asset_class
    model, cal = _MODELS[ac], _CALENDARS[ac]
    rng = np.random.default_rng([seed, stable_hash(spec.instrument.symbol), k])
    n = len(cal.offsets)
    rho = spec.loading
    z = rho * factor[0] + np.sqrt(1 - rho * rho) * _student_t(rng, n)
    zg = rho * factor[1] + np.sqrt(1 - rho * rho) * _student_t(rng, n)
    depths = _drop_depths(spec, model)
    sigma = _bar_sigma(spec, model, depths)
    regimes = _regimes(rng, state, n, model)
    extra = _drops(rng, state, n, model, depths)
    scale = _garch(z, extra / sigma, state)
    ret = _drift(spec, model, state, regimes, depths) + sigma * _REGIME_VOL[regimes] * scale * z + extra
    gap = cal.gap * spec.daily_vol * np.sqrt(model.gap_share) * scale * zg
    bars = _assemble(rng, spec, cal, state, ret, gap, sigma * scale)
    bars["time"] = cal.offsets + chunk_start_ns
    return bars


def _drop_depths(spec: _Spec, model: _ClassModel) -> tuple[float, float]:
    """The symbol's range of sharp-drop sizes: the class range scaled by relative volatility."""
    factor = float(np.clip(spec.daily_vol / model.ref_vol, 0.75, 1.5))
    return model.drop_depth[0] * factor, model.drop_depth[1] * factor


def _bar_sigma(spec: _Spec, model: _ClassModel, depths: tuple[float, float]) -> float:
    """Diffusive 1h volatility such that diffusion + drops + gaps give about the target daily volatility."""
    mid_fall = np.log1p(-0.5 * (depths[0] + depths[1]))
    drop_var = 0.6 * mid_fall**2 / model.drop_every_days
    share = max(0.4, 1.0 - model.gap_share - drop_var / spec.daily_vol**2)
    return float(spec.daily_vol * np.sqrt(share / model.bars_per_day / _REGIME_VAR))


def _drift(spec: _Spec, model: _ClassModel, state: _State, regimes: np.ndarray,
           depths: tuple[float, float]) -> np.ndarray:
    """Regime trend, compensation for the drops' net loss, and the slow pull to the start level."""
    trend = _REGIME_DRIFT[regimes] * model.trend / model.bars_per_year
    net_drop = -np.log1p(-0.5 * (depths[0] + depths[1])) * 0.5
    compensation = net_drop / (model.drop_every_days * model.bars_per_day)
    gap_years = model.pull_half_life_years * model.bars_per_year
    pull = np.log(2) / gap_years * (state.log_close - np.log(spec.price))
    return trend + compensation - pull


def _regimes(rng: np.random.Generator, state: _State, n: int, model: _ClassModel) -> np.ndarray:
    """Markov trend regimes, switching about every 30 days."""
    p_switch = 1.0 / (30 * model.bars_per_day)
    switches = np.flatnonzero(rng.random(n) < p_switch)
    steps = rng.integers(1, 3, len(switches))
    out = np.empty(n, dtype=np.int64)
    regime, prev = state.regime, 0
    for at, step in zip(switches, steps, strict=True):
        out[prev:at] = regime
        regime, prev = (regime + int(step)) % 3, int(at)
    out[prev:] = regime
    state.regime = regime
    return out


def _drops(rng: np.random.Generator, state: _State, n: int, model: _ClassModel,
           depths: tuple[float, float]) -> np.ndarray:
    """Extra log returns of sharp drops (1-3 bars) and their partial reversion (8-40 bars)."""
    p_drop = 1.0 / (model.drop_every_days * model.bars_per_day)
    events = np.flatnonzero(rng.random(n) < p_drop)
    depth = rng.uniform(*depths, len(events))
    length = rng.integers(1, 4, len(events))
    revert = rng.uniform(0.3, 0.7, len(events))
    span = rng.integers(8, 41, len(events))
    extra = np.zeros(n + 64)
    extra[: len(state.pending)] += state.pending
    for at, d, ln, rv, sp in zip(events, depth, length, revert, span, strict=True):
        fall = np.log1p(-d)
        extra[at:at + ln] += fall / ln
        extra[at + ln:at + ln + sp] += -fall * rv / sp
    state.pending = extra[n:].copy()
    return extra[:n]


def _garch(z: np.ndarray, jumps: np.ndarray, state: _State) -> np.ndarray:
    """GARCH(1,1) volatility scale (unconditional 1) driven by the total normalised shock."""
    a, b = _GARCH_ALPHA, _GARCH_BETA
    w = 1.0 - a - b
    h, e = state.h, state.shock
    out = np.empty(len(z))
    for i, (zi, ji) in enumerate(zip(z.tolist(), jumps.tolist(), strict=True)):
        h = w + a * min(e * e, _GARCH_CAP) + b * h
        s = h**0.5
        out[i] = s
        e = s * zi + ji
    state.h, state.shock = h, e
    return out


def _assemble(rng: np.random.Generator, spec: _Spec, cal: _Calendar, state: _State,
              ret: np.ndarray, gap: np.ndarray, vol: np.ndarray) -> dict[str, np.ndarray]:
    """Open/high/low/close/volume from the bar returns and gaps."""
    log_close = state.log_close + np.cumsum(gap + ret)
    log_open = log_close - ret
    state.log_close = float(log_close[-1])
    wick = vol * rng.exponential(0.45, (2, len(ret)))
    high = np.maximum(log_open, log_close) + wick[0]
    low = np.minimum(log_open, log_close) - wick[1]
    activity = 1.0 + 0.8 * np.minimum(np.abs(ret) / np.median(vol), 6.0)
    volume = spec.volume * cal.profile * activity * np.exp(0.35 * rng.standard_normal(len(ret)) - 0.3)
    tick = spec.tick
    out = {c: np.round(np.exp(v) / tick) * tick for c, v in
           (("open", log_open), ("high", high), ("low", low), ("close", log_close))}
    out["volume"] = np.round(volume, 4)
    return out
