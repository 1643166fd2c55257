"""Alerts an operator must see: gateway offline after N missed batch intervals, meter stopped
answering, meter error rate high, energy counter went backwards, gateway buffer filling up,
gateway clock wrong. Open (at most one open alert per gateway, device and kind), close when
the cause is gone, acknowledge. It reads presence and status the bridge stored; it sends
nothing (notifications are another concern)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from fleet.db import tables as t
from fleet.db.engine import is_postgresql, transaction

OFFLINE = "offline"
METER_SILENT = "meter_silent"
ERROR_RATE = "error_rate_high"
COUNTER_BACKWARDS = "counter_backwards"
BUFFER_FILLING = "buffer_filling"
CLOCK_WRONG = "clock_wrong"
BASE_LOAD_RISE = "base_load_rise"  # opened and closed by fleet/insight/watch.py
KINDS = (
    OFFLINE, METER_SILENT, ERROR_RATE, COUNTER_BACKWARDS, BUFFER_FILLING, CLOCK_WRONG,
    BASE_LOAD_RISE,
)  # fmt: skip
DEFAULT_BATCH_INTERVAL_S = 10  # protocols/config.py: uplink.batch_interval_s
_PRESENCE_LOCK = 0x464C46  # PostgreSQL advisory lock: one presence check at a time


class UnknownAlert(LookupError):
    pass


@dataclass(frozen=True)
class AlertSettings:
    offline_missed_intervals: int = 3  # offline after this many batch intervals without contact
    offline_min_s: int = 120  # ... but never sooner (status and reconnects take time)
    error_rate: float = 0.2  # failed polls / all polls of a meter between two statuses
    min_polls: int = 10  # no error-rate verdict on fewer polls
    buffer_age_s: int = 3600  # oldest unsent reading older than this: buffer filling up
    buffer_share: float = 0.8  # or buffer_depth above this share of buffer.max_readings
    clock_skew_s: int = 300  # gateway clock further off than this


def open_alert(
    conn: Connection,
    gateway_id: str,
    kind: str,
    now_ms: int,
    severity: str = "warning",
    device_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> int:
    """The id of the open alert of (gateway, device, kind), opened now if there is none; an
    open one gets the new details."""
    a = t.alerts.c
    existing = conn.execute(
        sa.select(a.id).where(
            a.gateway_id == gateway_id,
            a.kind == kind,
            a.device_id.is_(None) if device_id is None else a.device_id == device_id,
            a.closed_ts_ms.is_(None),
        )
    ).scalar()
    if existing is not None:
        conn.execute(sa.update(t.alerts).where(a.id == existing).values(details=details or {}))
        return int(existing)
    org_id = conn.execute(
        sa.select(t.gateways.c.org_id).where(t.gateways.c.id == gateway_id)
    ).scalar_one()
    return int(
        conn.execute(
            sa.insert(t.alerts)
            .values(
                org_id=org_id,
                gateway_id=gateway_id,
                device_id=device_id,
                kind=kind,
                severity=severity,
                opened_ts_ms=now_ms,
                details=details or {},
            )
            .returning(a.id)
        ).scalar_one()
    )


def close_alert(
    conn: Connection, gateway_id: str, kind: str, now_ms: int, device_id: int | None = None
) -> int:
    """Close the open alert of (gateway, device, kind); how many were closed (0 or 1)."""
    a = t.alerts.c
    return conn.execute(
        sa.update(t.alerts)
        .where(
            a.gateway_id == gateway_id,
            a.kind == kind,
            a.device_id.is_(None) if device_id is None else a.device_id == device_id,
            a.closed_ts_ms.is_(None),
        )
        .values(closed_ts_ms=now_ms)
    ).rowcount


def acknowledge(
    conn: Connection, alert_id: int, org_id: int, user_id: int | None, now_ms: int
) -> None:
    """Mark an alert as seen by a user. It stays open until its cause is gone, except a
    counter_backwards alert: a one-off event, closed by acknowledging it."""
    done = conn.execute(
        sa.update(t.alerts)
        .where(t.alerts.c.id == alert_id, t.alerts.c.org_id == org_id)
        .values(acknowledged_by=user_id, acknowledged_ts_ms=now_ms)
    ).rowcount
    if done != 1:
        raise UnknownAlert(f"alert {alert_id} not found")
    conn.execute(
        sa.update(t.alerts)
        .where(
            t.alerts.c.id == alert_id,
            t.alerts.c.kind == COUNTER_BACKWARDS,
            t.alerts.c.closed_ts_ms.is_(None),
        )
        .values(closed_ts_ms=now_ms)
    )


def get(conn: Connection, alert_id: int, org_id: int) -> dict[str, Any]:
    row = (
        conn.execute(
            sa.select(t.alerts).where(t.alerts.c.id == alert_id, t.alerts.c.org_id == org_id)
        )
        .mappings()
        .first()
    )
    if row is None:
        raise UnknownAlert(f"alert {alert_id} not found")
    return dict(row)


def list_alerts(
    conn: Connection,
    org_id: int,
    open_only: bool = True,
    gateway_id: str | None = None,
    kind: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """(alerts newest first, total); open_only=False includes the history of closed ones."""
    a = t.alerts.c
    where = [a.org_id == org_id]
    if open_only:
        where.append(a.closed_ts_ms.is_(None))
    if gateway_id is not None:
        where.append(a.gateway_id == gateway_id)
    if kind is not None:
        where.append(a.kind == kind)
    total = conn.execute(
        sa.select(sa.func.count()).select_from(t.alerts).where(*where)
    ).scalar_one()
    rows = conn.execute(
        sa.select(t.alerts)
        .where(*where)
        .order_by(a.opened_ts_ms.desc(), a.id.desc())
        .limit(limit)
        .offset(offset)
    ).mappings()
    return [dict(r) for r in rows], total


def counter_went_backwards(
    conn: Connection,
    gateway_id: str,
    channel: int,
    previous_value: float,
    value: float,
    ts_ms: int,
    now_ms: int,
) -> int:
    """Open a counter_backwards alert (ingest calls this when an energy counter reading is
    lower than the one before it in time: meter replaced, reset, or a wrong register)."""
    return open_alert(
        conn,
        gateway_id,
        COUNTER_BACKWARDS,
        now_ms,
        severity="warning",
        device_id=channel >> 8,
        details={"channel": channel, "previous": previous_value, "value": value, "ts_ms": ts_ms},
    )


def _batch_interval_s(
    conn: Connection, gateway_id: str, version: int | None
) -> tuple[int, int | None]:
    """(uplink.batch_interval_s, buffer.max_readings) of the gateway's desired document."""
    if version is None:
        return DEFAULT_BATCH_INTERVAL_S, None
    body = conn.execute(
        sa.select(t.config_documents.c.body).where(
            t.config_documents.c.gateway_id == gateway_id, t.config_documents.c.version == version
        )
    ).scalar()
    doc = json.loads(body) if body else {}
    interval = doc.get("uplink", {}).get("batch_interval_s", DEFAULT_BATCH_INTERVAL_S)
    return int(interval), doc.get("buffer", {}).get("max_readings")


