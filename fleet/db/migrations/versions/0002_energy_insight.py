"""energy insight: emission factors, settings and channel roles

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 20:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "insight_emission_factors",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("carrier", sa.String(length=32), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("kg_per_kwh", sa.Float(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("updated_ts_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organisations.id"],
            name=op.f("fk_insight_emission_factors_org_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_insight_emission_factors")),
        sa.UniqueConstraint(
            "org_id",
            "carrier",
            "year",
            name=op.f("uq_insight_emission_factors_org_id_carrier_year"),
        ),
    )
    op.create_table(
        "insight_settings",
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("night_start_hour", sa.Integer(), nullable=False),
        sa.Column("night_end_hour", sa.Integer(), nullable=False),
        sa.Column("base_load_rise_share", sa.Float(), nullable=False),
        sa.Column("baseline_weeks", sa.Integer(), nullable=False),
        sa.Column("updated_ts_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organisations.id"],
            name=op.f("fk_insight_settings_org_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_insight_settings")),
    )
    op.create_table(
        "insight_channels",
        sa.Column("channel_pk", sa.Integer(), nullable=False),
        sa.Column("carrier", sa.String(length=32), nullable=True),
        sa.Column("kwh_per_unit", sa.Float(), nullable=True),
        sa.Column("submeter", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["channel_pk"],
            ["channels.id"],
            name=op.f("fk_insight_channels_channel_pk_channels"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("channel_pk", name=op.f("pk_insight_channels")),
    )


def downgrade() -> None:
    op.drop_table("insight_channels")
    op.drop_table("insight_settings")
    op.drop_table("insight_emission_factors")
