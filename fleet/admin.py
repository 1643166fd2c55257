"""What the admin CLI (fleet/cli.py) does: create organisations, users, API tokens and claim
tokens in bulk, export and import an organisation as JSON, and a status summary. Each
function takes an Engine, runs one transaction, writes the audit log (actor: the CLI) and
returns plain data for people or --json; argument parsing and printing are the CLI's."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from fleet import audit, auth
from fleet.db import registry
from fleet.db import tables as t
from fleet.db.engine import read, transaction

EXPORT_FORMAT = "fleet-export-1"


class AdminError(ValueError):
    """A CLI request that cannot be carried out; the message says what to do instead."""


def _org_id(conn: Connection, slug: str) -> int:
    row = registry.get_org_by_slug(conn, slug)
    if row is None:
        raise AdminError(f"no organisation {slug!r}: create it with `fleet create-org {slug} NAME`")
    return int(row["id"])


def _user_id(conn: Connection, email: str) -> int:
    uid = conn.execute(
        sa.select(t.users.c.id).where(t.users.c.email == email.strip().lower())
    ).scalar()
    if uid is None:
        raise AdminError(f"no user {email!r}: create it with `fleet create-user {email} ...`")
    return int(uid)


def create_org(engine: Engine, slug: str, name: str, shares_benchmarks: bool = False) -> int:
    """A new organisation (municipality); its id."""
    with transaction(engine) as conn:
        if registry.get_org_by_slug(conn, slug) is not None:
            raise AdminError(f"organisation {slug!r} exists already")
        org_id = registry.create_org(conn, slug, name, shares_benchmarks)
        audit.record(
            conn,
            None,
            "organisation.create",
            f"organisation:{org_id}",
            registry.now_ms(),
            {"via": "cli", "slug": slug},
            org_id=org_id,
        )
    return org_id


def create_user(
    engine: Engine,
    email: str,
    password: str,
    org_slug: str | None = None,
    role: str | None = None,
    name: str = "",
    locale: str = "de",
) -> int:
    """A new user (email unique, stored lower-case), optionally a member of org_slug with role."""
    email = email.strip().lower()
    if "@" not in email:
        raise AdminError(f"email {email!r}: not an email address")
    now = registry.now_ms()
    with transaction(engine) as conn:
        if conn.execute(sa.select(t.users.c.id).where(t.users.c.email == email)).first():
            raise AdminError(
                f"user {email!r} exists already: add it to an organisation with add_member"
            )
        user_id = int(
            conn.execute(
                sa.insert(t.users)
                .values(
                    email=email,
                    password_hash=auth.hash_password(password),
                    name=name,
                    locale=locale,
                    created_ts_ms=now,
                )
                .returning(t.users.c.id)
            ).scalar_one()
        )
        if org_slug is not None:
            _member(conn, user_id, _org_id(conn, org_slug), role or auth.VIEWER, now)
    return user_id


def _member(conn: Connection, user_id: int, org_id: int, role: str, now: int) -> None:
    auth.check_role(role)
    m = t.memberships.c
    conn.execute(sa.delete(t.memberships).where(m.user_id == user_id, m.org_id == org_id))
    conn.execute(sa.insert(t.memberships).values(user_id=user_id, org_id=org_id, role=role))
    audit.record(
        conn, None, "user.add", f"user:{user_id}", now, {"via": "cli", "role": role}, org_id=org_id
    )


def add_member(engine: Engine, email: str, org_slug: str, role: str) -> None:
    """Give a user a role in an organisation (replacing the role they had there)."""
    with transaction(engine) as conn:
        _member(conn, _user_id(conn, email), _org_id(conn, org_slug), role, registry.now_ms())


def create_token(
    engine: Engine,
    email: str,
    org_slug: str,
    name: str,
    role: str | None = None,
    ttl_s: int | None = None,
) -> str:
    """An API token of a user in an organisation (role: at most the user's there; default the
    same); returns the token text, which is shown only this once."""
    now = registry.now_ms()
    with transaction(engine) as conn:
        user_id = _user_id(conn, email)
        org_id = _org_id(conn, org_slug)
        member_role = conn.execute(
            sa.select(t.memberships.c.role).where(
                t.memberships.c.user_id == user_id, t.memberships.c.org_id == org_id
            )
        ).scalar()
        if member_role is None:
            raise AdminError(f"{email} is not a member of {org_slug}: add them first")
        try:
            token_id, token = auth.create_api_token(
                conn,
                user_id,
                org_id,
                role or member_role,
                name,
                now,
                now + ttl_s * 1000 if ttl_s else None,
            )
        except ValueError as e:
            raise AdminError(str(e)) from None
        audit.record(
            conn,
            None,
            "token.create",
            f"token:{token_id}",
            now,
            {"via": "cli", "name": name},
            org_id=org_id,
        )
    return token


def create_claim_tokens(
    engine: Engine,
    org_slug: str,
    count: int = 1,
    ttl_s: int = 7 * 86400,
    site_id: int | None = None,
    require_approval: bool = False,
    label: str = "",
) -> list[dict[str, Any]]:
    """count claim tokens: [{"id", "token", "expires_ts_ms"}] (token texts shown only now)."""
    if not 1 <= count <= 100_000:
        raise AdminError("count: 1 .. 100000")
    now = registry.now_ms()
    out = []
    with transaction(engine) as conn:
        org_id = _org_id(conn, org_slug)
        if (
            site_id is not None
            and not conn.execute(
                sa.select(t.sites.c.id).where(t.sites.c.id == site_id, t.sites.c.org_id == org_id)
            ).first()
        ):
            raise AdminError(f"site {site_id} is not a site of {org_slug}")
        for _ in range(count):
            claim_id, token = auth.create_claim_token(
                conn,
                org_id,
                now,
                ttl_s * 1000,
                None,
                site_id=site_id,
                require_approval=require_approval,
                label=label,
            )
            out.append({"id": claim_id, "token": token, "expires_ts_ms": now + ttl_s * 1000})
        audit.record(
            conn,
            None,
            "claim_token.create",
            f"organisation:{org_id}",
            now,
            {"via": "cli", "count": count},
            org_id=org_id,
        )
    return out


_EXPORT_TABLES = ("sites", "gateways", "devices", "channels", "config_documents")


def export_json(engine: Engine, org_slug: str) -> dict[str, Any]:
    """An organisation's registry as JSON-able data: organisation, sites, gateways (without
    credentials and keys), devices, channels, configuration documents, users and roles
    (without password hashes). Telemetry is exported as CSV through the API instead."""
    with read(engine) as conn:
        org_id = _org_id(conn, org_slug)
        org = dict(
            conn.execute(sa.select(t.organisations).where(t.organisations.c.id == org_id))
            .mappings()
            .one()
        )
        sites = [
            dict(r)
            for r in conn.execute(
                sa.select(t.sites).where(t.sites.c.org_id == org_id).order_by(t.sites.c.id)
            ).mappings()
        ]
        g = t.gateways
        gw_cols = [c for c in g.c if c.name not in ("credential_hash", "signing_key")]
        gateways = [
            dict(r)
            for r in conn.execute(
                sa.select(*gw_cols).where(g.c.org_id == org_id).order_by(g.c.id)
            ).mappings()
        ]
        ids = [gw["id"] for gw in gateways]
        devices = [
            dict(r)
            for r in conn.execute(
                sa.select(t.devices).where(t.devices.c.gateway_id.in_(ids))
            ).mappings()
        ]
        channels = [
            dict(r)
            for r in conn.execute(
                sa.select(t.channels).where(t.channels.c.gateway_id.in_(ids))
            ).mappings()
        ]
        docs = [
            dict(r)
            for r in conn.execute(
                sa.select(t.config_documents)
                .where(t.config_documents.c.gateway_id.in_(ids))
                .order_by(t.config_documents.c.id)
            ).mappings()
        ]
        users = [
            dict(r)
            for r in conn.execute(
                sa.select(t.users.c.email, t.users.c.name, t.users.c.locale, t.memberships.c.role)
                .join(t.memberships, t.memberships.c.user_id == t.users.c.id)
                .where(t.memberships.c.org_id == org_id)
                .order_by(t.users.c.email)
            ).mappings()
        ]
    for row in devices + channels + docs:
        row.pop("id", None)
    for row in docs:
        row.pop("created_by", None)
    return {
        "format": EXPORT_FORMAT,
        "organisation": {k: org[k] for k in ("slug", "name", "shares_benchmarks")},
        "sites": sites,
        "gateways": gateways,
        "devices": devices,
        "channels": channels,
        "config_documents": docs,
        "users": users,
    }


def import_json(engine: Engine, data: dict[str, Any]) -> dict[str, int]:
    """Create an organisation from export_json's output (under its slug, which must be free).
    Gateways come back without credentials: status "revoked" until re-provisioned with a
    claim token; users must exist (matched by email) or are skipped. Counts per table."""
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        raise AdminError(f"not a fleet export (format {EXPORT_FORMAT!r} expected)")
    now = registry.now_ms()
    counts = dict.fromkeys(
        ("sites", "gateways", "devices", "channels", "config_documents", "users"), 0
    )
    with transaction(engine) as conn:
        o = data["organisation"]
        if registry.get_org_by_slug(conn, o["slug"]) is not None:
            raise AdminError(
                f"organisation {o['slug']!r} exists already: import into an empty database or rename it"
            )
        org_id = registry.create_org(conn, o["slug"], o["name"], bool(o.get("shares_benchmarks")))
        site_ids: dict[int, int] = {}
        for site in data["sites"]:
            new = dict(site, org_id=org_id)
            old_id = new.pop("id")
            site_ids[old_id] = int(
                conn.execute(sa.insert(t.sites).values(**new).returning(t.sites.c.id)).scalar_one()
            )
            counts["sites"] += 1
        for gw in data["gateways"]:
            row = dict(
                gw,
                org_id=org_id,
                site_id=site_ids.get(gw.get("site_id")),
                status="revoked",
                online=False,
            )
            conn.execute(sa.insert(t.gateways).values(**row))
            counts["gateways"] += 1
        for table in ("devices", "channels", "config_documents"):
            rows = data[table]
            if rows:
                conn.execute(sa.insert(getattr(t, table)), rows)
            counts[table] = len(rows)
        for user in data["users"]:
            uid = conn.execute(
                sa.select(t.users.c.id).where(t.users.c.email == user["email"])
            ).scalar()
            if uid is not None:
                conn.execute(
                    sa.insert(t.memberships).values(user_id=uid, org_id=org_id, role=user["role"])
                )
                counts["users"] += 1
        audit.record(
            conn,
            None,
            "organisation.import",
            f"organisation:{org_id}",
            now,
            {"via": "cli", **counts},
            org_id=org_id,
        )
    return counts


def status(engine: Engine) -> dict[str, Any]:
    """Counts for `fleet status`: organisations, gateways by status, online, open alerts,
    running rollouts, rejected batches, per organisation and in total."""
    g = t.gateways.c
    with read(engine) as conn:
        orgs = []
        for org in conn.execute(
            sa.select(t.organisations).order_by(t.organisations.c.slug)
        ).mappings():
            by_status = dict(
                conn.execute(
                    sa.select(g.status, sa.func.count())
                    .where(g.org_id == org["id"])
                    .group_by(g.status)
                ).all()
            )
            orgs.append(
                {
                    "slug": org["slug"],
                    "name": org["name"],
                    "gateways": {s: int(by_status.get(s, 0)) for s in t.GATEWAY_STATUSES},
                    "online": int(
                        conn.execute(
                            sa.select(sa.func.count()).where(
                                g.org_id == org["id"], g.online.is_(True)
                            )
                        ).scalar_one()
                    ),
                    "open_alerts": int(
                        conn.execute(
                            sa.select(sa.func.count())
                            .select_from(t.alerts)
                            .where(
                                t.alerts.c.org_id == org["id"], t.alerts.c.closed_ts_ms.is_(None)
                            )
                        ).scalar_one()
                    ),
                    "running_rollouts": int(
                        conn.execute(
                            sa.select(sa.func.count())
                            .select_from(t.rollouts)
                            .where(
                                t.rollouts.c.org_id == org["id"], t.rollouts.c.state == "running"
                            )
                        ).scalar_one()
                    ),
                }
            )
        rejected = int(
            conn.execute(sa.select(sa.func.count()).select_from(t.rejected_batches)).scalar_one()
        )
        batches = int(conn.execute(sa.select(sa.func.count()).select_from(t.batches)).scalar_one())
    return {"organisations": orgs, "batches_stored": batches, "batches_rejected": rejected}