def check_status(
    conn: Connection,
    gateway_id: str,
    status: dict[str, Any],
    previous: dict[str, Any] | None,
    now_ms: int,
    settings: AlertSettings = AlertSettings(),  # noqa: B008 - frozen, never mutated
) -> None:
    """Open or close the status-based alerts of a gateway from a status message (decoded by
    protocols.messages.decode_status) and the one before it (None: none, or unknown). The
    bridge calls this when it stores a status. Counters are per boot, so they are compared
    with the previous status only within one boot."""
    same_boot = previous is not None and previous.get("boot") == status["boot"]
    before = {m["id"]: m for m in (previous or {}).get("meters", [])} if same_boot else {}
    for meter in status["meters"]:
        old = before.get(meter["id"], {})
        ok = meter["polls_ok"] - old.get("polls_ok", 0)
        bad = sum(meter[k] - old.get(k, 0) for k in ("timeouts", "crc_errors", "exceptions"))
        details = {
            "polls_ok": ok,
            "failed_polls": bad,
            "since_ts_ms": (previous or {}).get("ts_ms"),
        }
        if bad > 0 and ok == 0:
            open_alert(conn, gateway_id, METER_SILENT, now_ms, "critical", meter["id"], details)
        elif ok > 0:
            close_alert(conn, gateway_id, METER_SILENT, now_ms, meter["id"])
        if ok + bad >= settings.min_polls and ok > 0:
            if bad / (ok + bad) > settings.error_rate:
                open_alert(conn, gateway_id, ERROR_RATE, now_ms, "warning", meter["id"], details)
            else:
                close_alert(conn, gateway_id, ERROR_RATE, now_ms, meter["id"])
    skew_ms = status["ts_ms"] - now_ms
    if abs(skew_ms) > settings.clock_skew_s * 1000:
        open_alert(conn, gateway_id, CLOCK_WRONG, now_ms, "warning", details={"skew_ms": skew_ms})
    else:
        close_alert(conn, gateway_id, CLOCK_WRONG, now_ms)
    version = conn.execute(
        sa.select(t.gateways.c.desired_config_version).where(t.gateways.c.id == gateway_id)
    ).scalar()
    _, max_readings = _batch_interval_s(conn, gateway_id, version)
    oldest = status.get("oldest_unsent_ts_ms")
    depth = status["buffer_depth"]
    filling = (oldest is not None and now_ms - oldest > settings.buffer_age_s * 1000) or (
        max_readings is not None and depth > settings.buffer_share * max_readings
    )
    dropped = (
        status["dropped_readings"] > (previous or {}).get("dropped_readings", 0)
        if same_boot
        else status["dropped_readings"] > 0
    )
    if filling or dropped:
        details = {
            "buffer_depth": depth,
            "oldest_unsent_ts_ms": oldest,
            "dropped_readings": status["dropped_readings"],
        }
        open_alert(
            conn,
            gateway_id,
            BUFFER_FILLING,
            now_ms,
            "critical" if dropped else "warning",
            details=details,
        )
    else:
        close_alert(conn, gateway_id, BUFFER_FILLING, now_ms)


