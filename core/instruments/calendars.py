"""Trading calendars: when an instrument trades, so gaps can be told from closed markets.

Three calendars, looked up by name with `get_calendar`:

``XNYS``  the New York Stock Exchange, 09:30-16:00 America/New_York, early closes at 13:00, and the
          full-day holidays of 2010-2030 computed here: New Year's Day (a Saturday New Year is not
          observed, NYSE rule 7.2), Martin Luther King Jr. Day, Washington's Birthday, Good Friday,
          Memorial Day, Juneteenth (from 2022), Independence Day, Labor Day, Thanksgiving and
          Christmas; a holiday on a Saturday is observed the Friday before, on a Sunday the Monday
          after; plus the unscheduled closures listed in `NYSE_SPECIAL_CLOSURES`.
``24/7``  crypto: always open; every UTC day is a session.
``24/5``  spot FX: Sunday 17:00 to Friday 17:00 America/New_York; Monday..Friday are sessions.

Times in and out are tz-aware; session dates are plain `date`s in the calendar's own zone.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from typing import Protocol
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
UTC = timezone.utc
FIRST_YEAR, LAST_YEAR = 2010, 2030

NYSE_SPECIAL_CLOSURES: dict[date, str] = {
    date(2012, 10, 29): "Hurricane Sandy",
    date(2012, 10, 30): "Hurricane Sandy",
    date(2018, 12, 5): "National Day of Mourning (George H. W. Bush)",
    date(2025, 1, 9): "National Day of Mourning (Jimmy Carter)",
}


class TradingCalendar(Protocol):
    """What the rest of the service asks a calendar."""

    @property
    def name(self) -> str:
        """The calendar's name ("XNYS", "24/7", "24/5")."""
        ...

    def is_session(self, day: date) -> bool:
        """True when the market trades on `day` (a date in the calendar's zone)."""
        ...

    def is_open(self, when: datetime) -> bool:
        """True when the market is open at the tz-aware instant `when`."""
        ...

    def session_bounds(self, day: date) -> tuple[datetime, datetime] | None:
        """Open and close of the session on `day` in UTC, or None when there is none."""
        ...


def sessions(calendar: TradingCalendar, start: date, end: date) -> list[date]:
    """The session dates in ``[start, end]`` (both inclusive)."""
    return [d for d in _days(start, end) if calendar.is_session(d)]


def _days(start: date, end: date) -> Iterator[date]:
    day = start
    while day <= end:
        yield day
        day += timedelta(days=1)


# -- NYSE ----------------------------------------------------------------------------------------


def easter_sunday(year: int) -> date:
    """Gregorian Easter Sunday (the anonymous Gregorian algorithm, Meeus/Jones/Butcher)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    ell = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * ell) // 451
    month = (h + ell - 7 * m + 114) // 31
    day = (h + ell - 7 * m + 114) % 31 + 1
    return date(year, month, day)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The n-th (1-based) `weekday` (Monday=0) of the month."""
    first = date(year, month, 1)
    return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


def _last_weekday(year: int, month: int, weekday: int) -> date:
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    last = nxt - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def _observed(day: date) -> date:
    """Saturday holidays move to the Friday before, Sunday holidays to the Monday after."""
    if day.weekday() == 5:
        return day - timedelta(days=1)
    if day.weekday() == 6:
        return day + timedelta(days=1)
    return day


@lru_cache(maxsize=64)
def nyse_holidays(year: int) -> dict[date, str]:
    """Full-day NYSE closures of `year` (scheduled holidays and the listed special closures)."""
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise ValueError(f"the NYSE calendar covers {FIRST_YEAR}-{LAST_YEAR}, not {year}")
    out: dict[date, str] = {}
    new_year = date(year, 1, 1)
    if new_year.weekday() != 5:  # a Saturday New Year's Day is not observed on the Friday before
        out[_observed(new_year)] = "New Year's Day"
    out[_nth_weekday(year, 1, 0, 3)] = "Martin Luther King Jr. Day"
    out[_nth_weekday(year, 2, 0, 3)] = "Washington's Birthday"
    out[easter_sunday(year) - timedelta(days=2)] = "Good Friday"
    out[_last_weekday(year, 5, 0)] = "Memorial Day"
    if year >= 2022:
        out[_observed(date(year, 6, 19))] = "Juneteenth"
    out[_observed(date(year, 7, 4))] = "Independence Day"
    out[_nth_weekday(year, 9, 0, 1)] = "Labor Day"
    out[_nth_weekday(year, 11, 3, 4)] = "Thanksgiving Day"
    out[_observed(date(year, 12, 25))] = "Christmas Day"
    out.update({d: why for d, why in NYSE_SPECIAL_CLOSURES.items() if d.year == year})
    return out


