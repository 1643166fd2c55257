"""Database fixtures of the fleet tests: every test that takes `db` (or `db_url`) runs once on
SQLite and once on PostgreSQL (127.0.0.1:5432, database `test` to connect; each test gets a
database of its own, dropped afterwards). Without PostgreSQL the postgresql cases skip, except
in CI (CI=true), where they fail.

Fixtures: db_url (URL of a fresh migrated database), db (its Engine), empty_db_url (a fresh
database without tables), gateway_config (its configuration document), make_org_gateway (an organisation + an accepted gateway with a
configuration; returns the gateway id), sqlite_db / postgresql_db (one engine only)."""

from __future__ import annotations

import copy
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from fleet.db import registry
from fleet.db.engine import make_engine, transaction
from fleet.db.migrate import upgrade

PG_ADMIN_URL = os.environ.get("FLEET_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
ENGINES = ("sqlite", "postgresql")


def _pg_admin() -> Any:
    import psycopg

    url = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(url, autocommit=True, connect_timeout=3)


def _pg_url(dbname: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{dbname}"


@pytest.fixture(scope="session")
def pg_available() -> bool:
    try:
        _pg_admin().close()
        return True
    except Exception as exc:  # any failure to connect: psycopg.OperationalError, DNS, ...
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required in CI but unreachable: {exc}")
        return False


@pytest.fixture(scope="session")
def pg_template(pg_available: bool) -> Iterator[str | None]:
    """A migrated PostgreSQL database that each test's database is copied from (fast)."""
    if not pg_available:
        yield None
        return
    name = f"fleet_tpl_{uuid.uuid4().hex[:10]}"
    with _pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    engine = make_engine(_pg_url(name))
    upgrade(engine)
    engine.dispose()
    yield name
    with _pg_admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg_database(template: str | None) -> Iterator[str]:
    name = f"fleet_test_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as admin:
        if template:
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        else:
            admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_url(name)
    finally:
        with _pg_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _need_pg(pg_available: bool) -> None:
    if not pg_available:
        pytest.skip(
            reason=f"PostgreSQL at {PG_ADMIN_URL} unreachable (set FLEET_TEST_PG; CI=true fails): skipped on a user's machine only, CI fails"
        )


@pytest.fixture(params=ENGINES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh, migrated database: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        path = tmp_path / "fleet.db"
        engine = make_engine(str(path))
        upgrade(engine)
        engine.dispose()
        yield f"sqlite:///{path}"
        return
    _need_pg(request.getfixturevalue("pg_available"))
    yield from _pg_database(request.getfixturevalue("pg_template"))


@pytest.fixture(params=ENGINES)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh database without any table (for migration tests)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    _need_pg(request.getfixturevalue("pg_available"))
    yield from _pg_database(None)


@pytest.fixture
def db(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(str(tmp_path / "fleet.db"))
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def postgresql_db(pg_available: bool, pg_template: str | None) -> Iterator[Engine]:
    _need_pg(pg_available)
    for url in _pg_database(pg_template):
        engine = make_engine(url)
        yield engine
        engine.dispose()


# A configuration document: meter 1 (an SDM630, two quantities), LoRa sensor 100 (temperature).
TEST_CONFIG: dict[str, Any] = {
    "version": 1,
    "gateway": "gw-test-1",
    "buses": [{"id": "rs485-1", "type": "rtu", "port": "/dev/ttyUSB0"}],
    "meters": [
        {
            "id": 1,
            "name": "Hauptzaehler",
            "bus": "rs485-1",
            "unit": 1,
            "profile": "sdm630",
            "quantities": ["energy_import", "power_total"],
        }
    ],
    "lora": {"port": "/dev/ttyUSB1", "frequency_hz": 868100000},
    "sensors": [
        {"id": 100, "name": "Raum 1", "address": "A1B2C3D4", "format": "elsys",
         "quantities": ["temperature"]}
    ],
}  # fmt: skip


@pytest.fixture
def gateway_config() -> dict[str, Any]:
    """A copy of TEST_CONFIG (the configuration make_org_gateway gives its gateways)."""
    return copy.deepcopy(TEST_CONFIG)


@pytest.fixture
def make_org_gateway(db: Engine) -> Callable[..., str]:
    """make_org_gateway(gateway_id="gw-test-1", status="accepted", config=TEST_CONFIG):
    creates (once) the organisation "town" and its site, then the gateway with the config's
    devices and channels; returns the gateway id."""
    state: dict[str, int] = {}

    def make(
        gateway_id: str = "gw-test-1",
        status: str = "accepted",
        config: dict[str, Any] | None = None,
    ) -> str:
        with transaction(db) as conn:
            if not state:
                state["org"] = registry.create_org(conn, "town", "Town")
                state["site"] = registry.create_site(
                    conn, state["org"], "School", floor_area_m2=1200
                )
            registry.create_gateway(
                conn, gateway_id, state["org"], site_id=state["site"], status=status
            )
            doc = dict(config or TEST_CONFIG, gateway=gateway_id)
            registry.sync_devices_from_config(conn, gateway_id, doc)
        return gateway_id

    return make
