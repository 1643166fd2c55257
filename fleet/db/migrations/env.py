"""Alembic environment of the fleet database: runs migrations on the connection or URL that
fleet.db.migrate hands over. Must not be run with a URL from alembic.ini (there is none)."""

from __future__ import annotations

from alembic import context

from fleet.db.engine import make_engine
from fleet.db.tables import metadata

config = context.config


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # ALTER on SQLite: copy + rename
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(
            "no database given: use fleet.db.migrate.upgrade(url) or `fleet migrate`"
        )
    engine = make_engine(url)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()
