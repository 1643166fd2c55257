"""A small world for the API tests: two organisations ("town-a", "town-b"), a user and API token
per role in town-a, an admin in town-b, and in each organisation a site, an accepted gateway
with a configuration, a pending gateway, a claim token, a rollout and an alert."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from fleet import admin, alerts, auth, config_service, rollouts
from fleet.api import ApiSettings, create_app
from fleet.db import registry
from fleet.db.engine import transaction

NOW_MS = 1_700_000_000_000
ROLES = ("viewer", "technician", "operator", "admin")

CONFIG: dict[str, Any] = {
    "buses": [{"id": "rs485-1", "type": "rtu", "port": "/dev/ttyUSB0"}],
    "meters": [
        {"id": 1, "name": "Hauptzaehler", "bus": "rs485-1", "unit": 1, "profile": "sdm630",
         "quantities": ["energy_import", "power_total"]}
    ],
}  # fmt: skip


def config() -> dict[str, Any]:
    return copy.deepcopy(CONFIG)


@dataclass
class Org:
    slug: str
    id: int = 0
    site_id: int = 0
    gateway: str = ""
    pending: str = ""
    claim_id: int = 0
    rollout_id: int = 0
    alert_id: int = 0
    tokens: dict[str, str] = field(default_factory=dict)  # role -> bearer token
    user_ids: dict[str, int] = field(default_factory=dict)
    token_ids: dict[str, int] = field(default_factory=dict)


def add_gateway(
    engine: Engine,
    org_id: int,
    gateway_id: str,
    status: str = "accepted",
    site_id: int | None = None,
    tags: tuple[str, ...] = (),
) -> str:
    with transaction(engine) as conn:
        registry.create_gateway(
            conn, gateway_id, org_id, site_id=site_id, status=status, tags=tags,
            credential_hash=auth.hash_gateway_secret("secret-" + gateway_id),
            signing_key=bytes.fromhex(auth.new_signing_key()),
        )  # fmt: skip
        if status == "accepted":
            config_service.set_desired(conn, gateway_id, config(), NOW_MS)
    return gateway_id


def make_org(engine: Engine, slug: str, roles: tuple[str, ...] = ROLES) -> Org:
    org = Org(slug)
    org.id = admin.create_org(engine, slug, slug.title())
    for role in roles:
        email = f"{role}@{slug}.example"
        org.user_ids[role] = admin.create_user(engine, email, "password-" + role, slug, role)
        org.tokens[role] = admin.create_token(engine, email, slug, f"{role} token")
    with transaction(engine) as conn:
        org.site_id = registry.create_site(conn, org.id, f"School {slug}", floor_area_m2=1000)
        org.token_ids = {
            role: auth.authenticate_token(conn, tok, NOW_MS).token_id
            for role, tok in org.tokens.items()  # type: ignore[union-attr]
        }
    org.gateway = add_gateway(engine, org.id, f"gw-{slug}-1", site_id=org.site_id, tags=("school",))
    org.pending = add_gateway(engine, org.id, f"gw-{slug}-new", status="pending")
    with transaction(engine) as conn:
        org.claim_id, _ = auth.create_claim_token(conn, org.id, NOW_MS, 86_400_000, None)
        org.rollout_id = rollouts.create(
            conn, org.id, {"uplink": {"batch_interval_s": 30}}, NOW_MS, gateway_ids=[org.gateway]
        )
        org.alert_id = alerts.open_alert(conn, org.gateway, alerts.OFFLINE, NOW_MS)
    return org


def client(engine: Engine, now_ms: int = NOW_MS) -> TestClient:
    return TestClient(
        create_app(ApiSettings(engine, "mqtts://fleet.example:8883", clock=lambda: now_ms))
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def min_role(route: APIRoute) -> str | None:
    """The role a route's require() dependency demands (None: a public route)."""
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        role = getattr(dep.call, "min_role", None)
        if role is not None:
            return role
        stack.extend(dep.dependencies)
    return None
