"""Synthetic gateways and batches for benchmarks and storage tests: realistic 10-second meter
series (random walks at each quantity's resolution, rising energy counters), ingested straight
into the database. Not used by the running fleet."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Engine

from fleet.db import registry
from fleet.db.engine import transaction
from fleet.telemetry.ingest import ACCEPTED, Ingestor
from protocols import codec
from protocols import quantities as q

# Quantity -> (start value, random-walk step size in resolution steps, lower bound).
METER_SERIES: dict[str, tuple[float, int, float]] = {
    "voltage_l1": (230.0, 3, 200.0),
    "voltage_l2": (231.0, 3, 200.0),
    "voltage_l3": (229.5, 3, 200.0),
    "current_l1": (12.0, 40, 0.0),
    "current_l2": (9.0, 40, 0.0),
    "current_l3": (10.5, 40, 0.0),
    "power_total": (7200.0, 60, 0.0),
    "frequency": (50.0, 2, 49.5),
    "power_factor_total": (0.95, 3, 0.5),
    "energy_import": (1_234_567.0, 0, 0.0),  # counter: grows by power_total * 10 s
}


def synthetic_config(gateway_id: str, meters: int = 2) -> dict[str, Any]:
    """A configuration document with `meters` SDM630 meters reading METER_SERIES."""
    return {
        "version": 1,
        "gateway": gateway_id,
        "buses": [{"id": "rs485-1", "type": "rtu", "port": "/dev/ttyUSB0"}],
        "meters": [
            {
                "id": i + 1,
                "name": f"meter {i + 1}",
                "bus": "rs485-1",
                "unit": i + 1,
                "profile": "sdm630",
                "quantities": list(METER_SERIES),
            }
            for i in range(meters)
        ],
    }


def setup_gateways(
    engine: Engine, n: int, *, prefix: str = "sim", meters: int = 2, org_slug: str = "bench"
) -> list[str]:
    """An organisation with n accepted gateways <prefix>-00001 ... and their channels."""
    ids = [f"{prefix}-{i:05d}" for i in range(1, n + 1)]
    with transaction(engine) as conn:
        org = registry.get_org_by_slug(conn, org_slug)
        org_id = org["id"] if org else registry.create_org(conn, org_slug, "Benchmark")
        for gw in ids:
            registry.create_gateway(conn, gw, org_id)
            registry.sync_devices_from_config(conn, gw, synthetic_config(gw, meters))
    return ids


class Series:
    """The evolving values of one gateway's meters (deterministic for a seed)."""

    def __init__(self, meters: int = 2, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.meters = meters
        self.steps: dict[int, int] = {}
        self.res: dict[int, tuple[int, int]] = {}
        for d in range(1, meters + 1):
            for name, (start, _, _) in METER_SERIES.items():
                ch = q.channel_id(d, name)
                m, e = codec.parse_resolution(q.resolution_of(name))
                self.res[ch] = (m, e)
                self.steps[ch] = round(start / codec.resolution_value(m, e))

    def rows(self, ts_ms: int, interval_s: int = 10) -> list[tuple[int, int, int]]:
        """One poll of every channel at ts_ms: [(channel, ts_ms, steps)]."""
        out = []
        for d in range(1, self.meters + 1):
            for name, (_, step, low) in METER_SERIES.items():
                ch = q.channel_id(d, name)
                m, e = self.res[ch]
                if step:
                    n = self.steps[ch] + self.rng.randint(-step, step)
                    if n * codec.resolution_value(m, e) < low:
                        n = self.steps[ch]
                else:  # energy in Wh at 1 Wh: power * interval
                    power = self.steps[q.channel_id(d, "power_total")]
                    n = self.steps[ch] + power * interval_s // 3600
                self.steps[ch] = n
                out.append((ch, ts_ms, n))
        return out


def synthetic_batches(
    start_ts_ms: int,
    n_batches: int,
    polls_per_batch: int,
    *,
    meters: int = 2,
    interval_s: int = 10,
    seed: int = 1,
    first_seq: int = 1,
) -> Iterator[bytes]:
    """Encoded batches of consecutive 10-second polls of one gateway."""
    series = Series(meters, seed)
    ts = start_ts_ms
    for k in range(n_batches):
        rows: list[tuple[int, int, int]] = []
        for _ in range(polls_per_batch):
            rows += series.rows(ts, interval_s)
            ts += interval_s * 1000
        yield bytes(codec.encode_batch(first_seq + k, rows, resolution=series.res, quantised=True))


class IngestRun(NamedTuple):
    readings: int
    batches: int
    seconds: float
    readings_per_s: float


def ingest_synthetic(
    engine: Engine,
    gateway_ids: Sequence[str],
    batches_per_gateway: int,
    polls_per_batch: int,
    *,
    start_ts_ms: int | None = None,
    meters: int = 2,
    group: int = 64,
) -> IngestRun:
    """Ingest batches of every gateway round-robin, `group` per transaction (as the bridge's
    group commit does); encoding happens before the clock starts."""
    start = start_ts_ms or (
        int(time.time() * 1000) - batches_per_gateway * polls_per_batch * 10_000
    )
    per_gw = [
        list(synthetic_batches(start, batches_per_gateway, polls_per_batch, meters=meters, seed=i))
        for i, _ in enumerate(gateway_ids)
    ]
    items = [
        (gw, per_gw[i][k]) for k in range(batches_per_gateway) for i, gw in enumerate(gateway_ids)
    ]
    ing = Ingestor(engine)
    readings = 0
    t0 = time.perf_counter()
    for i in range(0, len(items), group):
        for r in ing.ingest_many(items[i : i + group]):
            if r.outcome != ACCEPTED:
                raise RuntimeError(f"synthetic batch not accepted: {r.reason}")
            readings += r.readings
    seconds = time.perf_counter() - t0
    return IngestRun(readings, len(items), seconds, readings / seconds if seconds else 0.0)
