"""Fixtures of the web UI tests: a SQLite fleet with two organisations (tests/fleet/api_helpers'
world: town-a with a user per role, town-b with its own gateway) and a signed-in UI client."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from ui_helpers import Org, client, make_org, sign_in

from fleet.db.engine import make_engine
from fleet.db.migrate import upgrade


@pytest.fixture(scope="session")
def _world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[Org, Org]]:
    """The two organisations, made once (argon2 hashes take a while) and copied per test."""
    path = tmp_path_factory.mktemp("ui-world") / "fleet.db"
    eng = make_engine(str(path))
    upgrade(eng)
    orgs = make_org(eng, "town-a"), make_org(eng, "town-b")
    eng.dispose()
    return path, orgs


@pytest.fixture
def engine(tmp_path: Path, _world: tuple[Path, tuple[Org, Org]]) -> Iterator[Engine]:
    shutil.copy(_world[0], tmp_path / "fleet.db")
    eng = make_engine(str(tmp_path / "fleet.db"))
    yield eng
    eng.dispose()


@pytest.fixture
def orgs(engine: Engine, _world: tuple[Path, tuple[Org, Org]]) -> tuple[Org, Org]:
    return _world[1]


@pytest.fixture
def ui(engine: Engine, orgs: tuple[Org, Org]) -> Callable[..., TestClient]:
    """ui(org="town-a", role="admin", base_url="http://testserver"): a signed-in client."""

    def make(org: str = "town-a", role: str = "admin", **kw: object) -> TestClient:
        c = client(engine)
        if kw:
            c = TestClient(c.app, **kw)  # type: ignore[arg-type]
        return sign_in(c, org, role)

    return make


@pytest.fixture
def pg_engine() -> Iterator[Engine]:
    """A fresh migrated PostgreSQL database (127.0.0.1:5432, as tests/fleet; FLEET_TEST_PG),
    dropped afterwards. Without PostgreSQL the test skips, except under CI=true."""
    import os
    import uuid

    import psycopg

    admin_url = os.environ.get("FLEET_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL at {admin_url} is required in CI: {exc}")
        pytest.skip(f"PostgreSQL at {admin_url} unreachable: skipped on a user's machine only")
    name = f"fleet_ui_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    eng = make_engine(admin_url.rpartition("/")[0] + "/" + name)
    try:
        upgrade(eng)
        yield eng
    finally:
        eng.dispose()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
