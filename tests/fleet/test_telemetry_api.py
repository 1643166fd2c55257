"""Telemetry through the API, on SQLite and PostgreSQL: batches ingested for a gateway whose
configuration was set with config_service.set_desired come back from GET .../telemetry (raw and
15-minute, JSON and CSV) and .../latest exactly: every value as the batch carried it, every
aggregate as computed from those values, whether the readings are still staged, compacted into
blocks, or both (a later batch into an hour already compacted)."""

from __future__ import annotations

import csv
import io
import random
from typing import Any

from api_helpers import NOW_MS, Org, bearer, client, make_org
from sqlalchemy import Engine

from fleet import config_service
from fleet.db.engine import transaction
from fleet.telemetry import storage
from fleet.telemetry.ingest import ACCEPTED, Ingestor
from protocols import codec
from protocols.quantities import channel_id

HOUR_MS = 3_600_000
QUARTER_MS = 900_000
T0 = NOW_MS - NOW_MS % HOUR_MS - 2 * HOUR_MS  # an hour boundary, two hours before "now"
QUANTITIES = ["voltage_l1", "current_l1", "power_total", "energy_import"]
CHANNELS = [channel_id(1, name) for name in QUANTITIES]
RESOLUTION = {channel_id(1, "voltage_l1"): 0.1, channel_id(1, "current_l1"): 0.001}
CONFIG: dict[str, Any] = {
    "buses": [{"id": "rs485-1", "type": "rtu", "port": "/dev/ttyUSB0"}],
    "meters": [{"id": 1, "name": "Main", "bus": "rs485-1", "unit": 1, "profile": "sdm630",
                "quantities": QUANTITIES}],
}  # fmt: skip


def _batches(first_seq: int, start_ts_ms: int, polls: int, per_batch: int) -> list[bytes]:
    """10-second polls: noisy voltage/current/power, a rising energy counter."""
    rng = random.Random(first_seq)
    steps = {CHANNELS[0]: 2301, CHANNELS[1]: 12_345, CHANNELS[2]: 7200, CHANNELS[3]: 1_000_000}
    out = []
    rows: list[tuple[int, int, int]] = []
    for i in range(polls):
        ts = start_ts_ms + i * 10_000
        for ch in CHANNELS[:3]:
            steps[ch] += rng.randint(-40, 40)
        steps[CHANNELS[3]] += steps[CHANNELS[2]] * 10 // 3600
        rows += [(ch, ts, steps[ch]) for ch in CHANNELS]
        if (i + 1) % per_batch == 0 or i == polls - 1:
            seq = first_seq + len(out)
            out.append(codec.encode_batch(seq, rows, resolution=RESOLUTION, quantised=True))
            rows = []
    return out


def _aggregates(readings: dict[int, dict[int, float]], start: int, end: int) -> dict[str, Any]:
    """docs/api.md: buckets starting in [start rounded down to a quarter hour, end); delta =
    last - the previous quarter hour's last (when it has readings), else last - first."""
    lo = start - start % QUARTER_MS
    out: dict[str, Any] = {}
    for ch, points in readings.items():
        buckets: dict[int, list[float]] = {}
        for ts in sorted(points):
            buckets.setdefault(ts - ts % QUARTER_MS, []).append(points[ts])
        rows = []
        for b in sorted(buckets):
            if not lo <= b < end:
                continue
            vals = buckets[b]
            prev = buckets.get(b - QUARTER_MS)
            rows.append({
                "bucket_ts_ms": b, "count": len(vals), "min": min(vals), "max": max(vals),
                "avg": sum(vals) / len(vals), "first": vals[0], "last": vals[-1],
                "delta": vals[-1] - (prev[-1] if prev else vals[0]),
            })  # fmt: skip
        out[str(ch)] = rows
    return out


class Expected:
    """What the fleet must answer: every reading of every ingested batch, by channel and ts."""

    def __init__(self) -> None:
        self.readings: dict[int, dict[int, float]] = {ch: {} for ch in CHANNELS}

    def add(self, payload: bytes) -> None:
        for ch, ts, v in codec.decode_batch(payload).readings:
            self.readings[ch][ts] = v

    def raw(self, start: int, end: int) -> dict[str, Any]:
        return {
            str(ch): [{"ts_ms": ts, "value": pts[ts]} for ts in sorted(pts) if start <= ts < end]
            for ch, pts in self.readings.items()
        }


