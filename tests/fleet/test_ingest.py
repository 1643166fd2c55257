"""Contract suite of ingest (contract 1, 2, 8) on SQLite and PostgreSQL: resent batches are
stored once, bad batches are rejected and counted without touching stored data, the latest
value is the newest timestamp, and racing ingests of one (gateway, seq) store it once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, func, select

from fleet.db import registry
from fleet.db.engine import make_engine, read, transaction
from fleet.db.tables import batches, gateways, latest, rejected_batches, telemetry_staging
from fleet.telemetry import storage
from fleet.telemetry.ingest import ACCEPTED, DUPLICATE, REJECTED, Ingestor, ingest
from protocols import codec, messages
from protocols.quantities import channel_id

ENERGY = channel_id(1, "energy_import")
POWER = channel_id(1, "power_total")
TEMP = channel_id(100, "temperature")
NOW_MS = 1_760_000_000_000  # 2025-10-09, the fleet clock in these tests
T0 = NOW_MS - 3_600_000


def clock() -> int:
    return NOW_MS


def batch(seq: int, readings: list[tuple[int, int, float]], historical: bool = False) -> bytes:
    return bytes(codec.encode_batch(seq, readings, historical=historical))


def sample(seq: int, n: int = 6, start: int = T0) -> bytes:
    rows = []
    for i in range(n):
        t = start + i * 10_000
        rows += [(ENERGY, t, 1000 + i), (POWER, t, 500 + 3 * i), (TEMP, t, 21.5)]
    return batch(seq, rows)


def snapshot(engine: Engine) -> tuple[object, ...]:
    """Everything ingest may have stored (to prove a rejection touched nothing)."""
    with read(engine) as conn:
        return (
            conn.execute(select(batches).order_by(batches.c.seq)).all(),
            conn.execute(select(latest).order_by(latest.c.channel)).all(),
            conn.execute(select(telemetry_staging.c.seq, telemetry_staging.c.payload)).all(),
            conn.execute(select(gateways.c.next_expected_seq)).all(),
        )


def rejections(engine: Engine) -> list[tuple[str, int | None, str]]:
    with read(engine) as conn:
        return [
            tuple(r)
            for r in conn.execute(
                select(
                    rejected_batches.c.gateway_id, rejected_batches.c.seq, rejected_batches.c.kind
                )
            )
        ]


def test_accepted_batch_is_stored_then_acked(
    db: Engine, make_org_gateway: Callable[..., str]
) -> None:
    gw = make_org_gateway()
    result = Ingestor(db, clock_ms=clock).ingest(gw, sample(1))
    assert result.outcome == ACCEPTED and result.readings == 18
    assert messages.decode_ack(result.ack) == messages.Ack(1)
    with read(db) as conn:
        assert conn.execute(select(batches.c.seq, batches.c.readings)).all() == [(1, 18)]
        assert registry.next_free_seq(conn, gw) == 2
        got = storage.raw_readings(conn, gw, [ENERGY, TEMP], T0, NOW_MS)
    assert got[ENERGY] == [(T0 + i * 10_000, 1000 + i) for i in range(6)]
    assert got[TEMP] == [(T0 + i * 10_000, 21.5) for i in range(6)]


def test_resent_batch_is_stored_once_and_acked_again(
    db: Engine, make_org_gateway: Callable[..., str]
) -> None:
    gw = make_org_gateway()
    ing = Ingestor(db, clock_ms=clock)
    first = ing.ingest(gw, sample(7))
    before = snapshot(db)
    again = ing.ingest(gw, sample(7))
    assert first.outcome == ACCEPTED
    assert again.outcome == DUPLICATE and again.ack == first.ack
    assert snapshot(db) == before
    # A fresh instance (no cache) sees the duplicate through the database alone.
    assert ingest(db, gw, sample(7), clock_ms=clock).outcome == DUPLICATE
    # The same seq twice in one group commit: stored once.
    results = ing.ingest_many([(gw, sample(8)), (gw, sample(8))])
    assert [r.outcome for r in results] == [ACCEPTED, DUPLICATE]
    with read(db) as conn:
        assert conn.execute(select(func.count()).select_from(batches)).scalar() == 2


def test_same_seq_with_other_content_is_rejected_and_original_kept(
    db: Engine, make_org_gateway: Callable[..., str]
) -> None:
    gw = make_org_gateway()
    ing = Ingestor(db, clock_ms=clock)
    assert ing.ingest(gw, sample(3)).outcome == ACCEPTED
    before = snapshot(db)
    other = ing.ingest(gw, sample(3, start=T0 + 60_000))
    assert other.outcome == REJECTED and other.kind == "seq_conflict"
    ack = messages.decode_ack(other.ack)
    assert ack.seq == 3 and "stored before with other readings" in ack.error
    assert snapshot(db) == before
    assert rejections(db) == [(gw, 3, "seq_conflict")]


def test_bad_batches_are_rejected_counted_and_touch_nothing(
    db: Engine, make_org_gateway: Callable[..., str]
) -> None:
    gw = make_org_gateway()
    ing = Ingestor(db, clock_ms=clock)
    assert ing.ingest(gw, sample(1)).outcome == ACCEPTED
    before = snapshot(db)
    good = sample(2)
    cases = {
        "malformed": good[:-3],  # truncated: the header (and its seq) still decodes
        "unknown_channel": batch(3, [(channel_id(2, "power_total"), T0, 5)]),
        "future": batch(4, [(POWER, NOW_MS + 301_000, 5)]),
        "past": batch(5, [(POWER, 900_000_000_000, 5)]),
    }
    for kind, payload in cases.items():
        result = ing.ingest(gw, payload)
        assert result.outcome == REJECTED and result.kind == kind, (kind, result)
        ack = messages.decode_ack(result.ack)
        assert ack.error and ack.seq == result.seq
    # Five minutes ahead is still fine (clocks drift); only beyond is "future".
    assert ing.ingest(gw, batch(6, [(POWER, NOW_MS + 299_000, 5)])).outcome == ACCEPTED
    assert ing.ingest("not-registered", sample(9)).kind == "gateway"
    garbage = ing.ingest(gw, b"\x00garbage")
    assert garbage.outcome == REJECTED and garbage.ack is None  # no seq to ack
    after = snapshot(db)
    assert after[0][:1] == before[0] and len(after[0]) == 2  # only seq 6 was added
    kinds = sorted(k for _, _, k in rejections(db))
    assert kinds == sorted(
        ["malformed", "unknown_channel", "future", "past", "gateway", "malformed"]
    )
    with read(db) as conn:
        assert registry.get_gateway(conn, gw)["rejected_batches"] == 5
    assert ing.counts[REJECTED] == 6


def test_revoked_and_pending_gateways(db: Engine, make_org_gateway: Callable[..., str]) -> None:
    revoked = make_org_gateway("gw-revoked", status="revoked")
    pending = make_org_gateway("gw-pending", status="pending")
    ing = Ingestor(db, clock_ms=clock)
    r = ing.ingest(revoked, sample(1))
    assert r.outcome == REJECTED and r.kind == "gateway" and b"revoked" in r.ack
    p = ing.ingest(pending, sample(1))
    assert p.outcome == REJECTED and p.kind == "pending" and p.ack is None  # resend later
    with transaction(db) as conn:
        registry.set_gateway_status(conn, pending, "accepted")
    assert ing.ingest(pending, sample(1)).outcome == ACCEPTED


def test_config_change_is_seen_by_a_running_ingestor(
    db: Engine, make_org_gateway: Callable[..., str], gateway_config: dict[str, Any]
) -> None:
    gw = make_org_gateway()
    ing = Ingestor(db, clock_ms=clock)
    current = channel_id(1, "current_l1")
    assert ing.ingest(gw, batch(1, [(current, T0, 5.0)])).kind == "unknown_channel"
    doc = dict(gateway_config, gateway=gw)
    doc["meters"] = [dict(gateway_config["meters"][0], quantities=["current_l1"])]
    with transaction(db) as conn:
        registry.sync_devices_from_config(conn, gw, doc)
    assert ing.ingest(gw, batch(2, [(current, T0, 5.0)])).outcome == ACCEPTED
    # power_total left the configuration: rejected now, its stored readings stay queryable.
    assert ing.ingest(gw, batch(3, [(POWER, T0, 5)])).kind == "unknown_channel"


def test_latest_is_newest_timestamp_not_newest_arrival(
    db: Engine, make_org_gateway: Callable[..., str]
) -> None:
    gw = make_org_gateway()
    ing = Ingestor(db, clock_ms=clock)
    assert ing.ingest(gw, batch(10, [(POWER, T0 + 60_000, 700)])).outcome == ACCEPTED
    # Backfill after an outage: older readings, arriving later, flagged historical.
    old = batch(11, [(POWER, T0, 100), (POWER, T0 + 10_000, 200), (TEMP, T0, 19.0)], True)
    assert ing.ingest(gw, old).outcome == ACCEPTED
    with read(db) as conn:
        values = {v.channel: (v.ts_ms, v.value) for v in registry.latest_values(conn, gw)}
    assert values[POWER] == (T0 + 60_000, 700)
    assert values[TEMP] == (T0, 19.0)  # the only reading of that channel
    assert ing.ingest(gw, batch(12, [(POWER, T0 + 70_000, 710)])).outcome == ACCEPTED
    with read(db) as conn:
        assert registry.latest_values(conn, gw, [POWER])[0][1:3] == (T0 + 70_000, 710)


def test_racing_ingests_of_one_seq_store_it_once(
    db_url: str, make_org_gateway: Callable[..., str]
) -> None:
    """Two fleet instances (own engines, own connections) ingest the same batches at once."""
    gw = make_org_gateway()
    payloads = [sample(seq, n=30) for seq in range(1, 41)]
    engines = [make_engine(db_url), make_engine(db_url)]
    results: list[list[str]] = [[], []]
    start = threading.Barrier(2)

    def run(k: int) -> None:
        ing = Ingestor(engines[k], clock_ms=clock)
        start.wait()
        for p in payloads:
            results[k].append(ing.ingest(gw, p).outcome)

    threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    t_begin = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert time.monotonic() - t_begin < 60
    for seq_index in range(40):
        pair = sorted((results[0][seq_index], results[1][seq_index]))
        assert pair == [ACCEPTED, DUPLICATE], (seq_index, pair)
    with read(engines[0]) as conn:
        assert conn.execute(select(func.count()).select_from(batches)).scalar() == 40
        assert conn.execute(select(func.count()).select_from(telemetry_staging)).scalar() == 40
        got = storage.raw_readings(conn, gw, [ENERGY], T0, NOW_MS)
    assert len(got[ENERGY]) == 30  # the same 30 timestamps in every batch, each once
    for e in engines:
        e.dispose()
