"""Trend context: a vote from -1 (long-term downtrend) to +1 (long-term uptrend).

Mean reversion is short-term counter-trend by construction (a dip is below its recent average), so the
context that matters is the long-term regime: buying a dip inside a long uptrend, or selling a spike
inside a long downtrend, goes with the larger move; the opposite fights it."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple


class TrendReading(NamedTuple):  # a named tuple: built for every bar a scan reads (see core.setups.Evidence)
    score: float  # -1..1
    text: str


def trend_reading(snapshot: Mapping[str, float]) -> TrendReading:
    """Price against EMA200 and EMA50 against EMA200 (the regime), weighted by ADX (how strong it is)."""
    get = snapshot.get
    close = float(get("close", math.nan))
    ema50 = float(get("ema_50", math.nan))
    ema200 = float(get("ema_200", math.nan))
    adx = float(get("adx_14", math.nan))
    if math.isnan(ema200) or math.isnan(close):
        return TrendReading(0.0, "long-term trend unknown (under 200 bars of history)")
    above = close > ema200
    has_ema50 = not math.isnan(ema50)
    raw = ((1.0 if above else -1.0) + (1.0 if ema50 > ema200 else -1.0)) / 2 if has_ema50 else (1.0 if above else -1.0)
    strength = 0.75 if math.isnan(adx) else min(1.0, max(0.5, adx / 30.0))
    score = raw * strength
    word = "long-term uptrend" if score > 0.15 else "long-term downtrend" if score < -0.15 else "no clear long-term trend"
    facts = f"price {'above' if above else 'below'} EMA200"
    if has_ema50:
        facts += f", EMA50 {'above' if ema50 > ema200 else 'below'} EMA200"
    if not math.isnan(adx):
        facts += f", ADX {adx:.0f}"
    return TrendReading(score, f"{word} ({facts})")
