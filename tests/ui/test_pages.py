"""What the UI's pages do over HTTP (SQLite, no browser): translations complete in German and
English, the configuration editor's inline errors, diff and rollback, bulk actions, claim
labels, password change, and the live snapshot scoped to one organisation."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from ui_helpers import NOW_MS, Org, client, csrf_of, make_org, sign_in

from fleet import alerts, auth, config_service, rollouts
from fleet.api import queries as q
from fleet.api.deps import Ctx
from fleet.db import tables as t
from fleet.db.engine import read, transaction
from fleet.ui import live
from fleet.ui.security import Session
from fleet.ui.web import HERE, LANGS, messages

pytestmark = pytest.mark.timeout(60)


def test_every_translation_exists_in_german_and_english() -> None:
    de, en = messages("de"), messages("en")
    assert set(de) == set(en)
    assert all(de[k].strip() and en[k].strip() for k in de)
    used: set[str] = set()
    for path in [*(HERE / "templates").glob("*.html"), *HERE.glob("*.py")]:
        text = path.read_text(encoding="utf-8")
        key = r"""["']([a-z_0-9]+\.[a-z_0-9.]+)["']\s*[,)]"""
        used |= set(re.findall(r"\b_\(\s*" + key, text))
        used |= set(re.findall(r"translate\(lang, " + key, text))
    # keys made from a prefix and a value: every value the fleet can produce
    for prefix, values in {
        "state.": (*t.GATEWAY_STATUSES, "online", "offline", "alerting"),
        "role.": auth.ROLES, "role_help.": auth.ROLES, "severity.": t.SEVERITIES,
        "rollout_state.": t.ROLLOUT_STATES, "target_state.": t.TARGET_STATES,
        "alert_kind.": alerts.KINDS,
        "claim_state.": ("open", "used", "expired"), "lang.": LANGS,
        "event_kind.": ("alert", "config", "rejected", "audit"),
        "range.": ("6h", "24h", "7d", "30d", "custom"), "kind.": ("meter", "sensor"),
        "diff.": ("added", "removed", "changed"),
    }.items():  # fmt: skip
        used |= {prefix + v for v in values}
    missing = sorted(k for k in used if k not in de)
    assert not missing, missing


def test_language_is_german_by_default_and_switches_by_cookie(
    ui: Callable[..., TestClient],
) -> None:
    c = ui("town-a", "viewer")
    assert "Übersicht" in c.get("/ui/").text
    r = c.get("/ui/lang/en?next=/ui/gateways", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/gateways"
    assert "fleet_lang=en" in r.headers["set-cookie"]
    page = c.get("/ui/gateways").text
    assert '<html lang="en">' in page and "Overview" in page and "Übersicht" not in page
    c.get("/ui/lang/xx")  # an unknown language changes nothing
    assert '<html lang="en">' in c.get("/ui/").text


def test_config_form_errors_at_the_field_then_a_valid_save(
    ui: Callable[..., TestClient], engine: Engine, orgs: tuple[Org, Org]
) -> None:
    gw = orgs[0].gateway
    c = ui("town-a", "operator")
    page = c.get(f"/ui/gateways/{gw}/config").text
    assert 'name="f:meters[0].unit"' in page
    token = csrf_of(page)
    r = c.post(f"/ui/gateways/{gw}/config",
               data={"csrf": token, "view": "form", "f:meters[0].unit": "999", "action": "save"})  # fmt: skip
    assert r.status_code == 422
    field = re.search(r'<div class="field[^"]*invalid[^"]*" data-path="meters\[0\]\.unit">(.*?)</div>',
                      r.text, re.S)  # fmt: skip
    assert field is not None and 'aria-invalid="true"' in field.group(1)
    assert "must be &lt;= 255" in field.group(1)
    with read(engine) as conn:
        assert config_service.latest_version(conn, gw) == 1  # nothing stored
    # preview: the diff against the current version, nothing stored
    r = c.post(f"/ui/gateways/{gw}/config",
               data={"csrf": token, "view": "form", "f:meters[0].unit": "7", "action": "preview"})  # fmt: skip
    assert r.status_code == 200 and "meters[0].unit" in r.text and "geändert" in r.text
    r = c.post(f"/ui/gateways/{gw}/config",
               data={"csrf": token, "view": "form", "f:meters[0].unit": "7", "comment": "Einheit 7",
                     "action": "save"}, follow_redirects=False)  # fmt: skip
    assert r.status_code == 303
    with read(engine) as conn:
        doc = config_service.get_document(conn, gw)
    assert (doc.version, doc.doc["meters"][0]["unit"], doc.comment) == (2, 7, "Einheit 7")
    # the raw view refuses broken JSON with a clear message
    r = c.post(f"/ui/gateways/{gw}/config", data={"csrf": token, "view": "raw", "raw": "{"})
    assert r.status_code == 422 and "Kein gültiges JSON" in r.text
    # diff between versions and roll back to the first
    assert "Unterschiede von Version 1 zu 2" in c.get(f"/ui/gateways/{gw}/config?from=1").text
    r = c.post(f"/ui/gateways/{gw}/config/rollback", data={"csrf": token, "version": "1"},
               follow_redirects=False)  # fmt: skip
    assert r.status_code == 303
    with read(engine) as conn:
        doc = config_service.get_document(conn, gw)
    assert doc.version == 3 and doc.doc["meters"][0]["unit"] == 1


def test_bulk_tag_and_rollout(
    ui: Callable[..., TestClient], engine: Engine, orgs: tuple[Org, Org]
) -> None:
    a = orgs[0]
    c = ui("town-a", "operator")
    token = csrf_of(c.get("/ui/gateways").text)
    r = c.post("/ui/gateways/bulk", data={"csrf": token, "action": "tag", "tag": "pilot",
                                          "gw": [a.gateway]}, follow_redirects=False)  # fmt: skip
    assert r.status_code == 303
    assert "pilot" in c.get("/ui/gateways?tag=pilot").text
    r = c.post("/ui/gateways/bulk", data={"csrf": token, "action": "rollout", "gw": [a.gateway],
               "patch": '{"uplink": {"batch_interval_s": 45}}', "batch_percent": "50"},
               follow_redirects=False)  # fmt: skip
    assert r.status_code == 303
    rid = int(r.headers["location"].split("/")[-1].split("?")[0])
    with read(engine) as conn:
        got = rollouts.get(conn, rid, a.id)
    assert got["change"]["patch"] == {"uplink": {"batch_interval_s": 45}}
    assert got["batch_share"] == 0.5
    r = c.post("/ui/gateways/bulk", data={"csrf": token, "action": "rollout", "gw": [a.gateway],
               "patch": '{"uplink": {"batch_interval_s": -1}}'})  # fmt: skip
    assert r.status_code == 422 and "batch_interval_s" in r.text


def test_claim_labels_show_working_tokens_once(
    ui: Callable[..., TestClient], engine: Engine, orgs: tuple[Org, Org]
) -> None:
    c = ui("town-a", "technician")
    token = csrf_of(c.get("/ui/provisioning").text)
    r = c.post("/ui/provisioning/claims",
               data={"csrf": token, "count": "2", "ttl_days": "3", "label": "Kita"})  # fmt: skip
    assert r.status_code == 200
    tokens = re.findall(r'data-claim-token="\d+">(claim_[A-Za-z0-9_-]+)<', r.text)
    assert len(tokens) == 2 and r.text.count('<svg class="qr"') == 2
    assert r.headers["cache-control"] == "no-store"
    with transaction(engine) as conn:
        claimed = auth.exchange_claim(conn, tokens[0], NOW_MS + 1000)
    assert claimed.org_id == orgs[0].id
    page = c.get("/ui/provisioning").text
    assert tokens[1] not in page  # shown once, never listed
    r = c.post("/ui/provisioning/claims", data={"csrf": token, "count": "0", "ttl_days": "3"})
    assert r.status_code == 422 and 'aria-invalid="true"' in r.text


def test_password_change(engine: Engine, orgs: tuple[Org, Org]) -> None:
    c = sign_in(client(engine), "town-a", "viewer")
    token = csrf_of(c.get("/ui/password").text)
    r = c.post("/ui/password", data={"csrf": token, "current": "nope", "new": "short",
                                     "repeat": "short"})  # fmt: skip
    assert r.status_code == 422 and r.text.count('aria-invalid="true"') == 2
    r = c.post("/ui/password", data={"csrf": token, "current": "password-viewer",
               "new": "a-new-password", "repeat": "a-new-password"}, follow_redirects=False)  # fmt: skip
    assert r.status_code == 303
    sign_in(client(engine), "town-a", "viewer", password="a-new-password")


def test_sign_out_ends_the_session(engine: Engine, orgs: tuple[Org, Org]) -> None:
    c = sign_in(client(engine), "town-a", "viewer")
    token = csrf_of(c.get("/ui/").text)
    assert c.post("/ui/logout", data={"csrf": token}, follow_redirects=False).status_code == 303
    assert c.get("/ui/", follow_redirects=False).status_code == 303  # back to the sign-in form


def test_live_snapshot_is_scoped_to_the_organisation(engine: Engine, orgs: tuple[Org, Org]) -> None:
    a, b = orgs
    session_b = Session(auth.Principal(org_id=b.id, role="admin"), "x")
    cx = Ctx(client(engine).app.state.settings)
    got = live.snapshot(session_b, cx, "en", a.gateway, a.rollout_id)
    assert set(got["gateways"]) == {b.gateway, b.pending}
    assert "values" not in got and "rollout" not in got
    session_a = Session(auth.Principal(org_id=a.id, role="viewer"), "x")
    got = live.snapshot(session_a, cx, "de", a.gateway, a.rollout_id)
    assert got["gateways"][a.gateway]["state"] == "offline"
    with transaction(engine) as conn:
        q.patch_gateway(conn, a.gateway, {"online": True})
    got = live.snapshot(session_a, cx, "de", a.gateway, a.rollout_id)
    assert got["gateways"][a.gateway]["state"] == "alerting"  # online, with an open alert
    assert got["gateways"][a.gateway]["label"] == "Alarm"
    assert got["rollout"]["label"] == "läuft" and got["rollout"]["total"] == 1
    assert got["alerts"] == 1


def test_screenshots_command_has_help() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "fleet.ui.screenshots", "--help"],
                         capture_output=True, text=True, timeout=60, check=True).stdout  # fmt: skip
    assert "docs/screenshots" in out