def _check(c: Any, org: Org, expected: Expected, start: int, end: int) -> None:
    h = bearer(org.tokens["viewer"])
    url = f"/api/v1/gateways/{org.gateway}/telemetry"
    params: dict[str, Any] = {"channel": CHANNELS, "start_ts_ms": start, "end_ts_ms": end}
    r = c.get(url, params=params, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["raw"] == expected.raw(start, end)
    r = c.get(url, params={**params, "interval": "15min"}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["aggregates"] == _aggregates(expected.readings, start, end)
    # CSV: the same numbers, one row per reading / quarter hour
    r = c.get(url, params=params, headers={**h, "Accept": "text/csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    want = [(str(ch), str(p["ts_ms"]), p["value"])
            for ch, pts in sorted(expected.raw(start, end).items(), key=lambda kv: int(kv[0]))
            for p in pts]  # fmt: skip
    assert [(x["channel"], x["ts_ms"], float(x["value"])) for x in rows] == want
    assert {x["quantity"] for x in rows} == set(QUANTITIES)
    r = c.get(url, params={**params, "interval": "15min", "format": "csv"}, headers=h)
    assert r.status_code == 200
    got = [
        (int(x["channel"]), int(x["bucket_ts_ms"]), int(x["count"]), float(x["min"]),
         float(x["max"]), float(x["avg"]), float(x["first"]), float(x["last"]), float(x["delta"]))
        for x in csv.DictReader(io.StringIO(r.text))
    ]  # fmt: skip
    agg = _aggregates(expected.readings, start, end)
    assert got == [
        (int(ch), a["bucket_ts_ms"], a["count"], a["min"], a["max"], a["avg"], a["first"],
         a["last"], a["delta"])
        for ch in sorted(agg, key=int) for a in agg[ch]
    ]  # fmt: skip


def test_ingested_readings_come_back_exactly_before_and_after_compaction(db: Engine) -> None:
    org = make_org(db, "town-a", roles=("viewer",))
    with transaction(db) as conn:
        stored, _ = config_service.set_desired(conn, org.gateway, CONFIG, NOW_MS)
    assert stored.version == 2
    ingest = Ingestor(db, clock_ms=lambda: NOW_MS)
    expected = Expected()
    c = client(db)
    # 75 minutes of 10-second polls in batches of 5 minutes, delivered out of order
    first = _batches(1, T0, 450, 30)
    order = list(range(len(first)))
    random.Random(7).shuffle(order)
    for i in order:
        assert ingest.ingest(org.gateway, first[i]).outcome == ACCEPTED
        expected.add(first[i])
    windows = [(T0, T0 + 2 * HOUR_MS), (T0 + 5 * 60_000 + 5_000, T0 + 40 * 60_000 + 1)]
    for start, end in windows:
        _check(c, org, expected, start, end)  # all staged
    assert storage.compact_all(db).readings == 450 * len(CHANNELS)
    for start, end in windows:
        _check(c, org, expected, start, end)  # all in blocks and aggregates
    # 30 more minutes: into the second hour, which already has a block
    more = _batches(100, T0 + 450 * 10_000, 180, 60)
    for payload in more:
        assert ingest.ingest(org.gateway, payload).outcome == ACCEPTED
        expected.add(payload)
    windows.append((T0 + HOUR_MS - 7 * 60_000, T0 + 2 * HOUR_MS))
    for start, end in windows:
        _check(c, org, expected, start, end)  # blocks + staged
    storage.compact_all(db)
    for start, end in windows:
        _check(c, org, expected, start, end)  # compacted again, merged into the old block
    r = c.get(f"/api/v1/gateways/{org.gateway}/latest", headers=bearer(org.tokens["viewer"]))
    newest = T0 + (450 + 180 - 1) * 10_000
    assert {(x["channel"], x["ts_ms"], x["value"]) for x in r.json()} == {
        (ch, newest, expected.readings[ch][newest]) for ch in CHANNELS
    }
