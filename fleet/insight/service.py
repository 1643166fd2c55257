"""The energy insight of sites and organisations, as the API and the reports show it: loads
meters and their quarter hours (queries.py) and applies the pure computations. Answers are
plain dicts, ready for JSON and the report templates."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection

from fleet.insight import calendar as cal
from fleet.insight import co2, queries
from fleet.insight.benchmark import SiteYear, rank
from fleet.insight.energy import (
    ChannelEnergy,
    CounterBucket,
    PeriodEnergy,
    QuarterHour,
    combine,
    counter_energy,
    period_energy,
    power_energy,
)
from fleet.insight.profile import BaseLoad, NightWindow, base_load
from fleet.insight.queries import COUNTERS, POWER, MeterChannel

MAX_DAYS = 400  # longest span one request may cover (a year and a little)


class InsightError(ValueError):
    """A request the insight cannot answer as asked (the message says what to change)."""


@dataclass
class Meter:
    channel: MeterChannel
    energy: ChannelEnergy
    from_power: bool = False


def _iso(ts_ms: int) -> str:
    return cal.local(ts_ms).isoformat(timespec="minutes")


def check_span(first: dt.date, last: dt.date, max_days: int = MAX_DAYS) -> None:
    if last < first:
        raise InsightError("the end date is before the start date")
    if (last - first).days + 1 > max_days:
        raise InsightError(f"at most {max_days} days per request: ask for a shorter span")
    if not (first.year >= cal.MIN_YEAR and last.year <= cal.MAX_YEAR):
        raise InsightError(f"dates from {cal.MIN_YEAR} to {cal.MAX_YEAR}")


def load_meters(
    conn: Connection, site_id: int, start_ts_ms: int, end_ts_ms: int, now_ms: int
) -> list[Meter]:
    """Every meter channel of the site with its consumption per quarter hour in [start, end):
    counters from their register; power_total only for a device without an energy register."""
    chans = queries.meter_channels(conn, site_id)
    with_register = {(c.gateway_id, c.device_id) for c in chans if c.quantity == "energy_import"}
    used = [
        c
        for c in chans
        if c.quantity in COUNTERS or (c.gateway_id, c.device_id) not in with_register
    ]
    aggs = queries.aggregates(conn, used, start_ts_ms, min(end_ts_ms, now_ms + cal.QUARTER_MS))
    meters = []
    for c in used:
        rows = aggs.get(c.pk, [])
        end = now_ms - now_ms % cal.QUARTER_MS if c.active else None
        if c.quantity == POWER:
            energy = power_energy({a.bucket_ts_ms: a.avg for a in rows}, end)
            meters.append(Meter(c, energy, from_power=True))
        else:
            buckets = [CounterBucket(a.bucket_ts_ms, a.first, a.last, a.min, a.max) for a in rows]
            meters.append(Meter(c, counter_energy(buckets, c.kwh_per_unit, end)))
    return meters


def _period_dict(p: PeriodEnergy) -> dict[str, Any]:
    return {
        "label": p.label,
        "start_ts_ms": p.start_ts_ms,
        "end_ts_ms": p.end_ts_ms,
        "energy": round(p.energy_kwh, 6),
        "interpolated": round(p.interpolated_kwh, 6),
        "measured_share": p.measured_share,
        "interpolated_share": p.interpolated_share,
        "complete": p.complete,
        "missing": [
            {"from_ts_ms": a, "to_ts_ms": b, "from": _iso(a), "to": _iso(b)} for a, b in p.missing
        ],
    }


def _meter_dict(m: Meter) -> dict[str, Any]:
    c = m.channel
    return {
        "meter": c.key,
        "gateway_id": c.gateway_id,
        "channel": c.channel,
        "device_id": c.device_id,
        "name": c.device_name,
        "quantity": c.quantity,
        "carrier": c.carrier,
        "unit": co2.CARRIERS.get(c.carrier, "kWh"),
        "active": c.active,
        "submeter": c.submeter,
        "kwh_per_unit": c.kwh_per_unit if c.quantity == "gas_volume" else None,
        "kwh_per_unit_assumed": c.kwh_per_unit_assumed,
        "from_power": m.from_power,
        "resets": [{"ts_ms": ts, "time": _iso(ts)} for ts in m.energy.resets],
        "first_ts_ms": m.energy.start_ts_ms,
    }


def by_carrier(meters: Sequence[Meter]) -> dict[str, list[ChannelEnergy]]:
    """The meters a building total counts (sub-meters left out), per carrier."""
    out: dict[str, list[ChannelEnergy]] = {}
    for m in meters:
        if not m.channel.submeter:
            out.setdefault(m.channel.carrier, []).append(m.energy)
    return out


def site_energy(
    conn: Connection, site: dict[str, Any], period: str, first: dt.date, last: dt.date, now_ms: int
) -> dict[str, Any]:
    check_span(first, last)
    spans = cal.periods(first, last, period)
    meters = load_meters(conn, site["id"], spans[0][1], spans[-1][2], now_ms)
    carriers = {
        carrier: {
            "unit": co2.CARRIERS.get(carrier, "kWh"),
            "periods": [_period_dict(p) for p in period_energy(chs, spans, now_ms)],
        }
        for carrier, chs in sorted(by_carrier(meters).items())
    }
    return {
        "site_id": site["id"],
        "site": site["name"],
        "period": period,
        "carriers": carriers,
        "meters": [
            {
                **_meter_dict(m),
                "periods": [_period_dict(p) for p in period_energy([m.energy], spans, now_ms)],
            }
            for m in meters
        ],
    }


def org_energy(
    conn: Connection, org_id: int, period: str, first: dt.date, last: dt.date, now_ms: int
) -> dict[str, Any]:
    """Per carrier and period the sum over the organisation's sites; measured_share is the
    mean of the sites' shares (each site that has the carrier counts once)."""
    check_span(first, last)
    sites = []
    totals: dict[str, list[dict[str, Any]]] = {}
    counts: dict[str, list[int]] = {}
    for site in queries.sites_of(conn, [org_id]):
        one = site_energy(conn, site, period, first, last, now_ms)
        sites.append({"site_id": site["id"], "site": site["name"], "carriers": one["carriers"]})
        for carrier, data in one["carriers"].items():
            acc = totals.setdefault(carrier, [
                {"label": p["label"], "start_ts_ms": p["start_ts_ms"], "end_ts_ms": p["end_ts_ms"],
                 "energy": 0.0, "interpolated": 0.0, "measured_share": 0.0,
                 "sites_incomplete": []}
                for p in data["periods"]
            ])  # fmt: skip
            n = counts.setdefault(carrier, [0] * len(acc))
            for i, p in enumerate(data["periods"]):
                acc[i]["energy"] += p["energy"]
                acc[i]["interpolated"] += p["interpolated"]
                if p["measured_share"] is not None:
                    acc[i]["measured_share"] += p["measured_share"]
                    n[i] += 1
                if not p["complete"]:
                    acc[i]["sites_incomplete"].append(site["id"])
    for carrier, acc in totals.items():
        for i, p in enumerate(acc):
            p["measured_share"] = (
                p["measured_share"] / counts[carrier][i] if counts[carrier][i] else None
            )
    carriers = {
        c: {"unit": co2.CARRIERS.get(c, "kWh"), "periods": v} for c, v in sorted(totals.items())
    }
    return {"org_id": org_id, "period": period, "carriers": carriers, "sites": sites}


