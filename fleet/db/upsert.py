"""INSERT ... ON CONFLICT for both engines (SQLite and PostgreSQL share the syntax but not the
SQLAlchemy construct). Only statement building; callers run them in their transaction."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def _insert(conn: Connection, table: Table) -> Any:
    return _insert_for(conn.dialect.name, table)


def _insert_for(dialect: str, table: Table) -> Any:
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"database {dialect!r}: only SQLite and PostgreSQL")


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
    given as a module-level function (table, excluded) -> condition: the statement is built
    once per table, keys, columns and function). Several rows with the same keys in one
    call are not allowed (PostgreSQL refuses them): reduce them first."""
    if not rows:
        return
    stmt = _upsert_statement(conn.dialect.name, table, tuple(keys), tuple(update_columns), where)
    # executemany with one compiled statement: SQLAlchemy caches the compilation and batches
    # the rows itself. Building a multi-row VALUES statement per call recompiled it every
    # time, which cost about half of the ingest CPU (bench.fleet profile).
    conn.execute(stmt, list(rows))


@lru_cache(maxsize=256)
def _upsert_statement(
    dialect: str, table: Table, keys: tuple[str, ...], update_columns: tuple[str, ...], where: Any
) -> Any:
    # The statement once per shape: building `excluded` (an alias of the table with every
    # column) on each call was a third of the time of a rollout's delivery (bench.fleet).
    stmt = _insert_for(dialect, table)
    excluded = stmt.excluded
    cond: ColumnElement[bool] | None = where(table, excluded) if where is not None else None
    return stmt.on_conflict_do_update(
        index_elements=list(keys),
        set_={c: excluded[c] for c in update_columns},
        where=cond,
    )
