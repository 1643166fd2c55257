"""Secrets and identity: password and gateway-secret hashing (Mosquitto-compatible), token
roles, login sessions, and the claim exchange over HTTPS: single use, expiry, revocation,
binding to organisation and site, optional approval, credential rotation and revocation."""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from api_helpers import NOW_MS, bearer, client, make_org
from sqlalchemy import Engine

from fleet import admin, auth
from fleet.db import tables as t
from fleet.db.engine import read, transaction
from protocols import sign


def test_password_hash_round_trip_and_rejects_wrong_password() -> None:
    h = auth.hash_password("correct horse")
    assert h.startswith("$argon2id$")
    assert auth.verify_password(h, "correct horse") and not auth.verify_password(h, "wrong horse")
    assert not auth.verify_password("garbage", "correct horse")


def test_gateway_secret_hash_is_mosquittos_format(tmp_path: Path) -> None:
    h = auth.hash_gateway_secret("s3cret")
    assert h.startswith("$7$") and auth.verify_gateway_secret(h, "s3cret")
    assert not auth.verify_gateway_secret(h, "s3cret!") and not auth.verify_gateway_secret(
        None, "x"
    )
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip(
            reason="mosquitto_passwd not installed: skipped on a user's machine only, CI fails"
        )
    pw = tmp_path / "pw"
    pw.write_text("")
    subprocess.run([tool, "-b", str(pw), "gw-1", "from-mosquitto"], check=True)
    stored = pw.read_text().strip().split(":", 1)[1]
    assert auth.verify_gateway_secret(stored, "from-mosquitto")


def test_roles_are_ordered() -> None:
    assert auth.role_at_least("admin", "operator") and not auth.role_at_least(
        "technician", "operator"
    )
    with pytest.raises(auth.UnknownRoleError):
        auth.role_at_least("root", "viewer")


def test_token_role_never_exceeds_the_membership(db: Engine) -> None:
    admin.create_org(db, "town", "Town")
    uid = admin.create_user(db, "Op@Town.example", "password-1", "town", "operator")
    with pytest.raises(admin.AdminError):
        admin.create_token(db, "op@town.example", "town", "too much", role="admin")
    token = admin.create_token(db, "op@town.example", "town", "ci")
    with transaction(db) as conn:
        p = auth.authenticate_token(conn, token, NOW_MS)
        assert p is not None and p.role == "operator" and p.user_id == uid
        # demoted later: the token follows the weaker role
        conn.execute(sa.update(t.memberships).values(role="viewer"))
        assert auth.authenticate_token(conn, token, NOW_MS).role == "viewer"  # type: ignore[union-attr]
        conn.execute(sa.delete(t.memberships))
        assert auth.authenticate_token(conn, token, NOW_MS) is None


def test_login_session_and_logout(db: Engine) -> None:
    admin.create_org(db, "town", "Town")
    admin.create_user(db, "a@town.example", "password-1", "town", "viewer")
    c = client(db)
    assert (
        c.post(
            "/api/v1/auth/login",
            json={"email": "a@town.example", "password": "nope", "organisation": "town"},
        ).status_code
        == 401
    )
    r = c.post(
        "/api/v1/auth/login",
        json={"email": "A@town.example", "password": "password-1", "organisation": "town"},
    )
    assert r.status_code == 200
    token = r.json()["token"]
    assert c.get("/api/v1/me").json()["role"] == "viewer"  # the session cookie
    assert c.get("/api/v1/me", headers=bearer(token)).status_code == 200
    assert c.post("/api/v1/auth/logout", headers=bearer(token)).status_code == 204
    assert c.get("/api/v1/me", headers=bearer(token)).status_code == 401
    late = client(db, NOW_MS + auth.SESSION_TTL_MS + 1)
    r = late.post(
        "/api/v1/auth/login",
        json={"email": "a@town.example", "password": "password-1", "organisation": "town"},
    )
    assert (
        client(db, NOW_MS + 2 * auth.SESSION_TTL_MS + 2)
        .get("/api/v1/me", headers=bearer(r.json()["token"]))
        .status_code
        == 401
    )


