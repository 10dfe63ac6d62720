"""Whether the evidence behind an open signal still holds: the thesis at issue against the thesis now.

A signal rests on evidence that can turn while it is open: the instrument's long-term trend
(core.setups.trend.trend_reading), the news about it (the engine's news voter), and, for asset classes that move
with a leader (core.books.trend.LEADERS: crypto with BTC), the leader's trend, the market's regime.
`thesis_change` names what is against the signal's side now that was not against it at issue, in plain words;
nothing: the thesis holds. The watch (core.signals.thesis_watch) reads both theses from closed bars and tells
subscribers once, as a reply to the signal.
"""
from __future__ import annotations

from dataclasses import dataclass

from core.domain import Direction
from core.setups.trend import TrendReading
from core.signals.ensemble import NewsOpinion

TREND_AGAINST = 0.15  # a trend score this far against the side reads "downtrend" / "uptrend" (trend_reading)
NEWS_AGAINST = 0.3  # a news score this far against the side (the ensemble's full news vote is 1)


@dataclass(frozen=True, slots=True)
class Thesis:
    """The evidence read on one closed bar."""

    trend: TrendReading
    news: NewsOpinion | None = None  # None: no news about the instrument up to that bar
    regime: TrendReading | None = None  # the leader's trend (None: no leader, or the instrument is the leader)
    leader: str = ""


def _against(reading: TrendReading | None, side: int) -> bool:
    return reading is not None and side * reading.score < -TREND_AGAINST


def _news_against(opinion: NewsOpinion | None, side: int) -> bool:
    return opinion is not None and side * opinion.score <= -NEWS_AGAINST


def _word(reading: TrendReading) -> str:
    return reading.text.split(" (", 1)[0]


def thesis_change(direction: Direction, at_issue: Thesis, now: Thesis) -> tuple[str, ...]:
    """What turned against a `direction` signal between its issue and now (empty: the thesis holds). Evidence
    that was against it already at issue is no change: the signal was issued knowing it."""
    side = direction.sign
    changes: list[str] = []
    if _against(now.trend, side) and not _against(at_issue.trend, side):
        changes.append(f"the trend turned against it: now a {now.trend.text} (at issue: {_word(at_issue.trend)})")
    if now.regime is not None and _against(now.regime, side) and not _against(at_issue.regime, side):
        changes.append(f"the market's regime turned: {now.leader} is now in a {now.regime.text}")
    if _news_against(now.news, side) and not _news_against(at_issue.news, side):
        assert now.news is not None
        changes.append(f"the news turned against it: {now.news.text}")
    return tuple(changes)
