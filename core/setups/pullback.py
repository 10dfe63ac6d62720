"""The pullback detector: a short, sharp dip inside a long-term uptrend (and, for FX, its mirror).

A long setup needs both: the close above its 200-bar simple average (the long-term trend is up) and the
2-bar RSI under `trigger` (10): two or three closes down in a row, the short-term extreme that a trend
usually resumes from. This is L. Connors' and C. Alvarez' published RSI(2) rule ("Short Term Trading
Strategies That Work", 2008) with its published thresholds. Its published exit (a close back above the 5-bar
average, no stop) becomes fixed levels here (core.signals.levels.pullback_levels): the 5-bar average as the
target, at least half an ATR away, and a 3-ATR stop, picked from four variants (floor 0.25/0.5/1 ATR, stop
2.5/3 ATR) by their warm-up-year figures, where they differed little.

Why it is in the product: it was chosen by its figures on the data's warm-up years. The same first study also
printed the scored years (equities profit factor 1.09 with these levels), so the choice was not blind to
them; they are weaker than the warm-up years, and nothing was tuned on them. A study script (entry at the next
open, these levels, 10 bps per side, every trigger day) gave, on 2013-11 .. 2015-02-06 for the 505 stocks: 10,062 setups, hit rate 0.72, profit factor 1.23, where
the oversold detector's rules had lost (the engine's backtest of 2014-01-02 .. 2015-02-06: longs PF 0.89,
shorts 0.57); crypto 1h 2017-08 .. 2018-09-20: 1,665 setups, 0.76, 1.13; crypto 4h: 354, 0.64, 0.68 (the 2018
crash). Through the engine and the risk manager (`signalbot backtest`, same years): equities 1,031 signals,
hit 0.69, PF 1.18; crypto 1h+4h 2017-10-01 .. 2018-09-20: 941, 0.72, 0.91 (the oversold setups in the same
runs: 322, 0.32, 0.62 and 933, 0.27, 0.75). The mirror on equities (short below SMA200 when RSI(2) > 90) lost
in the study's warm-up years (3,167 setups, profit factor 0.64) and is not issued; crypto spot is long-only;
FX pairs are symmetric, so they take both sides (no FX history to measure it on: 5,000 hourly bars).

The score (what a rules-only confidence reads) is half for the trend condition and half for how deep the
RSI(2) is: 0 at `trigger`, full at `full`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from core.domain import AssetClass, Direction
from core.setups import PULLBACK, Evidence, SetupResult

SHORT_CLASSES = frozenset({AssetClass.FX})
"""Asset classes where the mirror (a spike inside a long-term downtrend) is issued, where shorting is allowed."""


@dataclass(frozen=True, slots=True)
class PullbackDetector:
    trigger: float = 10.0  # RSI(2) under this (long; over 100 - this short)
    full: float = 2.0  # RSI(2) at which its criterion is fully met
    name: str = PULLBACK

    def evaluate(self, snapshot: Mapping[str, float], asset_class: AssetClass, allows_short: bool) -> SetupResult:
        get = snapshot.get
        close, sma200 = float(get("close", math.nan)), float(get("sma_200", math.nan))
        rsi2 = float(get("rsi_2", math.nan))
        side = Direction.LONG
        if allows_short and asset_class in SHORT_CLASSES and close < sma200 and rsi2 > 50.0:
            side = Direction.SHORT
        sign = side.sign
        trend_met = sign * (close - sma200) > 0.0  # False when either is NaN
        depth = rsi2 if side is Direction.LONG else 100.0 - rsi2
        begins, full = self.trigger, self.full
        strength = 0.0 if math.isnan(depth) else min(1.0, max(0.0, (begins - depth) / (begins - full)))
        in_zone = depth < begins  # False when NaN
        score = 0.5 * float(trend_met) + 0.5 * strength
        distance = (close / sma200 - 1.0) if sma200 > 0 else math.nan
        evidence = (
            Evidence("trend", distance, 0.0, float(trend_met), 0.5,
                     "close above SMA200" if side is Direction.LONG else "close below SMA200"),
            Evidence("rsi2", rsi2, full if side is Direction.LONG else 100.0 - full, strength, 0.5, "RSI(2)"),
        )
        triggered = trend_met and in_zone
        return SetupResult(self.name, side if triggered else None, score, evidence)
