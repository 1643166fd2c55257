"""Alerts open through the paths that run in production, not by calling fleet.alerts directly:
a status message over MQTT (the bridge calls check_status with the status before it), a gateway
that falls silent while `fleet serve` runs (its periodic presence check), and an energy counter
that goes backwards in ingested batches (ingest compares with the stored latest value)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import sqlalchemy as sa
from mqtt_helpers import CONFIG, add_configured_gateway, client, running_bridge, running_broker
from mqtt_helpers import wait_until as until
from sqlalchemy import Engine

from fleet import alerts, config_service
from fleet.alerts import AlertSettings
from fleet.db import tables as t
from fleet.db.engine import make_engine, read, transaction
from fleet.db.migrate import upgrade
from fleet.mqtt.broker import find_mosquitto
from fleet.serve import Running, ServeOptions, serve
from fleet.telemetry.ingest import ACCEPTED, Ingestor
from protocols import codec, messages
from protocols.quantities import channel_id

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]

ENERGY = channel_id(1, "energy_import")
POWER = channel_id(1, "power_total")


def now_ms() -> int:
    return int(time.time() * 1000)


def open_alerts(engine: Engine, gateway: str) -> dict[tuple[str, int | None], dict[str, Any]]:
    with read(engine) as conn:
        rows = conn.execute(
            sa.select(t.alerts).where(
                t.alerts.c.gateway_id == gateway, t.alerts.c.closed_ts_ms.is_(None)
            )
        ).mappings()
        return {(r["kind"], r["device_id"]): dict(r) for r in rows}


def status(gateway: str, ts_ms: int, polls_ok: int, timeouts: int, dropped: int = 0) -> bytes:
    return messages.encode_status(
        {"gateway": gateway, "boot": 3, "ts_ms": ts_ms, "uptime_s": 60, "fw_version": "0.1.0",
         "config_version": 1, "free_heap_bytes": None, "buffer_depth": 0,
         "oldest_unsent_ts_ms": None, "dropped_readings": dropped, "rssi_dbm": None,
         "reset_cause": None,
         "meters": [{"id": 1, "polls_ok": polls_ok, "timeouts": timeouts, "crc_errors": 0,
                     "exceptions": 0}]}
    )  # fmt: skip


def energy_batch(seq: int, t0: int, values: list[int], historical: bool = False) -> bytes:
    readings = []
    for i, v in enumerate(values):
        readings += [(ENERGY, t0 + i * 10_000, v), (POWER, t0 + i * 10_000, 100 - i)]
    return codec.encode_batch(seq, readings, historical)


def test_status_and_batches_over_mqtt_open_and_close_alerts(db: Engine, tmp_path: Path) -> None:
    secret = add_configured_gateway(db, "school-1")
    gw = "school-1"
    t0 = now_ms() - 600_000

    async def scenario() -> None:
        async with (
            running_broker("mosquitto", db, tmp_path / "broker") as broker,
            running_bridge(db, broker),
            client(broker.port, gw, gw, secret) as c,
        ):
            acks: list[bytes] = []
            await c.subscribe(f"gw/{gw}/ack", qos=1)

            async def rx() -> None:
                async for m in c.messages:
                    acks.append(bytes(m.payload))  # type: ignore[arg-type]

            task = asyncio.create_task(rx())

            async def send_status(payload: bytes, opened: set[str], closed: set[str]) -> None:
                await c.publish(f"gw/{gw}/status", payload, qos=0)
                assert await until(
                    lambda: (
                        opened <= {k for k, _ in open_alerts(db, gw)}
                        and not closed & {k for k, _ in open_alerts(db, gw)}
                    )
                ), open_alerts(db, gw)

            # 1. the meter never answered, the clock is 10 minutes fast, readings were dropped
            await send_status(
                status(gw, now_ms() + 600_000, 0, 5, dropped=30),
                {"meter_silent", "clock_wrong", "buffer_filling"},
                set(),
            )
            found = open_alerts(db, gw)
            assert found[("meter_silent", 1)]["severity"] == "critical"
            assert found[("buffer_filling", None)]["severity"] == "critical"
            # 2. it answers again, the clock is right, nothing more dropped: all closed
            await send_status(
                status(gw, now_ms(), 100, 5, dropped=30),
                set(),
                {"meter_silent", "clock_wrong", "buffer_filling"},
            )
            # 3. six more timeouts and no new answer since the status before: silent again
            #    (only visible when the bridge passes the previous status: overall 100 ok / 11)
            await send_status(status(gw, now_ms(), 100, 11, dropped=30), {"meter_silent"}, set())
            assert open_alerts(db, gw)[("meter_silent", 1)]["details"]["failed_polls"] == 6

            # the energy counter: rising, then lower than the stored latest value
            await c.publish(f"gw/{gw}/tele", energy_batch(1, t0, [5000, 5010, 5020]), qos=1)
            assert await until(lambda: len(acks) == 1)
            assert ("counter_backwards", 1) not in open_alerts(db, gw)
            await c.publish(f"gw/{gw}/tele", energy_batch(2, t0 + 30_000, [12, 20]), qos=1)
            assert await until(lambda: len(acks) == 2)
            task.cancel()
            assert all(messages.decode_ack(a).error is None for a in acks)

    asyncio.run(scenario())
    alert = open_alerts(db, gw)[("counter_backwards", 1)]
    assert alert["details"] == {"channel": ENERGY, "previous": 5020.0, "value": 12.0,
                                "ts_ms": t0 + 30_000}  # fmt: skip


def test_counter_backwards_only_for_counters_going_down_in_time(db: Engine) -> None:
    add_configured_gateway(db, "school-1")
    gw = "school-1"
    t0 = now_ms() - 3_600_000
    ing = Ingestor(db)

    def kinds() -> set[str]:
        return {k for k, _ in open_alerts(db, gw)}

    def ingest(*payloads: bytes) -> None:
        results = ing.ingest_many([(gw, p) for p in payloads])
        assert {r.outcome for r in results} == {ACCEPTED}

    ingest(energy_batch(1, t0, [100, 110, 120]))  # power_total falls: not a counter
    ingest(energy_batch(2, t0 + 30_000, [120, 130]))  # equal is not backwards
    # a backlog batch from before the latest reading, with lower values: not compared
    ingest(energy_batch(3, t0 - 600_000, [50, 60], historical=True))
    assert kinds() == set()
    # two batches in one transaction (group commit): the second is lower than the first
    ingest(energy_batch(4, t0 + 50_000, [140, 150]), energy_batch(5, t0 + 70_000, [145, 146]))
    assert open_alerts(db, gw)[("counter_backwards", 1)]["details"]["previous"] == 150.0
    with transaction(db) as conn:
        conn.execute(sa.delete(t.alerts))
    # within one batch: the counter restarts (meter replaced)
    ingest(energy_batch(6, t0 + 90_000, [160, 170, 3, 4]))
    details = open_alerts(db, gw)[("counter_backwards", 1)]["details"]
    assert (details["previous"], details["value"]) == (160.0, 4.0)
    # one open alert per cause: a further drop updates it
    ingest(energy_batch(7, t0 + 200_000, [1, 2]))
    assert len(open_alerts(db, gw)) == 1


@pytest.mark.timeout(60)
def test_serve_opens_an_offline_alert_for_a_silent_gateway_and_closes_it(tmp_path: Path) -> None:
    data = tmp_path / "fleet-data"
    data.mkdir()
    engine = make_engine(str(data / "fleet.db"))
    upgrade(engine)
    gw = "school-1"
    secret = add_configured_gateway(engine, gw)
    doc = {k: v for k, v in CONFIG.items() if k not in ("version", "gateway")}
    with transaction(engine) as conn:  # batches every second: offline after 2 s of silence
        config_service.set_desired(conn, gw, dict(doc, uplink={"batch_interval_s": 1}), now_ms())
    opts = ServeOptions(
        data_dir=data, broker="mosquitto", mqtt_port=0, mqtt_bind="127.0.0.1",
        http_host="127.0.0.1", http_port=0, presence_interval_s=0.2,
        alert_settings=AlertSettings(offline_missed_intervals=2, offline_min_s=1),
    )  # fmt: skip

    def offline() -> bool:
        return ("offline", None) in open_alerts(engine, gw)

    async def scenario() -> None:
        ready: asyncio.Queue[Running] = asyncio.Queue()
        stop = asyncio.Event()
        server = asyncio.create_task(serve(opts, stop, on_ready=ready.put_nowait))
        try:
            running = await asyncio.wait_for(ready.get(), 30)
            port = running.mqtt_port

            async def connect() -> aiomqtt.Client:
                for _ in range(50):  # until the broker's account refresh knows the gateway
                    c = client(port, gw, gw, secret)
                    try:
                        await c.__aenter__()
                        return c
                    except aiomqtt.MqttError:
                        await asyncio.sleep(0.2)
                raise AssertionError("the gateway could not connect")

            c = await connect()
            birth = messages.encode_birth(gw, 1, 1, "0.1.0", 1, now_ms())
            await c.publish(f"gw/{gw}/state", birth, qos=1, retain=True)
            # batches count as contact: 3 s of batches (and nothing else) keep it online
            t0 = now_ms() - 60_000
            for seq in range(1, 7):
                await c.publish(f"gw/{gw}/tele", energy_batch(seq, t0 + seq * 30_000, [seq]))
                await asyncio.sleep(0.5)
            assert not offline()
            await c.__aexit__(None, None, None)  # silent from now on
            assert await until(offline, 10)
            alert = open_alerts(engine, gw)[("offline", None)]
            assert alert["severity"] == "critical" and alert["details"]["silent_s"] >= 2
            c = await connect()  # back: the next check closes it
            birth = messages.encode_birth(gw, 1, 2, "0.1.0", 1, now_ms())
            await c.publish(f"gw/{gw}/state", birth, qos=1, retain=True)
            assert await until(lambda: not offline(), 5)
            await c.__aexit__(None, None, None)
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(server, 20)

    try:
        asyncio.run(scenario())
        with read(engine) as conn:
            closed = conn.execute(
                sa.select(t.alerts.c.closed_ts_ms).where(t.alerts.c.kind == alerts.OFFLINE)
            ).scalars()
            assert [ts is not None for ts in closed] == [True]
    finally:
        engine.dispose()
