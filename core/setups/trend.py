"""Trend context: a vote from -1 (strong downtrend) to +1 (strong uptrend)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True, slots=True)
class TrendReading:
    score: float  # -1..1
    text: str


def trend_reading(snapshot: pd.Series) -> TrendReading:
    """EMA50 against EMA200 (the regime), MACD histogram (momentum), ADX (how much the trend counts)."""
    close = float(snapshot.get("close", math.nan))
    ema50 = float(snapshot.get("ema_50", math.nan))
    ema200 = float(snapshot.get("ema_200", math.nan))
    hist = float(snapshot.get("macd_hist", math.nan))
    adx = float(snapshot.get("adx_14", math.nan))
    parts: list[float] = []
    if not math.isnan(ema50) and not math.isnan(ema200):
        parts.append(1.0 if ema50 > ema200 else -1.0)
    if not math.isnan(close) and not math.isnan(ema50):
        parts.append(1.0 if close > ema50 else -1.0)
    if not math.isnan(hist):
        parts.append(0.5 if hist > 0 else -0.5)
    if not parts:
        return TrendReading(0.0, "trend unknown (too little history)")
    raw = sum(parts) / 2.5
    strength = 0.5 if math.isnan(adx) else min(1.0, max(0.2, adx / 40.0))
    score = max(-1.0, min(1.0, raw * strength))
    word = "uptrend" if score > 0.15 else "downtrend" if score < -0.15 else "no clear trend"
    facts = []
    if not math.isnan(close) and not math.isnan(ema50):
        facts.append(f"price {'above' if close > ema50 else 'below'} EMA50")
    if not math.isnan(ema50) and not math.isnan(ema200):
        facts.append(f"EMA50 {'above' if ema50 > ema200 else 'below'} EMA200")
    if not math.isnan(hist):
        facts.append(f"MACD {'rising' if hist > 0 else 'falling'}")
    if not math.isnan(adx):
        facts.append(f"ADX {adx:.0f}")
    return TrendReading(score, f"{word} ({', '.join(facts)})")
