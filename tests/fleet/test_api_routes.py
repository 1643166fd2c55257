"""Every API route, enumerated from app.routes: anonymous requests get 401, a role below the
route's minimum gets 403, another organisation's ids get 404 and lists never show another
organisation's data. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from typing import Any

import pytest
from api_helpers import ROLES, Org, bearer, client, config, make_org, min_role
from fastapi.routing import APIRoute
from sqlalchemy import Engine

from fleet.api import PUBLIC_ROUTES, ApiSettings, api_routes, create_app


def _routes(engine: Engine) -> list[tuple[str, str, APIRoute]]:
    """Every route, checked against the app's OpenAPI paths so that none is missed."""
    routes = api_routes()
    spec = create_app(ApiSettings(engine)).openapi()
    served = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert {(m, p) for m, p, _ in routes} == served
    return routes


def _path(path: str, org: Org) -> str:
    values = {
        "gateway_id": org.gateway,
        "site_id": org.site_id,
        "user_id": min(org.user_ids.values()),
        "token_id": min(org.token_ids.values()),
        "claim_id": org.claim_id,
        "rollout_id": org.rollout_id,
        "alert_id": org.alert_id,
        "version": 1,
        "carrier": "electricity",  # /insight/emission-factors/{carrier}/{year}
        "year": 2023,
    }
    return re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]), path)


# Valid bodies and queries, so that only authentication, roles and scoping decide the answer.
BODIES: dict[str, Any] = {
    "/auth/login": {"email": "x@y.z", "password": "p", "organisation": "x"},
    "/organisation": {"name": "Renamed"},
    "/users": {"email": "new@x.example", "role": "viewer", "password": "long-password"},
    "/users/{user_id}": {"name": "Someone"},
    "/tokens": {"name": "t"},
    "/sites": {"name": "Depot"},
    "/sites/{site_id}": {"address": "Markt 1"},
    "/gateways/{gateway_id}": {"name": "renamed"},
    "/claim-tokens": {"count": 1},
    "/gateways/{gateway_id}/config": config(),
    "/gateways/{gateway_id}/config/rollback": {"version": 1},
    "/rollouts": {"patch": {"uplink": {"batch_interval_s": 20}}},
    "/insight/settings": {"night_end_hour": 5},
    "/insight/emission-factors": {"carrier": "electricity", "year": 2023, "kg_per_kwh": 0.3},
    "/insight/sites/{site_id}/channel-settings": {"gateway_id": "gw-x-1", "channel": 284},
}
QUERIES = {
    "/gateways/{gateway_id}/telemetry": {"channel": 284, "start_ts_ms": 0, "end_ts_ms": 3600000},
    "/gateways/{gateway_id}/config/diff": {"from": 1},
}


def _call(c: Any, method: str, path: str, org: Org, token: str | None) -> Any:
    key = path.removeprefix("/api/v1")
    kwargs: dict[str, Any] = {
        "params": QUERIES.get(key, {}),
        "headers": bearer(token) if token else {},
    }
    if method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = BODIES.get(key, {})
    return c.request(method, _path(path, org), **kwargs)


@pytest.fixture
def world(db: Engine) -> tuple[Org, Org]:
    return make_org(db, "town-a"), make_org(db, "town-b", roles=("admin",))


def test_every_route_is_authenticated_and_declares_a_role(db: Engine) -> None:
    routes = _routes(db)
    assert len(routes) >= 40
    for method, path, route in routes:
        public = (method, path) in PUBLIC_ROUTES
        assert public or min_role(route) is not None, f"{method} {path} has no role check"


def _anonymous_requests_get_401(db: Engine, world: tuple[Org, Org]) -> None:
    a, _ = world
    c = client(db)
    for method, path, _ in _routes(db):
        if (method, path) in PUBLIC_ROUTES:
            continue
        r = _call(c, method, path, a, None)
        assert r.status_code == 401, f"{method} {path}: {r.status_code} {r.text}"
        assert r.headers["content-type"].startswith("application/problem+json")
        r = _call(c, method, path, a, "fleet_not-a-real-token")
        assert r.status_code == 401, f"{method} {path} with a bad token: {r.status_code}"


def _roles_below_the_minimum_get_403(db: Engine, world: tuple[Org, Org]) -> None:
    a, _ = world
    c = client(db)
    checked = 0
    for method, path, route in _routes(db):
        need = min_role(route)
        if need is None or need == "viewer":
            continue
        for role in ROLES[: ROLES.index(need)]:
            r = _call(c, method, path, a, a.tokens[role])
            assert r.status_code == 403, f"{method} {path} as {role}: {r.status_code} {r.text}"
            checked += 1
    assert checked >= 25


def _other_organisations_ids_are_not_found(db: Engine, world: tuple[Org, Org]) -> None:
    a, b = world
    c = client(db)
    checked = 0
    for method, path, _ in _routes(db):
        if "{" not in path or (method, path) in PUBLIC_ROUTES:
            continue
        r = _call(c, method, path, a, b.tokens["admin"])  # town-b's admin, town-a's ids
        assert r.status_code == 404, f"{method} {path}: {r.status_code} {r.text}"
        checked += 1
    assert checked >= 25
    # and nothing of town-a changed
    r = c.get(f"/api/v1/gateways/{a.gateway}", headers=bearer(a.tokens["viewer"]))
    assert (
        r.status_code == 200 and r.json()["name"] == a.gateway and r.json()["status"] == "accepted"
    )


def _lists_show_only_the_callers_organisation(db: Engine, world: tuple[Org, Org]) -> None:
    a, b = world
    c = client(db)
    secrets_of_a = [a.gateway, a.pending, f"School {a.slug}", "@town-a.example"]
    for method, path, _ in _routes(db):
        if method != "GET" or "{" in path:
            continue
        r = _call(c, method, path, b, b.tokens["admin"])
        assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text}"
        for text in secrets_of_a:
            assert text not in r.text, f"GET {path} shows {text!r} of town-a to town-b"
    # ... while town-a sees its own
    r = c.get("/api/v1/gateways", headers=bearer(a.tokens["viewer"]))
    assert {g["id"] for g in r.json()["items"]} == {a.gateway, a.pending}


def test_every_route_rejects_anonymous_and_wrong_role_and_hides_other_organisations(
    db: Engine, world: tuple[Org, Org]
) -> None:
    # One world for the four checks: building it dominates the run time.
    _anonymous_requests_get_401(db, world)
    _roles_below_the_minimum_get_403(db, world)
    _other_organisations_ids_are_not_found(db, world)
    _lists_show_only_the_callers_organisation(db, world)
