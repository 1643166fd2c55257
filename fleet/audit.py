"""The audit log: who changed what, when, in which organisation. Every operator action that
changes something calls record() in the same transaction as the change; nothing here decides
whether an action is allowed (fleet/auth.py and fleet/api do)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fleet.auth import Principal
from fleet.db import tables as t


def record(
    conn: Connection,
    actor: Principal | None,
    action: str,
    target: str,
    now_ms: int,
    details: dict[str, Any] | None = None,
    org_id: int | None = None,
) -> None:
    """One audit entry. action is "<resource>.<verb>" (gateway.revoke, config.set), target
    "<resource>:<key>" (gateway:school-1). Secrets never go into details."""
    conn.execute(
        sa.insert(t.audit_log).values(
            ts_ms=now_ms,
            org_id=org_id if org_id is not None else (actor.org_id if actor else None),
            actor_user_id=actor.user_id if actor else None,
            actor_token_id=actor.token_id if actor else None,
            actor_gateway_id=actor.gateway_id if actor else None,
            action=action,
            target=target,
            details=details or {},
        )
    )


def entries(
    conn: Connection,
    org_id: int,
    limit: int = 50,
    offset: int = 0,
    action: str | None = None,
    target: str | None = None,
    user_id: int | None = None,
    since_ts_ms: int | None = None,
    until_ts_ms: int | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """(entries newest first, total matching) of one organisation. action matches a prefix
    ("gateway." finds every gateway action)."""
    a = t.audit_log
    where = [a.c.org_id == org_id]
    if action:
        where.append(a.c.action.startswith(action, autoescape=True))
    if target:
        where.append(a.c.target == target)
    if user_id is not None:
        where.append(a.c.actor_user_id == user_id)
    if since_ts_ms is not None:
        where.append(a.c.ts_ms >= since_ts_ms)
    if until_ts_ms is not None:
        where.append(a.c.ts_ms < until_ts_ms)
    total = conn.execute(sa.select(sa.func.count()).select_from(a).where(*where)).scalar_one()
    rows = conn.execute(
        sa.select(a, t.users.c.email)
        .outerjoin(t.users, t.users.c.id == a.c.actor_user_id)
        .where(*where)
        .order_by(a.c.ts_ms.desc(), a.c.id.desc())
        .limit(limit)
        .offset(offset)
    ).mappings()
    return [dict(r) for r in rows], total
