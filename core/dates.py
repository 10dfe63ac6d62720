"""Dates on the command line and in reports: a day `D` as the start or the end of a period, a moment "as of D",
and the open ends of a period (EPOCH, FAR)."""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

When = str | date | datetime | None

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
FAR = datetime(2200, 1, 1, tzinfo=timezone.utc)


def parse_start(when: When) -> datetime | None:
    """A day D means "from the bars of day D on": signals issued after D 00:00 UTC. A datetime is taken as is."""
    return _instant(when, next_day=False)


def parse_end(when: When) -> datetime | None:
    """A day D means "through the bars of day D": signals issued up to D+1 00:00 UTC (a daily bar of D closes then)."""
    return _instant(when, next_day=True)


def _instant(when: When, next_day: bool) -> datetime | None:
    if when is None or when == "":
        return None
    if isinstance(when, str):
        text = when.strip()
        when = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text.replace("Z", "+00:00"))
    if isinstance(when, datetime):
        return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    day = datetime(when.year, when.month, when.day, tzinfo=timezone.utc)
    return day + timedelta(days=1) if next_day else day


def parse_when(text: str) -> datetime:
    """'2017-06-01' means after that day's close: 2017-06-02 00:00 UTC (a daily bar stamped D closes then).
    A full timestamp is taken as given (UTC when it names no zone)."""
    text = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return datetime.fromisoformat(text).replace(tzinfo=timezone.utc) + timedelta(days=1)
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"'{text}' is not a date (YYYY-MM-DD) or an ISO timestamp") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)