def test_every_form_field_has_a_label_and_unknown_pages_are_404(
    ui: Callable[..., TestClient], orgs: tuple[Org, Org]
) -> None:
    a = orgs[0]
    c = ui("town-a", "admin")
    pages = ["/ui/", "/ui/gateways", f"/ui/gateways/{a.gateway}", f"/ui/gateways/{a.gateway}/devices/1",
             f"/ui/gateways/{a.gateway}/config", f"/ui/gateways/{a.gateway}/config?view=raw",
             "/ui/provisioning", "/ui/rollouts", f"/ui/rollouts/{a.rollout_id}", "/ui/alerts",
             "/ui/users", "/ui/tokens", "/ui/audit", "/ui/password"]  # fmt: skip
    for path in pages:
        html = c.get(path).text
        labelled = set(re.findall(r'<label[^>]*\sfor="([^"]+)"', html))
        for tag in re.findall(r"<(?:input|select|textarea)\b[^>]*>", html):
            if re.search(r'type="(hidden|submit)"', tag):
                continue
            ident = re.search(r'\sid="([^"]+)"', tag)
            named = "aria-label=" in tag or (ident is not None and ident.group(1) in labelled)
            # a checkbox inside its <label> is labelled too
            wrapped = re.search(r"<label[^>]*>\s*" + re.escape(tag), html) is not None
            assert named or wrapped, (path, tag)
    for path in ("/ui/nope", f"/ui/gateways/{a.gateway}/devices/abc", "/ui/rollouts/abc"):
        r = c.get(path)
        assert r.status_code == 404 and "Nicht gefunden" in r.text, path
    assert c.get("/api/v1/nope").headers["content-type"] == "application/problem+json"


