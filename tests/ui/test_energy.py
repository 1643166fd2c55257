"""The energy pages over HTTP (SQLite, no browser) with readings that went through the real
ingest and storage: the municipality's month and a building's day show the figures worked out
by hand in tests/fleet/test_insight_api.py (the same readings), with the missing data in
words; load profile CSV in both layouts; reports; kWh/m² ranking, shared only between sharing
organisations; another organisation's building is not found; only admins set emission
factors and the insight settings (night window, alert, sharing), and only with the form's CSRF
token."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_helpers import config
from fastapi.testclient import TestClient
from insight_data import NOW, ingest_school
from sqlalchemy import Engine
from ui_helpers import Org, client, csrf_of, sign_in

from fleet import audit
from fleet.api import queries as api_queries
from fleet.db import registry
from fleet.db.engine import read, transaction
from fleet.insight import calendar as cal
from fleet.insight import co2, queries
from fleet.ui.web import messages

pytestmark = pytest.mark.timeout(60)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture
def world(engine: Engine, orgs: tuple[Org, Org]) -> tuple[Org, Org]:
    """As tests/fleet/test_insight_api.py: town-a's school reads 3 kW (250 Wh every 5 minutes)
    from Sun 11 Jan 2026 23:00 local; nothing 12 Jan 22:00 .. 13 Jan 02:00; the counter is
    reset to 0 at 13 Jan 12:00; the last reading is at 13 Jan 19:55. Its floor area is 269 m²
    (134.5 kWh in January: 0.5 kWh/m²). town-b's school has no readings."""
    a, _ = orgs
    with transaction(engine) as conn:
        registry.sync_devices_from_config(conn, a.gateway, {**config(), "gateway": a.gateway})
        api_queries.patch_site(conn, a.site_id, {"floor_area_m2": 269, "building_type": "school"})
    ingest_school(engine, a.gateway)
    return orgs


def signed_in(engine: Engine, org: str, role: str) -> TestClient:
    return sign_in(client(engine, NOW), org, role)


