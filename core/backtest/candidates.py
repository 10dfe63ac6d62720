"""What the live scan would propose on each bar of one (instrument, timeframe), computed for a whole history.

The live scan analyses a bar the moment it closes, from the engine's trailing window of `lookback` bars
(`SignalEngine.analyse_recent` with one new bar). Indicators are causal, so indicators over the whole
history give, on row i, exactly what they give over bars[:i+1]. But the live window is bars[i-lookback+1:i+1],
not bars[:i+1], and indicators with an infinite memory (EMAs, Wilder averages) depend on where their window
starts: over 300 bars EMA200 still carries about a third of its seed. So the full-history indicators are used
only to SCREEN bars that could possibly hold a setup; every screened bar is then analysed by the real engine
over the exact live window (`decide`), which is what makes the decisions identical to the live path.

The screen is sound (never drops a bar the engine would turn into a candidate) because:
- a candidate needs a triggered setup (`SignalEngine.candidate` returns None when the verdict is None, and the
  ensemble only acts on a triggered setup's direction);
- the setup is evaluated here with the detector's own criteria table, on columns (z-score, RSI, ATR distance,
  %B, volume percentile, gap) that over a window of >= SCREEN_MIN_LOOKBACK bars differ from their full-history
  value by < 1e-7 relative (the Wilder averages' seed weighs (13/14)^186 < 1e-6 after 200 bars), far inside
  SCREEN_MARGIN;
- the pullback setup (core.setups.pullback) is kept by its own test with a margin: RSI(2) (its Wilder average
  forgets its seed as 0.5^k) within PULLBACK_RSI_MARGIN of the trigger, and the close against SMA200 (a plain
  200-bar mean, the same over any window that holds 200 bars, up to rounding) within a relative 1e-9.
Engines whose detectors are not these two, or shorter lookbacks, are not screened: every bar is analysed
(correct, slower).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.domain import Direction, Instrument, Signal, Timeframe
from core.market_data.resample import index_ns
from core.setups.oversold import CORE_CRITERIA, Criterion, OversoldDetector, _criteria_for, _mirror
from core.setups.pullback import SHORT_CLASSES, PullbackDetector
from core.signals.engine import MIN_BARS, Analysis, SignalEngine

SCREEN_MARGIN = 1e-3  # in units of criterion strength (0..1) and setup score (0..1)
SCREEN_MIN_LOOKBACK = 200
PULLBACK_RSI_MARGIN = 1e-3  # RSI points


@dataclass(frozen=True, slots=True)
class Series:
    """Every bar of one scan target that had closed by the end of the backtest, with its times as int64 ns."""

    instrument: Instrument
    timeframe: Timeframe
    bars: pd.DataFrame
    open_ns: np.ndarray
    close_ns: np.ndarray

    @classmethod
    def of(cls, instrument: Instrument, timeframe: Timeframe, bars: pd.DataFrame) -> Series:
        opens = index_ns(bars)
        return cls(instrument, timeframe, bars, opens, opens + _ns(timeframe))

    @property
    def key(self) -> tuple[str, Timeframe]:
        return self.instrument.symbol, self.timeframe

    def decision_positions(self, start_ns: int, end_ns: int) -> np.ndarray:
        """Positions of the bars that close inside (start, end] and have enough history to be analysed."""
        lo = int(np.searchsorted(self.close_ns, start_ns, side="right"))
        hi = int(np.searchsorted(self.close_ns, end_ns, side="right"))
        return np.arange(max(lo, MIN_BARS - 1), hi)


def _ns(tf: Timeframe) -> int:
    return int(tf.duration.total_seconds()) * 10**9


def screenable(engine: SignalEngine) -> bool:
    cfg = engine.config
    known_pullback = cfg.pullback is None or type(cfg.pullback) is PullbackDetector
    return type(cfg.detector) is OversoldDetector and known_pullback and cfg.lookback >= SCREEN_MIN_LOOKBACK


def screen(engine: SignalEngine, series: Series, positions: np.ndarray) -> np.ndarray:
    """The subset of `positions` whose bar could hold a triggered setup (see the module docstring)."""
    if len(positions) == 0 or not screenable(engine):
        return positions
    detector = engine.config.detector
    ind = engine.indicators.compute(series.bars)
    inst = series.instrument
    directions = (Direction.LONG, Direction.SHORT) if inst.allows_short else (Direction.LONG,)
    criteria = _criteria_for(inst.asset_class)
    keep = np.zeros(len(positions), dtype=bool)
    for d in directions:
        score = np.zeros(len(positions))
        core = np.zeros(len(positions), dtype=bool)
        for c in criteria:
            s = _strength(c, d, _column(series.bars, ind, c.column)[positions])
            score += c.weight * s
            if c.name in CORE_CRITERIA:
                core |= s >= 1.0 - SCREEN_MARGIN
        score /= sum(c.weight for c in criteria)
        keep |= core & (score >= detector.min_score - SCREEN_MARGIN)
    if engine.config.pullback is not None:
        keep |= _pullback_screen(engine.config.pullback, series, ind, positions)
    return positions[keep]


def _pullback_screen(pullback: PullbackDetector, series: Series, ind: pd.DataFrame,
                     positions: np.ndarray) -> np.ndarray:
    """Bars that could hold a pullback setup (`PullbackDetector.evaluate`'s trigger, with the margins above)."""
    close = _column(series.bars, ind, "close")[positions]
    sma200 = _column(series.bars, ind, "sma_200")[positions]
    rsi2 = _column(series.bars, ind, "rsi_2")[positions]
    slack = np.abs(sma200) * 1e-9
    with np.errstate(invalid="ignore"):
        keep = (close > sma200 - slack) & (rsi2 < pullback.trigger + PULLBACK_RSI_MARGIN)
        inst = series.instrument
        if inst.allows_short and inst.asset_class in SHORT_CLASSES:
            keep |= (close < sma200 + slack) & (rsi2 > 100.0 - pullback.trigger - PULLBACK_RSI_MARGIN)
    return keep


def _column(bars: pd.DataFrame, ind: pd.DataFrame, name: str) -> np.ndarray:
    frame = ind if name in ind.columns else bars
    if name not in frame.columns:
        return np.full(len(bars), np.nan)
    return frame[name].to_numpy(dtype=np.float64)


def _strength(c: Criterion, d: Direction, values: np.ndarray) -> np.ndarray:
    """`Criterion.strength`, vectorised (NaN counts as 0)."""
    begins, full = (c.begins, c.full) if d is Direction.LONG else _mirror(c)
    span = full - begins
    with np.errstate(invalid="ignore"):
        s = np.clip((values - begins) / span, 0.0, 1.0) if span else (values >= full).astype(np.float64)
    return np.nan_to_num(s, nan=0.0)


def live_window(engine: SignalEngine, series: Series, pos: int) -> pd.DataFrame:
    """The trailing window the live scan reads when bar `pos` is the one new bar (`lookback` bars ending at it)."""
    return series.bars.iloc[max(0, pos + 1 - engine.config.lookback): pos + 1]


def analysis_at(engine: SignalEngine, series: Series, pos: int) -> Analysis:
    """The live analysis of bar `pos`: the engine over its live window. Raises NotEnoughDataError like the live
    path."""
    return engine.analyse_recent(series.instrument, series.timeframe, live_window(engine, series, pos), 1)[-1]


def decide(engine: SignalEngine, series: Series, pos: int) -> Signal | None:
    """The candidate the live scan would propose on bar `pos`, before the risk review."""
    return engine.candidate(analysis_at(engine, series, pos))
