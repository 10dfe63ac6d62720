"""Trend following for crypto and FX: volatility-targeted time-series momentum with a trend-on/off switch.

The rule (Moskowitz, Ooi and Pedersen 2012, "Time series momentum"; Faber 2007 for the moving-average filter;
Liu and Tsyvinski 2021 for momentum at these horizons in crypto), chosen from the literature, not fitted here:
- enter long when the return over the last `window` bars is positive AND the close is above its `window`-bar
  simple average AND the asset class is "trend on": its leader (BTC for crypto; for FX the pair itself) closes
  above its 200-day average, on the last bar closed by then. FX trades the mirror image short; spot crypto is
  long only;
- hold while the close stays above the average and the switch is on; the rule's exit fills at the next open;
- size by volatility: each position gets the same share of a book volatility budget (`book_vol`, split over the
  book's slots as if its positions were correlated `assumed_correlation`), i.e. weight = that share / the
  instrument's own annualised volatility (60 bars), never more than the stop-distance budget or the cap
  (core.risk.vol_target_size); at most `max_positions` per timeframe, the strongest (return / volatility) first;
- a protective stop `stop_atr` ATRs away caps the loss between bar closes; the target (`target_atr`) is far
  (a trend pays through its few large wins); the idea expires after `expiry_bars`.
Every average here has a finite window, so the value on a bar is the same over any history that holds the
window (the live service's recent bars and a backtest's whole history agree).

Confidence and expected return are the record (core.books.base.Record) of the rule's own past trades on the
same asset class and timeframe (core.labels.rule_trades), counting only trades that closed in the
`record_days` before the decision (a fixed window, so the live service's recent bars give the record a backtest
gives); without `min_record` of them the book issues nothing, and a record whose mean after costs is not
positive stops entries (the risk manager also refuses an idea whose expected return is not positive).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.books.base import BookBars, BookDecision, Exit, Key, Record, time_of
from core.domain import AssetClass, Direction, Signal, Timeframe
from core.labels import rule_trades
from core.risk import vol_target_size
from core.signals.engine import signal_id
from core.signals.levels import expiry

TREND = "trend"
DAY_NS = 86_400 * 10**9
DAYS_PER_YEAR = {AssetClass.CRYPTO: 365.0, AssetClass.FX: 260.0, AssetClass.EQUITY: 252.0}
LEADERS = {AssetClass.CRYPTO: "BTC-USDT"}  # classes without a leader read each pair's own trend


@dataclass(frozen=True, slots=True)
class TrendConfig:
    window: int = 50  # bars: the return window and the moving average
    regime_days: int = 200  # the leader's average, in days
    vol_bars: int = 60
    atr_bars: int = 14
    stop_atr: float = 4.0
    target_atr: float = 20.0
    expiry_bars: Mapping[Timeframe, int] = field(default_factory=lambda: {Timeframe.D1: 90, Timeframe.H4: 180})
    book_vol: float = 0.20  # annualised volatility budget of the whole book of one asset class
    assumed_correlation: float = 0.7
    max_positions: int = 10  # per asset class and timeframe
    min_record: int = 30
    record_days: int = 365  # the record counts the trades that closed in the year before the decision
    costs_bps: float = 10.0


@dataclass(frozen=True, slots=True)
class _Features:
    bars: BookBars
    sma: np.ndarray
    ret: np.ndarray
    sigma: np.ndarray  # annualised
    atr: np.ndarray
    regime: np.ndarray  # +1 trend on (up), -1 down, 0 unknown, on each bar's close
    trades_end: np.ndarray
    trades_ret: np.ndarray


def bars_per_year(asset_class: AssetClass, tf: Timeframe) -> float:
    return DAYS_PER_YEAR.get(asset_class, 252.0) * max(1.0, 86_400 / tf.duration.total_seconds())


class TrendBook:
    name = TREND

    def __init__(self, config: TrendConfig | None = None,
                 timeframes: Mapping[AssetClass, tuple[Timeframe, ...]] | None = None) -> None:
        self.config = config or TrendConfig()
        self.timeframes = dict(timeframes or {AssetClass.CRYPTO: (Timeframe.D1, Timeframe.H4),
                                              AssetClass.FX: (Timeframe.D1, Timeframe.H4)})
        self._features: dict[Key, _Features] = {}
        self._records: dict[tuple[AssetClass, Timeframe], tuple[np.ndarray, np.ndarray]] = {}

    @property
    def lookback(self) -> int:
        """Bars of the shortest timeframe that hold the record's year, the trades it counts and the switch's
        average before them."""
        shortest = min((tf for tfs in self.timeframes.values() for tf in tfs), key=lambda t: t.duration,
                       default=Timeframe.D1)
        cfg = self.config
        longest_trade = max(cfg.expiry_bars.values(), default=0) * 1  # in bars of their own timeframe
        days = cfg.record_days + cfg.regime_days + max(cfg.window, cfg.vol_bars) + longest_trade
        return int(days * DAY_NS / (shortest.duration.total_seconds() * 10**9)) + 2

    def prepare(self, bars: Mapping[Key, BookBars]) -> None:
        mine = {k: b for k, b in bars.items() if k[1] in self.timeframes.get(b.asset_class, ())}
        regimes = {k: self._regime(b, bars) for k, b in mine.items()}
        self._features = {k: self._features_of(b, regimes[k]) for k, b in mine.items()}
        pooled: dict[tuple[AssetClass, Timeframe], list[tuple[np.ndarray, np.ndarray]]] = {}
        for f in self._features.values():
            pooled.setdefault((f.bars.asset_class, f.bars.timeframe), []).append((f.trades_end, f.trades_ret))
        self._records = {}
        for scope, parts in pooled.items():
            end = np.concatenate([p[0] for p in parts])
            ret = np.concatenate([p[1] for p in parts])
            order = np.argsort(end, kind="stable")
            self._records[scope] = (end[order], ret[order])

    def record(self, asset_class: AssetClass, tf: Timeframe, t_ns: int) -> Record | None:
        end, ret = self._records.get((asset_class, tf), (np.empty(0, np.int64), np.empty(0)))
        known = int(np.searchsorted(end, t_ns, side="right"))
        since = int(np.searchsorted(end, t_ns - self.config.record_days * DAY_NS, side="right"))
        if known - since < self.config.min_record:
            return None
        return Record.of(ret[since:known], f"{TREND} {asset_class} {tf}, the year before")

    def decide(self, t_ns: int, due: Sequence[Key], held: Sequence[Signal]) -> BookDecision:
        held_by_key = {(s.symbol, s.timeframe): s for s in held if s.strategy == TREND}
        exits: list[Exit] = []
        ready: list[tuple[float, Key, int]] = []
        for key in due:
            f = self._features.get(key)
            if f is None:
                continue
            p = f.bars.last_closed(t_ns)
            if p < 0 or int(f.bars.close_ns[p]) != t_ns:
                continue
            signal = held_by_key.get(key)
            if signal is not None:
                reason = self._exit_reason(f, p, signal.direction)
                if reason is not None:
                    exits.append(Exit(signal.id, reason))
                    del held_by_key[key]
                continue
            side = self._entry_side(f, p)
            if side != 0:
                ready.append((abs(f.ret[p]) / f.sigma[p], key, side))
        entries = self._entries(t_ns, ready, list(held_by_key.values()))
        return BookDecision(entries, exits)

    def _entries(self, t_ns: int, ready: list[tuple[float, Key, int]], held: list[Signal]) -> list[Signal]:
        open_per: dict[tuple[AssetClass, Timeframe], int] = {}
        for s in held:
            open_per[(s.asset_class, s.timeframe)] = open_per.get((s.asset_class, s.timeframe), 0) + 1
        out = []
        for _, key, side in sorted(ready, key=lambda r: (-r[0], r[1])):
            f = self._features[key]
            scope = (f.bars.asset_class, f.bars.timeframe)
            if open_per.get(scope, 0) >= self.config.max_positions:
                continue
            rec = self.record(*scope, t_ns)
            if rec is None or rec.mean <= 0:
                continue
            signal = self._signal(f, f.bars.last_closed(t_ns), side, rec)
            if signal is not None:
                out.append(signal)
                open_per[scope] = open_per.get(scope, 0) + 1
        return out

    def _entry_side(self, f: _Features, p: int) -> int:
        c, sma, ret, regime = f.bars.close[p], f.sma[p], f.ret[p], f.regime[p]
        if not (np.isfinite(sma) and np.isfinite(ret) and f.sigma[p] > 0 and f.atr[p] > 0):
            return 0
        if regime > 0 and c > sma and ret > 0:
            return 1
        if regime < 0 and c < sma and ret < 0 and f.bars.asset_class is AssetClass.FX:
            return -1
        return 0

    def _exit_reason(self, f: _Features, p: int, d: Direction) -> str | None:
        c, sma = f.bars.close[p], f.sma[p]
        w = self.config.window
        if d is Direction.LONG and c < sma:
            return f"the close fell below its {w}-bar average: the trend is over"
        if d is Direction.SHORT and c > sma:
            return f"the close rose above its {w}-bar average: the down-trend is over"
        if d.sign * f.regime[p] <= 0:
            leader = LEADERS.get(f.bars.asset_class, f.bars.symbol)
            return f"{leader} crossed its {self.config.regime_days}-day average: the market's trend switched off"
        return None

    def _signal(self, f: _Features, p: int, side: int, rec: Record) -> Signal | None:
        cfg, b = self.config, f.bars
        d = Direction.LONG if side > 0 else Direction.SHORT
        entry, atr = float(b.close[p]), float(f.atr[p])
        stop, target = entry - side * cfg.stop_atr * atr, entry + side * cfg.target_atr * atr
        if stop <= 0 or target <= 0:
            return None
        slots = cfg.max_positions * len(self.timeframes.get(b.asset_class, ()))
        rho = cfg.assumed_correlation
        share = cfg.book_vol / math.sqrt(slots * slots * rho + slots * (1 - rho))
        size = vol_target_size(entry, stop, float(f.sigma[p]), share)
        issued = time_of(int(b.close_ns[p]))
        sid = signal_id(b.symbol, b.timeframe, issued, d) + "-T"
        leader = LEADERS.get(b.asset_class, b.symbol)
        evidence = {
            "book": TREND, "record": rec.evidence(), "expected_return": round(rec.mean, 6),
            "worst_case": round(rec.worst, 6),
            "trend": {"return": round(float(f.ret[p]), 6), "sma": round(float(f.sma[p]), 8), "window": cfg.window,
                      "leader": leader, "sigma_annual": round(float(f.sigma[p]), 6), "atr": round(atr, 8)},
            "size": {"vol_share": round(share, 6), "risk_at_stop": round(size * abs(entry - stop) / entry, 6)},
        }
        return Signal(
            id=sid, symbol=b.symbol, asset_class=b.asset_class, timeframe=b.timeframe, direction=d, entry=entry,
            target=target, stop=stop, confidence=max(1, min(99, round(rec.win_rate * 100))), position_size=size,
            issued_at=issued, expires_at=expiry(issued, b.timeframe, b.asset_class, cfg.expiry_bars[b.timeframe]),
            reasoning=_reasoning(b.symbol, d, f, p, cfg, leader, rec), strategy=TREND, evidence=evidence)

    def _regime(self, b: BookBars, bars: Mapping[Key, BookBars]) -> np.ndarray:
        leader = LEADERS.get(b.asset_class, b.symbol)
        src = bars.get((leader, b.timeframe)) or next((v for (s, _), v in bars.items() if s == leader), None)
        if src is None:
            return np.zeros(len(b.close_ns))
        n = max(2, int(round(self.config.regime_days * DAY_NS / (src.timeframe.duration.total_seconds() * 10**9))))
        close = pd.Series(src.close)
        sma = close.rolling(n, min_periods=n).mean().to_numpy()
        state = np.where(np.isfinite(sma), np.sign(src.close - sma), 0.0)
        at = np.searchsorted(src.close_ns, b.close_ns, side="right") - 1  # the leader's last bar closed by then
        return np.where(at >= 0, state[np.maximum(at, 0)], 0.0)

    def _features_of(self, b: BookBars, regime: np.ndarray) -> _Features:
        cfg = self.config
        close = pd.Series(b.close)
        sma = close.rolling(cfg.window, min_periods=cfg.window).mean().to_numpy()
        ret = (close / close.shift(cfg.window) - 1.0).to_numpy()
        logret = pd.Series(np.log((close / close.shift(1)).to_numpy()))
        sigma = (logret.rolling(cfg.vol_bars, min_periods=cfg.vol_bars).std()
                 * math.sqrt(bars_per_year(b.asset_class, b.timeframe))).to_numpy()
        prev = close.shift(1)
        tr = pd.concat([pd.Series(b.block[1]) - pd.Series(b.block[2]), (pd.Series(b.block[1]) - prev).abs(),
                        (pd.Series(b.block[2]) - prev).abs()], axis=1).max(axis=1)
        atr = tr.rolling(cfg.atr_bars, min_periods=cfg.atr_bars).mean().to_numpy()
        f = _Features(b, sma, ret, sigma, atr, regime, np.empty(0, np.int64), np.empty(0))
        longs = np.array([self._entry_side(f, p) > 0 for p in range(len(close))], dtype=bool)
        shorts = np.array([self._entry_side(f, p) < 0 for p in range(len(close))], dtype=bool)
        ends, rets = [], []
        for side, flags in ((1, longs), (-1, shorts)):
            if not flags.any():
                continue
            d = Direction.LONG if side > 0 else Direction.SHORT
            exits = np.array([self._exit_reason(f, p, d) is not None for p in range(len(close))], dtype=bool)
            stop = b.close - side * cfg.stop_atr * np.nan_to_num(atr)
            t = rule_trades(b.open_ns, b.close_ns, b.block, flags, exits, side, stop,
                            cfg.expiry_bars.get(b.timeframe, 90), cfg.costs_bps)
            ends.append(t.end_ns)
            rets.append(t.net_return)
        end = np.concatenate(ends) if ends else np.empty(0, np.int64)
        ret_all = np.concatenate(rets) if rets else np.empty(0)
        return _Features(b, sma, ret, sigma, atr, regime, end, ret_all)


def _reasoning(symbol: str, d: Direction, f: _Features, p: int, cfg: TrendConfig, leader: str, rec: Record) -> str:
    w = cfg.window
    dist = f.bars.close[p] / f.sma[p] - 1.0
    market = ("its own" if leader == symbol else f"{leader}'s") + f" {cfg.regime_days}-day trend is " + (
        "up" if d is Direction.LONG else "down")
    return (f"Trend following: {symbol} moved {f.ret[p]:+.1%} over the last {w} bars and closes {dist:+.1%} "
            f"from its {w}-bar average; {market}. Held while the close stays on this side of the average; "
            f"the stop is {cfg.stop_atr:g} ATR away. Record: {rec.win_rate:.0%} of {rec.trades} past trend entries "
            f"on {f.bars.asset_class} {f.bars.timeframe} won after costs, average {rec.mean:+.2%}; one in twenty lost "
            f"more than {-rec.worst:.1%}. Trend following wins less often than it loses and earns from the size "
            "of its wins.")

