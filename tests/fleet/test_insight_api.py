"""The energy insight through the API on SQLite and PostgreSQL, with readings that went through
the real ingest and storage (part compacted, part still staged): energy per day across a gap
and a counter reset (expected values worked out by hand below), CO2 with the default and an
own factor, the CSV layouts, HTML and PDF reports, benchmarks shared between organisations,
settings, and a base-load rise that opens an alert."""

from __future__ import annotations

import base64
import re
import zlib
from typing import Any

import pytest
from api_helpers import add_gateway, bearer, client, config, make_org
from insight_data import ENERGY, MIN5, NOW, at, ingest_school
from insight_data import ingest as _ingest
from sqlalchemy import Engine

from fleet import alerts
from fleet.db import registry
from fleet.db.engine import read, transaction
from fleet.insight import calendar as cal
from fleet.insight import watch


def _channels(db: Engine, gw: str) -> None:
    with transaction(db) as conn:
        registry.sync_devices_from_config(conn, gw, {**config(), "gateway": gw})


@pytest.fixture
def world(db: Engine) -> Any:
    """town-a's school reads 3 kW (250 Wh every 5 minutes) from Sun 11 Jan 2026 23:00 local;
    no readings 12 Jan 22:00 .. 13 Jan 02:00; the counter is reset to 0 at 13 Jan 12:00; the
    last reading is at 13 Jan 19:55."""
    a = make_org(db, "town-a", roles=("viewer", "operator", "admin"))
    _channels(db, a.gateway)
    ingest_school(db, a.gateway)
    return a


