"""Base-load watch: compares each electricity main meter's night base load of the last seven
days with the weeks before and opens a "base_load_rise" alert (fleet/alerts.py) on the
meter's gateway and device when it rose by more than the organisation's threshold; closes it
when it is back. run_base_load_check is meant to run about once an hour (in a thread: it
reads five weeks of quarter hours per meter); POST /insight/base-load/check runs it for one
organisation."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from fleet import alerts
from fleet.db import tables as t
from fleet.db.engine import is_postgresql, transaction
from fleet.insight import calendar as cal
from fleet.insight import queries
from fleet.insight.energy import combine
from fleet.insight.profile import NightWindow, base_load, base_load_rise
from fleet.insight.service import load_meters

_WATCH_LOCK = 0x464C49  # PostgreSQL advisory lock: one instance checks an organisation at a time


def check_org(conn: Connection, org_id: int, now_ms: int) -> list[dict[str, Any]]:
    """Verdicts for every electricity main meter of the organisation's sites (opening and
    closing alerts as it goes). The last week is the seven local days before today."""
    settings = queries.get_settings(conn, org_id)
    night = NightWindow(settings["night_start_hour"], settings["night_end_hour"])
    weeks = int(settings["baseline_weeks"])
    today = cal.local(now_ms).date()
    bounds = [
        cal.day_range_ms(today - dt.timedelta(days=7 * k))[0] for k in range(weeks + 1, -1, -1)
    ]
    out = []
    for site in queries.sites_of(conn, [org_id]):
        meters = load_meters(conn, site["id"], bounds[0], bounds[-1], now_ms)
        for m in meters:
            c = m.channel
            if c.carrier != "electricity" or c.submeter or not c.active:
                continue
            weekly = [
                base_load(combine([m.energy], a, b), night).night_base_load_kw
                for a, b in zip(bounds, bounds[1:], strict=False)
            ]
            verdict = base_load_rise(weekly, float(settings["base_load_rise_share"]))
            details = {
                "site_id": site["id"],
                "site": site["name"],
                "meter": c.key,
                "last_week_kw": verdict.last_kw,
                "baseline_kw": verdict.baseline_kw,
                "rise_share": verdict.rise_share,
                "threshold_share": settings["base_load_rise_share"],
            }
            if verdict.alert:
                alerts.open_alert(
                    conn,
                    c.gateway_id,
                    alerts.BASE_LOAD_RISE,
                    now_ms,
                    "warning",
                    c.device_id,
                    details,
                )
            elif verdict.last_kw is not None:
                alerts.close_alert(conn, c.gateway_id, alerts.BASE_LOAD_RISE, now_ms, c.device_id)
            out.append({**details, "alert": verdict.alert})
    return out


def run_base_load_check(engine: Engine, now_ms: int) -> int:
    """check_org for every organisation, each in its own transaction; the number of meters
    whose base load rose. Several fleet instances may run it: on PostgreSQL an organisation
    another instance is checking is skipped, so no alert is opened twice."""
    with engine.connect() as conn:
        org_ids = [int(i) for i in conn.execute(sa.select(t.organisations.c.id)).scalars()]
    raised = 0
    for org_id in org_ids:
        with transaction(engine) as conn:
            if (
                is_postgresql(conn)
                and not conn.execute(
                    sa.select(sa.func.pg_try_advisory_xact_lock(_WATCH_LOCK, org_id))
                ).scalar()
            ):
                continue
            raised += sum(v["alert"] for v in check_org(conn, org_id, now_ms))
    return raised
