"""Every table of the fleet database as SQLAlchemy Core metadata (the one schema for SQLite and
PostgreSQL; Alembic migrations are written against it). Holds no queries: see repositories.

Conventions: ``*_ts_ms`` columns are UTC milliseconds since the epoch (BigInteger); ids of
organisations, sites, users and everything operator-made are integers; a gateway's id is its
text MQTT client id. Secrets are stored only as hashes, except a gateway's config signing key
(the fleet must sign with it; encryption at rest is out of scope, see docs/fleet-storage.md)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# Stable constraint names, so that Alembic migrations name the same objects on both engines.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

GATEWAY_STATUSES = ("pending", "accepted", "rejected", "revoked")
ROLES = ("admin", "operator", "technician", "viewer")
DEVICE_KINDS = ("meter", "sensor")
TARGET_STATES = ("queued", "delivered", "applied", "failed", "rolled_back")
ROLLOUT_STATES = ("running", "paused", "halted", "cancelled", "completed")
SEVERITIES = ("info", "warning", "critical")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


# --- organisations, sites, users --------------------------------------------------------

organisations = Table(
    "organisations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("slug", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("shares_benchmarks", Boolean, nullable=False, default=False),
    Column("created_ts_ms", BigInteger, nullable=False),
)

sites = Table(
    "sites",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("org_id", Integer, ForeignKey("organisations.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("address", Text, nullable=False, default=""),
    Column("floor_area_m2", Float, nullable=True),
    Column("building_type", String(64), nullable=False, default=""),
    Column("tags", JSON, nullable=False, default=lambda: []),
    Column("created_ts_ms", BigInteger, nullable=False),
    UniqueConstraint("org_id", "name"),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email", String(254), nullable=False, unique=True),  # stored lower-case
    Column("password_hash", Text, nullable=False),
    Column("name", String(200), nullable=False, default=""),
    Column("locale", String(16), nullable=False, default="de"),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_ts_ms", BigInteger, nullable=False),
)

memberships = Table(
    "memberships",
    metadata,
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("org_id", Integer, ForeignKey("organisations.id", ondelete="CASCADE"), primary_key=True),
    Column("role", String(16), nullable=False),
    CheckConstraint(_in("role", ROLES), name="role"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False, unique=True),  # sha256 hex of the token
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
    Column("org_id", Integer, ForeignKey("organisations.id", ondelete="CASCADE"), nullable=False),
    Column("role", String(16), nullable=False),
    Column("name", String(200), nullable=False, default=""),
    Column("created_ts_ms", BigInteger, nullable=False),
    Column("expires_ts_ms", BigInteger, nullable=True),
    Column("last_used_ts_ms", BigInteger, nullable=True),
    Column("revoked", Boolean, nullable=False, default=False),
    CheckConstraint(_in("role", ROLES), name="role"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("ts_ms", BigInteger, nullable=False),
    Column("org_id", Integer, ForeignKey("organisations.id", ondelete="SET NULL"), nullable=True),
    Column("actor_user_id", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    Column(
        "actor_token_id", Integer, ForeignKey("api_tokens.id", ondelete="SET NULL"), nullable=True
    ),
    Column("actor_gateway_id", String(64), nullable=True),
    Column("action", String(64), nullable=False),  # e.g. "gateway.revoke", "config.set"
    Column("target", String(200), nullable=False, default=""),  # e.g. "gateway:school-1"
    Column("details", JSON, nullable=False, default=lambda: {}),
    Index(None, "org_id", "ts_ms"),
)

# --- gateways and what they read -------------------------------------------------------

gateways = Table(
    "gateways",
    metadata,
    Column("id", String(64), primary_key=True),  # [a-z0-9-]{3,64}: MQTT client id and username
    Column("org_id", Integer, ForeignKey("organisations.id", ondelete="CASCADE"), nullable=False),
    Column("site_id", Integer, ForeignKey("sites.id", ondelete="SET NULL"), nullable=True),
    Column("name", String(200), nullable=False, default=""),
    Column("tags", JSON, nullable=False, default=lambda: []),
    Column("status", String(16), nullable=False, default="pending"),
    Column("credential_hash", Text, nullable=True),  # hash of the MQTT password
    Column("signing_key", LargeBinary, nullable=True),  # HMAC key for config envelopes (plain)
    Column("fw_version", String(64), nullable=True),
    Column("reported_config_version", Integer, nullable=True),
    Column("desired_config_version", Integer, nullable=True),
    Column("boot", BigInteger, nullable=True),
    Column("session", BigInteger, nullable=True),
    Column("online", Boolean, nullable=False, default=False),
    Column("last_seen_ts_ms", BigInteger, nullable=True),
    Column("last_status", JSON, nullable=True),
    Column("last_status_ts_ms", BigInteger, nullable=True),
    Column("next_expected_seq", BigInteger, nullable=False, default=1),
    # +1 whenever its devices/channels change, so ingest may cache the channel list.
    Column("channels_rev", Integer, nullable=False, default=0),
    Column("rejected_batches", BigInteger, nullable=False, default=0),
    Column("created_ts_ms", BigInteger, nullable=False),
    CheckConstraint(_in("status", GATEWAY_STATUSES), name="status"),
    CheckConstraint("length(id) >= 3", name="id_length"),
    Index(None, "org_id"),
    Index(None, "site_id"),
)

claim_tokens = Table(
    "claim_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False, unique=True),  # sha256 hex of the token
    Column("org_id", Integer, ForeignKey("organisations.id", ondelete="CASCADE"), nullable=False),
    Column("site_id", Integer, ForeignKey("sites.id", ondelete="SET NULL"), nullable=True),
    Column("require_approval", Boolean, nullable=False, default=False),
    Column("created_ts_ms", BigInteger, nullable=False),
    Column("expires_ts_ms", BigInteger, nullable=False),
    Column("created_by", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    Column("used_ts_ms", BigInteger, nullable=True),
    Column("used_by_gateway", String(64), nullable=True),
    Column("label", String(200), nullable=False, default=""),
)

devices = Table(
    "devices",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("gateway_id", String(64), ForeignKey("gateways.id", ondelete="CASCADE"), nullable=False),
    Column("device_id", Integer, nullable=False),  # the config's device id (< 2**24)
    Column("kind", String(16), nullable=False),
    Column("name", String(200), nullable=False, default=""),
    Column("profile", String(200), nullable=True),  # meter profile or LoRa payload format
    Column("unit", Integer, nullable=True),  # Modbus unit id
    Column("bus", String(200), nullable=True),
    Column("active", Boolean, nullable=False, default=True),  # False: gone from the config
    CheckConstraint(_in("kind", DEVICE_KINDS), name="kind"),
    UniqueConstraint("gateway_id", "device_id"),
)

channels = Table(
    "channels",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("gateway_id", String(64), ForeignKey("gateways.id", ondelete="CASCADE"), nullable=False),
    Column("channel", BigInteger, nullable=False),  # device_id << 8 | quantity code
    Column("device_id", Integer, nullable=False),
    Column("quantity", String(64), nullable=False),
    Column("unit", String(16), nullable=False),
    Column("resolution", Float, nullable=False),
    Column("active", Boolean, nullable=False, default=True),  # False: gone from the config
    UniqueConstraint("gateway_id", "channel"),
)

# --- ingest ----------------------------------------------------------------------------

batches = Table(
    "batches",
    metadata,
    Column(
        "gateway_id", String(64), ForeignKey("gateways.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("seq", BigInteger, primary_key=True),  # (gateway, seq): the idempotency key
    Column("received_ts_ms", BigInteger, nullable=False),
    Column("readings", Integer, nullable=False),
    Column("historical", Boolean, nullable=False),
    Column("digest", LargeBinary(16), nullable=False),  # of the decoded content, see ingest
    sqlite_with_rowid=False,
)

rejected_batches = Table(
    "rejected_batches",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("gateway_id", String(64), nullable=False),  # no FK: unknown gateways are recorded too
    Column("seq", BigInteger, nullable=True),  # None when not even the header decodes
    Column("reason", Text, nullable=False),
    Column("kind", String(32), nullable=False),  # malformed, unknown_channel, future, ...
    Column("ts_ms", BigInteger, nullable=False),
    Column("size_bytes", Integer, nullable=False),
    Index(None, "gateway_id", "ts_ms"),
)

# Raw readings waiting for compaction: one row per accepted batch, holding the batch bytes as
# received (already compact); compaction moves them into telemetry_blocks.
telemetry_staging = Table(
    "telemetry_staging",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("gateway_id", String(64), ForeignKey("gateways.id", ondelete="CASCADE"), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("min_ts_ms", BigInteger, nullable=False),
    Column("max_ts_ms", BigInteger, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Index(None, "gateway_id", "min_ts_ms"),
)

# Raw readings of one channel and one hour, packed (format: fleet/telemetry/blocks.py).
telemetry_blocks = Table(
    "telemetry_blocks",
    metadata,
    Column("channel_pk", Integer, ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True),
    Column("hour_ts_ms", BigInteger, primary_key=True),
    Column("count", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
    sqlite_with_rowid=False,
)

# 15-minute aggregates of one channel (bucket_ts_ms = start of the quarter hour).
telemetry_15min = Table(
    "telemetry_15min",
    metadata,
    Column("channel_pk", Integer, ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True),
    Column("bucket_ts_ms", BigInteger, primary_key=True),
    Column("count", Integer, nullable=False),
    Column("min", Float, nullable=False),
    Column("max", Float, nullable=False),
    Column("sum", Float, nullable=False),
    Column("first", Float, nullable=False),
    Column("last", Float, nullable=False),
    sqlite_with_rowid=False,
)

latest = Table(
    "latest",
    metadata,
    Column(
        "gateway_id", String(64), ForeignKey("gateways.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("channel", BigInteger, primary_key=True),
    Column("ts_ms", BigInteger, nullable=False),  # newest reading timestamp wins (contract 2)
    Column("value", Float, nullable=False),
    Column("received_ts_ms", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

# --- configuration and rollouts --------------------------------------------------------

config_documents = Table(
    "config_documents",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("gateway_id", String(64), ForeignKey("gateways.id", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("body", Text, nullable=False),  # the JSON text exactly as signed
    Column("created_by", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    Column("created_ts_ms", BigInteger, nullable=False),
    Column("rollout_id", Integer, nullable=True),
    Column("comment", Text, nullable=False, default=""),
    UniqueConstraint("gateway_id", "version"),
)

rollouts = Table(
    "rollouts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("org_id", Integer, ForeignKey("organisations.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False, default=""),
    Column("state", String(16), nullable=False, default="running"),
    Column(
        "target", JSON, nullable=False, default=lambda: {}
    ),  # selector: tags, site ids, gateway ids
    Column("change", JSON, nullable=False, default=lambda: {}),  # what is rolled out (config patch)
    Column("batch_size", Integer, nullable=True),
    Column("batch_share", Float, nullable=True),
    Column("rate_per_min", Float, nullable=True),
    Column("failure_threshold", Float, nullable=False, default=0.1),
    Column("halt_reason", Text, nullable=True),
    Column("created_by", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    Column("created_ts_ms", BigInteger, nullable=False),
    Column("updated_ts_ms", BigInteger, nullable=False),
    CheckConstraint(_in("state", ROLLOUT_STATES), name="state"),
)

rollout_targets = Table(
    "rollout_targets",
    metadata,
    Column("rollout_id", Integer, ForeignKey("rollouts.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "gateway_id", String(64), ForeignKey("gateways.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("state", String(16), nullable=False, default="queued"),
    Column("config_version", Integer, nullable=True),
    Column("reason", Text, nullable=True),
    Column("updated_ts_ms", BigInteger, nullable=False),
    CheckConstraint(_in("state", TARGET_STATES), name="state"),
    Index(None, "rollout_id", "state"),
)

# --- alerts ----------------------------------------------------------------------------

alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("org_id", Integer, ForeignKey("organisations.id", ondelete="CASCADE"), nullable=False),
    Column("gateway_id", String(64), ForeignKey("gateways.id", ondelete="CASCADE"), nullable=True),
    Column("device_id", Integer, nullable=True),
    Column("kind", String(64), nullable=False),  # offline, meter_silent, counter_backwards, ...
    Column("severity", String(16), nullable=False, default="warning"),
    Column("opened_ts_ms", BigInteger, nullable=False),
    Column("closed_ts_ms", BigInteger, nullable=True),
    Column("acknowledged_by", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    Column("acknowledged_ts_ms", BigInteger, nullable=True),
    Column("details", JSON, nullable=False, default=lambda: {}),
    CheckConstraint(_in("severity", SEVERITIES), name="severity"),
    Index(None, "org_id", "closed_ts_ms"),
    Index(None, "gateway_id", "kind", "closed_ts_ms"),
)


# --- energy insight (fleet/insight, docs/insight.md) -----------------------------------

# An organisation's own CO2 factors; where none is set for a carrier and year, the defaults
# in fleet/insight/data/emission_factors.json apply.
insight_emission_factors = Table(
    "insight_emission_factors",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("org_id", Integer, ForeignKey("organisations.id", ondelete="CASCADE"), nullable=False),
    Column("carrier", String(32), nullable=False),  # electricity, natural_gas, district_heating
    Column("year", Integer, nullable=False),
    Column("kg_per_kwh", Float, nullable=False),
    Column("source", Text, nullable=False, default=""),
    Column("updated_ts_ms", BigInteger, nullable=False),
    UniqueConstraint("org_id", "carrier", "year"),
)

# Per organisation: the night window of the base load and when a rise raises an alert.
insight_settings = Table(
    "insight_settings",
    metadata,
    Column("org_id", Integer, ForeignKey("organisations.id", ondelete="CASCADE"), primary_key=True),
    Column("night_start_hour", Integer, nullable=False, default=0),  # local time, inclusive
    Column("night_end_hour", Integer, nullable=False, default=4),  # local time, exclusive
    Column("base_load_rise_share", Float, nullable=False, default=0.2),  # +20 % opens an alert
    Column("baseline_weeks", Integer, nullable=False, default=4),
    Column("updated_ts_ms", BigInteger, nullable=False),
)

# Per channel: what the meter measures when the quantity alone does not say (a heat meter on
# district heating or a heat pump), a volume's energy content, and sub-meters, which building
# totals leave out (their energy is already in the main meter's).
insight_channels = Table(
    "insight_channels",
    metadata,
    Column("channel_pk", Integer, ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True),
    Column("carrier", String(32), nullable=True),
    Column("kwh_per_unit", Float, nullable=True),  # e.g. kWh per m³ of gas from the gas bill
    Column("submeter", Boolean, nullable=False, default=False),
)

# Tables F2/F3 append in fleet/db/tables_ops.py are part of the one schema (and its migrations).
from fleet.db import tables_ops  # noqa: E402, F401  (imports metadata from this module)
