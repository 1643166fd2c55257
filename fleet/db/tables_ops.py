"""Tables appended by the MQTT side (F2), included in the schema by tables.include_ops_tables().
Holds no queries: fleet/mqtt/store.py has them."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, LargeBinary, String, Table

from fleet.db.tables import metadata

# --- F2: messages waiting to be published by any fleet instance's MQTT bridge ------------
# A transactional outbox: fleet/config_service.py inserts the retained config/desired envelope
# in the same transaction that stores the document; a bridge claims rows (claimed_by/_ts_ms,
# so a crashed instance's claims expire), publishes them and deletes them.
mqtt_outbox = Table(
    "mqtt_outbox",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("topic", String(200), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("qos", Integer, nullable=False, default=1),
    Column("retain", Boolean, nullable=False, default=False),
    Column("created_ts_ms", BigInteger, nullable=False),
    Column("claimed_by", String(64), nullable=True),
    Column("claimed_ts_ms", BigInteger, nullable=True),
    Index(None, "claimed_ts_ms"),
)