@lru_cache(maxsize=64)
def nyse_early_closes(year: int) -> frozenset[date]:
    """13:00 closes: the day before Independence Day and Christmas Eve (Monday-Thursday), and the
    day after Thanksgiving."""
    out = {_nth_weekday(year, 11, 3, 4) + timedelta(days=1)}
    for day in (date(year, 7, 3), date(year, 12, 24)):
        if day.weekday() <= 3 and day not in nyse_holidays(year):
            out.add(day)
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class NyseCalendar:
    name: str = "XNYS"
    open_time: time = time(9, 30)
    close_time: time = time(16, 0)
    early_close_time: time = time(13, 0)

    def holidays(self, year: int) -> dict[date, str]:
        return nyse_holidays(year)

    def is_session(self, day: date) -> bool:
        return day.weekday() < 5 and day not in nyse_holidays(day.year)

    def session_bounds(self, day: date) -> tuple[datetime, datetime] | None:
        if not self.is_session(day):
            return None
        close = self.early_close_time if day in nyse_early_closes(day.year) else self.close_time
        opens = datetime.combine(day, self.open_time, NEW_YORK).astimezone(UTC)
        closes = datetime.combine(day, close, NEW_YORK).astimezone(UTC)
        return opens, closes

    def is_open(self, when: datetime) -> bool:
        bounds = self.session_bounds(_aware(when).astimezone(NEW_YORK).date())
        return bounds is not None and bounds[0] <= when < bounds[1]


# -- around the clock ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlwaysOpenCalendar:
    """Crypto: every instant is open; every UTC day is a session."""

    name: str = "24/7"

    def is_session(self, day: date) -> bool:
        return True

    def is_open(self, when: datetime) -> bool:
        _aware(when)
        return True

    def session_bounds(self, day: date) -> tuple[datetime, datetime] | None:
        start = datetime.combine(day, time(0), UTC)
        return start, start + timedelta(days=1)


@dataclass(frozen=True, slots=True)
class FxCalendar:
    """Spot FX: the week runs from Sunday 17:00 to Friday 17:00 New York time. The session of a
    weekday D runs from 17:00 New York on the previous day to 17:00 on D."""

    name: str = "24/5"
    roll: time = time(17, 0)

    def is_session(self, day: date) -> bool:
        return day.weekday() < 5

    def session_bounds(self, day: date) -> tuple[datetime, datetime] | None:
        if not self.is_session(day):
            return None
        end = datetime.combine(day, self.roll, NEW_YORK)
        start = datetime.combine(day - timedelta(days=1), self.roll, NEW_YORK)
        return start.astimezone(UTC), end.astimezone(UTC)

    def is_open(self, when: datetime) -> bool:
        local = _aware(when).astimezone(NEW_YORK)
        weekday, after_roll = local.weekday(), local.time() >= self.roll
        if weekday == 5:  # Saturday
            return False
        if weekday == 6:  # Sunday: open from the roll
            return after_roll
        if weekday == 4:  # Friday: closed from the roll
            return not after_roll
        return True


def _aware(when: datetime) -> datetime:
    if when.tzinfo is None:
        raise ValueError(f"time must be tz-aware, got naive {when!r}")
    return when


XNYS = NyseCalendar()
CRYPTO_24_7 = AlwaysOpenCalendar()
FX_24_5 = FxCalendar()
_CALENDARS: dict[str, TradingCalendar] = {c.name: c for c in (XNYS, CRYPTO_24_7, FX_24_5)}


def get_calendar(name: str) -> TradingCalendar:
    """The calendar called `name` ("XNYS", "24/7", "24/5")."""
    try:
        return _CALENDARS[name]
    except KeyError:
        raise ValueError(f"unknown trading calendar '{name}' (known: {', '.join(_CALENDARS)})") from None
