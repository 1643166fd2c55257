"""INSERT ... ON CONFLICT for both engines (SQLite and PostgreSQL share the syntax but not the
SQLAlchemy construct). Only statement building; callers run them in their transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def _insert(conn: Connection, table: Table) -> Any:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"database {conn.dialect.name!r}: only SQLite and PostgreSQL")


def insert_ignore(conn: Connection, table: Table, keys: Sequence[str]) -> Any:
    """INSERT ... ON CONFLICT (keys) DO NOTHING (add .values(...) / .returning(...))."""
    return _insert(conn, table).on_conflict_do_nothing(index_elements=list(keys))


def insert_or_update(
    conn: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    update_columns: Sequence[str],
    where: Any = None,
) -> None:
    """Insert rows; a row whose keys exist updates update_columns (only where `where` holds,
    given as a function (table, excluded) -> condition). Several rows with the same keys in one
    call are not allowed (PostgreSQL refuses them): reduce them first."""
    if not rows:
        return
    stmt = _insert(conn, table)
    excluded = stmt.excluded
    cond: ColumnElement[bool] | None = where(table, excluded) if where is not None else None
    stmt = stmt.on_conflict_do_update(
        index_elements=list(keys),
        set_={c: excluded[c] for c in update_columns},
        where=cond,
    )
    # executemany with one compiled statement: SQLAlchemy caches the compilation and batches
    # the rows itself. Building a multi-row VALUES statement per call recompiled it every
    # time, which cost about half of the ingest CPU (bench.fleet profile).
    conn.execute(stmt, list(rows))
