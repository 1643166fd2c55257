"""baseline: every table of the fleet

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-25 18:04:43.313040
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mqtt_outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("topic", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("qos", sa.Integer(), nullable=False),
        sa.Column("retain", sa.Boolean(), nullable=False),
        sa.Column("created_ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claimed_ts_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mqtt_outbox")),
    )
    with op.batch_alter_table("mqtt_outbox", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_mqtt_outbox_claimed_ts_ms"), ["claimed_ts_ms"], unique=False
        )

    op.create_table(
        "organisations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("shares_benchmarks", sa.Boolean(), nullable=False),
        sa.Column("created_ts_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organisations")),
        sa.UniqueConstraint("slug", name=op.f("uq_organisations_slug")),
    )
    op.create_table(
        "rejected_batches",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rejected_batches")),
    )
    with op.batch_alter_table("rejected_batches", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_rejected_batches_gateway_id_ts_ms"),
            ["gateway_id", "ts_ms"],
            unique=False,
        )

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("locale", sa.String(length=16), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_ts_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("expires_ts_ms", sa.BigInteger(), nullable=True),
        sa.Column("last_used_ts_ms", sa.BigInteger(), nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.CheckConstraint(
            "role IN ('admin', 'operator', 'technician', 'viewer')", name=op.f("ck_api_tokens_role")
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organisations.id"],
            name=op.f("fk_api_tokens_org_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_table(
        "memberships",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.CheckConstraint(
            "role IN ('admin', 'operator', 'technician', 'viewer')",
            name=op.f("ck_memberships_role"),
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organisations.id"],
            name=op.f("fk_memberships_org_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_memberships_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "org_id", name=op.f("pk_memberships")),
    )
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("target", sa.JSON(), nullable=False),
        sa.Column("change", sa.JSON(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=True),
        sa.Column("batch_share", sa.Float(), nullable=True),
        sa.Column("rate_per_min", sa.Float(), nullable=True),
        sa.Column("failure_threshold", sa.Float(), nullable=False),
        sa.Column("halt_reason", sa.Text(), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_ts_ms", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "state IN ('running', 'paused', 'halted', 'cancelled', 'completed')",
            name=op.f("ck_rollouts_state"),
        ),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_rollouts_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organisations.id"],
            name=op.f("fk_rollouts_org_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollouts")),
    )
    op.create_table(
        "sites",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("floor_area_m2", sa.Float(), nullable=True),
        sa.Column("building_type", sa.String(length=64), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("created_ts_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organisations.id"],
            name=op.f("fk_sites_org_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sites")),
        sa.UniqueConstraint("org_id", "name", name=op.f("uq_sites_org_id_name")),
    )
    op.create_table(
        "audit_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=True),
        sa.Column("actor_user_id", sa.Integer(), nullable=True),
        sa.Column("actor_token_id", sa.Integer(), nullable=True),
        sa.Column("actor_gateway_id", sa.String(length=64), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["actor_token_id"],
            ["api_tokens.id"],
            name=op.f("fk_audit_log_actor_token_id_api_tokens"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["actor_user_id"],
            ["users.id"],
            name=op.f("fk_audit_log_actor_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organisations.id"],
            name=op.f("fk_audit_log_org_id_organisations"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audit_log_org_id_ts_ms"), ["org_id", "ts_ms"], unique=False
        )

    op.create_table(
        "claim_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=True),
        sa.Column("require_approval", sa.Boolean(), nullable=False),
        sa.Column("created_ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("expires_ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("used_ts_ms", sa.BigInteger(), nullable=True),
        sa.Column("used_by_gateway", sa.String(length=64), nullable=True),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_claim_tokens_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organisations.id"],
            name=op.f("fk_claim_tokens_org_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["sites.id"],
            name=op.f("fk_claim_tokens_site_id_sites"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_claim_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_claim_tokens_token_hash")),
    )
    op.create_table(
        "gateways",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("credential_hash", sa.Text(), nullable=True),
        sa.Column("signing_key", sa.LargeBinary(), nullable=True),
        sa.Column("fw_version", sa.String(length=64), nullable=True),
        sa.Column("reported_config_version", sa.Integer(), nullable=True),
        sa.Column("desired_config_version", sa.Integer(), nullable=True),
        sa.Column("boot", sa.BigInteger(), nullable=True),
        sa.Column("session", sa.BigInteger(), nullable=True),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("last_seen_ts_ms", sa.BigInteger(), nullable=True),
        sa.Column("last_status", sa.JSON(), nullable=True),
        sa.Column("last_status_ts_ms", sa.BigInteger(), nullable=True),
        sa.Column("next_expected_seq", sa.BigInteger(), nullable=False),
        sa.Column("channels_rev", sa.Integer(), nullable=False),
        sa.Column("rejected_batches", sa.BigInteger(), nullable=False),
        sa.Column("created_ts_ms", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'accepted', 'rejected', 'revoked')",
            name=op.f("ck_gateways_status"),
        ),
        sa.CheckConstraint("length(id) >= 3", name=op.f("ck_gateways_id_length")),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organisations.id"],
            name=op.f("fk_gateways_org_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_gateways_site_id_sites"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateways")),
    )
    with op.batch_alter_table("gateways", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gateways_org_id"), ["org_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_gateways_site_id"), ["site_id"], unique=False)

    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("gateway_id", sa.String(length=64), nullable=True),
        sa.Column("device_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("opened_ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("closed_ts_ms", sa.BigInteger(), nullable=True),
        sa.Column("acknowledged_by", sa.Integer(), nullable=True),
        sa.Column("acknowledged_ts_ms", sa.BigInteger(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.CheckConstraint(
            "severity IN ('info', 'warning', 'critical')", name=op.f("ck_alerts_severity")
        ),
        sa.ForeignKeyConstraint(
            ["acknowledged_by"],
            ["users.id"],
            name=op.f("fk_alerts_acknowledged_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["gateway_id"],
            ["gateways.id"],
            name=op.f("fk_alerts_gateway_id_gateways"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organisations.id"],
            name=op.f("fk_alerts_org_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_alerts_gateway_id_kind_closed_ts_ms"),
            ["gateway_id", "kind", "closed_ts_ms"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_alerts_org_id_closed_ts_ms"), ["org_id", "closed_ts_ms"], unique=False
        )

    op.create_table(
        "batches",
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("received_ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("readings", sa.Integer(), nullable=False),
        sa.Column("historical", sa.Boolean(), nullable=False),
        sa.Column("digest", sa.LargeBinary(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["gateway_id"],
            ["gateways.id"],
            name=op.f("fk_batches_gateway_id_gateways"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("gateway_id", "seq", name=op.f("pk_batches")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "channels",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.BigInteger(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.String(length=64), nullable=False),
        sa.Column("unit", sa.String(length=16), nullable=False),
        sa.Column("resolution", sa.Float(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["gateway_id"],
            ["gateways.id"],
            name=op.f("fk_channels_gateway_id_gateways"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channels")),
        sa.UniqueConstraint("gateway_id", "channel", name=op.f("uq_channels_gateway_id_channel")),
    )
    op.create_table(
        "config_documents",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("rollout_id", sa.Integer(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_config_documents_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["gateway_id"],
            ["gateways.id"],
            name=op.f("fk_config_documents_gateway_id_gateways"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_config_documents")),
        sa.UniqueConstraint(
            "gateway_id", "version", name=op.f("uq_config_documents_gateway_id_version")
        ),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("profile", sa.String(length=200), nullable=True),
        sa.Column("unit", sa.Integer(), nullable=True),
        sa.Column("bus", sa.String(length=200), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.CheckConstraint("kind IN ('meter', 'sensor')", name=op.f("ck_devices_kind")),
        sa.ForeignKeyConstraint(
            ["gateway_id"],
            ["gateways.id"],
            name=op.f("fk_devices_gateway_id_gateways"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices")),
        sa.UniqueConstraint(
            "gateway_id", "device_id", name=op.f("uq_devices_gateway_id_device_id")
        ),
    )
    op.create_table(
        "latest",
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.BigInteger(), nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("received_ts_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["gateway_id"],
            ["gateways.id"],
            name=op.f("fk_latest_gateway_id_gateways"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("gateway_id", "channel", name=op.f("pk_latest")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "rollout_targets",
        sa.Column("rollout_id", sa.Integer(), nullable=False),
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("config_version", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("updated_ts_ms", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "state IN ('queued', 'delivered', 'applied', 'failed', 'rolled_back')",
            name=op.f("ck_rollout_targets_state"),
        ),
        sa.ForeignKeyConstraint(
            ["gateway_id"],
            ["gateways.id"],
            name=op.f("fk_rollout_targets_gateway_id_gateways"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["rollouts.id"],
            name=op.f("fk_rollout_targets_rollout_id_rollouts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("rollout_id", "gateway_id", name=op.f("pk_rollout_targets")),
    )
    with op.batch_alter_table("rollout_targets", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_rollout_targets_rollout_id_state"), ["rollout_id", "state"], unique=False
        )

    op.create_table(
        "telemetry_staging",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("min_ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("max_ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["gateway_id"],
            ["gateways.id"],
            name=op.f("fk_telemetry_staging_gateway_id_gateways"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_telemetry_staging")),
    )
    with op.batch_alter_table("telemetry_staging", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_telemetry_staging_gateway_id_min_ts_ms"),
            ["gateway_id", "min_ts_ms"],
            unique=False,
        )

    op.create_table(
        "telemetry_15min",
        sa.Column("channel_pk", sa.Integer(), nullable=False),
        sa.Column("bucket_ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("min", sa.Float(), nullable=False),
        sa.Column("max", sa.Float(), nullable=False),
        sa.Column("sum", sa.Float(), nullable=False),
        sa.Column("first", sa.Float(), nullable=False),
        sa.Column("last", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["channel_pk"],
            ["channels.id"],
            name=op.f("fk_telemetry_15min_channel_pk_channels"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("channel_pk", "bucket_ts_ms", name=op.f("pk_telemetry_15min")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "telemetry_blocks",
        sa.Column("channel_pk", sa.Integer(), nullable=False),
        sa.Column("hour_ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["channel_pk"],
            ["channels.id"],
            name=op.f("fk_telemetry_blocks_channel_pk_channels"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("channel_pk", "hour_ts_ms", name=op.f("pk_telemetry_blocks")),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("telemetry_blocks")
    op.drop_table("telemetry_15min")
    with op.batch_alter_table("telemetry_staging", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_telemetry_staging_gateway_id_min_ts_ms"))

    op.drop_table("telemetry_staging")
    with op.batch_alter_table("rollout_targets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rollout_targets_rollout_id_state"))

    op.drop_table("rollout_targets")
    op.drop_table("latest")
    op.drop_table("devices")
    op.drop_table("config_documents")
    op.drop_table("channels")
    op.drop_table("batches")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alerts_org_id_closed_ts_ms"))
        batch_op.drop_index(batch_op.f("ix_alerts_gateway_id_kind_closed_ts_ms"))

    op.drop_table("alerts")
    with op.batch_alter_table("gateways", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gateways_site_id"))
        batch_op.drop_index(batch_op.f("ix_gateways_org_id"))

    op.drop_table("gateways")
    op.drop_table("claim_tokens")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_org_id_ts_ms"))

    op.drop_table("audit_log")
    op.drop_table("sites")
    op.drop_table("rollouts")
    op.drop_table("memberships")
    op.drop_table("api_tokens")
    op.drop_table("users")
    with op.batch_alter_table("rejected_batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rejected_batches_gateway_id_ts_ms"))

    op.drop_table("rejected_batches")
    op.drop_table("organisations")
    with op.batch_alter_table("mqtt_outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mqtt_outbox_claimed_ts_ms"))

    op.drop_table("mqtt_outbox")
