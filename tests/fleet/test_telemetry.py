"""Telemetry storage on SQLite and PostgreSQL: compaction keeps every reading exact at its
resolution and never changes a query's answer, 15-minute aggregates of a known series, CSV,
and the bytes on disk per reading of a simulated day."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, func, select

from fleet.db.engine import read
from fleet.db.tables import telemetry_15min, telemetry_blocks, telemetry_staging
from fleet.telemetry import storage, synthetic
from fleet.telemetry.blocks import HOUR_MS, decode_block, encode_block
from fleet.telemetry.ingest import ACCEPTED, Ingestor
from protocols import codec
from protocols.quantities import channel_id

ENERGY = channel_id(1, "energy_import")
POWER = channel_id(1, "power_total")
TEMP = channel_id(100, "temperature")
HOUR0 = 1_759_996_800_000  # 2025-10-09T08:00:00Z, a whole hour
NOW_MS = HOUR0 + 6 * HOUR_MS


def clock() -> int:
    return NOW_MS


def put(
    engine: Engine,
    gw: str,
    seq: int,
    rows: list,
    resolution: object = None,
    historical: bool = False,
) -> None:
    payload = bytes(codec.encode_batch(seq, rows, historical=historical, resolution=resolution))
    assert Ingestor(engine, clock_ms=clock).ingest(gw, payload).outcome == ACCEPTED


def query(engine: Engine, gw: str, chans: list[int], lo: int, hi: int) -> tuple[dict, dict]:
    with read(engine) as conn:
        return (
            storage.raw_readings(conn, gw, chans, lo, hi),
            storage.aggregates_15min(conn, gw, chans, lo, hi),
        )


def test_compaction_round_trip_is_exact_and_changes_no_answer(
    db: Engine, make_org_gateway: Callable[..., str]
) -> None:
    gw = make_org_gateway()
    temps = [(TEMP, HOUR0 + i * 10_000, round(20 + (i % 37) * 0.1 - 1.5, 1)) for i in range(700)]
    energy = [(ENERGY, HOUR0 + i * 10_000, 5_000_000 + i * 17) for i in range(700)]
    put(db, gw, 1, temps[:300] + energy[:300])
    put(db, gw, 2, temps[300:] + energy[300:])
    span = (HOUR0 - HOUR_MS, HOUR0 + 3 * HOUR_MS)
    before = query(db, gw, [TEMP, ENERGY], *span)
    first = storage.compact(db)
    assert (
        first.batches == 2 and first.readings == 1400 and first.blocks == 4
    )  # 2 channels x 2 hours
    # A backfill into an hour already compacted, at a finer resolution (0.01 instead of 0.1),
    # one timestamp overlapping an existing reading (the later arrival wins).
    backfill = [(TEMP, HOUR0 + 5_000, 19.87), (TEMP, HOUR0 + 10_000, 22.25)]
    put(db, gw, 3, backfill, resolution={TEMP: 0.01}, historical=True)
    mixed = query(db, gw, [TEMP, ENERGY], *span)
    storage.compact_all(db)
    assert query(db, gw, [TEMP, ENERGY], *span) == mixed
    with read(db) as conn:
        assert conn.execute(select(func.count()).select_from(telemetry_staging)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(telemetry_blocks)).scalar() == 4
    raw_before, _ = before
    assert raw_before[TEMP] == [(t, v) for _, t, v in temps]  # floats exactly as decoded
    assert raw_before[ENERGY] == [(t, v) for _, t, v in energy]
    expected = dict(raw_before[TEMP])
    expected.update({HOUR0 + 5_000: 19.87, HOUR0 + 10_000: 22.25})
    raw_after, _ = query(db, gw, [TEMP], *span)
    assert raw_after[TEMP] == sorted(expected.items())


def test_fifteen_minute_aggregates_of_a_known_series(
    db: Engine, make_org_gateway: Callable[..., str]
) -> None:
    gw = make_org_gateway()
    # Power 0, 1, 2, ... W every 10 s for 45 minutes; energy rises by 2 Wh per 10 s.
    n = 270
    rows = [(POWER, HOUR0 + i * 10_000, i) for i in range(n)]
    rows += [(ENERGY, HOUR0 + i * 10_000, 1000 + 2 * i) for i in range(n)]
    put(db, gw, 1, rows[: n // 2] + rows[n : n + n // 2])
    storage.compact(db)  # half compacted, half staged: the answer must not care
    put(db, gw, 2, rows[n // 2 : n] + rows[n + n // 2 :])
    _, aggs = query(db, gw, [POWER, ENERGY], HOUR0, HOUR0 + HOUR_MS)
    power = aggs[POWER]
    assert [a.bucket_ts_ms for a in power] == [HOUR0, HOUR0 + 900_000, HOUR0 + 1_800_000]
    assert [a.count for a in power] == [90, 90, 90]
    assert [(a.min, a.max, a.first, a.last) for a in power] == [
        (0, 89, 0, 89),
        (90, 179, 90, 179),
        (180, 269, 180, 269),
    ]
    assert [a.avg for a in power] == [44.5, 134.5, 224.5]
    energy = aggs[ENERGY]
    # First quarter hour: no earlier bucket, so last - first; later ones: last - previous last.
    assert [a.delta for a in energy] == [178, 180, 180]
    storage.compact_all(db)
    _, again = query(db, gw, [POWER, ENERGY], HOUR0, HOUR0 + HOUR_MS)
    assert again == aggs
    with read(db) as conn:
        assert conn.execute(select(func.count()).select_from(telemetry_15min)).scalar() == 6
    # A query starting mid-series still uses the bucket before for the first delta.
    _, later = query(db, gw, [ENERGY], HOUR0 + 900_000, HOUR0 + HOUR_MS)
    assert [a.delta for a in later[ENERGY]] == [180, 180]


def test_csv_export(db: Engine, make_org_gateway: Callable[..., str]) -> None:
    gw = make_org_gateway()
    put(db, gw, 1, [(POWER, HOUR0, 10), (POWER, HOUR0 + 10_000, 30), (TEMP, HOUR0, 21.5)])
    out = io.StringIO()
    with read(db) as conn:
        n = storage.export_csv(conn, out, gw, [POWER, TEMP], HOUR0, HOUR0 + HOUR_MS)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert n == 3 and len(rows) == 3
    assert rows[0] == {
        "gateway": gw, "channel": str(POWER), "device_id": "1", "quantity": "power_total",
        "unit": "W", "ts_ms": str(HOUR0), "time_utc": "2025-10-09T08:00:00.000Z", "value": "10",
    }  # fmt: skip
    assert rows[2]["quantity"] == "temperature" and rows[2]["value"] == "21.5"
    out = io.StringIO()
    with read(db) as conn:
        storage.export_csv(conn, out, gw, [POWER], HOUR0, HOUR0 + HOUR_MS, interval="15min")
    agg = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(agg) == 1 and agg[0]["count"] == "2" and float(agg[0]["avg"]) == 20.0
    with pytest.raises(ValueError, match="interval"), read(db) as conn:
        storage.export_csv(conn, io.StringIO(), gw, [POWER], HOUR0, HOUR0 + 1, interval="5min")


def test_block_codec_round_trip() -> None:
    ts = [HOUR0 + 3, HOUR0 + 10_003, HOUR0 + 20_010, HOUR0 + HOUR_MS - 1]
    steps = [-(2**62 - 1), 0, 2**62 - 1, 7]
    data = encode_block(HOUR0, ts, steps, (5, -3))
    assert decode_block(HOUR0, data) == (ts, steps, (5, -3))
    with pytest.raises(ValueError, match="outside that hour"):
        encode_block(HOUR0, [HOUR0 + HOUR_MS], [1], (1, 0))


def test_disk_bytes_per_reading_of_a_simulated_day(sqlite_db: Engine) -> None:
    """Two SDM630 meters (10 quantities each) every 10 s for a day, 4 gateways: <= 3 bytes per
    reading on disk, aggregates, batch records and indexes included."""
    gws = synthetic.setup_gateways(sqlite_db, 4)
    run = synthetic.ingest_synthetic(sqlite_db, gws, 144, 60, start_ts_ms=HOUR0)
    assert run.readings == 4 * 144 * 60 * 20
    storage.compact_all(sqlite_db)
    size = storage.database_size_bytes(sqlite_db)
    with read(sqlite_db) as conn:
        stored = storage.stored_readings(conn)
    assert stored == run.readings
    assert size / stored <= 3.0, f"{size / stored:.2f} bytes per reading"
