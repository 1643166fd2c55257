"""The pure computations of the energy insight against synthetic meter data whose results were
worked out by hand (the expected numbers are written here, not produced by the code):
energy per day across a gap and two counter resets, the load profile of a day (and of the DST
days), the base load of a week with a public holiday, CO2 of a year with two carriers' factors,
holidays of Lower Saxony, CSV layouts and the benchmark ranking."""

from __future__ import annotations

import datetime as dt

import pytest

from fleet.insight import calendar as cal
from fleet.insight import co2
from fleet.insight.benchmark import SiteYear, rank
from fleet.insight.energy import (
    INTERPOLATED,
    MEASURED,
    MISSING,
    CounterBucket,
    combine,
    counter_energy,
    period_energy,
    power_energy,
)
from fleet.insight.export import load_profile_csv
from fleet.insight.profile import NightWindow, base_load, base_load_rise

Q = 900_000


def at(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> int:
    """UTC ms of a Europe/Berlin wall time."""
    return cal.to_ms(dt.datetime(y, m, d, hh, mm))


def flat(start_ms: int, end_ms: int, value_wh: float, wh_per_q: float) -> list[CounterBucket]:
    """Buckets of a counter rising wh_per_q per quarter hour from value_wh."""
    out = []
    v = value_wh
    for ts in range(start_ms, end_ms, Q):
        out.append(CounterBucket(ts, v, v + wh_per_q, v, v + wh_per_q))
        v += wh_per_q
    return out


def test_energy_per_day_across_a_gap_and_counter_resets() -> None:
    # Mon 12 Jan 2026 and Tue 13 Jan 2026 (CET). 250 Wh per quarter hour (1 kW) throughout.
    a0, b0, c0 = at(2026, 1, 12), at(2026, 1, 13), at(2026, 1, 14)
    buckets = flat(a0, at(2026, 1, 12, 22), 10_000, 250)  # 88 quarter hours, up to 32 000 Wh
    # No data 22:00 .. 02:00 (16 quarter hours); the counter advanced 4 000 Wh meanwhile.
    buckets += flat(at(2026, 1, 13, 2), at(2026, 1, 13, 12), 36_000, 250)  # 40 qh, to 46 000
    # 12:00: the counter is reset inside the quarter hour: 46 000 -> 46 100, reset, 0 -> 150.
    buckets.append(CounterBucket(at(2026, 1, 13, 12), 46_000, 150, 0, 46_100))
    buckets += flat(at(2026, 1, 13, 12, 15), at(2026, 1, 13, 15), 150, 250)  # 11 qh, to 2 900
    # 15:00: a new counter (swapped meter, same channel) starting at 0: a drop at the boundary.
    buckets += flat(at(2026, 1, 13, 15), at(2026, 1, 13, 20), 0, 250)  # 20 qh
    # Then nothing until "now", Wed 00:00: 20:00 .. 24:00 is missing (the meter is in service).
    ch = counter_energy(buckets, 0.001, end_ts_ms=c0)
    assert ch.resets == [at(2026, 1, 13, 12), at(2026, 1, 13, 15)]
    day_a, day_b = period_energy(
        [ch], cal.periods(dt.date(2026, 1, 12), dt.date(2026, 1, 13), "day"), c0
    )

    # Day A: 88 measured quarter hours x 0.25 kWh = 22 kWh; 22:00..24:00 is 8 of the 16 gap
    # quarter hours, each 4 kWh / 16 = 0.25 kWh interpolated = 2 kWh. Nothing missing.
    assert (day_a.label, day_a.start_ts_ms, day_a.end_ts_ms) == ("2026-01-12", a0, b0)
    assert day_a.energy_kwh == pytest.approx(24.0)
    assert day_a.interpolated_kwh == pytest.approx(2.0)
    assert day_a.measured_share == pytest.approx(88 / 96)
    assert day_a.interpolated_share == pytest.approx(8 / 96)
    assert day_a.missing == []
    # Day B: 2 kWh interpolated (00:00..02:00), 02:00..20:00 = 72 measured quarter hours of
    # 0.25 kWh (the reset quarter hour too: (46 100 - 46 000) + (150 - 0) = 250 Wh) = 18 kWh.
    assert day_b.energy_kwh == pytest.approx(20.0)
    assert day_b.interpolated_kwh == pytest.approx(2.0)
    assert day_b.measured_share == pytest.approx(72 / 96)
    assert day_b.missing == [(at(2026, 1, 13, 20), c0)]
    assert not day_b.complete


def test_a_replaced_meter_continues_the_series_and_the_swap_is_missing() -> None:
    # Old meter until 10:00 (taken out of the configuration), new one from 11:00 at 500 000 Wh.
    d0, d1 = at(2026, 2, 2), at(2026, 2, 3)
    old = counter_energy(flat(d0, at(2026, 2, 2, 10), 90_000, 500), 0.001)  # not in service after
    new = counter_energy(flat(at(2026, 2, 2, 11), d1, 500_000, 500), 0.001, end_ts_ms=d1)
    (day,) = period_energy([old, new], [("d", d0, d1)], d1)
    # 40 + 52 quarter hours of 0.5 kWh; 10:00..11:00 no meter was in service.
    assert day.energy_kwh == pytest.approx(46.0)
    assert day.missing == [(at(2026, 2, 2, 10), at(2026, 2, 2, 11))]
    assert day.measured_share == pytest.approx(92 / 96)


def test_load_profile_of_a_day_and_of_the_dst_days() -> None:
    day0 = at(2026, 6, 3)  # a Wednesday, CEST
    # 2 kW (500 Wh per quarter hour) until 06:00, 8 kW (2000 Wh) 06:00..18:00, 3 kW after.
    b = flat(day0, at(2026, 6, 3, 6), 0, 500)
    b += flat(at(2026, 6, 3, 6), at(2026, 6, 3, 18), 12_000, 2000)
    b += flat(at(2026, 6, 3, 18), at(2026, 6, 4), 108_000, 750)
    qhs = combine([counter_energy(b, 0.001)], day0, at(2026, 6, 4))
    kw = [q.energy_kwh * 4 for q in qhs]  # type: ignore[operator]
    assert len(kw) == 96
    assert kw[:24] == [2.0] * 24 and kw[24:72] == [8.0] * 48 and kw[72:] == [3.0] * 24
    assert sum(q.energy_kwh for q in qhs) == pytest.approx(12 + 96 + 18)  # type: ignore[misc]
    # The spring-forward day has 92 quarter hours, the fall-back day 100.
    assert len(combine([], at(2026, 3, 29), at(2026, 3, 30))) == 92
    assert len(combine([], at(2026, 10, 25), at(2026, 10, 26))) == 100
    # Power instead of a register: 4 kW average in a quarter hour is 1 kWh.
    pw = power_energy({day0: 4000.0})
    assert pw.energy == {day0: 1.0}


def _week_with_ascension() -> list[CounterBucket]:
    # Mon 11 .. Sun 17 May 2026; Thu 14 May is Ascension Day (Easter 5 April + 39 days).
    # Night 00:00..04:00 2 kW every day. Working days: 3 kW 04..06, 10 kW 06..18, 3 kW 18..24.
    # Saturday, Sunday and the holiday: 3 kW from 04:00 to 24:00.
    out: list[CounterBucket] = []
    v = 0.0
    for day in range(11, 18):
        off = day in (14, 16, 17)
        for k in range(96):
            hour = k // 4
            kw = 2 if hour < 4 else 10 if (not off and 6 <= hour < 18) else 3
            ts = at(2026, 5, day) + k * Q
            out.append(CounterBucket(ts, v, v + kw * 250, v, v + kw * 250))
            v += kw * 250
    return out


def test_base_load_of_a_week_with_a_holiday() -> None:
    ch = counter_energy(_week_with_ascension(), 0.001)
    qhs = combine([ch], at(2026, 5, 11), at(2026, 5, 18))
    b = base_load(qhs, NightWindow(0, 4))
    # Working day: 8 + 6 + 120 + 18 = 152 kWh; Sat, Sun, holiday: 8 + 60 = 68 kWh.
    # Week: 4 x 152 + 3 x 68 = 812 kWh.
    assert b.energy_kwh == pytest.approx(812.0)
    assert b.night_base_load_kw == pytest.approx(2.0)
    assert b.weekend_base_load_kw == pytest.approx(68 / 24)
    assert b.base_load_share == pytest.approx(2 * 168 / 812)  # 0.4138
    assert b.weekend_share == pytest.approx(136 / 812)
    assert b.peak_kw == pytest.approx(10.0)
    assert b.peak_ts_ms == at(2026, 5, 11, 6)
    (holiday,) = b.holidays
    assert (holiday.date, holiday.name) == (dt.date(2026, 5, 14), "Christi Himmelfahrt")
    assert holiday.energy_kwh == pytest.approx(68.0)
    assert holiday.mean_kw == pytest.approx(68 / 24)
    # A night window across midnight: 22:00..04:00 mixes 3 kW (22..24) and 2 kW (0..4).
    wrap = base_load(qhs, NightWindow(22, 4))
    assert wrap.night_base_load_kw == pytest.approx((7 * 8 * 3 + 7 * 16 * 2) / (7 * 24))


def test_base_load_rise_against_the_weeks_before() -> None:
    assert base_load_rise([2.0, 2.2, 1.8, 2.0, 2.5], 0.2).alert  # +25 % on a 2.0 kW baseline
    v = base_load_rise([2.0, 2.2, 1.8, 2.0, 2.3], 0.2)
    assert (
        not v.alert and v.baseline_kw == pytest.approx(2.0) and v.rise_share == pytest.approx(0.15)
    )
    assert not base_load_rise([None, 2.0, 9.0], 0.2).alert  # one baseline week is too few
    assert not base_load_rise([2.0, 2.0, None], 0.2).alert  # no data last week: no verdict


def test_holidays_of_lower_saxony() -> None:
    h = cal.holidays_lower_saxony(2026)
    assert list(h) == [
        dt.date(2026, 1, 1), dt.date(2026, 4, 3), dt.date(2026, 4, 6), dt.date(2026, 5, 1),
        dt.date(2026, 5, 14), dt.date(2026, 5, 25), dt.date(2026, 10, 3), dt.date(2026, 10, 31),
        dt.date(2026, 12, 25), dt.date(2026, 12, 26),
    ]  # fmt: skip
    assert cal.easter_sunday(2024) == dt.date(2024, 3, 31)
    assert cal.easter_sunday(2025) == dt.date(2025, 4, 20)
    assert cal.easter_sunday(2019) == dt.date(2019, 4, 21)
    assert dt.date(2017, 10, 31) not in cal.holidays_lower_saxony(2017)  # only since 2018
    weeks = cal.periods(dt.date(2026, 10, 19), dt.date(2026, 10, 26), "week")
    assert [(lbl, (e - s) // 3_600_000) for lbl, s, e in weeks] == [
        ("2026-W43", 169), ("2026-W44", 168)
    ]  # fmt: skip


def test_co2_of_a_year_with_two_carriers_and_an_own_factor() -> None:
    energy = {"electricity": {2024: 100_000.0}, "natural_gas": {2024: 200_000.0}}
    got = {e.carrier: e for e in co2.emissions(energy, co2.merged_factors({}))}
    # UBA 2024 grid mix 0.363 kg/kWh; natural gas 0.182 kg/kWh (Hs).
    assert got["electricity"].kg_co2 == pytest.approx(36_300.0)
    assert got["natural_gas"].kg_co2 == pytest.approx(36_400.0)
    own = co2.merged_factors({"electricity": {2024: (0.1, "green tariff")}})
    got = {e.carrier: e for e in co2.emissions(energy, own)}
    assert got["electricity"].kg_co2 == pytest.approx(10_000.0)
    assert not got["electricity"].factor.default  # type: ignore[union-attr]
    # A year without a published value takes the newest one before it.
    f = co2.factor_for(co2.default_factors()["electricity"], 2022)
    assert f is not None and (f.year, f.kg_per_kwh) == (2020, 0.366)


def test_load_profile_csv_layouts() -> None:
    b = flat(at(2026, 10, 25, 1, 45), at(2026, 10, 25, 2, 15), 0, 500)
    end = at(2026, 10, 25, 3)  # 01:45 CEST .. 03:00 CET: 2 h 15 min, the hour 02..03 twice
    qhs = combine([counter_energy(b, 0.001, end_ts_ms=end)], at(2026, 10, 25, 1, 45), end)
    text = load_profile_csv(qhs)
    assert text.split("\r\n")[:3] == [
        "start,end,power_kw,energy_kwh,status",
        "2026-10-25T01:45+02:00,2026-10-25T02:00+02:00,2.000,0.500,measured",
        "2026-10-25T02:00+02:00,2026-10-25T02:15+02:00,2.000,0.500,measured",
    ]
    de = load_profile_csv(qhs, "de")
    assert de.startswith("\ufeffDatum;von;bis;UTC-Versatz;Leistung kW;Energie kWh;Status\r\n")
    rows = de.lstrip("\ufeff").split("\r\n")
    assert rows[1] == "25.10.2026;01:45;02:00;+02:00;2,000;0,500;gemessen"
    assert len(qhs) == 9
    assert rows[3] == "25.10.2026;02:15;02:30;+02:00;;;fehlt"
    assert rows[6] == "25.10.2026;02:00;02:15;+01:00;;;fehlt"  # the repeated hour, in CET
    assert {q.status for q in qhs} == {MEASURED, MISSING}
    assert INTERPOLATED not in de


def test_benchmark_ranks_within_building_type() -> None:
    def s(site_id: int, btype: str, area: float | None, el: float, heat: float) -> SiteYear:
        return SiteYear(1, "Town", site_id, f"S{site_id}", btype, area, el, heat, 1.0)

    ranked = rank([s(1, "school", 1000, 30_000, 90_000), s(2, "school", 2000, 40_000, 100_000),
                   s(3, "pool", 500, 100_000, 0), s(4, "school", None, 1, 1)])  # fmt: skip
    schools = [r for r in ranked if r.building_type == "school"]
    # 140 000 / 2000 = 70 kWh/m² beats 120 000 / 1000 = 120; no floor area: unranked.
    assert [(r.site_id, r.rank, r.total_kwh_per_m2) for r in schools] == [
        (2, 1, 70.0), (1, 2, 120.0), (4, None, None)
    ]  # fmt: skip
    assert schools[0].of == 2
