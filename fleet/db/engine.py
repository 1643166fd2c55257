"""Database engines for the fleet: one SQLAlchemy Core code path on SQLite (one machine) and
PostgreSQL (several instances). Knows URLs, pragmas and transactions; holds no SQL of its own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

DEFAULT_SQLITE_FILE = "fleet.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000


class DatabaseUrlError(ValueError):
    """A --database value that is neither a SQLite file nor a PostgreSQL URL."""


def normalize_url(url: str | os.PathLike[str]) -> str:
    """The SQLAlchemy URL for a --database value.

    Accepts a file path (SQLite), ``sqlite:///path``, ``sqlite://`` (in memory, tests only),
    ``postgresql://...`` / ``postgres://...`` (switched to the psycopg 3 driver) and
    ``postgresql+psycopg://...``."""
    text = os.fspath(url).strip()
    if not text:
        raise DatabaseUrlError(
            "empty database URL: give a SQLite file path (fleet.db) or postgresql://user@host/db"
        )
    if "://" not in text:
        return "sqlite:///" + os.path.abspath(text)
    scheme, rest = text.split("://", 1)
    scheme = scheme.lower()
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        return "postgresql+psycopg://" + rest
    if scheme in ("sqlite", "sqlite+pysqlite"):
        return "sqlite://" + rest
    raise DatabaseUrlError(
        f"unsupported database URL scheme {scheme!r} in {text!r}: use a SQLite file path, "
        "sqlite:///path/fleet.db or postgresql://user:password@host:5432/dbname"
    )


def is_sqlite(engine_or_conn: Engine | Connection) -> bool:
    return engine_or_conn.dialect.name == "sqlite"


def is_postgresql(engine_or_conn: Engine | Connection) -> bool:
    return engine_or_conn.dialect.name == "postgresql"


def make_engine(url: str | os.PathLike[str], *, echo: bool = False, **kwargs: Any) -> Engine:
    """An engine for a SQLite file or a PostgreSQL database (see normalize_url).

    SQLite connections get WAL, foreign keys, a busy timeout and synchronous=NORMAL (durable
    across application crashes; WAL keeps committed data across power loss up to the last
    checkpoint); write transactions opened with transaction() start with BEGIN IMMEDIATE, so
    two writers queue on the busy timeout instead of failing with "database is locked"."""
    try:
        sa_url = make_url(normalize_url(url))
    except ArgumentError as exc:
        raise DatabaseUrlError(f"cannot parse database URL {os.fspath(url)!r}: {exc}") from exc
    if sa_url.get_backend_name() == "sqlite":
        return _sqlite_engine(sa_url, echo=echo, **kwargs)
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(sa_url, echo=echo, **kwargs)


def _sqlite_engine(sa_url: Any, *, echo: bool, **kwargs: Any) -> Engine:
    memory = sa_url.database in (None, "", ":memory:")
    connect_args = dict(kwargs.pop("connect_args", {}))
    connect_args.setdefault("check_same_thread", False)
    connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
    if memory:
        kwargs.setdefault("poolclass", StaticPool)
    else:
        folder = os.path.dirname(sa_url.database)
        if folder and not os.path.isdir(folder):
            raise DatabaseUrlError(
                f"the folder of the SQLite database {sa_url.database!r} does not exist: create it "
                "or choose another --database path"
            )
    engine = create_engine(sa_url, echo=echo, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy (not the sqlite3 module) decide when transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if not memory:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """One write transaction: commits when the block ends, rolls back on an exception.

    On SQLite it takes the write lock up front (BEGIN IMMEDIATE)."""
    with engine.connect() as conn:
        conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            yield conn


@contextmanager
def read(engine: Engine) -> Iterator[Connection]:
    """One read-only snapshot (a deferred transaction that is rolled back at the end)."""
    with engine.connect() as conn, conn.begin() as tx:
        yield conn
        tx.rollback()
