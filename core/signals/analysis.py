"""What the engine concludes about one instrument and timeframe at one bar: the value that the reasoning, the
views and the service read."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from core.domain import Direction, Instrument, Timeframe
from core.setups import SetupResult
from core.setups.trend import TrendReading
from core.signals.ensemble import EnsembleResult, NewsOpinion
from core.signals.levels import Levels


@dataclass(frozen=True, slots=True)
class Analysis:
    instrument: Instrument
    timeframe: Timeframe
    bar_time: datetime  # open time of the last closed bar
    as_of: datetime  # its close time: the moment the analysis became possible
    snapshot: dict[str, float]
    setup: SetupResult
    trend: TrendReading
    ensemble: EnsembleResult
    levels: Levels | None  # for the verdict, or for the leaning side when there is none
    leaning: Direction
    probability: float | None = None  # the model's calibrated probability of a win after costs, if it voted
    reliability: float | None = None  # how far that probability moved from the base rate (ModelOpinion), 0..1
    payoff: float | None = None  # the model's training setups' mean win / mean loss (ModelOpinion)
    news: NewsOpinion | None = None  # the news vote, if news voted (triggered setups only)
    news_effect: str | None = None  # what the news vote did to the decision (NEWS_EFFECTS), if it voted

    @property
    def verdict(self) -> Direction | None:
        return self.ensemble.direction
