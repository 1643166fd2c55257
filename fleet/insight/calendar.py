"""The local calendar of the buildings: Europe/Berlin periods (day, ISO week, month, year) as
UTC millisecond ranges, with the 23- and 25-hour days of the DST changes, and the public
holidays of Lower Saxony. Pure: no clock, no I/O."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

TZ = ZoneInfo("Europe/Berlin")
QUARTER_MS = 900_000
PERIODS = ("day", "week", "month", "year")
MIN_YEAR, MAX_YEAR = 2000, 2100  # what the API accepts; Easter below is valid far beyond


class PeriodError(ValueError):
    pass


def to_ms(local: dt.datetime) -> int:
    """UTC ms of a naive local (Europe/Berlin) wall time; the earlier of an ambiguous one."""
    return int(local.replace(tzinfo=TZ).timestamp() * 1000)


def local(ts_ms: int) -> dt.datetime:
    """The aware Europe/Berlin time of UTC ms."""
    return dt.datetime.fromtimestamp(ts_ms / 1000, TZ)


def period_start(day: dt.date, period: str) -> dt.date:
    """The first day of the period containing `day`."""
    if period == "day":
        return day
    if period == "week":
        return day - dt.timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    if period == "year":
        return day.replace(month=1, day=1)
    raise PeriodError(f"period {period!r}: use one of {', '.join(PERIODS)}")


def next_start(start: dt.date, period: str) -> dt.date:
    if period == "day":
        return start + dt.timedelta(days=1)
    if period == "week":
        return start + dt.timedelta(days=7)
    if period == "month":
        return dt.date(start.year + start.month // 12, start.month % 12 + 1, 1)
    if period == "year":
        return dt.date(start.year + 1, 1, 1)
    raise PeriodError(f"period {period!r}: use one of {', '.join(PERIODS)}")


def label(start: dt.date, period: str) -> str:
    if period == "week":
        year, week, _ = start.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return f"{start.year}-{start.month:02d}"
    if period == "year":
        return str(start.year)
    return start.isoformat()


def periods(first: dt.date, last: dt.date, period: str) -> list[tuple[str, int, int]]:
    """(label, start_ts_ms, end_ts_ms) of every period from the one holding `first` to the one
    holding `last`, local midnights converted to UTC (a DST day is 23 or 25 hours long)."""
    if last < first:
        raise PeriodError("the end date is before the start date")
    out = []
    start = period_start(first, period)
    while start <= last:
        end = next_start(start, period)
        out.append(
            (
                label(start, period),
                to_ms(dt.datetime.combine(start, dt.time())),
                to_ms(dt.datetime.combine(end, dt.time())),
            )
        )
        start = end
    return out


def day_range_ms(day: dt.date) -> tuple[int, int]:
    nxt = day + dt.timedelta(days=1)
    return to_ms(dt.datetime.combine(day, dt.time())), to_ms(dt.datetime.combine(nxt, dt.time()))


def easter_sunday(year: int) -> dt.date:
    """Gregorian Easter Sunday by Gauss's rule in the corrected form given by Meeus
    (Astronomical Algorithms, ch. 8, "anonymous Gregorian algorithm")."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    l_ = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l_) // 451
    month, day = divmod(h + l_ - 7 * m + 114, 31)
    return dt.date(year, month, day + 1)


def holidays_lower_saxony(year: int) -> dict[dt.date, str]:
    """Public holidays of Lower Saxony (Niedersächsisches Feiertagsgesetz, NFeiertagsG §2):
    the nine federal-wide ones plus Reformation Day, a holiday there since 2018."""
    easter = easter_sunday(year)
    days = {
        dt.date(year, 1, 1): "Neujahr",
        easter - dt.timedelta(days=2): "Karfreitag",
        easter + dt.timedelta(days=1): "Ostermontag",
        dt.date(year, 5, 1): "Tag der Arbeit",
        easter + dt.timedelta(days=39): "Christi Himmelfahrt",
        easter + dt.timedelta(days=50): "Pfingstmontag",
        dt.date(year, 10, 3): "Tag der Deutschen Einheit",
        dt.date(year, 12, 25): "1. Weihnachtstag",
        dt.date(year, 12, 26): "2. Weihnachtstag",
    }
    if year >= 2018:
        days[dt.date(year, 10, 31)] = "Reformationstag"
    return dict(sorted(days.items()))
