"""A short, honest reasoning text that names the evidence behind an analysis."""
from __future__ import annotations

from core.domain import Direction
from core.setups import Evidence
from core.signals.analysis import Analysis

DISCLAIMER = "Not investment advice."


def describe(e: Evidence) -> str:
    v = e.value
    match e.name:
        case "zscore":
            return f"price z-score {v:+.2f}"
        case "rsi":
            return f"RSI(14) {v:.1f}"
        case "distance":
            return f"{abs(v):.1f} ATR {'below' if v < 0 else 'above'} SMA20"
        case "bollinger":
            return f"Bollinger %B {v:.2f}"
        case "volume":
            return f"volume in the {ordinal(round(v * 100))} percentile"
        case "gap":
            return f"opening gap {v * 100:+.1f}%"
        case "rsi2":
            return f"RSI(2) {v:.1f}"
        case "trend":
            return f"close {abs(v) * 100:.1f}% {'above' if v > 0 else 'below'} SMA200"
    return f"{e.label} {v:.2f}"


def indefinite(number: str) -> str:
    """The article before a percentage (0-100) read aloud: "an 80%", "an 11%", "an 8%", "a 72%"."""
    digits = number.rstrip("%")
    return "an" if digits.startswith("8") or digits in ("11", "18") else "a"


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def compose_reasoning(a: Analysis) -> str:
    d = a.verdict or a.leaning
    pullback = a.setup.name == "pullback" and a.setup.direction is not None
    if pullback:
        state = "Pullback in a long-term uptrend" if d is Direction.LONG else "Rally in a long-term downtrend"
    else:
        state = "Oversold" if d is Direction.LONG else "Overbought"
    met = [describe(e) for e in sorted(a.setup.evidence, key=lambda e: -e.strength * e.weight) if e.strength >= 0.5]
    parts = [f"{state}: {', '.join(met) if met else 'no criterion strongly met'}."]
    t = a.trend.score * d.sign
    if t < -0.15:
        parts.append(f"Against the {a.trend.text}: counter-trend, so confidence is lower.")
    elif t > 0.15:
        parts.append(f"With the {a.trend.text}.")
    else:
        parts.append(f"Trend: {a.trend.text}.")
    if a.probability is not None:
        share = f"{a.probability:.0%}"
        paid = (f"; their wins paid on average {a.payoff:.2f} of what their losses cost" if a.payoff else "")
        if shows_record(a.reliability):  # the chance shown is the record of such setups (a record, or trees
            # whose out-of-sample calls have not yet borne out their probabilities)
            parts.append(f"Record: {share} of past setups like this won after costs{paid}; that share is the chance "
                         "shown until a model's out-of-sample calls bear out a sharper one.")
        else:
            parts.append(f"Model: {indefinite(share)} {share} calibrated chance of a win after costs, "
                         f"from past setups like this{paid}.")
    if a.news is not None:
        parts.append(news_sentence(a))
    if a.levels is not None and pullback:
        parts.append("Target: back to the 5-bar average; a wide stop, 3 ATR beyond entry, so the risk-reward is "
                     "under 1: the idea rests on how often such dips recover, not on the size of the win.")
    elif a.levels is not None:
        parts.append("Target: a move back toward the 20-bar mean; stop a fixed multiple of ATR beyond entry.")
    if pullback:
        parts.append(f"Risk: a dip can be the start of a trend change; {stop_cost(a)}so respect it.")
    else:
        parts.append("Risk: reversion setups fail when selling (or buying) keeps going; respect the stop.")
    return " ".join(parts)


def shows_record(reliability: object) -> bool:
    """Whether a probability is its setups' record (reliability 0: the honest probability is the base rate), read
    at the 4 decimals the signal's evidence stores, so the reasoning, the Confidence line and the risk manager agree."""
    return isinstance(reliability, (int, float)) and round(float(reliability), 4) == 0


def stop_cost(a: Analysis) -> str:
    """How many wins at the target one stop takes back, from this idea's own levels (before costs, which make it
    worse): "one stop costs about 5.6 wins, " (empty without levels or without a target distance)."""
    if a.levels is None or a.levels.risk_reward <= 0:
        return ""
    wins = 1.0 / a.levels.risk_reward
    return f"one stop costs about {wins:.1f} wins at the target, "


def news_sentence(a: Analysis) -> str:
    """One sentence on the news vote: its score, how many items, and whether it backs the idea."""
    news = a.news
    assert news is not None
    d = a.setup.direction or a.verdict or a.leaning
    lean = news.score * d.sign
    stance = "backs the idea" if lean > 0.05 else "weighs against the idea" if lean < -0.05 else "is neutral"
    effect = {"vetoed": ", enough to veto it", "added": ", enough to tip the vote"}.get(a.news_effect or "", "")
    items = f"{news.items} item{'s' if news.items != 1 else ''}"
    shadow = " (not voting: the news vote has no proven track record yet)" if news.skill <= 0 else ""
    return f"News: score {news.score:+.2f} from {items} published by the bar's close {stance}{effect}{shadow}."