def quarter_hours(
    conn: Connection,
    site_id: int,
    first: dt.date,
    last: dt.date,
    now_ms: int,
    carrier: str = "electricity",
    meter: str | None = None,
) -> list[QuarterHour]:
    """The building's (or one meter's, "gateway:channel") quarter hours of [first, last]."""
    start = cal.day_range_ms(first)[0]
    end = cal.day_range_ms(last)[1]
    stop = min(end, now_ms - now_ms % cal.QUARTER_MS)
    meters = load_meters(conn, site_id, start, end, now_ms)
    if meter is not None:
        chosen = [m.energy for m in meters if m.channel.key == meter]
        if not chosen:
            raise InsightError(
                f"meter {meter!r}: no energy or power channel of this site has that key "
                "(gateway id:channel number, see .../energy 'meters')"
            )
    else:
        chosen = by_carrier(meters).get(carrier, [])
    return combine(chosen, start, stop) if stop > start else []


def _night(settings: dict[str, Any]) -> NightWindow:
    return NightWindow(settings["night_start_hour"], settings["night_end_hour"])


def base_load_dict(b: BaseLoad) -> dict[str, Any]:
    out = asdict(b)
    out["peak_time"] = None if b.peak_ts_ms is None else _iso(b.peak_ts_ms)
    out["holidays"] = [{**asdict(h), "date": h.date.isoformat()} for h in b.holidays]
    return out


