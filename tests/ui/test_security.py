"""Security of the web UI over HTTP (SQLite, no browser): session cookie flags, CSRF on every
state-changing form, organisation isolation (another organisation's ids are 404, as in the
API), login rate limiting, the CSP and the other security headers."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from ui_helpers import Org, client, csrf_of, sign_in

from fleet.api import queries as q
from fleet.db.engine import read

pytestmark = pytest.mark.timeout(60)

PAGES = [
    "/ui/", "/ui/gateways", "/ui/gateways/{gw}", "/ui/gateways/{gw}/devices/1",
    "/ui/gateways/{gw}/config", "/ui/gateways/{gw}/config?view=raw", "/ui/provisioning",
    "/ui/rollouts", "/ui/rollouts/{rollout}", "/ui/alerts", "/ui/alerts?history=1",
    "/ui/users", "/ui/tokens", "/ui/audit", "/ui/password",
]  # fmt: skip


def _pages(org: Org) -> list[str]:
    return [p.format(gw=org.gateway, rollout=org.rollout_id) for p in PAGES]


def _status(engine: Engine, org: Org, gateway_id: str) -> str:
    with read(engine) as conn:
        return q.get_gateway(conn, org.id, gateway_id)["status"]  # type: ignore[index]


def test_pages_redirect_to_sign_in_and_back(engine: Engine, orgs: tuple[Org, Org]) -> None:
    c = client(engine)
    r = c.get("/", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/ui/"
    for path in _pages(orgs[0]):
        r = c.get(path, follow_redirects=False)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/ui/login?next=/ui/"), path
    assert c.get("/ui/live").status_code == 401
    # after sign-in the form goes where it was asked to, but never to another site
    c2 = client(engine)
    form = c2.get("/ui/login").text
    r = c2.post(
        "/ui/login",
        data={"csrf": csrf_of(form), "organisation": "town-a", "email": "viewer@town-a.example",
              "password": "password-viewer", "next": "//evil.example/x"},
        follow_redirects=False,
    )  # fmt: skip
    assert r.headers["location"] == "/ui/"


def test_every_page_renders_for_an_admin(
    ui: Callable[..., TestClient], orgs: tuple[Org, Org]
) -> None:
    c = ui("town-a", "admin")
    for path in _pages(orgs[0]):
        r = c.get(path)
        assert r.status_code == 200, (path, r.text[:500])
        assert '<html lang="de">' in r.text


def test_session_cookie_is_httponly_samesite_and_secure_over_tls(
    engine: Engine, orgs: tuple[Org, Org]
) -> None:
    for base, secure in (("http://testserver", False), ("https://testserver", True)):
        c = TestClient(client(engine).app, base_url=base)
        form = c.get("/ui/login").text
        r = c.post(
            "/ui/login",
            data={"csrf": csrf_of(form), "organisation": "town-a",
                  "email": "admin@town-a.example", "password": "password-admin"},
            follow_redirects=False,
        )  # fmt: skip
        cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("fleet_ui="))
        flags = {part.strip().lower() for part in cookie.split(";")}
        assert "httponly" in flags and "samesite=lax" in flags and "path=/ui" in flags
        assert ("secure" in flags) is secure, cookie
        if secure:
            assert "strict-transport-security" in c.get("/ui/").headers
    # the UI's cookie is not an API credential (the API has its own, SameSite=Strict)
    c = TestClient(client(engine).app)
    sign_in(c, "town-a", "admin")
    assert c.get("/api/v1/me").status_code == 401


def test_state_changing_forms_need_the_csrf_token(
    ui: Callable[..., TestClient], engine: Engine, orgs: tuple[Org, Org]
) -> None:
    a = orgs[0]
    c = ui("town-a", "admin")
    other = ui("town-a", "operator")  # a second session: its token must not work for c
    other_token = csrf_of(other.get("/ui/gateways").text)
    posts = [
        (f"/ui/gateways/{a.gateway}/revoke", {}),
        ("/ui/gateways/bulk", {"action": "tag", "tag": "x", "gw": a.gateway}),
        (f"/ui/gateways/{a.gateway}/config", {"view": "raw", "raw": "{}"}),
        (f"/ui/rollouts/{a.rollout_id}/halt", {}),
        ("/ui/provisioning/claims", {"count": "1", "ttl_days": "1"}),
        (f"/ui/alerts/{a.alert_id}/acknowledge", {}),
        ("/ui/tokens", {"name": "x"}),
        ("/ui/password", {"current": "password-admin", "new": "x" * 12, "repeat": "x" * 12}),
        ("/ui/logout", {}),
    ]
    for path, data in posts:
        for token in (None, "wrong", other_token):
            body = dict(data) if token is None else {**data, "csrf": token}
            r = c.post(path, data=body, follow_redirects=False)
            assert r.status_code == 403, (path, token, r.status_code)
            assert "Sicherheitsprüfung" in r.text
    # nothing happened: the gateway is still accepted, the rollout still running, still signed in
    assert _status(engine, a, a.gateway) == "accepted"
    assert c.get(f"/ui/rollouts/{a.rollout_id}").status_code == 200
    # and with the right token it works
    r = c.post(f"/ui/rollouts/{a.rollout_id}/halt", data={"csrf": csrf_of(c.get("/ui/").text)},
               follow_redirects=False)  # fmt: skip
    assert r.status_code == 303
    # the sign-in form is protected too (double-submit cookie)
    fresh = client(engine)
    r = fresh.post("/ui/login", data={"organisation": "town-a", "email": "admin@town-a.example",
                                      "password": "password-admin", "csrf": "guess"})  # fmt: skip
    assert r.status_code == 403


def test_another_organisations_ids_are_not_found(
    ui: Callable[..., TestClient], engine: Engine, orgs: tuple[Org, Org]
) -> None:
    a, b = orgs
    c = ui("town-b", "admin")  # an admin of town-b: every role check passes, the org check not
    token = csrf_of(c.get("/ui/").text)
    foreign = [f"/ui/gateways/{a.gateway}", f"/ui/gateways/{a.gateway}/devices/1",
               f"/ui/gateways/{a.gateway}/config", f"/ui/gateways/{a.pending}",
               f"/ui/rollouts/{a.rollout_id}"]  # fmt: skip
    for path in foreign:
        r = c.get(path)
        assert r.status_code == 404, path
        assert "Nicht gefunden" in r.text and "School town-a" not in r.text
    assert c.get(f"/ui/gateways/{a.gateway}/devices/1/export.csv").status_code == 404
    for path in (f"/ui/gateways/{a.gateway}/revoke", f"/ui/gateways/{a.pending}/approve"):
        assert c.post(path, data={"csrf": token}).status_code == 404
    r = c.post("/ui/gateways/bulk", data={"csrf": token, "action": "tag", "tag": "x",
                                          "gw": a.gateway})  # fmt: skip
    assert r.status_code == 404
    assert _status(engine, a, a.gateway) == "accepted"
    assert _status(engine, a, a.pending) == "pending"
    # lists show only the own organisation
    listing = c.get("/ui/gateways").text
    assert b.gateway in listing and a.gateway not in listing
    assert a.gateway not in c.get("/ui/").text + c.get("/ui/alerts").text
    live = c.get("/ui/provisioning").text
    assert a.pending not in live


def test_roles_limit_actions(
    ui: Callable[..., TestClient], engine: Engine, orgs: tuple[Org, Org]
) -> None:
    a = orgs[0]
    viewer = ui("town-a", "viewer")
    token = csrf_of(viewer.get("/ui/").text)
    assert viewer.get("/ui/users").status_code == 403
    assert viewer.get("/ui/audit").status_code == 403
    assert viewer.get("/ui/provisioning").status_code == 403
    r = viewer.post(f"/ui/gateways/{a.gateway}/revoke", data={"csrf": token})
    assert r.status_code == 403 and _status(engine, a, a.gateway) == "accepted"
    page = viewer.get(f"/ui/gateways/{a.gateway}").text
    assert "/revoke" not in page  # no button it may not press


def test_login_is_rate_limited(engine: Engine, orgs: tuple[Org, Org]) -> None:
    c = client(engine)

    def attempt(password: str) -> int:
        form = c.get("/ui/login").text
        return c.post(
            "/ui/login",
            data={"csrf": csrf_of(form), "organisation": "town-a",
                  "email": "admin@town-a.example", "password": password},
            follow_redirects=False,
        ).status_code  # fmt: skip

    assert [attempt("wrong") for _ in range(5)] == [401] * 5
    form = c.get("/ui/login").text
    r = c.post("/ui/login", data={"csrf": csrf_of(form), "organisation": "town-a",
                                  "email": "admin@town-a.example", "password": "password-admin"})  # fmt: skip
    assert r.status_code == 429  # even the right password waits
    assert int(r.headers["retry-after"]) > 0
    assert "Zu viele Fehlversuche" in r.text


def test_security_headers_and_no_inline_code(
    ui: Callable[..., TestClient], orgs: tuple[Org, Org]
) -> None:
    c = ui("town-a", "admin")
    for path in [*_pages(orgs[0]), "/ui/login"]:
        r = c.get(path)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp
        assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["cache-control"] == "no-store"
        html = r.text
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path  # only external scripts
        assert not re.search(r"<style\b|\sstyle=", html), path  # no inline styles
        assert not re.search(r"\son[a-z]+=", html), path  # no inline event handlers
        assert "http://" not in html.replace("http://www.w3.org/2000/svg", ""), path  # no CDN
    static = c.get("/ui/static/ui.css")
    assert static.status_code == 200 and "cache-control" not in static.headers
    # the API's own docs page keeps working (the strict CSP is only on /ui)
    assert "content-security-policy" not in c.get("/api/docs").headers
