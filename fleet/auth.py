"""Secrets and roles of the fleet: operator passwords (argon2), API and session tokens, gateway
MQTT secrets (Mosquitto's PBKDF2 format), config-signing keys, claim tokens and the claim
exchange, and who may do what (roles per organisation). No HTTP here; fleet/api uses it.

Secrets are shown once and stored only as hashes, except the per-gateway config-signing key,
which the fleet needs in clear to sign documents: it is stored as is (hex) in the database;
encrypting it at rest is out of scope, so protect the database like a key store."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.engine import Connection

from fleet.db import registry
from fleet.db import tables as t
from protocols.schema import is_gateway_id

# Roles in increasing power; a role may do everything the roles before it may.
ROLES = ("viewer", "technician", "operator", "admin")
VIEWER, TECHNICIAN, OPERATOR, ADMIN = ROLES

API_TOKEN_PREFIX = "fleet_"
SESSION_TOKEN_PREFIX = "fleets_"
CLAIM_TOKEN_PREFIX = "claim_"
SESSION_TTL_MS = 12 * 3600 * 1000
CLAIM_TTL_MAX_MS = 365 * 24 * 3600 * 1000

# Mosquitto 2.x password_file hash: $7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512>.
# The gateway secret is 32 random bytes, so the iteration count only has to match the format.
_PBKDF2_ITERATIONS = 1000
_PBKDF2_SALT_BYTES = 12
_MOSQ_HASH = re.compile(r"^\$7\$(\d{1,7})\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$")

_hasher = PasswordHasher()


class UnknownRoleError(ValueError):
    """A role name that is not one of ROLES."""


class ClaimError(ValueError):
    """A claim token that cannot be exchanged; the message says why (unknown, used, expired)."""


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UnknownRoleError(f"role {role!r}: must be one of {', '.join(ROLES)}")
    return role


def role_at_least(role: str, needed: str) -> bool:
    """Whether role may do what needed may (admin > operator > technician > viewer)."""
    return ROLES.index(check_role(role)) >= ROLES.index(check_role(needed))


def weaker_role(a: str, b: str) -> str:
    return a if ROLES.index(check_role(a)) <= ROLES.index(check_role(b)) else b


# --- operator passwords -------------------------------------------------------------------


def hash_password(password: str) -> str:
    """The argon2id hash of an operator's password (parameters of argon2-cffi's defaults)."""
    if len(password) < 8:
        raise ValueError("password: at least 8 characters")
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether password matches stored_hash; False for a missing or malformed hash."""
    if not stored_hash:
        return False
    try:
        return _hasher.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


# --- bearer tokens (API tokens, sessions, claim tokens) --------------------------------------


def token_hash(token: str) -> str:
    """The stored form of a bearer or claim token: SHA-256 hex. Tokens carry 256 random bits,
    so a fast hash is enough and lets a request find its token by an index lookup."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token(prefix: str) -> tuple[str, str]:
    """(token shown once, its hash to store): prefix + 43 URL-safe characters (256 bits)."""
    token = prefix + secrets.token_urlsafe(32)
    return token, token_hash(token)


# --- gateway MQTT secrets and signing keys ---------------------------------------------------


def new_gateway_secret() -> str:
    """A gateway's MQTT password: 43 URL-safe characters (256 random bits), shown once."""
    return secrets.token_urlsafe(32)


def hash_gateway_secret(secret: str, salt: bytes | None = None) -> str:
    """The stored hash of a gateway's MQTT password in Mosquitto's password_file format
    ($7$, PBKDF2-HMAC-SHA512), so fleet/mqtt can write a password_file from the database and
    the embedded broker can check a password with verify_gateway_secret."""
    salt = salt if salt is not None else secrets.token_bytes(_PBKDF2_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode("utf-8"), salt, _PBKDF2_ITERATIONS)
    salt_b64 = base64.b64encode(salt).decode()
    return f"$7${_PBKDF2_ITERATIONS}${salt_b64}${base64.b64encode(digest).decode()}"


def verify_gateway_secret(stored_hash: str | None, secret: str) -> bool:
    """Whether secret matches a hash made by hash_gateway_secret (or mosquitto_passwd)."""
    m = _MOSQ_HASH.match(stored_hash or "")
    if m is None:
        return False
    try:
        salt = base64.b64decode(m.group(2), validate=True)
        want = base64.b64decode(m.group(3), validate=True)
    except ValueError:
        return False
    got = hashlib.pbkdf2_hmac("sha512", secret.encode("utf-8"), salt, int(m.group(1)))
    return hmac.compare_digest(got, want)


def new_signing_key() -> str:
    """A gateway's config-signing key (HMAC-SHA256, protocols/sign.py) as 64 hex digits,
    the form edge's bootstrap expects in its key_file."""
    return secrets.token_hex(32)