def check_presence(
    conn: Connection,
    now_ms: int,
    settings: AlertSettings = AlertSettings(),  # noqa: B008
) -> tuple[int, int]:
    """Open offline alerts for accepted gateways silent for more than the configured number
    of batch intervals, close them for gateways heard from since. (opened, closed). The
    server calls this periodically."""
    g = t.gateways.c
    rows = conn.execute(
        sa.select(g.id, g.online, g.last_seen_ts_ms, g.desired_config_version).where(
            g.status == "accepted", g.last_seen_ts_ms.is_not(None)
        )
    ).all()
    open_ids = set(
        conn.execute(
            sa.select(t.alerts.c.gateway_id).where(
                t.alerts.c.kind == OFFLINE, t.alerts.c.closed_ts_ms.is_(None)
            )
        ).scalars()
    )
    opened = closed = 0
    for gw, _online, last_seen, version in rows:
        silent_ms = now_ms - last_seen
        offline = False
        if silent_ms > settings.offline_min_s * 1000:  # the limit is never lower: only then
            interval_s, _ = _batch_interval_s(conn, gw, version)  # read its configuration
            limit_ms = (
                max(settings.offline_missed_intervals * interval_s, settings.offline_min_s) * 1000
            )
            offline = silent_ms > limit_ms
        if offline:
            if gw not in open_ids:
                open_alert(
                    conn,
                    gw,
                    OFFLINE,
                    now_ms,
                    "critical",
                    details={"last_seen_ts_ms": last_seen, "silent_s": silent_ms // 1000},
                )
                opened += 1
        elif gw in open_ids:
            closed += close_alert(conn, gw, OFFLINE, now_ms)
    return opened, closed


def run_presence_check(
    engine: Engine,
    now_ms: int,
    settings: AlertSettings = AlertSettings(),  # noqa: B008
) -> tuple[int, int]:
    """check_presence in a transaction of its own (`fleet serve` calls this every few
    seconds). Several instances may: on PostgreSQL one checks at a time (the others return
    (0, 0) at once), so an offline alert is never opened twice; on SQLite the write lock
    serialises them."""
    with transaction(engine) as conn:
        if (
            is_postgresql(conn)
            and not conn.execute(
                sa.select(sa.func.pg_try_advisory_xact_lock(_PRESENCE_LOCK))
            ).scalar()
        ):
            return 0, 0
        return check_presence(conn, now_ms, settings)
