"""Fast-forward for the demo's charts: the past hours of each meter, simulated with hw_sim's
electrical model, stored through the fleet's ingest (fleet.telemetry.ingest: decode, checks,
idempotent store) as one historical batch per gateway, before the gateway reads live.

Why not accelerate time end to end: a gateway stamps readings with its own clock, and the
fleet refuses readings from the future, so only hw_sim's physics can run faster (--speed);
the past, however, can be filled. The batch uses seq 0, which no gateway uses (they count from
1), so it never meets a gateway's own batches and leaves the fleet's next expected seq alone.
Demo only: a real gateway's history comes from the gateway."""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy import Engine

from fleet.telemetry.ingest import ACCEPTED, Ingestor
from hw_sim.physics import ElectricalModel
from hw_sim.scenario import Building
from protocols import codec
from protocols import quantities as q

HISTORY_SEQ = 0
STEP_S = 300  # one reading per quantity every 5 minutes: a day is 288 points
MAX_HOURS = 168  # a week: 2016 points x channels stays within one batch
# What the charts show; the gateway reads more, live.
QUANTITIES = (
    "power_total", "energy_import", "voltage_l1", "voltage_l2", "voltage_l3", "current_l1",
    "current_l2", "current_l3", "power_factor_total", "frequency",
)  # fmt: skip


class HistoryError(RuntimeError):
    """The history could not be stored; the message says what the fleet answered."""


def simulate(
    building: Building, meter_ids: dict[str, int], known: set[int], hours: float, now_ms: int
) -> list[tuple[int, int, float]]:
    """Readings (channel, ts_ms, value) of the building's meters over the last `hours` before
    now_ms, for the channels in `known`. The meters' energy counters are moved on by the
    energy of those hours, so the live readings continue where the history ends."""
    readings: list[tuple[int, int, float]] = []
    start_ms = now_ms - int(hours * 3600_000)
    start_ms -= start_ms % (STEP_S * 1000)
    for name, device_id in meter_ids.items():
        live: ElectricalModel = building.meter(name).model
        past = ElectricalModel(
            live.params, live.tz, live.phases, live.seed + 1, counters=copy.copy(live.counters)
        )
        past.last_ts_ms = start_ms
        wanted = [(qn, q.channel_id(device_id, qn)) for qn in QUANTITIES]
        wanted = [(qn, ch) for qn, ch in wanted if ch in known]
        for ts in range(start_ms, now_ms, STEP_S * 1000):
            values = past.sample(ts)
            readings.extend((ch, ts, values[qn]) for qn, ch in wanted)
        past.advance(now_ms)
        # the meter counted during those hours too; its clock (hw_sim's, maybe faster) goes on
        live.counters.update(past.counters)
        live.last_ts_ms = building.clock.now_ms()
    readings.sort(key=lambda r: (r[0] >> 8, r[1], r[0]))
    return readings


def backfill(
    engine: Engine, gateway: str, building: Building, meter_ids: dict[str, int],
    channels: list[dict[str, Any]], hours: float, now_ms: int,
) -> int:  # fmt: skip
    """Store `hours` of simulated history (up to now_ms, the wall clock) of the gateway's
    meters; returns the number of readings. Call before the gateway polls its meters."""
    if not 0 < hours <= MAX_HOURS:
        raise HistoryError(f"--history {hours:g}: between 0 and {MAX_HOURS} hours")
    known = {c["channel"] for c in channels if c["active"]}
    readings = simulate(building, meter_ids, known, hours, now_ms)
    if not readings:
        return 0
    payload = codec.encode_batch(HISTORY_SEQ, readings, historical=True)
    result = Ingestor(engine).ingest(gateway, bytes(payload))
    if result.outcome != ACCEPTED:
        raise HistoryError(f"{gateway}: the fleet did not store the history: {result.reason}")
    return result.readings
