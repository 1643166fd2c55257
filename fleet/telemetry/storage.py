"""Telemetry storage (docs/fleet-storage.md): accepted batches wait in telemetry_staging as
received, compaction packs them into one block per channel and hour plus 15-minute aggregates;
queries (raw, 15-minute, CSV) merge blocks and what is still staged, so compaction never
changes an answer. The only place that knows the telemetry tables' SQL (ingest uses stage())."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, TextIO

from sqlalchemy import Connection, Engine, delete, func, select, text, tuple_

from fleet.db import upsert
from fleet.db.engine import is_postgresql, transaction
from fleet.db.tables import channels, telemetry_15min, telemetry_blocks, telemetry_staging
from fleet.telemetry.blocks import (
    HOUR_MS,
    common_resolution,
    decode_block,
    encode_block,
    rescale,
    values_of,
)
from protocols import codec
from protocols import quantities as q

BUCKET_MS = 900_000  # 15 minutes, the interval of German load profiles
_COMPACTION_LOCK = 0x464C45  # PostgreSQL advisory lock: one compaction at a time in the fleet
_CHUNK = 500  # keys per IN (...) list


class Aggregate(NamedTuple):
    """One channel's readings in one quarter hour. delta: for counters (energy, volume) the
    increase over the quarter hour: last - the previous quarter hour's last when that one has
    readings, else last - first."""

    bucket_ts_ms: int
    count: int
    min: float
    max: float
    avg: float
    first: float
    last: float
    delta: float


class CompactionStats(NamedTuple):
    batches: int
    readings: int
    blocks: int


# --- writing -----------------------------------------------------------------------------


def stage(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Keep accepted batches for compaction: dicts with gateway_id, seq, min_ts_ms, max_ts_ms and
    payload (the batch bytes as received)."""
    if rows:
        conn.execute(telemetry_staging.insert(), list(rows))


def compact(engine: Engine, max_batches: int = 5000) -> CompactionStats:
    """Move up to max_batches staged batches (oldest first) into blocks and aggregates, in one
    transaction. Safe to call from several fleet instances: on PostgreSQL one compacts at a
    time (the others return at once), on SQLite the write lock serialises them."""
    with transaction(engine) as conn:
        if is_postgresql(conn):
            got = conn.execute(select(func.pg_try_advisory_xact_lock(_COMPACTION_LOCK))).scalar()
            if not got:
                return CompactionStats(0, 0, 0)
        staged = conn.execute(
            select(
                telemetry_staging.c.id, telemetry_staging.c.gateway_id, telemetry_staging.c.payload
            )
            .order_by(telemetry_staging.c.id)
            .limit(max_batches)
        ).all()
        if not staged:
            return CompactionStats(0, 0, 0)
        pks = _channel_pks(conn, {row.gateway_id for row in staged})
        # (channel_pk, hour) -> {ts: (steps, res)} in arrival order, so a later arrival wins.
        fresh: dict[tuple[int, int], dict[int, tuple[int, tuple[int, int]]]] = {}
        n_readings = 0
        for row in staged:
            batch = codec.decode_batch(bytes(row.payload))
            for channel, ts_ms, n in batch.steps:
                pk = pks.get((row.gateway_id, channel))
                if pk is None:  # its gateway was deleted meanwhile
                    continue
                key = (pk, ts_ms - ts_ms % HOUR_MS)
                fresh.setdefault(key, {})[ts_ms] = (n, batch.resolutions[channel])
                n_readings += 1
        existing = _load_blocks(conn, list(fresh))
        block_rows: list[dict[str, Any]] = []
        agg_rows: list[dict[str, Any]] = []
        for (pk, hour), new in fresh.items():
            merged: dict[int, tuple[int, tuple[int, int]]] = {}
            old = existing.get((pk, hour))
            if old is not None:
                ts_list, steps, res = decode_block(hour, old)
                merged = {t: (n, res) for t, n in zip(ts_list, steps, strict=True)}
            merged.update(new)
            ts_sorted = sorted(merged)
            target = common_resolution(list({r for _, r in merged.values()}))
            steps_out = [rescale(merged[t][0], merged[t][1], target) for t in ts_sorted]
            block_rows.append(
                {
                    "channel_pk": pk,
                    "hour_ts_ms": hour,
                    "count": len(ts_sorted),
                    "data": encode_block(hour, ts_sorted, steps_out, target),
                }
            )
            values = values_of(steps_out, target)
            agg_rows.extend(_aggregate_rows(pk, ts_sorted, values))
        upsert.insert_or_update(
            conn, telemetry_blocks, block_rows, ("channel_pk", "hour_ts_ms"), ("count", "data")
        )
        upsert.insert_or_update(
            conn,
            telemetry_15min,
            agg_rows,
            ("channel_pk", "bucket_ts_ms"),
            ("count", "min", "max", "sum", "first", "last"),
        )
        ids = [row.id for row in staged]
        for i in range(0, len(ids), _CHUNK):
            conn.execute(
                delete(telemetry_staging).where(telemetry_staging.c.id.in_(ids[i : i + _CHUNK]))
            )
        return CompactionStats(len(staged), n_readings, len(block_rows))