def text_of(html: str) -> str:
    """The page's text with tags and runs of whitespace collapsed, for phrases."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_every_generated_key_is_translated() -> None:
    de, en = messages("de"), messages("en")
    keys = [f"carrier.{k}" for k in co2.CARRIERS]
    keys += [f"{p}.{v}" for p in ("period", "energy.prev_", "energy.next_") for v in cal.PERIODS]
    keys += ["sub.day", "sub.month", "energy.profile_day", "energy.profile_week"]
    keys += [f"energy.per_sub.{p}" for p in ("week", "month", "year")]
    keys = [k.replace("_.", "_") for k in keys]
    assert [k for k in keys if k not in de or k not in en] == []


def test_the_municipality_month_with_its_gaps_co2_and_ranking(
    engine: Engine, world: tuple[Org, Org]
) -> None:
    a, b = world
    c = signed_in(engine, "town-a", "viewer")
    r = c.get("/ui/energy")  # default: the month of today (14 Jan 2026)
    assert r.status_code == 200, r.text
    page = text_of(r.text)
    assert "2026-01 (01.01.2026 – 31.01.2026)" in page
    # 2.75 + 72.125 + 59.625 kWh (hand-computed in test_insight_api); 2024's UBA factor 0.363
    assert "134,5 kWh" in page and "48,8" in page
    # 164 measured quarter hours of the 1 248 up to now; the gaps in words
    assert "13,1 % gemessen, 1,3 % interpoliert" in page
    assert (
        "Daten fehlen: 01.01.2026 00:00 – 11.01.2026 23:00; 13.01.2026 20:00 – 14.01.2026 00:00"
        in page
    )
    assert "1 Gebäude mit Lücken: School town-a" in page
    assert "School town-b" not in page  # another organisation's building
    assert 'href="/ui/energy/report.html?month=2026-01"' in r.text
    assert 'href="/ui/energy/report.pdf?month=2025-12"' in r.text
    assert re.search(r'data-chart="sites"><svg[^>]*data-points="1"', r.text)
    # the previous day alone: 72.125 kWh, 8 of its 96 quarter hours interpolated
    day = text_of(c.get("/ui/energy?period=day&date=2026-01-12").text)
    assert "72,1 kWh" in day and "91,7 % gemessen, 8,3 % interpoliert" in day
    assert "Daten fehlen" not in day
    # English: decimal points, the same figures
    c.get("/ui/lang/en")
    en = text_of(c.get("/ui/energy?period=month&date=2026-01-05").text)
    assert "134.5 kWh" in en and "Data missing: 2026-01-01 00:00 – 2026-01-11 23:00" in en

    # kWh/m²: 134.5 kWh / 269 m² = 0.5; town-a does not share, so no cross ranking
    c.get("/ui/lang/de")
    bench = c.get("/ui/energy?year=2026").text
    row = re.search(r"<tr class=\"own\">(.*?)</tr>", bench, re.S)
    assert row is not None and "School town-a" in row.group(1)
    assert "1 von 1" in row.group(1) and "<strong>0,5</strong>" in row.group(1)
    assert "teilt ihre Kennwerte nicht" in bench and "Town-B" not in bench
    with transaction(engine) as conn:
        for org in (a, b):
            queries.put_settings(conn, org.id, {"shares_benchmarks": True}, NOW)
    shared = text_of(c.get("/ui/energy?year=2026").text)
    assert "Town-B School town-b" in shared and "Town-A School town-a" in shared


def test_a_building_day_load_profile_csv_base_load_and_reports(
    engine: Engine, world: tuple[Org, Org]
) -> None:
    a, _ = world
    c = signed_in(engine, "town-a", "viewer")
    url = f"/ui/energy/sites/{a.site_id}"
    r = c.get(url, params={"period": "day", "date": "2026-01-12"})
    assert r.status_code == 200, r.text
    page = text_of(r.text)
    assert "72,1 kWh davon 6,1 interpoliert" in page
    assert "91,7 % gemessen, 8,3 % interpoliert" in page
    assert "0,27" in page  # kWh/m²: 72.125 / 269
    # night (0-4 h) and peak: 3 kW throughout; 26.2 kWh CO2 = 72.125 x 0.363
    assert "Nacht-Grundlast (0–4 Uhr) 3,00 kW" in page and "Spitzenlast (15 min) 3,00 kW" in page
    assert "26,2" in page
    assert re.search(r'data-chart="profile"><svg[^>]*data-points="96"', r.text)
    csv_rfc = f"{url}/load-profile.csv?start=2026-01-12&amp;end=2026-01-12"
    assert csv_rfc in r.text and csv_rfc + "&amp;format=de" in r.text
    csv = c.get(f"{url}/load-profile.csv", params={"start": "2026-01-12", "end": "2026-01-12"})
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.split("\r\n")
    assert lines[1] == "2026-01-12T00:00+01:00,2026-01-12T00:15+01:00,3.000,0.750,measured"
    assert len(lines) == 1 + 96 + 1
    de = c.get(
        f"{url}/load-profile.csv",
        params={"start": "2026-01-12", "end": "2026-01-12", "format": "de"},
    )
    rows = de.content.decode("utf-8-sig").split("\r\n")
    assert rows[89] == "12.01.2026;22:00;22:15;+01:00;3,062;0,766;interpoliert"
    too_long = c.get(f"{url}/load-profile.csv", params={"start": "2026-01-01", "end": "2026-03-01"})
    assert too_long.status_code == 422 and "höchstens 31 Tage" in too_long.text

    # the month: bars for the three days with data, the gaps, the reset, New Year without data
    month = c.get(url, params={"period": "month", "date": "2026-01-13", "profile": "week"})
    assert re.search(r'data-chart="periods-electricity"><svg[^>]*data-points="3"', month.text)
    page = text_of(month.text)
    assert "134,5 kWh" in page and "1× Zählerstand zurückgesetzt" in page
    assert "01.01.2026 Neujahr keine Daten" in page
    assert "13.01.2026 20:00 – 14.01.2026 00:00" in page
    assert re.search(
        r'data-chart="profile"><svg[^>]*data-points="176"', month.text
    )  # week: 96 + 80 quarter hours with data
    assert f'href="{url}/report.html?month=2026-01"' in month.text

    assert f'href="{url}"' in c.get(f"/ui/gateways/{a.gateway}").text  # linked from its gateway
    report = c.get(f"{url}/report.html", params={"month": "2026-01"})
    assert report.status_code == 200 and "134,5 kWh" in report.text
    csp = report.headers["content-security-policy"]
    assert "style-src 'sha256-" in csp and "unsafe-inline" not in csp and "script-src" not in csp
    pdf = c.get(f"{url}/report.pdf", params={"month": "2026-01"})
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    org_report = c.get("/ui/energy/report.html", params={"month": "2026-01"})
    assert "School town-a" in org_report.text and "134,5" in org_report.text
    assert c.get("/ui/energy/report.pdf").content.startswith(b"%PDF")
    assert c.get("/ui/energy/report.html", params={"month": "2026-13"}).status_code == 422


def test_another_organisations_building_is_not_found(
    engine: Engine, world: tuple[Org, Org]
) -> None:
    a, _ = world
    c = signed_in(engine, "town-b", "admin")
    base = f"/ui/energy/sites/{a.site_id}"
    for path in (base, f"{base}/load-profile.csv", f"{base}/report.html", f"{base}/report.pdf",
                 "/ui/energy/sites/999999", "/ui/energy/sites/x"):  # fmt: skip
        r = c.get(path)
        assert r.status_code == 404, path
        assert "134,5" not in r.text and "3.000" not in r.text
    page = text_of(c.get("/ui/energy?date=2026-01-13").text)
    assert "School town-b" in page and "School town-a" not in page and "134,5" not in page
    assert "School town-a" not in c.get("/ui/energy/report.html?month=2026-01").text


def test_only_admins_set_emission_factors_and_only_with_the_csrf_token(
    engine: Engine, world: tuple[Org, Org]
) -> None:
    a, _ = world
    operator = signed_in(engine, "town-a", "operator")
    page = operator.get("/ui/energy/factors").text
    assert "Umweltbundesamt" in page or "UBA" in page  # the defaults name their source
    assert 'name="kg_per_kwh"' not in page  # no form for an operator
    form = {"csrf": csrf_of(page), "carrier": "electricity", "year": "2026",
            "kg_per_kwh": "0,4", "source": "Stadtwerke"}  # fmt: skip
    assert operator.post("/ui/energy/factors", data=form).status_code == 403

    admin = signed_in(engine, "town-a", "admin")
    page = admin.get("/ui/energy/factors").text
    assert admin.post("/ui/energy/factors", data={**form, "csrf": ""}).status_code == 403
    assert (
        admin.post(
            "/ui/energy/factors", data={**form, "csrf": csrf_of(page)[:-2] + "xx"}
        ).status_code
        == 403
    )
    bad = admin.post(
        "/ui/energy/factors", data={**form, "csrf": csrf_of(page), "kg_per_kwh": "viel"}
    )
    assert bad.status_code == 422 and "eine Zahl von 0 bis 5" in bad.text
    assert 'value="viel"' in bad.text  # the input is kept for correcting
    with read(engine) as conn:
        assert queries.own_factors(conn, a.id) == []
    r = admin.post(
        "/ui/energy/factors", data={**form, "csrf": csrf_of(page)}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/ui/energy/factors?done=factor_set"
    listed = text_of(admin.get("/ui/energy/factors?done=factor_set").text)
    assert "Emissionsfaktor gespeichert." in listed and "Strom 2026 0,4 Stadtwerke" in listed
    # January's CO2 with the own factor: 134.5 x 0.4 kg
    assert "53,8" in text_of(admin.get("/ui/energy?date=2026-01-13").text)
    with read(engine) as conn:
        items, _ = audit.entries(conn, a.id, 10, 0)
    assert any(e["action"] == "insight.factor.set" for e in items)

    clear = {"csrf": csrf_of(page), "carrier": "electricity", "year": "2026"}
    assert operator.post("/ui/energy/factors/delete", data=clear).status_code == 403
    r = admin.post("/ui/energy/factors/delete", data=clear, follow_redirects=False)
    assert r.status_code == 303
    assert admin.post("/ui/energy/factors/delete", data=clear).status_code == 404  # gone
    assert "48,8" in text_of(admin.get("/ui/energy?date=2026-01-13").text)


def test_energy_pages_have_no_inline_code_and_label_their_fields(
    engine: Engine, world: tuple[Org, Org]
) -> None:
    a, _ = world
    c = signed_in(engine, "town-a", "admin")
    site = f"/ui/energy/sites/{a.site_id}"
    # odd arguments show a sensible period instead of failing
    paths = ("/ui/energy", site, "/ui/energy/factors", "/ui/energy/settings",
             "/ui/energy?period=year&date=2026-01-01",
             "/ui/energy?period=week&date=x", f"{site}?period=week&date=2001-01-01&profile=week",
             f"{site}?period=day&date=2099-12-31", f"{site}?period=year&date=1999-05-05",
             f"{site}?period=bogus&profile=bogus&year=abc")  # fmt: skip
    for path in paths:
        r = c.get(path)
        assert r.status_code == 200, path
        assert not re.search(r"<style\b|\sstyle=|<script>|\son[a-z]+=", r.text), path
        for field_id in re.findall(r'<(?:input|select)[^>]*\sid="([^"]+)"', r.text):
            assert f'for="{field_id}"' in r.text, (path, field_id)


def test_an_admin_moves_the_night_window_and_the_base_load_follows(
    engine: Engine, world: tuple[Org, Org]
) -> None:
    a, _ = world
    viewer = signed_in(engine, "town-a", "viewer")
    day = f"/ui/energy/sites/{a.site_id}?period=day&date=2026-01-13"
    # 13 Jan: 00-02 h interpolated (not counted), 02:00-02:15 and 12:00-12:15 measured at 2 kW
    # (the gap's edge, the counter reset), every other measured quarter hour 3 kW, 72 of them
    # (53.5 kWh in 18 h). Night 0-4 h: 2 kW once, 3 kW seven times = 2.875 kW; share
    # 2.875 x 18 / 53.5 = 96.7 %
    page = text_of(viewer.get(day).text)
    assert "Nacht-Grundlast (0–4 Uhr) 2,88 kW" in page and "96,7 %" in page
    assert 'href="/ui/energy/settings"' in viewer.get("/ui/energy").text

    admin = signed_in(engine, "town-a", "admin")
    form_page = admin.get("/ui/energy/settings").text
    for name, value in (("night_start_hour", "0"), ("night_end_hour", "4"),
                        ("base_load_rise_pct", "20"), ("baseline_weeks", "4")):  # fmt: skip
        assert re.search(rf'name="{name}"[^>]*value="{value}"', form_page), name
    assert "mittlere Leistung des Gebäudes in diesen Stunden" in form_page  # help in words
    r = admin.post(
        "/ui/energy/settings",
        data={"csrf": csrf_of(form_page), "night_start_hour": "22", "night_end_hour": "3",
              "base_load_rise_pct": "25,5", "baseline_weeks": "6", "shares_benchmarks": "on"},
        follow_redirects=False,
    )  # fmt: skip
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/energy/settings?done=settings_saved"
    assert "Einstellungen gespeichert." in admin.get(r.headers["location"]).text
    with read(engine) as conn:
        assert queries.get_settings(conn, a.id) == {
            "night_start_hour": 22, "night_end_hour": 3, "base_load_rise_share": 0.255,
            "baseline_weeks": 6, "shares_benchmarks": True,
        }  # fmt: skip
        items, _ = audit.entries(conn, a.id, 10, 0)
    assert [e["target"] for e in items if e["action"] == "insight.settings"] == ["insight"]

    # across midnight, 22-3 h: nothing measured 22-24 h, 02-03 h: 2, 3, 3, 3 kW = 2.75 kW;
    # share 2.75 x 18 / 53.5 = 92.5 %
    page = text_of(viewer.get(day).text)
    assert "Nacht-Grundlast (22–3 Uhr) 2,75 kW" in page and "92,5 %" in page
    # the viewer reads the values, has no form; sharing now shows the shared ranking
    shown = viewer.get("/ui/energy/settings").text
    assert 'name="night_start_hour"' not in shown
    assert "Nachtfenster 22–3 Uhr" in text_of(shown) and "25,5 %" in shown
    assert "Town-A School town-a" in text_of(viewer.get("/ui/energy?year=2026").text)


def test_only_admins_change_the_insight_settings_with_csrf_and_valid_values(
    engine: Engine, orgs: tuple[Org, Org]
) -> None:
    a, _ = orgs
    operator = signed_in(engine, "town-a", "operator")
    page = operator.get("/ui/energy/settings")
    assert page.status_code == 200 and 'name="night_start_hour"' not in page.text
    assert "Ändern dürfen nur Admins" in page.text and "0–4 Uhr" in page.text
    good = {"night_start_hour": "1", "night_end_hour": "5", "base_load_rise_pct": "20",
            "baseline_weeks": "4"}  # fmt: skip
    r = operator.post("/ui/energy/settings", data={**good, "csrf": csrf_of(page.text)})
    assert r.status_code == 403

    admin = signed_in(engine, "town-a", "admin")
    token = csrf_of(admin.get("/ui/energy/settings").text)
    assert admin.post("/ui/energy/settings", data=good).status_code == 403  # no token
    assert admin.post("/ui/energy/settings", data={**good, "csrf": ""}).status_code == 403

    bad = admin.post("/ui/energy/settings", data={**good, "csrf": token, "night_start_hour": "25"})
    assert bad.status_code == 422
    # the message right after its field, which refers to it (aria-describedby)
    field = re.search(
        r'<input id="s-night_start_hour"[^>]*>\s*<span class="field-error" '
        r'id="s-night_start_hour-error">(.*?)</span>\s*<small',
        bad.text,
        re.S,
    )
    assert field is not None and "Beginn: eine volle Stunde von 0 bis 23." in field.group(1)
    assert re.search(r'id="s-night_start_hour"[^>]*value="25"[^>]*aria-invalid="true"', bad.text)
    assert 'value="5"' in bad.text  # the other entries are kept
    same = admin.post("/ui/energy/settings", data={**good, "csrf": token, "night_end_hour": "1"})
    assert same.status_code == 422
    assert re.search(r'id="s-night_end_hour-error".*?vom Beginn unterscheiden', same.text, re.S)
    admin.get("/ui/lang/en")
    rise = admin.post(
        "/ui/energy/settings", data={**good, "csrf": token, "base_load_rise_pct": "0"}
    )
    assert rise.status_code == 422 and 'id="s-base_load_rise_pct-error"' in rise.text
    assert "Rise: a number above 0" in rise.text
    with read(engine) as conn:
        assert queries.get_settings(conn, a.id)["night_start_hour"] == 0  # nothing saved
        items, _ = audit.entries(conn, a.id, 10, 0)
    assert not any(e["action"] == "insight.settings" for e in items)


@pytest.fixture
def served(engine: Engine, world: tuple[Org, Org]) -> Iterator[str]:
    """The fleet app (clock at NOW) served by uvicorn on a free port: the base URL."""
    import uvicorn

    app = client(engine, NOW).app
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_in_chromium_the_pages_and_the_report_keep_the_csp(served: str) -> None:
    """Headless Debian chromium: nothing on the energy pages or the report is blocked by the
    CSP (the report's <style> is allowed by its hash, so its layout applies), the period form
    and the load-profile download work."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(15_000)
        blocked: list[str] = []
        page.on(
            "console", lambda m: blocked.append(m.text) if "Security Policy" in m.text else None
        )
        page.goto(served + "/ui/login?next=/ui/energy")
        page.get_by_label("Organisation").fill("town-a")
        page.get_by_label("E-Mail").fill("viewer@town-a.example")
        page.get_by_label("Passwort").fill("password-viewer")
        page.get_by_role("button", name="Anmelden").click()
        expect(page.locator("h1")).to_contain_text("Energie · Town-A")
        expect(page.locator("table.energy-sites")).to_contain_text("134,5 kWh")
        page.get_by_role("link", name="School town-a").first.click()
        page.get_by_label("Zeitraum", exact=True).select_option("day")
        page.get_by_label("Tag im Zeitraum").fill("2026-01-12")
        page.get_by_role("button", name="Anwenden").click()
        expect(page.locator("main")).to_contain_text("72,1 kWh")
        assert page.locator('[data-chart="profile"] rect.bar').count() == 96
        with page.expect_download() as download:
            page.get_by_role("link", name=re.compile("semikolon", re.I)).click()
        lines = Path(download.value.path()).read_bytes().decode("utf-8-sig").split("\r\n")
        assert lines[1] == "12.01.2026;00:00;00:15;+01:00;3,000;0,750;gemessen"
        page.goto(served + "/ui/energy/report.html?month=2026-01")
        expect(page.locator("#month")).to_have_text("2026-01")
        # body { margin: 2em } of the report's own stylesheet: applied, so not blocked
        assert page.evaluate("getComputedStyle(document.body).marginTop") == "32px"
        browser.close()
    assert blocked == []
