"""Schema migrations of the fleet database: upgrade to the newest revision, show the current
one. Wraps Alembic (scripts in fleet/db/migrations); must not create tables any other way."""

from __future__ import annotations

import os

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from fleet.db.engine import make_engine

_MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", _MIGRATIONS)
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def upgrade(target: Engine | str, revision: str = "head") -> str | None:
    """Migrate the database (an engine, a URL or a SQLite path) to `revision`; returns the
    revision it is at afterwards. Safe to run on every start: a current database is untouched."""
    engine = make_engine(target) if isinstance(target, str) else target
    try:
        with engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
        return current_revision(engine)
    finally:
        if engine is not target:
            engine.dispose()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: never migrated)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "fleet/db/migrations/versions holds no revision"
    return head


def is_current(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()
