"""The API's own reads and small writes on fleet/db tables (SQLAlchemy Core), every one scoped
to one organisation: a row of another organisation is never returned, it is "not found".
Registry writes that other parts share live in fleet/db/registry.py; no HTTP here."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fleet.db import tables as t

GATEWAY_SORTS = {
    "id": t.gateways.c.id,
    "name": t.gateways.c.name,
    "status": t.gateways.c.status,
    "last_seen_ts_ms": t.gateways.c.last_seen_ts_ms,
    "created_ts_ms": t.gateways.c.created_ts_ms,
    "fw_version": t.gateways.c.fw_version,
    "reported_config_version": t.gateways.c.reported_config_version,
}


def _page(
    conn: Connection, q: sa.Select[Any], limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    total = conn.execute(
        sa.select(sa.func.count()).select_from(q.order_by(None).subquery())
    ).scalar_one()
    rows = conn.execute(q.limit(limit).offset(offset)).mappings()
    return [dict(r) for r in rows], int(total)


# --- organisation ------------------------------------------------------------------------


def get_org(conn: Connection, org_id: int) -> dict[str, Any]:
    return dict(
        conn.execute(sa.select(t.organisations).where(t.organisations.c.id == org_id))
        .mappings()
        .one()
    )


def patch_org(conn: Connection, org_id: int, values: dict[str, Any]) -> None:
    if values:
        conn.execute(
            sa.update(t.organisations).where(t.organisations.c.id == org_id).values(**values)
        )


# --- sites --------------------------------------------------------------------------------


def list_sites(
    conn: Connection, org_id: int, tag: str | None, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    q = sa.select(t.sites).where(t.sites.c.org_id == org_id).order_by(t.sites.c.name, t.sites.c.id)
    if tag is None:
        return _page(conn, q, limit, offset)
    rows = [dict(r) for r in conn.execute(q).mappings() if tag in (r["tags"] or [])]
    return rows[offset : offset + limit], len(rows)


def get_site(conn: Connection, org_id: int, site_id: int) -> dict[str, Any] | None:
    row = (
        conn.execute(sa.select(t.sites).where(t.sites.c.id == site_id, t.sites.c.org_id == org_id))
        .mappings()
        .first()
    )
    return dict(row) if row else None


def site_name_taken(conn: Connection, org_id: int, name: str, except_id: int | None = None) -> bool:
    q = sa.select(t.sites.c.id).where(t.sites.c.org_id == org_id, t.sites.c.name == name)
    if except_id is not None:
        q = q.where(t.sites.c.id != except_id)
    return conn.execute(q).first() is not None


def patch_site(conn: Connection, site_id: int, values: dict[str, Any]) -> None:
    if values:
        conn.execute(sa.update(t.sites).where(t.sites.c.id == site_id).values(**values))


def delete_site(conn: Connection, site_id: int) -> None:
    conn.execute(sa.delete(t.sites).where(t.sites.c.id == site_id))


# --- gateways -----------------------------------------------------------------------------


def list_gateways(
    conn: Connection,
    org_id: int,
    *,
    status: str | None = None,
    tag: str | None = None,
    site_id: int | None = None,
    fw_version: str | None = None,
    config_version: int | None = None,
    online: bool | None = None,
    sort: str = "id",
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    g = t.gateways.c
    q = sa.select(t.gateways).where(g.org_id == org_id)
    if status is not None:
        q = q.where(g.status == status)
    if site_id is not None:
        q = q.where(g.site_id == site_id)
    if fw_version is not None:
        q = q.where(g.fw_version == fw_version)
    if config_version is not None:
        q = q.where(g.reported_config_version == config_version)
    if online is not None:
        q = q.where(g.online.is_(online))
    column = GATEWAY_SORTS[sort.lstrip("-")]
    order = column.desc() if sort.startswith("-") else column.asc()
    q = q.order_by(order.nulls_last() if sort.startswith("-") else order.nulls_first(), g.id)
    if tag is None:
        return _page(conn, q, limit, offset)
    # Tags are a JSON list: filtered here, identically on SQLite and PostgreSQL.
    rows = [dict(r) for r in conn.execute(q).mappings() if tag in (r["tags"] or [])]
    return rows[offset : offset + limit], len(rows)


def get_gateway(conn: Connection, org_id: int, gateway_id: str) -> dict[str, Any] | None:
    row = (
        conn.execute(
            sa.select(t.gateways).where(
                t.gateways.c.id == gateway_id, t.gateways.c.org_id == org_id
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def patch_gateway(conn: Connection, gateway_id: str, values: dict[str, Any]) -> None:
    if values:
        conn.execute(sa.update(t.gateways).where(t.gateways.c.id == gateway_id).values(**values))


def devices(conn: Connection, gateway_id: str) -> list[dict[str, Any]]:
    d = t.devices.c
    q = sa.select(t.devices).where(d.gateway_id == gateway_id).order_by(d.device_id)
    return [dict(r) for r in conn.execute(q).mappings()]


def channels(conn: Connection, gateway_id: str) -> list[dict[str, Any]]:
    c = t.channels.c
    q = sa.select(t.channels).where(c.gateway_id == gateway_id).order_by(c.channel)
    return [dict(r) for r in conn.execute(q).mappings()]


def rejected_batches(
    conn: Connection, gateway_id: str, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    r = t.rejected_batches.c
    q = (
        sa.select(t.rejected_batches)
        .where(r.gateway_id == gateway_id)
        .order_by(r.ts_ms.desc(), r.id.desc())
    )
    return _page(conn, q, limit, offset)


# --- claim tokens ---------------------------------------------------------------------------


def list_claims(
    conn: Connection, org_id: int, open_only: bool, now_ms: int, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    c = t.claim_tokens.c
    q = (
        sa.select(t.claim_tokens)
        .where(c.org_id == org_id)
        .order_by(c.created_ts_ms.desc(), c.id.desc())
    )
    if open_only:
        q = q.where(c.used_ts_ms.is_(None), c.expires_ts_ms > now_ms)
    return _page(conn, q, limit, offset)


def get_claim(conn: Connection, org_id: int, claim_id: int) -> dict[str, Any] | None:
    c = t.claim_tokens.c
    row = (
        conn.execute(sa.select(t.claim_tokens).where(c.id == claim_id, c.org_id == org_id))
        .mappings()
        .first()
    )
    return dict(row) if row else None


def expire_claim(conn: Connection, claim_id: int, now_ms: int) -> None:
    """Revoke a claim token: it expires now (a used one stays as it is)."""
    c = t.claim_tokens.c
    conn.execute(
        sa.update(t.claim_tokens)
        .where(c.id == claim_id, c.expires_ts_ms > now_ms)
        .values(expires_ts_ms=now_ms)
    )


# --- users and tokens -----------------------------------------------------------------------

_USER_COLUMNS = (
    t.users.c.id,
    t.users.c.email,
    t.users.c.name,
    t.users.c.locale,
    t.users.c.disabled,
    t.memberships.c.role,
)


def list_members(
    conn: Connection, org_id: int, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    q = (
        sa.select(*_USER_COLUMNS)
        .join(t.memberships, t.memberships.c.user_id == t.users.c.id)
        .where(t.memberships.c.org_id == org_id)
        .order_by(t.users.c.email)
    )
    return _page(conn, q, limit, offset)


def get_member(conn: Connection, org_id: int, user_id: int) -> dict[str, Any] | None:
    row = (
        conn.execute(
            sa.select(*_USER_COLUMNS)
            .join(t.memberships, t.memberships.c.user_id == t.users.c.id)
            .where(t.memberships.c.org_id == org_id, t.users.c.id == user_id)
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def user_by_email(conn: Connection, email: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(t.users).where(t.users.c.email == email)).mappings().first()
    return dict(row) if row else None


def create_user(
    conn: Connection, email: str, password_hash: str, name: str, locale: str, now_ms: int
) -> int:
    return int(
        conn.execute(
            sa.insert(t.users)
            .values(
                email=email,
                password_hash=password_hash,
                name=name,
                locale=locale,
                created_ts_ms=now_ms,
            )
            .returning(t.users.c.id)
        ).scalar_one()
    )


def set_membership(conn: Connection, user_id: int, org_id: int, role: str) -> None:
    m = t.memberships.c
    done = conn.execute(
        sa.update(t.memberships).where(m.user_id == user_id, m.org_id == org_id).values(role=role)
    ).rowcount
    if not done:
        conn.execute(sa.insert(t.memberships).values(user_id=user_id, org_id=org_id, role=role))


def patch_user(conn: Connection, user_id: int, values: dict[str, Any]) -> None:
    if values:
        conn.execute(sa.update(t.users).where(t.users.c.id == user_id).values(**values))


def remove_membership(conn: Connection, user_id: int, org_id: int) -> None:
    m = t.memberships.c
    conn.execute(sa.delete(t.memberships).where(m.user_id == user_id, m.org_id == org_id))


def count_admins(conn: Connection, org_id: int) -> int:
    m = t.memberships.c
    return int(
        conn.execute(
            sa.select(sa.func.count())
            .select_from(t.memberships)
            .where(m.org_id == org_id, m.role == "admin")
        ).scalar_one()
    )


def list_tokens(
    conn: Connection, org_id: int, user_id: int | None, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    a = t.api_tokens.c
    q = sa.select(t.api_tokens).where(a.org_id == org_id).order_by(a.id.desc())
    if user_id is not None:
        q = q.where(a.user_id == user_id)
    return _page(conn, q, limit, offset)


def get_token(conn: Connection, org_id: int, token_id: int) -> dict[str, Any] | None:
    a = t.api_tokens.c
    row = (
        conn.execute(sa.select(t.api_tokens).where(a.id == token_id, a.org_id == org_id))
        .mappings()
        .first()
    )
    return dict(row) if row else None


def revoke_token(conn: Connection, token_id: int) -> None:
    conn.execute(sa.update(t.api_tokens).where(t.api_tokens.c.id == token_id).values(revoked=True))