def test_energy_per_day_across_a_gap_and_a_reset(db: Engine, world: Any) -> None:
    a = world
    c = client(db, NOW)
    r = c.get(
        f"/api/v1/insight/sites/{a.site_id}/energy",
        params={"period": "day", "start": "2026-01-12", "end": "2026-01-13"},
        headers=bearer(a.tokens["viewer"]),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    day1, day2 = body["carriers"]["electricity"]["periods"]
    # Quarter hours hold readings at :00, :05, :10 -> 750 Wh from one quarter hour's last
    # reading to the next. Day 1: 88 quarter hours (00:00..21:45) = 66 kWh. The gap: from
    # 21:55 to 02:00 the counter rose 49 x 250 = 12 250 Wh, spread over the 16 missing quarter
    # hours (765.625 Wh each), 8 of them on day 1: 6.125 kWh interpolated -> 72.125 kWh.
    assert day1["energy"] == pytest.approx(72.125)
    assert day1["interpolated"] == pytest.approx(6.125)
    assert day1["measured_share"] == pytest.approx(88 / 96) and day1["missing"] == []
    # Day 2: 6.125 interpolated; 02:00 only its own 500 Wh (after the gap); 02:15..11:45
    # 39 x 750 = 29 250; 12:00 the reset: its own 500 Wh; 12:15..19:45 31 x 750 = 23 250.
    # 20:00..24:00 has no data: missing. 59.625 kWh.
    assert day2["energy"] == pytest.approx(59.625)
    assert day2["measured_share"] == pytest.approx(72 / 96)
    assert [(m["from_ts_ms"], m["to_ts_ms"]) for m in day2["missing"]] == [
        (at(2026, 1, 13, 20), at(2026, 1, 14))
    ]
    assert day2["missing"][0]["from"] == "2026-01-13T20:00+01:00"
    (meter,) = [m for m in body["meters"] if m["quantity"] == "energy_import"]
    assert [x["ts_ms"] for x in meter["resets"]] == [at(2026, 1, 13, 12)]
    # The organisation's total is its one site's.
    r = c.get(
        "/api/v1/insight/organisation/energy",
        params={"period": "month", "start": "2026-01-01", "end": "2026-01-31"},
        headers=bearer(a.tokens["viewer"]),
    )
    (month,) = r.json()["carriers"]["electricity"]["periods"]
    # + 11 Jan 23:00..23:45: 500 Wh (first quarter hour, its own readings) + 3 x 750.
    assert month["energy"] == pytest.approx(2.75 + 72.125 + 59.625)  # 134.5 kWh
    assert month["sites_incomplete"] == [a.site_id]
    # Marked as a sub-meter, the meter stays listed but leaves the building's total.
    put = {"gateway_id": a.gateway, "channel": ENERGY, "submeter": True}
    url = f"/api/v1/insight/sites/{a.site_id}/channel-settings"
    assert c.put(url, json=put, headers=bearer(a.tokens["operator"])).status_code == 200
    r = c.get(f"/api/v1/insight/sites/{a.site_id}/energy", headers=bearer(a.tokens["viewer"]))
    assert r.json()["carriers"] == {} and r.json()["meters"][0]["submeter"] is True
    wrong = {**put, "channel": 999}
    assert c.put(url, json=wrong, headers=bearer(a.tokens["operator"])).status_code == 422
    # Another organisation sees none of it: its own meter never sent a reading.
    b = make_org(db, "town-b", roles=("admin",))
    r = c.get("/api/v1/insight/organisation/energy", headers=bearer(b.tokens["admin"]))
    (b_month,) = r.json()["carriers"]["electricity"]["periods"]
    assert b_month["energy"] == 0 and b_month["measured_share"] == 0


def test_a_gateway_swap_continues_the_series(db: Engine) -> None:
    org = make_org(db, "town-d", roles=("viewer",))
    new_gw = add_gateway(db, org.id, "gw-town-d-2", site_id=org.site_id)
    for gw in (org.gateway, new_gw):
        _channels(db, gw)

    def rising(t0: int, t1: int, start_wh: float) -> list[tuple[int, int, float]]:
        # 6 kW: 500 Wh every 5 minutes, readings at :00, :05, :10 of each quarter hour
        return [(ENERGY, t, start_wh + 500 * (t - t0) // MIN5) for t in range(t0, t1, MIN5)]

    now = at(2026, 2, 3)
    _ingest(db, org.gateway, rising(at(2026, 2, 2), at(2026, 2, 2, 10), 7_000_000), now)
    _ingest(db, new_gw, rising(at(2026, 2, 2, 11), now, 0), now)
    with transaction(db) as conn:
        registry.set_gateway_status(conn, org.gateway, "revoked")  # the old one is taken out
    r = client(db, now).get(
        f"/api/v1/insight/sites/{org.site_id}/energy",
        params={"period": "day", "start": "2026-02-02", "end": "2026-02-02"},
        headers=bearer(org.tokens["viewer"]),
    )
    (day,) = r.json()["carriers"]["electricity"]["periods"]
    # Old: its first quarter hour only within itself (1 000 Wh), 39 more x 1 500 = 59.5 kWh.
    # New, from 11:00: 1 000 + 51 x 1 500 = 77.5 kWh. 10:00..11:00 no meter was in service.
    assert day["energy"] == pytest.approx(137.0)
    assert day["measured_share"] == pytest.approx(92 / 96)
    assert [(m["from_ts_ms"], m["to_ts_ms"]) for m in day["missing"]] == [
        (at(2026, 2, 2, 10), at(2026, 2, 2, 11))
    ]


def test_co2_with_the_default_and_an_own_factor(db: Engine, world: Any) -> None:
    a = world
    c = client(db, NOW)
    q = {"period": "month", "start": "2026-01-01", "end": "2026-01-31"}
    url = f"/api/v1/insight/sites/{a.site_id}/co2"
    (row,) = c.get(url, params=q, headers=bearer(a.tokens["viewer"])).json()["rows"]
    # No UBA value for 2026 yet: the newest one, 2024's 0.363 kg/kWh. 134.5 x 0.363.
    assert (row["factor_year"], row["factor_default"]) == (2024, True)
    assert row["kg_co2"] == pytest.approx(48.8235)
    put = {"carrier": "electricity", "year": 2026, "kg_per_kwh": 0.5, "source": "Stadtwerke"}
    assert (
        c.put(
            "/api/v1/insight/emission-factors", json=put, headers=bearer(a.tokens["operator"])
        ).status_code
        == 403
    )
    r = c.put("/api/v1/insight/emission-factors", json=put, headers=bearer(a.tokens["admin"]))
    assert r.status_code == 200, r.text
    (row,) = c.get(url, params=q, headers=bearer(a.tokens["viewer"])).json()["rows"]
    assert row["kg_co2"] == pytest.approx(67.25) and row["factor_source"] == "Stadtwerke"
    r = c.delete(
        "/api/v1/insight/emission-factors/electricity/2026", headers=bearer(a.tokens["admin"])
    )
    assert r.status_code == 204
    (row,) = c.get(url, params=q, headers=bearer(a.tokens["viewer"])).json()["rows"]
    assert row["kg_co2"] == pytest.approx(48.8235)


def test_load_profile_csv_layouts(db: Engine, world: Any) -> None:
    a = world
    c = client(db, NOW)
    url = f"/api/v1/insight/sites/{a.site_id}/load-profile.csv"
    q = {"start": "2026-01-12", "end": "2026-01-12"}
    r = c.get(url, params=q, headers=bearer(a.tokens["viewer"]))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.split("\r\n")
    assert lines[0] == "start,end,power_kw,energy_kwh,status"
    assert lines[1] == "2026-01-12T00:00+01:00,2026-01-12T00:15+01:00,3.000,0.750,measured"
    assert len(lines) == 1 + 96 + 1  # header, 96 quarter hours, the empty string after CRLF
    r = c.get(url, params={**q, "format": "de"}, headers=bearer(a.tokens["viewer"]))
    rows = r.content.decode("utf-8-sig").split("\r\n")
    assert rows[0] == "Datum;von;bis;UTC-Versatz;Leistung kW;Energie kWh;Status"
    assert rows[1] == "12.01.2026;00:00;00:15;+01:00;3,000;0,750;gemessen"
    # 22:00: 765.625 Wh interpolated = 3.0625 kW (rounded half to even)
    assert rows[89] == "12.01.2026;22:00;22:15;+01:00;3,062;0,766;interpoliert"
    r = c.get(
        f"/api/v1/insight/sites/{a.site_id}/load-profile",
        params=q,
        headers=bearer(a.tokens["viewer"]),
    )
    qh = r.json()["quarter_hours"]
    assert len(qh) == 96 and qh[0]["power_kw"] == pytest.approx(3.0)
    r = c.get(
        f"/api/v1/insight/sites/{a.site_id}/base-load", params=q, headers=bearer(a.tokens["viewer"])
    )
    bl = r.json()
    assert bl["night_base_load_kw"] == pytest.approx(3.0) and bl["peak_kw"] == pytest.approx(3.0)
    bad = c.get(
        url, params={"start": "2026-01-01", "end": "2026-03-01"}, headers=bearer(a.tokens["viewer"])
    )
    assert bad.status_code == 422 and "31 days" in bad.json()["detail"]


def _pdf_text(pdf: bytes) -> bytes:
    """The page content streams of a reportlab PDF (ASCII85 + Flate), where its text is."""
    out = b""
    pattern = rb"/ASCII85Decode /FlateDecode \] /Length \d+\n>>\nstream\r?\n(.*?)endstream"
    for m in re.finditer(pattern, pdf, re.S):
        out += zlib.decompress(base64.a85decode(m.group(1).strip().removesuffix(b"~>")))
    return out


def test_reports_html_and_pdf(db: Engine, world: Any) -> None:
    a = world
    c = client(db, NOW)
    h = bearer(a.tokens["viewer"])
    r = c.get(
        f"/api/v1/insight/sites/{a.site_id}/report.html", params={"month": "2026-01"}, headers=h
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert "School town-a" in html and "2026-01" in html
    assert "134,5 kWh" in html  # the month's electricity
    assert "48,8" in html  # kg CO2
    assert "<svg" in html and "13.01.2026 20:00" in html  # a chart; the missing range
    en = c.get(
        f"/api/v1/insight/sites/{a.site_id}/report.html",
        params={"month": "2026-01", "lang": "en"},
        headers=h,
    )
    assert "134.5 kWh" in en.text and "Base load" in en.text
    r = c.get(
        f"/api/v1/insight/sites/{a.site_id}/report.pdf", params={"month": "2026-01"}, headers=h
    )
    assert r.status_code == 200 and r.content.startswith(b"%PDF")
    text = _pdf_text(r.content)
    assert b"134,5 kWh" in text and b"48,8" in text and b"School town-a" in text
    r = c.get("/api/v1/insight/organisation/report.html", params={"month": "2026-01"}, headers=h)
    assert "School town-a" in r.text and "134,5" in r.text
    r = c.get("/api/v1/insight/organisation/report.pdf", params={"month": "2026-01"}, headers=h)
    assert r.content.startswith(b"%PDF")


def test_benchmarks_are_shared_only_between_sharing_organisations(db: Engine, world: Any) -> None:
    a, b = world, make_org(db, "town-b", roles=("admin",))
    c = client(db, NOW)
    with transaction(db) as conn:
        registry.create_site(conn, a.id, "Pool", floor_area_m2=500, building_type="pool")
    r = c.get(
        "/api/v1/insight/benchmarks", params={"year": 2026}, headers=bearer(a.tokens["viewer"])
    )
    school = next(s for s in r.json()["sites"] if s["site_name"] == "School town-a")
    assert school["total_kwh_per_m2"] == pytest.approx(134.5 / 1000) and school["rank"] == 1
    shared = {"year": 2026, "scope": "shared"}
    r = c.get("/api/v1/insight/benchmarks", params=shared, headers=bearer(b.tokens["admin"]))
    assert r.status_code == 422 and "shares_benchmarks" in r.json()["detail"]
    for org in (a, b):
        r = c.put(
            "/api/v1/insight/settings",
            json={"shares_benchmarks": True},
            headers=bearer(org.tokens["admin"]),
        )
        assert r.status_code == 200 and r.json()["shares_benchmarks"] is True
    r = c.get("/api/v1/insight/benchmarks", params=shared, headers=bearer(b.tokens["admin"]))
    names = {(s["org_name"], s["site_name"]) for s in r.json()["sites"]}
    assert ("Town-A", "School town-a") in names and ("Town-B", "School town-b") in names


def test_a_rising_base_load_opens_an_alert(db: Engine) -> None:
    org = make_org(db, "town-c", roles=("admin",))
    _channels(db, org.gateway)
    now = at(2026, 3, 2)  # Monday 00:00; the last week is 23 Feb .. 1 Mar
    start = at(2026, 1, 25)  # five weeks before, and a day
    readings, value, t = [], 0.0, start
    while t < now:
        kw = 4.0 if t >= at(2026, 2, 23) else 2.0  # the night base load doubles in the last week
        if cal.local(t).hour >= 6:
            kw += 10.0
        value += kw * 250  # Wh per quarter hour, read at its end
        readings.append((ENERGY, t + 899_000, value))
        t += 900_000
    _ingest(db, org.gateway, readings, now)
    c = client(db, now)
    r = c.post("/api/v1/insight/base-load/check", headers=bearer(org.tokens["admin"]))
    assert r.status_code == 200, r.text
    (verdict,) = r.json()["meters"]
    assert verdict["alert"] and verdict["baseline_kw"] == pytest.approx(2.0)
    assert verdict["last_week_kw"] == pytest.approx(4.0)
    assert watch.run_base_load_check(db, now) == 1  # the periodic check: the same alert
    with read(db) as conn:
        items, _ = alerts.list_alerts(conn, org.id, kind=alerts.BASE_LOAD_RISE)
    assert len(items) == 1 and items[0]["device_id"] == 1
    assert items[0]["details"]["site_id"] == org.site_id
