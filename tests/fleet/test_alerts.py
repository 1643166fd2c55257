"""Alerts: offline after N missed batch intervals (and closed when heard from again), meter
silent, error rate high, buffer filling up, gateway clock wrong, counter went backwards; one
open alert per cause; acknowledge and history over the API."""

from __future__ import annotations

import sqlalchemy as sa
from api_helpers import NOW_MS, bearer, client, make_org
from sqlalchemy import Engine

from fleet import alerts
from fleet.db import tables as t
from fleet.db.engine import read, transaction


def _status(
    ts_ms: int = NOW_MS,
    boot: int = 1,
    ok: int = 100,
    timeouts: int = 0,
    depth: int = 0,
    oldest: int | None = None,
    dropped: int = 0,
) -> dict:
    return {"gateway": "gw-town-a-1", "boot": boot, "ts_ms": ts_ms, "uptime_s": 60, "fw_version": "0.1.0",
            "config_version": 1, "free_heap_bytes": None, "buffer_depth": depth, "oldest_unsent_ts_ms": oldest,
            "dropped_readings": dropped, "rssi_dbm": None, "reset_cause": None,
            "meters": [{"id": 1, "polls_ok": ok, "timeouts": timeouts, "crc_errors": 0, "exceptions": 0}]}  # fmt: skip


def _open(db: Engine, gw: str) -> dict[tuple[str, int | None], dict]:
    with read(db) as conn:
        rows = conn.execute(
            sa.select(t.alerts).where(
                t.alerts.c.gateway_id == gw, t.alerts.c.closed_ts_ms.is_(None)
            )
        ).mappings()
        return {(r["kind"], r["device_id"]): dict(r) for r in rows}


def test_offline_after_missed_intervals_and_closed_when_seen(db: Engine) -> None:
    a = make_org(db, "town-a", roles=())
    gw = a.gateway  # batch_interval_s 10 (default) -> offline after max(3 * 10 s, 120 s)
    with transaction(db) as conn:
        conn.execute(sa.delete(t.alerts))
        conn.execute(
            sa.update(t.gateways)
            .where(t.gateways.c.id == gw)
            .values(last_seen_ts_ms=NOW_MS, online=True)
        )
        assert alerts.check_presence(conn, NOW_MS + 120_000) == (0, 0)
        assert alerts.check_presence(conn, NOW_MS + 120_001) == (1, 0)
        assert alerts.check_presence(conn, NOW_MS + 200_000) == (0, 0)  # still the one alert
    assert _open(db, gw)[("offline", None)]["severity"] == "critical"
    with transaction(db) as conn:
        conn.execute(
            sa.update(t.gateways)
            .where(t.gateways.c.id == gw)
            .values(last_seen_ts_ms=NOW_MS + 300_000)
        )
        assert alerts.check_presence(conn, NOW_MS + 301_000) == (0, 1)
    assert ("offline", None) not in _open(db, gw)


def test_status_alerts_open_and_close(db: Engine) -> None:
    a = make_org(db, "town-a", roles=())
    gw = a.gateway
    with transaction(db) as conn:
        first = _status(ok=100)
        alerts.check_status(conn, gw, first, None, NOW_MS)
        assert _open(db, gw).keys() == {("offline", None)}  # the helper's own alert only
        silent = _status(ts_ms=NOW_MS + 60_000, ok=100, timeouts=6)
        alerts.check_status(conn, gw, silent, first, NOW_MS + 60_000)
        flaky = _status(ts_ms=NOW_MS + 120_000, ok=110, timeouts=12)
        alerts.check_status(conn, gw, flaky, silent, NOW_MS + 120_000)
    found = _open(db, gw)
    assert ("meter_silent", 1) not in found  # answered again
    assert found[("error_rate_high", 1)]["details"]["failed_polls"] == 6
    with transaction(db) as conn:
        skewed = _status(ts_ms=NOW_MS, ok=200, timeouts=12, depth=5000, oldest=NOW_MS - 7_200_000)
        alerts.check_status(conn, gw, skewed, flaky, NOW_MS + 600_000)
    found = _open(db, gw)
    assert ("error_rate_high", 1) not in found
    assert found[("clock_wrong", None)]["details"]["skew_ms"] == -600_000
    assert found[("buffer_filling", None)]["severity"] == "warning"


def test_meter_silent_and_counter_backwards(db: Engine) -> None:
    a = make_org(db, "town-a", roles=())
    gw = a.gateway
    with transaction(db) as conn:
        alerts.check_status(conn, gw, _status(ok=0, timeouts=5), None, NOW_MS)
        alerts.counter_went_backwards(conn, gw, 0x11C, 1500.0, 20.0, NOW_MS, NOW_MS)
    found = _open(db, gw)
    assert found[("meter_silent", 1)]["severity"] == "critical"
    assert found[("counter_backwards", 1)]["details"]["previous"] == 1500.0


def test_alert_api_acknowledge_and_history(db: Engine) -> None:
    a = make_org(db, "town-a", roles=("viewer", "technician"))
    c = client(db)
    assert (
        c.post(
            f"/api/v1/alerts/{a.alert_id}/acknowledge", headers=bearer(a.tokens["viewer"])
        ).status_code
        == 403
    )
    r = c.post(f"/api/v1/alerts/{a.alert_id}/acknowledge", headers=bearer(a.tokens["technician"]))
    assert r.status_code == 200 and r.json()["acknowledged_by"] == a.user_ids["technician"]
    with transaction(db) as conn:
        alerts.close_alert(conn, a.gateway, alerts.OFFLINE, NOW_MS + 1)
    h = bearer(a.tokens["viewer"])
    assert c.get("/api/v1/alerts", headers=h).json()["total"] == 0
    history = c.get("/api/v1/alerts", params={"open": False}, headers=h).json()
    assert history["total"] == 1 and history["items"][0]["closed_ts_ms"] == NOW_MS + 1
