"""The known data set of the energy-insight tests (tests/fleet/test_insight_api.py and
tests/ui/test_energy.py): a school's energy register sent through the real ingest, with the
calendar helpers both use. Expected figures stay in the tests, computed by hand."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine

from fleet.insight import calendar as cal
from fleet.telemetry import storage
from fleet.telemetry.ingest import ACCEPTED, Ingestor
from protocols import codec
from protocols.quantities import channel_id

ENERGY = channel_id(1, "energy_import")  # 284
MIN5 = 300_000


def at(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> int:
    """Epoch ms of a Europe/Berlin local time."""
    return cal.to_ms(dt.datetime(y, m, d, hh, mm))


NOW = at(2026, 1, 14)  # Wednesday 00:00 local


def ingest(
    db: Engine, gw: str, readings: list[tuple[int, int, float]], now_ms: int = NOW, seq: int = 1
) -> int:
    """Send the readings in batches of 400 from sequence number seq; the next free one."""
    ing = Ingestor(db, clock_ms=lambda: now_ms)
    for i in range(0, len(readings), 400):
        payload = bytes(codec.encode_batch(seq, readings[i : i + 400]))
        result = ing.ingest(gw, payload)
        assert result.outcome == ACCEPTED, result
        seq += 1
    return seq


def school_readings() -> list[tuple[int, int, float]]:
    """3 kW (250 Wh every 5 minutes) from Sun 11 Jan 2026 23:00 local; no readings 12 Jan
    22:00 .. 13 Jan 02:00; the counter is reset to 0 at 13 Jan 12:00; the last reading is at
    13 Jan 19:55."""
    t0 = at(2026, 1, 11, 23)
    readings = []
    for t in range(t0, at(2026, 1, 13, 20), MIN5):
        if at(2026, 1, 12, 22) <= t < at(2026, 1, 13, 2):
            continue
        if t < at(2026, 1, 13, 12):
            value = 1_000_000 + 250 * (t - t0) // MIN5
        else:
            value = 250 * (t - at(2026, 1, 13, 12)) // MIN5
        readings.append((ENERGY, t, float(value)))
    return readings


def ingest_school(db: Engine, gw: str) -> None:
    """school_readings() into gw: the first half compacted into blocks, the rest left staged,
    so the figures are read from both."""
    readings = school_readings()
    half = len(readings) // 2
    seq = ingest(db, gw, readings[:half])
    storage.compact_all(db)
    ingest(db, gw, readings[half:], seq=seq)
