"""The database queries of the MQTT side: broker accounts (who may log in), the outbox of
messages any fleet instance's bridge publishes, and the claim-id scheme of MQTT provisioning.
SQLAlchemy Core on fleet/db tables; no MQTT and no I/O besides the given connection."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fleet import auth
from fleet.db import tables as t
from fleet.db.tables_ops import mqtt_outbox
from fleet.mqtt import acl
from protocols import messages

OUTBOX_CLAIM_EXPIRY_MS = 30_000  # a row claimed by an instance that died is taken over then


def now_ms() -> int:
    return int(time.time() * 1000)


# --- provisioning credentials --------------------------------------------------------------


@dataclass(frozen=True)
class ClaimLogin:
    """The MQTT login of a gateway holding a claim token (docs/fleet.md, provisioning): both
    halves of the token's SHA-256 hex digest, so the fleet can list open claims in Mosquitto's
    password_file without ever storing the token."""

    username: str  # = client id = claim id: "prov_" + first 32 hex digits
    password: str  # the last 32 hex digits


def claim_login(token: str) -> ClaimLogin:
    return claim_login_from_hash(auth.token_hash(token))


def claim_login_from_hash(token_hash: str) -> ClaimLogin:
    return ClaimLogin("prov_" + token_hash[:32], token_hash[32:])


def claim_open(conn: Connection, token_hash: str, ts_ms: int) -> bool:
    """Whether a claim token (by hash) is unused and unexpired."""
    c = t.claim_tokens.c
    row = conn.execute(
        sa.select(c.id).where(
            c.token_hash == token_hash, c.used_ts_ms.is_(None), c.expires_ts_ms > ts_ms
        )
    ).first()
    return row is not None


def check_login(
    conn: Connection, username: str | None, password: str | None, client_id: str | None
) -> bool:
    """Whether a gateway or a provisioning client may connect (the embedded amqtt broker's
    check; Mosquitto gets the same accounts from write_broker_files). The fleet's own account
    is checked by the caller, which holds its password."""
    if not username or not password or client_id != username:
        return False
    if acl.is_claim_id(username):
        digest = username[len("prov_") :] + password
        return len(digest) == 64 and claim_open(conn, digest, now_ms())
    if not acl.is_gateway_user(username):
        return False
    g = t.gateways.c
    row = conn.execute(sa.select(g.status, g.credential_hash).where(g.id == username)).first()
    if row is None or row.status != "accepted":
        return False
    return auth.verify_gateway_secret(row.credential_hash, password)


@dataclass(frozen=True)
class Accounts:
    """Everyone the broker should let in besides the fleet: accepted gateways with their
    password hash (Mosquitto's $7$ format) and open claim tokens (login, hash)."""

    gateways: list[tuple[str, str]]
    claims: list[tuple[str, str]]  # (username, SHA-256 hex of the token)

    def fingerprint(self) -> str:
        # one update of the whole text (the same digest as line by line, a fraction of the
        # time: the fleet compares it every second, for every gateway)
        text = "".join(f"{name}:{digest}\n" for name, digest in sorted(self.gateways))
        text += "".join(f"{name}:{digest}\n" for name, digest in sorted(self.claims))
        return hashlib.sha256(text.encode()).hexdigest()


def broker_accounts(conn: Connection, ts_ms: int) -> Accounts:
    """Accepted gateways with a credential, and the logins of unused, unexpired claim tokens."""
    g = t.gateways.c
    rows = conn.execute(
        sa.select(g.id, g.credential_hash)
        .where(g.status == "accepted", g.credential_hash.like("$7$%"))
        .order_by(g.id)
    )
    gws = [(gid, str(digest)) for gid, digest in rows]
    c = t.claim_tokens.c
    claims = [
        (claim_login_from_hash(r[0]).username, r[0])
        for r in conn.execute(
            sa.select(c.token_hash).where(c.used_ts_ms.is_(None), c.expires_ts_ms > ts_ms)
        )
    ]
    return Accounts(gws, claims)


# --- outbox -------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


def enqueue(
    conn: Connection, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
) -> int:
    """Queue a message for any fleet instance's bridge to publish (at least once)."""
    return int(
        conn.execute(
            sa.insert(mqtt_outbox)
            .values(
                topic=topic, payload=bytes(payload), qos=qos, retain=retain, created_ts_ms=now_ms()
            )
            .returning(mqtt_outbox.c.id)
        ).scalar_one()
    )


def publish_desired(conn: Connection, gateway_id: str, envelope: bytes) -> int:
    """Queue a gateway's signed config envelope for gw/<id>/config/desired (QoS 1, retained).

    Call it in the transaction that stores the document (fleet/config_service.py): the message
    goes out only if that commits, and then at least once, from whichever fleet instance's
    bridge claims it first (usually within 0.2 s)."""
    return enqueue(conn, messages.topic(gateway_id, "config/desired"), envelope, retain=True)


def publish_desired_many(conn: Connection, envelopes: list[tuple[str, bytes]]) -> None:
    """publish_desired for many gateways (gateway id, envelope) with one statement."""
    if not envelopes:
        return
    ts = now_ms()
    conn.execute(
        sa.insert(mqtt_outbox),
        [
            {"topic": messages.topic(gid, "config/desired"), "payload": bytes(envelope), "qos": 1,
             "retain": True, "created_ts_ms": ts}
            for gid, envelope in envelopes
        ],
    )  # fmt: skip


def claim_outbox(conn: Connection, instance: str, limit: int, ts_ms: int) -> list[OutboxMessage]:
    """Claim up to limit unclaimed (or expired) rows for this instance and return them."""
    o = mqtt_outbox.c
    free = sa.or_(o.claimed_by.is_(None), o.claimed_ts_ms < ts_ms - OUTBOX_CLAIM_EXPIRY_MS)
    ids = [r[0] for r in conn.execute(sa.select(o.id).where(free).order_by(o.id).limit(limit))]
    if not ids:
        return []
    conn.execute(
        sa.update(mqtt_outbox)
        .where(o.id.in_(ids), free)
        .values(claimed_by=instance, claimed_ts_ms=ts_ms)
    )
    rows = conn.execute(
        sa.select(o.id, o.topic, o.payload, o.qos, o.retain)
        .where(o.id.in_(ids), o.claimed_by == instance, o.claimed_ts_ms == ts_ms)
        .order_by(o.id)
    )
    return [OutboxMessage(r.id, r.topic, bytes(r.payload), r.qos, bool(r.retain)) for r in rows]


def outbox_done(conn: Connection, ids: list[int]) -> None:
    if ids:
        conn.execute(sa.delete(mqtt_outbox).where(mqtt_outbox.c.id.in_(ids)))


def outbox_depth(conn: Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(mqtt_outbox)).scalar_one())