def compact_all(engine: Engine, max_batches: int = 5000) -> CompactionStats:
    """compact() until nothing is staged (tests, benchmarks, `fleet` maintenance)."""
    total = CompactionStats(0, 0, 0)
    while True:
        got = compact(engine, max_batches)
        if got.batches == 0:
            return total
        total = CompactionStats(*(a + b for a, b in zip(total, got, strict=True)))


def drop_raw_before(conn: Connection, before_ts_ms: int) -> int:
    """Retention: delete raw blocks of hours that end before before_ts_ms (the 15-minute
    aggregates stay). Returns the number of blocks deleted."""
    done = conn.execute(
        delete(telemetry_blocks).where(telemetry_blocks.c.hour_ts_ms + HOUR_MS <= before_ts_ms)
    )
    return int(done.rowcount)


def _aggregate_rows(
    pk: int, ts_sorted: Sequence[int], values: Sequence[float]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for bucket, vals in _buckets(ts_sorted, values).items():
        rows.append(
            {
                "channel_pk": pk,
                "bucket_ts_ms": bucket,
                "count": len(vals),
                "min": min(vals),
                "max": max(vals),
                "sum": float(sum(vals)),
                "first": vals[0],
                "last": vals[-1],
            }
        )
    return rows


def _buckets(ts_sorted: Sequence[int], values: Sequence[float]) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for t, v in zip(ts_sorted, values, strict=True):
        out.setdefault(t - t % BUCKET_MS, []).append(v)
    return out


def _channel_pks(conn: Connection, gateway_ids: Iterable[str]) -> dict[tuple[str, int], int]:
    ids = list(gateway_ids)
    out: dict[tuple[str, int], int] = {}
    for i in range(0, len(ids), _CHUNK):
        rows = conn.execute(
            select(channels.c.gateway_id, channels.c.channel, channels.c.id).where(
                channels.c.gateway_id.in_(ids[i : i + _CHUNK])
            )
        )
        for gw, ch, pk in rows:
            out[(gw, int(ch))] = int(pk)
    return out


def _load_blocks(conn: Connection, keys: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    out: dict[tuple[int, int], bytes] = {}
    b = telemetry_blocks.c
    for i in range(0, len(keys), _CHUNK):
        rows = conn.execute(
            select(b.channel_pk, b.hour_ts_ms, b.data).where(
                tuple_(b.channel_pk, b.hour_ts_ms).in_(keys[i : i + _CHUNK])
            )
        )
        for pk, hour, data in rows:
            out[(int(pk), int(hour))] = bytes(data)
    return out


# --- reading -----------------------------------------------------------------------------


def raw_readings(
    conn: Connection,
    gateway_id: str,
    channel_list: Sequence[int],
    start_ts_ms: int,
    end_ts_ms: int,
) -> dict[int, list[tuple[int, float]]]:
    """channel -> [(ts_ms, value)] ascending, for start_ts_ms <= ts_ms < end_ts_ms. Channels
    the gateway never had are absent from the answer."""
    pks = _pks_of(conn, gateway_id, channel_list)
    found: dict[int, dict[int, float]] = {ch: {} for ch in pks}
    by_pk = {pk: ch for ch, pk in pks.items()}
    b = telemetry_blocks.c
    first_hour = start_ts_ms - start_ts_ms % HOUR_MS
    pk_list = list(by_pk)
    for i in range(0, len(pk_list), _CHUNK):
        rows = conn.execute(
            select(b.channel_pk, b.hour_ts_ms, b.data)
            .where(
                b.channel_pk.in_(pk_list[i : i + _CHUNK]),
                b.hour_ts_ms >= first_hour,
                b.hour_ts_ms < end_ts_ms,
            )
            .order_by(b.channel_pk, b.hour_ts_ms)
        )
        for pk, hour, data in rows:
            ts_list, steps, res = decode_block(int(hour), bytes(data))
            target = found[by_pk[int(pk)]]
            for t, v in zip(ts_list, values_of(steps, res), strict=True):
                if start_ts_ms <= t < end_ts_ms:
                    target[t] = v
    for channel, t, v in _staged_readings(conn, gateway_id, set(pks), start_ts_ms, end_ts_ms):
        found[channel][t] = v
    return {ch: sorted(vals.items()) for ch, vals in found.items()}


def _staged_readings(
    conn: Connection, gateway_id: str, wanted: set[int], start_ts_ms: int, end_ts_ms: int
) -> list[tuple[int, int, float]]:
    s = telemetry_staging.c
    rows = conn.execute(
        select(s.payload)
        .where(s.gateway_id == gateway_id, s.max_ts_ms >= start_ts_ms, s.min_ts_ms < end_ts_ms)
        .order_by(s.id)
    )
    out: list[tuple[int, int, float]] = []
    for (payload,) in rows:
        for channel, t, v in codec.decode_batch(bytes(payload)).readings:
            if channel in wanted and start_ts_ms <= t < end_ts_ms:
                out.append((channel, t, v))
    return out


def _pks_of(conn: Connection, gateway_id: str, channel_list: Sequence[int]) -> dict[int, int]:
    rows = conn.execute(
        select(channels.c.channel, channels.c.id).where(
            channels.c.gateway_id == gateway_id, channels.c.channel.in_(list(channel_list))
        )
    )
    return {int(ch): int(pk) for ch, pk in rows}


def aggregates_15min(
    conn: Connection,
    gateway_id: str,
    channel_list: Sequence[int],
    start_ts_ms: int,
    end_ts_ms: int,
) -> dict[int, list[Aggregate]]:
    """channel -> quarter-hour aggregates whose bucket starts in [start_ts_ms, end_ts_ms)
    (start rounded down to a quarter hour), ascending. Buckets with readings still staged are
    computed from the raw readings, so the answer does not depend on compaction."""
    lo = start_ts_ms - start_ts_ms % BUCKET_MS
    fetch_lo = lo - BUCKET_MS  # the bucket before, for the first bucket's delta
    pks = _pks_of(conn, gateway_id, channel_list)
    by_pk = {pk: ch for ch, pk in pks.items()}
    # channel -> bucket -> (count, min, max, sum, first, last)
    table: dict[int, dict[int, tuple[int, float, float, float, float, float]]] = {
        ch: {} for ch in pks
    }
    a = telemetry_15min.c
    pk_list = list(by_pk)
    for i in range(0, len(pk_list), _CHUNK):
        rows = conn.execute(
            select(
                a.channel_pk, a.bucket_ts_ms, a.count, a.min, a.max, a.sum, a.first, a.last
            ).where(
                a.channel_pk.in_(pk_list[i : i + _CHUNK]),
                a.bucket_ts_ms >= fetch_lo,
                a.bucket_ts_ms < end_ts_ms,
            )
        )
        for pk, bucket, *vals in rows:
            table[by_pk[int(pk)]][int(bucket)] = tuple(vals)  # type: ignore[assignment]
    staged = _staged_readings(conn, gateway_id, set(pks), fetch_lo, end_ts_ms)
    dirty: dict[int, set[int]] = {}
    for channel, t, _v in staged:
        dirty.setdefault(channel, set()).add(t - t % BUCKET_MS)
    if dirty:
        span_lo = min(min(s) for s in dirty.values())
        span_hi = max(max(s) for s in dirty.values()) + BUCKET_MS
        raw = raw_readings(conn, gateway_id, list(dirty), span_lo, span_hi)
        for channel, buckets in dirty.items():
            pts = raw.get(channel, [])
            grouped = _buckets([t for t, _ in pts], [v for _, v in pts])
            for bucket in buckets:
                vals = grouped[bucket]
                table[channel][bucket] = (
                    len(vals),
                    min(vals),
                    max(vals),
                    float(sum(vals)),
                    vals[0],
                    vals[-1],
                )
    out: dict[int, list[Aggregate]] = {}
    for channel, buckets in table.items():
        result: list[Aggregate] = []
        for bucket in sorted(buckets):
            count, mn, mx, sm, first, last = buckets[bucket]
            prev = buckets.get(bucket - BUCKET_MS)
            if bucket < lo:
                continue
            delta = last - prev[5] if prev is not None else last - first
            result.append(Aggregate(bucket, count, mn, mx, sm / count, first, last, delta))
        out[channel] = result
    return out


# --- CSV -----------------------------------------------------------------------------------


def _iso(ts_ms: int) -> str:
    return (
        dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _meta(
    conn: Connection, gateway_id: str, channel_list: Sequence[int]
) -> dict[int, tuple[str, str]]:
    rows = conn.execute(
        select(channels.c.channel, channels.c.quantity, channels.c.unit).where(
            channels.c.gateway_id == gateway_id, channels.c.channel.in_(list(channel_list))
        )
    )
    return {int(ch): (qty, unit) for ch, qty, unit in rows}


RAW_CSV_HEADER = (
    "gateway",
    "channel",
    "device_id",
    "quantity",
    "unit",
    "ts_ms",
    "time_utc",
    "value",
)
AGG_CSV_HEADER = (
    "gateway", "channel", "device_id", "quantity", "unit", "bucket_ts_ms", "time_utc",
    "count", "min", "max", "avg", "first", "last", "delta",
)  # fmt: skip


def export_csv(
    conn: Connection,
    out: TextIO,
    gateway_id: str,
    channel_list: Sequence[int],
    start_ts_ms: int,
    end_ts_ms: int,
    interval: str = "raw",
) -> int:
    """Write readings ("raw") or quarter-hour aggregates ("15min") as CSV (one row per reading
    or bucket, UTC times); returns the number of data rows written."""
    if interval not in ("raw", "15min"):
        raise ValueError(f"interval {interval!r}: use 'raw' or '15min'")
    meta = _meta(conn, gateway_id, channel_list)
    writer = csv.writer(out, lineterminator="\n")
    count = 0
    if interval == "raw":
        writer.writerow(RAW_CSV_HEADER)
        for channel, pts in sorted(
            raw_readings(conn, gateway_id, channel_list, start_ts_ms, end_ts_ms).items()
        ):
            qty, unit = meta.get(channel, (q.name_of(channel & 0xFF), ""))
            for t, v in pts:
                writer.writerow((gateway_id, channel, channel >> 8, qty, unit, t, _iso(t), v))
                count += 1
        return count
    writer.writerow(AGG_CSV_HEADER)
    aggs = aggregates_15min(conn, gateway_id, channel_list, start_ts_ms, end_ts_ms)
    for channel, rows in sorted(aggs.items()):
        qty, unit = meta.get(channel, (q.name_of(channel & 0xFF), ""))
        for r in rows:
            writer.writerow(
                (gateway_id, channel, channel >> 8, qty, unit, r.bucket_ts_ms, _iso(r.bucket_ts_ms),
                 r.count, r.min, r.max, r.avg, r.first, r.last, r.delta)
            )  # fmt: skip
            count += 1
    return count


# --- size ------------------------------------------------------------------------------------


def database_size_bytes(engine: Engine) -> int:
    """Bytes the database takes on disk (SQLite: pages in use after a WAL checkpoint;
    PostgreSQL: pg_database_size)."""
    with engine.connect() as conn:
        if is_postgresql(conn):
            return int(
                conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
            )
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
        free = conn.exec_driver_sql("PRAGMA freelist_count").scalar_one()
        size = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
        return int((pages - free) * size)


def stored_readings(conn: Connection) -> int:
    """Readings in blocks (compacted); staged ones are not counted."""
    return int(
        conn.execute(select(func.coalesce(func.sum(telemetry_blocks.c.count), 0))).scalar_one()
    )
