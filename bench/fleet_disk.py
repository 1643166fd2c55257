"""Bytes on disk per stored reading for bench/fleet.py: a simulated week (a day with --quick)
of 10-second polls ingested through the fleet's Ingestor into SQLite, compacted, then the
file measured per table; beside it the same readings one row per reading (the naive layout).
Measures; never edits the fleet."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.fleet_load import create_gateways

POLL_INTERVAL_S = 10
READINGS_PER_POLL = 20  # fleet.telemetry.synthetic: 2 SDM630 x 10 quantities


def _table_sizes(path: Path) -> dict[str, int]:
    """Bytes per table (its indexes included) from SQLite's dbstat."""
    con = sqlite3.connect(path)
    try:
        owner = dict(
            con.execute("SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')")
        )
        sizes: dict[str, int] = {}
        for name, size in con.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
            table = owner.get(name, name)
            sizes[table] = sizes.get(table, 0) + int(size)
        return sizes
    finally:
        con.close()


def _vacuum(path: Path) -> None:
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.execute("VACUUM")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()


def _file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def measure(
    folder: Path, days: float, polls_per_batch: Sequence[int], seed: int = 7
) -> dict[str, Any]:
    """One gateway per batch size in polls_per_batch, each `days` of polls ending now."""
    from fleet.db.engine import make_engine
    from fleet.db.migrate import upgrade
    from fleet.telemetry import storage
    from fleet.telemetry.ingest import ACCEPTED, Ingestor
    from fleet.telemetry.synthetic import synthetic_batches

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "week.db"
    engine = make_engine(str(path))
    upgrade(engine)
    gws = create_gateways(engine, len(polls_per_batch), prefix="disk")
    polls_total = int(days * 86_400 / POLL_INTERVAL_S)
    start_ts = (int(time.time()) // 3600 * 3600 - polls_total * POLL_INTERVAL_S - 3600) * 1000
    t0 = time.perf_counter()
    per_gw: list[list[bytes]] = []
    for i, polls in enumerate(polls_per_batch):
        n = polls_total // polls
        per_gw.append(list(synthetic_batches(start_ts, n, polls, seed=seed + i)))
    gen_s = time.perf_counter() - t0
    # Interleave the gateways in time order, as they would arrive, 64 batches a transaction.
    order: list[tuple[float, str, bytes]] = []
    for g, polls, batches in zip(gws, polls_per_batch, per_gw, strict=True):
        order += [((k + 1) * polls, g.id, b) for k, b in enumerate(batches)]
    order.sort(key=lambda x: x[0])
    ing = Ingestor(engine)
    readings = 0
    t0 = time.perf_counter()
    for i in range(0, len(order), 64):
        for r in ing.ingest_many([(gw, b) for _, gw, b in order[i : i + 64]]):
            if r.outcome != ACCEPTED:
                raise RuntimeError(f"a synthetic batch was not accepted: {r.reason}")
            readings += r.readings
    ingest_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compacted = storage.compact_all(engine)
    compact_s = time.perf_counter() - t0
    with engine.connect() as conn:
        stored = storage.stored_readings(conn)
    in_use = storage.database_size_bytes(engine)  # the fleet's own measure: pages in use
    engine.dispose()
    before_vacuum = _file_bytes(path)
    _vacuum(path)
    after_vacuum = _file_bytes(path)
    tables = _table_sizes(path)
    naive = _naive(folder / "naive.db", gws, per_gw, polls_total, polls_per_batch)
    return {
        "days": days,
        "gateways": len(gws),
        "readings": readings,
        "stored_readings": stored,
        "compacted_readings": compacted.readings,
        "batches": len(order),
        "bytes_file_after_compaction": before_vacuum,
        "bytes_in_use": in_use,
        "bytes_after_vacuum": after_vacuum,
        "bytes_per_reading": after_vacuum / stored,
        "bytes_per_reading_in_use": in_use / stored,
        "bytes_per_reading_file_before_vacuum": before_vacuum / stored,
        "per_table_bytes_per_reading": {
            k: round(v / stored, 3) for k, v in sorted(tables.items(), key=lambda kv: -kv[1])
        },
        "naive": naive,
        "generate_s": gen_s,
        "ingest_s": ingest_s,
        "ingest_readings_per_s": readings / ingest_s,
        "compact_s": compact_s,
        "compact_readings_per_s": compacted.readings / compact_s if compact_s else 0.0,
    }


def _naive(
    path: Path,
    gws: Sequence[Any],
    per_gw: list[list[bytes]],
    polls_total: int,
    sizes: Sequence[int],
) -> dict[str, Any]:
    """The same readings (the first day at most, enough for a per-reading size), one row each:
    (gateway, channel, ts_ms, value) with that as the primary key, WITHOUT ROWID (the most
    compact plain-row layout; ThingsBoard's ts_kv has the same key plus typed value columns)."""
    from protocols import codec

    day_polls = min(polls_total, 86_400 // POLL_INTERVAL_S)
    con = sqlite3.connect(path)
    try:
        con.execute(
            "CREATE TABLE readings (gateway_id TEXT NOT NULL, channel INTEGER NOT NULL, "
            "ts_ms INTEGER NOT NULL, value REAL NOT NULL, "
            "PRIMARY KEY (gateway_id, channel, ts_ms)) WITHOUT ROWID"
        )
        rows = 0
        for g, batches, polls in zip(gws, per_gw, sizes, strict=True):
            for b in batches[: day_polls // polls]:
                batch = codec.decode_batch(b)
                con.executemany(
                    "INSERT INTO readings VALUES (?, ?, ?, ?)",
                    [(g.id, ch, ts, float(v)) for ch, ts, v in batch.readings],
                )
                rows += len(batch.readings)
        con.commit()
        con.execute("VACUUM")
    finally:
        con.close()
    size = path.stat().st_size
    return {"readings": rows, "bytes": size, "bytes_per_reading": size / rows}
