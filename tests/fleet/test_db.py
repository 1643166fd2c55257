"""The database layer on SQLite and PostgreSQL: migrations from an empty database, engine
settings, and the registry functions (presence rules of contract 3, channels from a config)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect
from sqlalchemy.exc import IntegrityError

from fleet.db import registry
from fleet.db.engine import DatabaseUrlError, make_engine, normalize_url, read, transaction
from fleet.db.migrate import current_revision, head_revision, is_current, upgrade
from fleet.db.tables import metadata
from protocols.profiles import load_profile
from protocols.quantities import channel_id


def test_migrations_from_empty_create_the_whole_schema(empty_db_url: str) -> None:
    engine = make_engine(empty_db_url)
    try:
        assert current_revision(engine) is None and not is_current(engine)
        assert upgrade(engine) == head_revision()
        assert upgrade(engine) == head_revision()  # a second start changes nothing
        assert set(metadata.tables) <= set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            # The migrations build exactly the schema tables.py describes.
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        engine.dispose()


def test_sqlite_engine_settings(tmp_path: Any) -> None:
    engine = make_engine(str(tmp_path / "f.db"))
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    engine.dispose()


def test_database_urls() -> None:
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("fleet.db").startswith("sqlite:////")
    with pytest.raises(DatabaseUrlError, match="unsupported database URL scheme 'mysql'"):
        normalize_url("mysql://u@h/db")
    with pytest.raises(DatabaseUrlError, match="does not exist"):
        make_engine("/nonexistent-folder/fleet.db")


def test_transaction_rolls_back_on_error(db: Engine) -> None:
    with pytest.raises(RuntimeError), transaction(db) as conn:
        registry.create_org(conn, "town", "Town")
        raise RuntimeError("boom")
    with read(db) as conn:
        assert registry.get_org_by_slug(conn, "town") is None


def test_foreign_keys_hold(db: Engine) -> None:
    with pytest.raises(IntegrityError), transaction(db) as conn:
        registry.create_gateway(conn, "gw-orphan", org_id=999)


def test_presence_late_will_never_marks_a_live_gateway_offline(
    db: Engine, make_org_gateway: Callable[..., str]
) -> None:
    gw = make_org_gateway()

    def state(conn: Any) -> tuple[bool, int, int]:
        row = registry.get_gateway(conn, gw)
        return row["online"], row["boot"], row["session"]

    with transaction(db) as conn:
        assert registry.set_presence(conn, gw, online=True, boot=3, session=1, ts_ms=1000)
        assert registry.set_presence(conn, gw, online=True, boot=3, session=2, ts_ms=2000)
        # The will of session 1 arrives late: ignored.
        assert not registry.set_presence(conn, gw, online=False, boot=3, session=1, ts_ms=2100)
        assert not registry.set_presence(conn, gw, online=False, boot=2, session=9, ts_ms=2200)
        assert state(conn) == (True, 3, 2)
        # The will of the current session counts; a repeated birth after it does not revive it.
        assert registry.set_presence(conn, gw, online=False, boot=3, session=2, ts_ms=3000)
        assert not registry.set_presence(conn, gw, online=True, boot=3, session=2, ts_ms=3100)
        assert state(conn) == (False, 3, 2)
        assert registry.set_presence(conn, gw, online=True, boot=4, session=1, ts_ms=4000)
        assert state(conn) == (True, 4, 1)
        assert registry.get_gateway(conn, gw)["last_seen_ts_ms"] == 4000
        registry.record_status(conn, gw, {"uptime_s": 5}, 5000)
        row = registry.get_gateway(conn, gw)
        assert row["last_status"] == {"uptime_s": 5} and row["last_seen_ts_ms"] == 5000


def test_a_repeated_birth_never_sets_back_the_reported_config_version(
    db: Engine, make_org_gateway: Callable[..., str]
) -> None:
    """Births carry the configuration version the gateway ran when it connected; a report of
    the same session (v2) handled before a repeated birth of that session (v1) must stand."""
    from fleet import config_service

    gw = make_org_gateway()

    def version(conn: Any) -> int | None:
        return registry.get_gateway(conn, gw)["reported_config_version"]

    with transaction(db) as conn:
        registry.set_presence(conn, gw, online=True, boot=1, session=1, ts_ms=1000,
                              config_version=1)  # fmt: skip
        assert version(conn) == 1
        config_service.record_reported_many(
            conn, [(gw, {"version": 2, "desired_version": 2, "status": "applied"})], 1500
        )
        assert version(conn) == 2
        registry.set_presence(conn, gw, online=True, boot=1, session=1, ts_ms=1600,
                              config_version=1)  # fmt: skip
        assert version(conn) == 2
        # A new session says what runs now, even a lower version (a rollback at boot).
        registry.set_presence(conn, gw, online=True, boot=2, session=1, ts_ms=2000,
                              config_version=1)  # fmt: skip
        assert version(conn) == 1


def test_channels_from_a_config_document(
    db: Engine, make_org_gateway: Callable[..., str], gateway_config: dict[str, Any]
) -> None:
    gw = make_org_gateway()
    doc = dict(gateway_config, gateway=gw)
    doc["meters"] = [{k: v for k, v in doc["meters"][0].items() if k != "quantities"}]
    doc["sensors"] = [{k: v for k, v in doc["sensors"][0].items() if k != "quantities"}]
    with transaction(db) as conn:
        specs = registry.sync_devices_from_config(conn, gw, doc)
        active = registry.active_channels(conn, gw)
    profile = load_profile("sdm630")
    meter_channels = {s.channel for s in specs if s.device_id == 1}
    assert meter_channels == {channel_id(1, n) for n in profile.quantities}
    assert channel_id(100, "temperature") in active and channel_id(100, "co2") in active
    assert channel_id(100, "power_total") not in active  # a sensor sends only LoRa quantities
    volt = active[channel_id(1, "voltage_l1")]
    assert (volt["quantity"], volt["unit"]) == ("voltage_l1", "V")
    doc["meters"][0]["profile"] = "no_such_meter"
    with (
        pytest.raises(registry.RegistryError, match="list the meter's quantities"),
        transaction(db) as conn,
    ):
        registry.sync_devices_from_config(conn, gw, doc)
    with pytest.raises(registry.RegistryError, match="3..64 characters"), transaction(db) as conn:
        registry.create_gateway(conn, "GW_1", 1)
