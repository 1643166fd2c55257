"""Every state-changing API route (POST, PUT, PATCH, DELETE under /api/v1, enumerated from the
app) writes an audit-log entry naming who did it when it succeeds: the user and the token of
the request (the route's minimum role), or the gateway for a claim. Runs on SQLite and
PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from api_helpers import NOW_MS, Org, add_gateway, bearer, client, config, make_org, min_role
from sqlalchemy import Engine

from fleet import auth
from fleet.api import API_PREFIX, api_routes
from fleet.db import tables as t
from fleet.db.engine import read, transaction


@dataclass
class Step:
    """One request: route, the role whose token makes it (None: public), path values, body,
    the audit action it must record, and who the entry must name."""

    method: str
    path: str  # as in the app, without /api/v1
    role: str | None
    action: str
    values: Callable[[dict[str, Any]], dict[str, Any]] = lambda s: {}
    body: Callable[[dict[str, Any]], Any] = lambda s: None
    actor: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # default: role's user+token
    keep: Callable[[dict[str, Any], Any], None] | None = None  # remember parts of the answer


def _keep(key: str, field: str = "id") -> Callable[[dict[str, Any], Any], None]:
    def keep(state: dict[str, Any], answer: Any) -> None:
        state[key] = answer[field] if isinstance(answer, dict) else answer

    return keep


def _keep_claims(state: dict[str, Any], answer: Any) -> None:
    state["claims"] = answer  # [{"id", "token", ...}] x 2


# In an order that lets each succeed: what one step creates, a later one changes or deletes.
STEPS = [
    Step("PATCH", "/organisation", "admin", "organisation.update", body=lambda s: {"name": "A"}),
    Step("POST", "/users", "admin", "user.add",
         body=lambda s: {"email": "new@town-a.example", "role": "viewer",
                         "password": "long-password"},
         keep=_keep("user")),
    Step("PATCH", "/users/{user_id}", "admin", "user.update",
         values=lambda s: {"user_id": s["user"]}, body=lambda s: {"role": "technician"}),
    Step("DELETE", "/users/{user_id}", "admin", "user.remove",
         values=lambda s: {"user_id": s["user"]}),
    Step("POST", "/tokens", "viewer", "token.create", body=lambda s: {"name": "laptop"},
         keep=_keep("token")),
    Step("DELETE", "/tokens/{token_id}", "viewer", "token.revoke",
         values=lambda s: {"token_id": s["token"]}),
    Step("POST", "/sites", "operator", "site.create", body=lambda s: {"name": "Depot"},
         keep=_keep("site")),
    Step("PATCH", "/sites/{site_id}", "operator", "site.update",
         values=lambda s: {"site_id": s["site"]}, body=lambda s: {"address": "Markt 1"}),
    Step("DELETE", "/sites/{site_id}", "admin", "site.delete",
         values=lambda s: {"site_id": s["site"]}),
    Step("PATCH", "/gateways/{gateway_id}", "technician", "gateway.update",
         values=lambda s: {"gateway_id": s["org"].gateway}, body=lambda s: {"name": "Keller"}),
    Step("POST", "/gateways/{gateway_id}/approve", "operator", "gateway.accepted",
         values=lambda s: {"gateway_id": s["org"].pending}),
    Step("POST", "/gateways/{gateway_id}/reject", "operator", "gateway.rejected",
         values=lambda s: {"gateway_id": s["pending2"]}),
    Step("POST", "/gateways/{gateway_id}/revoke", "operator", "gateway.revoked",
         values=lambda s: {"gateway_id": s["spare"]}),
    Step("POST", "/gateways/{gateway_id}/rotate-credentials", "operator",
         "gateway.rotate_credentials", values=lambda s: {"gateway_id": s["org"].gateway}),
    Step("POST", "/claim-tokens", "technician", "claim_token.create",
         body=lambda s: {"count": 2}, keep=_keep_claims),
    Step("DELETE", "/claim-tokens/{claim_id}", "technician", "claim_token.revoke",
         values=lambda s: {"claim_id": s["claims"][0]["id"]}),
    Step("POST", "/provision/claim", None, "gateway.claim",
         body=lambda s: {"token": s["claims"][1]["token"], "gateway_id": "gw-claimed-1"},
         actor=lambda s: {"actor_gateway_id": "gw-claimed-1", "actor_user_id": None}),
    Step("PUT", "/gateways/{gateway_id}/config", "operator", "config.set",
         values=lambda s: {"gateway_id": s["org"].gateway}, body=lambda s: config()),
    Step("POST", "/gateways/{gateway_id}/config/rollback", "operator", "config.rollback",
         values=lambda s: {"gateway_id": s["org"].gateway}, body=lambda s: {"version": 1}),
    Step("PUT", "/insight/sites/{site_id}/channel-settings", "operator", "insight.channel",
         values=lambda s: {"site_id": s["org"].site_id},
         body=lambda s: {"gateway_id": s["org"].gateway, "channel": 284, "submeter": True}),
    Step("PUT", "/insight/settings", "admin", "insight.settings",
         body=lambda s: {"night_end_hour": 5}),
    Step("PUT", "/insight/emission-factors", "admin", "insight.factor.set",
         body=lambda s: {"carrier": "electricity", "year": 2023, "kg_per_kwh": 0.3}),
    Step("DELETE", "/insight/emission-factors/{carrier}/{year}", "admin", "insight.factor.delete",
         values=lambda s: {"carrier": "electricity", "year": 2023}),
    Step("POST", "/insight/base-load/check", "operator", "insight.base_load_check"),
    Step("POST", "/rollouts", "operator", "rollout.create",
         body=lambda s: {"patch": {"uplink": {"batch_interval_s": 20}}}),
    Step("POST", "/rollouts/{rollout_id}/halt", "operator", "rollout.halt",
         values=lambda s: {"rollout_id": s["org"].rollout_id}),
    Step("POST", "/rollouts/{rollout_id}/resume", "operator", "rollout.resume",
         values=lambda s: {"rollout_id": s["org"].rollout_id}),
    Step("POST", "/rollouts/{rollout_id}/cancel", "operator", "rollout.cancel",
         values=lambda s: {"rollout_id": s["org"].rollout_id}),
    Step("POST", "/alerts/{alert_id}/acknowledge", "technician", "alert.acknowledge",
         values=lambda s: {"alert_id": s["org"].alert_id}),
    Step("POST", "/auth/login", None, "session.login",
         body=lambda s: {"email": "viewer@town-a.example", "password": "password-viewer",
                         "organisation": "town-a"},
         actor=lambda s: {"actor_user_id": s["org"].user_ids["viewer"]},
         keep=_keep("session", "token")),
    Step("POST", "/auth/logout", "session", "session.logout",
         actor=lambda s: {"actor_user_id": s["org"].user_ids["viewer"],
                          "actor_token_id": s["session_id"]}),
]  # fmt: skip


def _audit_rows(db: Engine, after_id: int) -> list[dict[str, Any]]:
    with read(db) as conn:
        rows = conn.execute(
            sa.select(t.audit_log).where(t.audit_log.c.id > after_id).order_by(t.audit_log.c.id)
        ).mappings()
        return [dict(r) for r in rows]


def _last_audit_id(db: Engine) -> int:
    with read(db) as conn:
        return int(
            conn.execute(sa.select(sa.func.coalesce(sa.func.max(t.audit_log.c.id), 0))).scalar_one()
        )


def test_every_state_changing_route_writes_an_audit_entry_naming_the_actor(db: Engine) -> None:
    a: Org = make_org(db, "town-a")
    state: dict[str, Any] = {
        "org": a,
        "pending2": add_gateway(db, a.id, "gw-town-a-new2", status="pending"),
        "spare": add_gateway(db, a.id, "gw-town-a-spare"),
    }
    changing = {(m, p) for m, p, _ in api_routes() if m in ("POST", "PUT", "PATCH", "DELETE")}
    planned = {(s.method, API_PREFIX + s.path) for s in STEPS}
    assert planned == changing, f"routes without a step here: {sorted(changing - planned)}"
    roles = {(m, p): min_role(r) for m, p, r in api_routes()}
    c = client(db)
    for step in STEPS:
        full = API_PREFIX + step.path
        if step.role is not None and step.role != "session":  # the route's own minimum role
            assert roles[(step.method, full)] == step.role, f"{step.method} {full}"
        values = step.values(state)
        path = re.sub(r"\{(\w+)\}", lambda m, v=values: str(v[m.group(1)]), full)
        if step.role == "session":
            token = state["session"]
            with transaction(db) as conn:
                principal = auth.authenticate_token(conn, token, NOW_MS)
            assert principal is not None
            state["session_id"] = principal.token_id
            headers = bearer(token)
        else:
            headers = bearer(a.tokens[step.role]) if step.role else {}
        before = _last_audit_id(db)
        body = step.body(state)
        r = c.request(step.method, path, headers=headers, json=body)
        assert r.status_code < 300, f"{step.method} {path}: {r.status_code} {r.text}"
        if step.keep is not None:
            step.keep(state, r.json())
        rows = [row for row in _audit_rows(db, before) if row["action"] == step.action]
        assert len(rows) == 1, f"{step.method} {path}: audit {_audit_rows(db, before)}"
        entry = rows[0]
        expected = (
            step.actor(state)
            if step.actor is not None
            else {
                "actor_user_id": a.user_ids[step.role],  # type: ignore[index]
                "actor_token_id": a.token_ids[step.role],  # type: ignore[index]
            }
        )
        for key, value in expected.items():
            assert entry[key] == value, f"{step.method} {path}: {key} {entry[key]} != {value}"
        assert entry["org_id"] == a.id and entry["target"], f"{step.method} {path}: {entry}"
        assert entry["ts_ms"] == NOW_MS
        assert "password" not in str(entry["details"]).lower()  # secrets never logged
