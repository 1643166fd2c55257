"""The SQL of the energy insight: sites and their meter channels with the insight settings
(carrier, calorific value, sub-meter), quarter-hour aggregates via fleet.telemetry.storage,
emission factors and organisation settings. No computation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from fleet.db import tables as t
from fleet.db import upsert
from fleet.telemetry import storage
from fleet.telemetry.storage import Aggregate

# Counter quantities: carrier and the factor from the channel's unit to kWh (None: set per
# channel; gas falls back to GAS_KWH_PER_M3 and says so).
COUNTERS: dict[str, tuple[str, float | None]] = {
    "energy_import": ("electricity", 0.001),
    "heat_energy": ("district_heating", 0.001),
    "gas_volume": ("natural_gas", None),
    "water_volume": ("water", 1.0),
}
POWER = "power_total"  # a meter without energy_import: its load profile from average power
# A round placeholder for kWh per m³ of natural gas (Zustandszahl x Brennwert, about 9.5-11.5
# in Germany, L-gas lower): set the value from the gas bill per channel.
GAS_KWH_PER_M3 = 10.0


@dataclass(frozen=True)
class MeterChannel:
    pk: int
    gateway_id: str
    channel: int
    device_id: int
    device_name: str
    quantity: str
    unit: str
    active: bool
    carrier: str
    kwh_per_unit: float
    kwh_per_unit_assumed: bool
    submeter: bool

    @property
    def key(self) -> str:
        return f"{self.gateway_id}:{self.channel}"


def get_org(conn: Connection, org_id: int) -> dict[str, Any]:
    o = t.organisations.c
    row = conn.execute(
        sa.select(o.id, o.name, o.slug, o.shares_benchmarks).where(o.id == org_id)
    ).mappings()
    return dict(row.one())


def get_site(conn: Connection, org_id: int, site_id: int) -> dict[str, Any] | None:
    s = t.sites.c
    row = (
        conn.execute(
            sa.select(s.id, s.org_id, s.name, s.address, s.floor_area_m2, s.building_type).where(
                s.id == site_id, s.org_id == org_id
            )
        )
        .mappings()
        .first()
    )
    return None if row is None else dict(row)


def sites_of(conn: Connection, org_ids: Sequence[int]) -> list[dict[str, Any]]:
    s = t.sites.c
    o = t.organisations.c
    rows = conn.execute(
        sa.select(
            s.id, s.org_id, s.name, s.floor_area_m2, s.building_type, o.name.label("org_name")
        )
        .join(t.organisations, o.id == s.org_id)
        .where(s.org_id.in_(list(org_ids)))
        .order_by(s.org_id, s.name)
    ).mappings()
    return [dict(r) for r in rows]


def sharing_orgs(conn: Connection) -> list[int]:
    o = t.organisations.c
    return [
        int(i) for i in conn.execute(sa.select(o.id).where(o.shares_benchmarks.is_(True))).scalars()
    ]


def meter_channels(conn: Connection, site_id: int) -> list[MeterChannel]:
    """The counter (and power_total) channels of the gateways of a site, with their insight
    settings, old ones (inactive, or on a revoked gateway) included: they carry the series
    before a replacement."""
    c, g, d, ic = t.channels.c, t.gateways.c, t.devices.c, t.insight_channels.c
    rows = conn.execute(
        sa.select(
            c.id,
            c.gateway_id,
            c.channel,
            c.device_id,
            c.quantity,
            c.unit,
            c.active,
            g.status,
            d.name.label("device_name"),
            ic.carrier,
            ic.kwh_per_unit,
            ic.submeter,
        )
        .join(t.gateways, g.id == c.gateway_id)
        .outerjoin(t.devices, sa.and_(d.gateway_id == c.gateway_id, d.device_id == c.device_id))
        .outerjoin(t.insight_channels, ic.channel_pk == c.id)
        .where(g.site_id == site_id, c.quantity.in_([*COUNTERS, POWER]))
        .order_by(c.gateway_id, c.channel)
    ).mappings()
    out = []
    for r in rows:
        default_carrier, default_scale = COUNTERS.get(r["quantity"], ("electricity", 0.001))
        scale = r["kwh_per_unit"] or default_scale
        assumed = scale is None
        out.append(
            MeterChannel(
                pk=int(r["id"]),
                gateway_id=r["gateway_id"],
                channel=int(r["channel"]),
                device_id=int(r["device_id"]),
                device_name=r["device_name"] or "",
                quantity=r["quantity"],
                unit=r["unit"],
                # A meter removed from the configuration, or on a revoked gateway, is out of
                # service after its last reading; any other is expected to read up to now.
                active=bool(r["active"]) and r["status"] == "accepted",
                carrier=r["carrier"] or default_carrier,
                kwh_per_unit=GAS_KWH_PER_M3 if scale is None else float(scale),
                kwh_per_unit_assumed=assumed,
                submeter=bool(r["submeter"]),
            )
        )
    return out


def aggregates(
    conn: Connection, chans: Sequence[MeterChannel], start_ts_ms: int, end_ts_ms: int
) -> dict[int, list[Aggregate]]:
    """channel pk -> quarter-hour aggregates in [start, end), plus for each channel the last
    quarter hour with data before start and the first one from end on (so a gap across either
    edge can be interpolated)."""
    by_gateway: dict[str, list[MeterChannel]] = {}
    for ch in chans:
        by_gateway.setdefault(ch.gateway_id, []).append(ch)
    out: dict[int, list[Aggregate]] = {}
    for gw, group in by_gateway.items():
        got = storage.aggregates_15min(
            conn, gw, [ch.channel for ch in group], start_ts_ms, end_ts_ms
        )
        for ch in group:
            rows = got.get(ch.channel, [])
            before = _last_before(conn, ch, start_ts_ms)
            if before is not None:
                rows = [before, *rows]
            after = _first_from(conn, ch, end_ts_ms)
            if after is not None:
                rows.append(after)
            out[ch.pk] = rows
    return out


def _edge(conn: Connection, ch: MeterChannel, ts_ms: int, later: bool) -> Aggregate | None:
    a = t.telemetry_15min.c
    cols = (a.bucket_ts_ms, a.count, a.min, a.max, a.sum, a.first, a.last)
    q = sa.select(*cols).where(a.channel_pk == ch.pk)
    if later:
        q = q.where(a.bucket_ts_ms >= ts_ms).order_by(a.bucket_ts_ms)
    else:
        q = q.where(a.bucket_ts_ms < ts_ms).order_by(a.bucket_ts_ms.desc())
    row = conn.execute(q.limit(1)).first()
    if row is None:
        return None
    ts, n, mn, mx, sm, first, last = row
    return Aggregate(int(ts), n, mn, mx, sm / n, first, last, last - first)


def _last_before(conn: Connection, ch: MeterChannel, ts_ms: int) -> Aggregate | None:
    """The channel's last quarter hour with data before ts_ms: in the day before (which may
    still be staged), else in the compacted aggregates."""
    day = storage.aggregates_15min(conn, ch.gateway_id, [ch.channel], ts_ms - 86_400_000, ts_ms)
    if day.get(ch.channel):
        return day[ch.channel][-1]
    return _edge(conn, ch, ts_ms, later=False)


def _first_from(conn: Connection, ch: MeterChannel, ts_ms: int) -> Aggregate | None:
    """The channel's first quarter hour with data from ts_ms on: the next day (which may still
    be staged), else the compacted aggregates."""
    day = storage.aggregates_15min(conn, ch.gateway_id, [ch.channel], ts_ms, ts_ms + 86_400_000)
    if day.get(ch.channel):
        return day[ch.channel][0]
    return _edge(conn, ch, ts_ms, later=True)


def channel_in_site(conn: Connection, site_id: int, gateway_id: str, channel: int) -> int | None:
    c, g = t.channels.c, t.gateways.c
    pk = conn.execute(
        sa.select(c.id)
        .join(t.gateways, g.id == c.gateway_id)
        .where(g.site_id == site_id, c.gateway_id == gateway_id, c.channel == channel)
    ).scalar()
    return None if pk is None else int(pk)


def put_channel_settings(
    conn: Connection, pk: int, carrier: str | None, kwh_per_unit: float | None, submeter: bool
) -> None:
    upsert.insert_or_update(
        conn,
        t.insight_channels,
        [
            {
                "channel_pk": pk,
                "carrier": carrier,
                "kwh_per_unit": kwh_per_unit,
                "submeter": submeter,
            }
        ],
        ("channel_pk",),
        ("carrier", "kwh_per_unit", "submeter"),
    )


# --- settings and emission factors ---------------------------------------------------------

SETTINGS_DEFAULTS = {
    "night_start_hour": 0,
    "night_end_hour": 4,
    "base_load_rise_share": 0.2,
    "baseline_weeks": 4,
}


def get_settings(conn: Connection, org_id: int) -> dict[str, Any]:
    s = t.insight_settings.c
    row = (
        conn.execute(
            sa.select(
                s.night_start_hour, s.night_end_hour, s.base_load_rise_share, s.baseline_weeks
            ).where(s.org_id == org_id)
        )
        .mappings()
        .first()
    )
    out = dict(SETTINGS_DEFAULTS if row is None else row)
    out["shares_benchmarks"] = bool(get_org(conn, org_id)["shares_benchmarks"])
    return out


def put_settings(conn: Connection, org_id: int, values: dict[str, Any], now_ms: int) -> None:
    shares = values.pop("shares_benchmarks", None)
    if shares is not None:
        conn.execute(
            sa.update(t.organisations)
            .where(t.organisations.c.id == org_id)
            .values(shares_benchmarks=shares)
        )
    row = {
        **SETTINGS_DEFAULTS,
        **{k: v for k, v in get_settings(conn, org_id).items() if k in SETTINGS_DEFAULTS},
    }
    row.update(values)
    upsert.insert_or_update(
        conn,
        t.insight_settings,
        [{"org_id": org_id, "updated_ts_ms": now_ms, **row}],
        ("org_id",),
        (*SETTINGS_DEFAULTS, "updated_ts_ms"),
    )


def own_factors(conn: Connection, org_id: int) -> list[dict[str, Any]]:
    f = t.insight_emission_factors.c
    rows = conn.execute(
        sa.select(f.carrier, f.year, f.kg_per_kwh, f.source, f.updated_ts_ms)
        .where(f.org_id == org_id)
        .order_by(f.carrier, f.year)
    ).mappings()
    return [dict(r) for r in rows]


def put_factor(
    conn: Connection, org_id: int, carrier: str, year: int, kg: float, source: str, now_ms: int
) -> None:
    upsert.insert_or_update(
        conn,
        t.insight_emission_factors,
        [{"org_id": org_id, "carrier": carrier, "year": year, "kg_per_kwh": kg, "source": source,
          "updated_ts_ms": now_ms}],
        ("org_id", "carrier", "year"),
        ("kg_per_kwh", "source", "updated_ts_ms"),
    )  # fmt: skip


def delete_factor(conn: Connection, org_id: int, carrier: str, year: int) -> bool:
    f = t.insight_emission_factors.c
    done = conn.execute(
        sa.delete(t.insight_emission_factors).where(
            f.org_id == org_id, f.carrier == carrier, f.year == year
        )
    )
    return done.rowcount == 1