# --- principals ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """Who makes a request: a user acting in one organisation with one role, through an API
    token or a session (token_id), or a gateway (gateway_id) for gateway-originated changes."""

    org_id: int
    role: str
    user_id: int | None = None
    token_id: int | None = None
    email: str | None = None
    gateway_id: str | None = None

    def may(self, needed: str) -> bool:
        return role_at_least(self.role, needed)


def authenticate_token(conn: Connection, token: str, now_ms: int) -> Principal | None:
    """The principal of a bearer token (API token or session), or None when the token is
    unknown, expired, or its user no longer belongs to the token's organisation. The role is
    the weaker of the token's and the user's current membership role. Records last use."""
    row = (
        conn.execute(sa.select(t.api_tokens).where(t.api_tokens.c.token_hash == token_hash(token)))
        .mappings()
        .first()
    )
    if (
        row is None
        or row["revoked"]
        or row["user_id"] is None
        or (row["expires_ts_ms"] is not None and row["expires_ts_ms"] <= now_ms)
    ):
        return None
    member = (
        conn.execute(
            sa.select(t.memberships.c.role, t.users.c.email)
            .join(t.users, t.users.c.id == t.memberships.c.user_id)
            .where(
                t.memberships.c.user_id == row["user_id"],
                t.memberships.c.org_id == row["org_id"],
                t.users.c.disabled.is_(False),
            )
        )
        .mappings()
        .first()
    )
    if member is None:
        return None
    # Writing last_used on every request would serialise readers on SQLite; once a minute is enough.
    if row["last_used_ts_ms"] is None or now_ms - row["last_used_ts_ms"] > 60_000:
        conn.execute(
            sa.update(t.api_tokens)
            .where(t.api_tokens.c.id == row["id"])
            .values(last_used_ts_ms=now_ms)
        )
    return Principal(
        org_id=row["org_id"],
        role=weaker_role(row["role"], member["role"]),
        user_id=row["user_id"],
        token_id=row["id"],
        email=member["email"],
    )


def create_api_token(
    conn: Connection,
    user_id: int,
    org_id: int,
    role: str,
    name: str,
    now_ms: int,
    expires_ts_ms: int | None = None,
    prefix: str = API_TOKEN_PREFIX,
) -> tuple[int, str]:
    """(token id, token text shown once) for a user in an organisation, with at most the role
    the user has there (ValueError otherwise, or if the user is not a member)."""
    check_role(role)
    member_role = conn.execute(
        sa.select(t.memberships.c.role).where(
            t.memberships.c.user_id == user_id, t.memberships.c.org_id == org_id
        )
    ).scalar()
    if member_role is None:
        raise ValueError(f"user {user_id} is not a member of organisation {org_id}")
    if not role_at_least(member_role, role):
        raise ValueError(f"a token cannot have role {role!r}: the user is only {member_role!r}")
    token, digest = new_token(prefix)
    token_id = conn.execute(
        sa.insert(t.api_tokens)
        .values(
            token_hash=digest,
            user_id=user_id,
            org_id=org_id,
            role=role,
            name=name,
            expires_ts_ms=expires_ts_ms,
            created_ts_ms=now_ms,
        )
        .returning(t.api_tokens.c.id)
    ).scalar_one()
    return token_id, token


def login(conn: Connection, email: str, password: str, org_slug: str, now_ms: int) -> str | None:
    """A session token (for the UI's cookie) for a user's email and password in one of their
    organisations, with their role there and SESSION_TTL_MS to live; None if anything is wrong
    (the caller must not say what, so accounts cannot be probed)."""
    row = conn.execute(
        sa.select(t.users.c.id, t.users.c.password_hash, t.memberships.c.role, t.organisations.c.id)
        .join(t.memberships, t.memberships.c.user_id == t.users.c.id)
        .join(t.organisations, t.organisations.c.id == t.memberships.c.org_id)
        .where(t.users.c.email == email.strip().lower(), t.organisations.c.slug == org_slug)
    ).first()
    if row is None:
        verify_password(_DUMMY_HASH, password)  # same time as a real check
        return None
    user_id, stored, role, org_id = row
    if not verify_password(stored, password):
        return None
    _, token = create_api_token(
        conn,
        user_id,
        org_id,
        role,
        "session",
        now_ms,
        expires_ts_ms=now_ms + SESSION_TTL_MS,
        prefix=SESSION_TOKEN_PREFIX,
    )
    return token


_DUMMY_HASH = _hasher.hash("not a password of anyone")


# --- claim tokens and the claim exchange ---------------------------------------------------


def create_claim_token(
    conn: Connection,
    org_id: int,
    now_ms: int,
    ttl_ms: int,
    created_by: int | None,
    site_id: int | None = None,
    require_approval: bool = False,
    label: str = "",
) -> tuple[int, str]:
    """(claim id, token shown once): single use, valid for ttl_ms, bound to org (and site)."""
    if not 0 < ttl_ms <= CLAIM_TTL_MAX_MS:
        raise ValueError(f"ttl: between 1 ms and {CLAIM_TTL_MAX_MS // 86_400_000} days")
    token, digest = new_token(CLAIM_TOKEN_PREFIX)
    claim_id = conn.execute(
        sa.insert(t.claim_tokens)
        .values(
            token_hash=digest,
            org_id=org_id,
            site_id=site_id,
            expires_ts_ms=now_ms + ttl_ms,
            created_by=created_by,
            created_ts_ms=now_ms,
            require_approval=require_approval,
            label=label,
        )
        .returning(t.claim_tokens.c.id)
    ).scalar_one()
    return claim_id, token


@dataclass(frozen=True)
class Claimed:
    """What a gateway receives for its claim token (secrets shown this one time)."""

    gateway_id: str
    mqtt_username: str
    mqtt_password: str
    signing_key_hex: str
    status: str  # "accepted", or "pending" until an operator approves it
    next_seq: int
    org_id: int
    site_id: int | None

    def as_json(self, broker_url: str) -> dict[str, Any]:
        return {
            "gateway_id": self.gateway_id,
            "mqtt_username": self.mqtt_username,
            "mqtt_password": self.mqtt_password,
            "signing_key": self.signing_key_hex,
            "broker_url": broker_url,
            "status": self.status,
            "next_seq": self.next_seq,
        }


def _free_gateway_id(conn: Connection, wanted: str | None) -> str:
    if wanted is not None:
        if not is_gateway_id(wanted):
            raise ClaimError(f"gateway id {wanted!r}: must be 3-64 characters a-z, 0-9 or -")
        taken = conn.execute(sa.select(t.gateways.c.id).where(t.gateways.c.id == wanted)).first()
        if taken is not None:
            raise ClaimError(f"gateway id {wanted!r} is taken: ask for another or for none")
        return wanted
    while True:
        candidate = "gw-" + secrets.token_hex(5)
        if (
            conn.execute(sa.select(t.gateways.c.id).where(t.gateways.c.id == candidate)).first()
            is None
        ):
            return candidate


def exchange_claim(
    conn: Connection,
    token: str,
    now_ms: int,
    gateway_id: str | None = None,
    name: str | None = None,
    fw_version: str | None = None,
) -> Claimed:
    """Exchange a claim token for a new gateway identity (over HTTPS or MQTT: both call this).

    The token is used up in the same transaction that creates the gateway, by a conditional
    update, so two gateways racing with one token cannot both win. ClaimError says why a
    token is refused; unknown, used and expired tokens get distinct messages only because a
    token holder already knows it exists."""
    digest = token_hash(token)
    claim = (
        conn.execute(sa.select(t.claim_tokens).where(t.claim_tokens.c.token_hash == digest))
        .mappings()
        .first()
    )
    if claim is None:
        raise ClaimError("unknown claim token: check it was copied completely")
    if claim["used_ts_ms"] is not None:
        raise ClaimError("claim token already used: ask an operator for a new one")
    if claim["expires_ts_ms"] <= now_ms:
        raise ClaimError("claim token expired or revoked: ask an operator for a new one")
    new_id = _free_gateway_id(conn, gateway_id)
    won = conn.execute(
        sa.update(t.claim_tokens)
        .where(
            t.claim_tokens.c.id == claim["id"],
            t.claim_tokens.c.used_ts_ms.is_(None),
            t.claim_tokens.c.expires_ts_ms > now_ms,
        )
        .values(used_ts_ms=now_ms, used_by_gateway=new_id)
    ).rowcount
    if won != 1:
        raise ClaimError("claim token already used: ask an operator for a new one")
    secret = new_gateway_secret()
    key = new_signing_key()
    status = "pending" if claim["require_approval"] else "accepted"
    registry.create_gateway(
        conn,
        new_id,
        claim["org_id"],
        site_id=claim["site_id"],
        name=name or new_id,
        status=status,
        credential_hash=hash_gateway_secret(secret),
        signing_key=bytes.fromhex(key),
    )
    if fw_version is not None:
        conn.execute(
            sa.update(t.gateways).where(t.gateways.c.id == new_id).values(fw_version=fw_version)
        )
    return Claimed(
        gateway_id=new_id,
        mqtt_username=new_id,
        mqtt_password=secret,
        signing_key_hex=key,
        status=status,
        next_seq=1,
        org_id=claim["org_id"],
        site_id=claim["site_id"],
    )


def rotate_gateway_secret(conn: Connection, gateway_id: str) -> str:
    """A new MQTT password for a gateway (shown once); the old one stops working as soon as
    the broker's credentials are refreshed (fleet/mqtt regenerates them on change)."""
    secret = new_gateway_secret()
    conn.execute(
        sa.update(t.gateways)
        .where(t.gateways.c.id == gateway_id)
        .values(credential_hash=hash_gateway_secret(secret))
    )
    return secret