def test_pages_and_actions_work_on_postgresql(pg_engine: Engine) -> None:
    a, b = make_org(pg_engine, "town-a"), make_org(pg_engine, "town-b")
    c = sign_in(client(pg_engine), "town-a", "admin")
    for path in ("/ui/", "/ui/gateways?tag=school&sort=-last_seen_ts_ms&q=gw",
                 f"/ui/gateways/{a.gateway}", f"/ui/gateways/{a.gateway}/devices/1?range=7d",
                 f"/ui/gateways/{a.gateway}/config?from=1", "/ui/provisioning", "/ui/rollouts",
                 f"/ui/rollouts/{a.rollout_id}", "/ui/alerts?history=1", "/ui/users", "/ui/audit"):  # fmt: skip
        assert c.get(path).status_code == 200, path
    assert c.get(f"/ui/gateways/{b.gateway}").status_code == 404
    token = csrf_of(c.get("/ui/").text)
    r = c.post(f"/ui/gateways/{a.gateway}/config",
               data={"csrf": token, "view": "form", "f:meters[0].unit": "5", "action": "save"},
               follow_redirects=False)  # fmt: skip
    assert r.status_code == 303
    with read(pg_engine) as conn:
        assert config_service.get_document(conn, a.gateway).doc["meters"][0]["unit"] == 5
