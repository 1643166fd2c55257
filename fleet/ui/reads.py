"""The few reads only the UI makes (the overview's "data arriving" figures), scoped to one
organisation like fleet/api/queries.py, whose functions the pages use for everything else."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fleet.db import tables as t

HOUR_MS = 3_600_000


def readings_per_hour(conn: Connection, org_id: int, since_ts_ms: int) -> dict[int, int]:
    """hour start (ts_ms) -> readings of batches received since since_ts_ms by the
    organisation's gateways (by arrival: this is about data reaching the fleet)."""
    b = t.batches.c
    hour = b.received_ts_ms - (b.received_ts_ms % HOUR_MS)
    rows = conn.execute(
        sa.select(hour.label("hour"), sa.func.sum(b.readings))
        .join(t.gateways, t.gateways.c.id == b.gateway_id)
        .where(t.gateways.c.org_id == org_id, b.received_ts_ms >= since_ts_ms)
        .group_by(hour)
    ).all()
    return {int(h): int(n or 0) for h, n in rows}