def test_claim_is_single_use_bound_to_org_and_site_and_gives_working_credentials(
    db: Engine,
) -> None:
    a = make_org(db, "town-a", roles=("technician",))
    c = client(db)
    h = bearer(a.tokens["technician"])
    r = c.post(
        "/api/v1/claim-tokens",
        json={"count": 2, "site_id": a.site_id, "label": "batch 1"},
        headers=h,
    )
    assert r.status_code == 201
    first, second = (x["token"] for x in r.json())
    r = c.post(
        "/api/v1/provision/claim",
        json={"token": first, "gateway_id": "gw-school-7", "fw_version": "0.1.0"},
    )
    assert r.status_code == 201, r.text
    got = r.json()
    assert (
        got["gateway_id"] == "gw-school-7" == got["mqtt_username"] and got["status"] == "accepted"
    )
    assert got["broker_url"] == "mqtts://fleet.example:8883" and got["next_seq"] == 1
    with read(db) as conn:
        gw = (
            conn.execute(sa.select(t.gateways).where(t.gateways.c.id == "gw-school-7"))
            .mappings()
            .one()
        )
    assert gw["org_id"] == a.id and gw["site_id"] == a.site_id and gw["fw_version"] == "0.1.0"
    assert auth.verify_gateway_secret(gw["credential_hash"], got["mqtt_password"])
    key = bytes.fromhex(got["signing_key"])
    assert bytes(gw["signing_key"]) == key
    sign.open_envelope(sign.make_envelope("{}", key), key)
    again = c.post("/api/v1/provision/claim", json={"token": first})
    assert again.status_code == 403 and "already used" in again.json()["detail"]
    taken = c.post("/api/v1/provision/claim", json={"token": second, "gateway_id": "gw-school-7"})
    assert taken.status_code == 403 and "taken" in taken.json()["detail"]
    r = c.post(
        "/api/v1/provision/claim", json={"token": second}
    )  # the failed try did not use it up
    assert r.status_code == 201 and r.json()["gateway_id"].startswith("gw-")
    assert (
        c.post("/api/v1/provision/claim", json={"token": "claim_unknown-token"}).status_code == 403
    )
    listed = c.get("/api/v1/claim-tokens", headers=h).json()["items"]
    assert {x["used_by_gateway"] for x in listed} >= {"gw-school-7", r.json()["gateway_id"]}
    assert all("token" not in x for x in listed)


def test_claim_expires_and_can_be_revoked(db: Engine) -> None:
    a = make_org(db, "town-a", roles=("technician",))
    h = bearer(a.tokens["technician"])
    r = client(db).post("/api/v1/claim-tokens", json={"count": 2, "ttl_s": 60}, headers=h)
    (one, cid_one), (two, _) = ((x["token"], x["id"]) for x in r.json())
    late = client(db, NOW_MS + 60_000)
    assert "expired" in late.post("/api/v1/provision/claim", json={"token": two}).json()["detail"]
    assert client(db).delete(f"/api/v1/claim-tokens/{cid_one}", headers=h).status_code == 204
    r = client(db, NOW_MS + 1).post("/api/v1/provision/claim", json={"token": one})
    assert r.status_code == 403


def test_claim_with_approval_is_pending_until_an_operator_accepts(db: Engine) -> None:
    a = make_org(db, "town-a", roles=("operator",))
    c = client(db)
    h = bearer(a.tokens["operator"])
    token = c.post("/api/v1/claim-tokens", json={"require_approval": True}, headers=h).json()[0][
        "token"
    ]
    got = c.post("/api/v1/provision/claim", json={"token": token}).json()
    assert got["status"] == "pending"
    gid = got["gateway_id"]
    pending = c.get("/api/v1/gateways", params={"status": "pending"}, headers=h).json()["items"]
    assert gid in {g["id"] for g in pending}
    assert c.post(f"/api/v1/gateways/{gid}/approve", headers=h).json()["status"] == "accepted"
    assert c.post(f"/api/v1/gateways/{gid}/approve", headers=h).status_code == 409
    new = c.post(f"/api/v1/gateways/{gid}/rotate-credentials", headers=h).json()["mqtt_password"]
    with read(db) as conn:
        stored = conn.execute(
            sa.select(t.gateways.c.credential_hash).where(t.gateways.c.id == gid)
        ).scalar()
    assert auth.verify_gateway_secret(stored, new) and not auth.verify_gateway_secret(
        stored, got["mqtt_password"]
    )
    assert c.post(f"/api/v1/gateways/{gid}/revoke", headers=h).json()["status"] == "revoked"
    assert c.post(f"/api/v1/gateways/{gid}/rotate-credentials", headers=h).status_code == 409
    actions = [e["action"] for e in admin_audit(db, a.id)]
    assert {
        "gateway.claim",
        "gateway.accepted",
        "gateway.rotate_credentials",
        "gateway.revoked",
    } <= set(actions)


def admin_audit(db: Engine, org_id: int) -> list[dict]:
    from fleet import audit

    with read(db) as conn:
        return audit.entries(conn, org_id, limit=500)[0]


def test_two_gateways_racing_for_one_claim_token_one_wins(db: Engine) -> None:
    org = admin.create_org(db, "town", "Town")
    with transaction(db) as conn:
        _, token = auth.create_claim_token(conn, org, NOW_MS, 60_000, None)
    results: list[str] = []

    def go() -> None:
        try:
            with transaction(db) as conn:
                results.append(auth.exchange_claim(conn, token, NOW_MS).gateway_id)
        except (auth.ClaimError, sa.exc.DBAPIError) as e:
            results.append(f"refused: {e}")

    threads = [threading.Thread(target=go) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sum(not r.startswith("refused") for r in results) == 1, results
    with read(db) as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.gateways)).scalar() == 1