def site_base_load(
    conn: Connection, org_id: int, site_id: int, first: dt.date, last: dt.date, now_ms: int,
    meter: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    check_span(first, last)
    settings = queries.get_settings(conn, org_id)
    qhs = quarter_hours(conn, site_id, first, last, now_ms, meter=meter)
    return {
        "site_id": site_id,
        "meter": meter,
        "night_window": [settings["night_start_hour"], settings["night_end_hour"]],
        **base_load_dict(base_load(qhs, _night(settings))),
    }


def factors(conn: Connection, org_id: int) -> dict[str, dict[int, co2.Factor]]:
    own: dict[str, dict[int, tuple[float, str]]] = {}
    for f in queries.own_factors(conn, org_id):
        own.setdefault(f["carrier"], {})[f["year"]] = (f["kg_per_kwh"], f["source"])
    return co2.merged_factors(own)


def co2_rows(
    carriers: dict[str, Any], fs: dict[str, dict[int, co2.Factor]]
) -> list[dict[str, Any]]:
    rows = []
    for carrier, data in carriers.items():
        if carrier not in co2.ENERGY_CARRIERS:
            continue
        for p in data["periods"]:
            year = cal.local(p["start_ts_ms"]).year
            f = co2.factor_for(fs.get(carrier, {}), year)
            rows.append({
                "carrier": carrier, "label": p["label"], "energy_kwh": p["energy"],
                "kg_co2": None if f is None else p["energy"] * f.kg_per_kwh,
                "factor_kg_per_kwh": None if f is None else f.kg_per_kwh,
                "factor_year": None if f is None else f.year,
                "factor_source": None if f is None else f.source,
                "factor_default": None if f is None else f.default,
                "measured_share": p["measured_share"],
            })  # fmt: skip
    return rows


def co2_of(conn: Connection, org_id: int, energy: dict[str, Any]) -> dict[str, Any]:
    """CO2 per carrier and period of an energy answer (site_energy / org_energy); a period's
    factor is its carrier's factor of the year the period starts in (months and years never
    span two years; use them for reporting)."""
    rows = co2_rows(energy["carriers"], factors(conn, org_id))
    totals: dict[str, float] = {}
    for r in rows:
        if r["kg_co2"] is not None:
            totals[r["label"]] = totals.get(r["label"], 0.0) + r["kg_co2"]
    return {"period": energy["period"], "rows": rows, "total_kg_by_period": totals}


def benchmarks(
    conn: Connection, org_id: int, year: int, now_ms: int, shared: bool
) -> dict[str, Any]:
    """kWh/m² of the year per site, ranked by building type: the organisation's own sites, or
    (shared=True, only for an organisation that shares its own) every sharing organisation's."""
    if not cal.MIN_YEAR <= year <= cal.MAX_YEAR:
        raise InsightError(f"year: {cal.MIN_YEAR}..{cal.MAX_YEAR}")
    org_ids = [org_id]
    if shared:
        if not queries.get_org(conn, org_id)["shares_benchmarks"]:
            raise InsightError(
                "your organisation does not share its benchmarks, so it sees no others: an "
                "admin can turn on shares_benchmarks with PUT /insight/settings"
            )
        org_ids = sorted(set(queries.sharing_orgs(conn)) | {org_id})
    first, last = dt.date(year, 1, 1), dt.date(year, 12, 31)
    rows = []
    for site in queries.sites_of(conn, org_ids):
        energy = site_energy(conn, site, "year", first, last, now_ms)["carriers"]

        def total(
            carriers: Sequence[str], energy: dict[str, Any] = energy
        ) -> tuple[float, list[float]]:
            kwh, shares = 0.0, []
            for c in carriers:
                if c in energy:
                    p = energy[c]["periods"][0]
                    kwh += p["energy"]
                    shares.append(p["measured_share"] or 0.0)
            return kwh, shares

        el, s1 = total(["electricity"])
        heat, s2 = total(co2.HEAT_CARRIERS)
        shares = s1 + s2
        rows.append(
            SiteYear(site["org_id"], site["org_name"], site["id"], site["name"],
                     site["building_type"] or "", site["floor_area_m2"], el, heat,
                     min(shares) if shares else None)
        )  # fmt: skip
    return {"year": year, "shared": shared, "sites": [asdict(r) for r in rank(rows)]}
