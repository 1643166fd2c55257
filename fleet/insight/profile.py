"""15-minute load profiles and what they tell: base load at night and at weekends, its share
of consumption, peak demand, consumption on public holidays, and whether the base load rose.
Pure: quarter hours in (energy.QuarterHour), numbers out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from fleet.insight.calendar import holidays_lower_saxony, local
from fleet.insight.energy import INTERPOLATED, MEASURED, QuarterHour

QUARTER_H = 0.25


def power_kw(q: QuarterHour) -> float | None:
    """Average power over a quarter hour (kW) from its energy (kWh)."""
    return None if q.energy_kwh is None else q.energy_kwh / QUARTER_H


@dataclass(frozen=True)
class NightWindow:
    """Local hours [start_hour, end_hour) of the night; may wrap midnight (22 -> 5)."""

    start_hour: int = 0
    end_hour: int = 4

    def __post_init__(self) -> None:
        if not (0 <= self.start_hour <= 23 and 0 <= self.end_hour <= 24):
            raise ValueError("night hours: start 0..23, end 0..24 (local time)")
        if self.start_hour == self.end_hour:
            raise ValueError("night window: start and end hour must differ")

    def contains(self, hour: int) -> bool:
        if self.start_hour < self.end_hour:
            return self.start_hour <= hour < self.end_hour
        return hour >= self.start_hour or hour < self.end_hour


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass(frozen=True)
class HolidayUse:
    date: dt.date
    name: str
    energy_kwh: float | None  # None: no data that day
    mean_kw: float | None
    measured_share: float


@dataclass(frozen=True)
class BaseLoad:
    """Base load figures of a span of quarter hours. Only measured quarter hours count for
    averages and the peak (interpolated ones are flat estimates)."""

    night_base_load_kw: float | None  # mean power in the night window
    weekend_base_load_kw: float | None  # mean power on Saturdays and Sundays
    base_load_share: float | None  # night base load x covered hours / covered energy
    weekend_share: float | None  # weekend energy / energy
    energy_kwh: float
    peak_kw: float | None
    peak_ts_ms: int | None
    holidays: list[HolidayUse]


def base_load(qhs: Sequence[QuarterHour], night: NightWindow = NightWindow()) -> BaseLoad:  # noqa: B008
    measured = [q for q in qhs if q.status == MEASURED]
    night_kw: list[float] = []
    weekend_kw: list[float] = []
    weekend_kwh = 0.0
    days: dict[dt.date, list[QuarterHour]] = {}
    for q in measured:
        t = local(q.ts_ms)
        kw = q.energy_kwh / QUARTER_H  # type: ignore[operator]
        if night.contains(t.hour):
            night_kw.append(kw)
        if t.weekday() >= 5:
            weekend_kw.append(kw)
            weekend_kwh += q.energy_kwh  # type: ignore[operator]
    for q in qhs:
        days.setdefault(local(q.ts_ms).date(), []).append(q)
    covered_kwh = sum(q.energy_kwh for q in measured)  # type: ignore[misc]
    covered_h = len(measured) * QUARTER_H
    night_mean = _mean(night_kw)
    peak = max(measured, key=lambda q: q.energy_kwh or 0.0, default=None)
    holidays: list[HolidayUse] = []
    years = {d.year for d in days}
    names: dict[dt.date, str] = {}
    for y in years:
        names.update(holidays_lower_saxony(y))
    for day, day_qhs in sorted(days.items()):
        if day not in names:
            continue
        m = [q for q in day_qhs if q.status == MEASURED]
        known = [q.energy_kwh or 0.0 for q in day_qhs if q.status in (MEASURED, INTERPOLATED)]
        holidays.append(
            HolidayUse(
                day,
                names[day],
                sum(known) if known else None,
                _mean([q.energy_kwh / QUARTER_H for q in m]),  # type: ignore[operator]
                len(m) / len(day_qhs),
            )
        )
    return BaseLoad(
        night_mean,
        _mean(weekend_kw),
        night_mean * covered_h / covered_kwh if night_mean is not None and covered_kwh else None,
        weekend_kwh / covered_kwh if covered_kwh else None,
        covered_kwh,
        None if peak is None else power_kw(peak),
        None if peak is None else peak.ts_ms,
        holidays,
    )


@dataclass(frozen=True)
class RiseVerdict:
    last_kw: float | None
    baseline_kw: float | None
    rise_share: float | None  # (last - baseline) / baseline
    alert: bool


def base_load_rise(
    weekly_night_kw: Sequence[float | None], threshold_share: float, min_baseline_weeks: int = 2
) -> RiseVerdict:
    """Compare the last week's night base load (the last value) with the mean of the weeks
    before it (those with data; at least min_baseline_weeks of them). An alert when it rose
    by more than threshold_share (0.2: +20 %)."""
    if not weekly_night_kw or weekly_night_kw[-1] is None:
        return RiseVerdict(None, None, None, False)
    last = weekly_night_kw[-1]
    before = [w for w in weekly_night_kw[:-1] if w is not None]
    if len(before) < min_baseline_weeks:
        return RiseVerdict(last, None, None, False)
    baseline = sum(before) / len(before)
    if baseline <= 0:
        return RiseVerdict(last, baseline, None, last > 0)
    rise = (last - baseline) / baseline
    return RiseVerdict(last, baseline, rise, rise > threshold_share)
