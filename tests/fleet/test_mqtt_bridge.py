"""The MQTT bridge end to end on a real Mosquitto (and amqtt) with the generated configuration,
on SQLite and PostgreSQL: batch -> stored -> acked; resent batch stored once; malformed batch
acked with an error; presence with a late will; status and config reports recorded; desired
configs published from the outbox; a rollout that goes on as its reports arrive; two bridges
sharing the ingest; a broker restart."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from mqtt_helpers import (
    BROKER_KINDS,
    CONFIG,
    add_configured_gateway,
    add_gateway,
    client,
    collect,
    die,
    running_bridge,
    running_broker,
    wait_until,
)
from sqlalchemy import Engine

from fleet import rollouts
from fleet.db import registry, tables
from fleet.db.engine import read, transaction
from fleet.mqtt import store
from fleet.telemetry import storage
from protocols import codec, messages, sign
from protocols.quantities import channel_id

pytestmark = pytest.mark.timeout(90)

ENERGY = channel_id(1, "energy_import")
POWER = channel_id(1, "power_total")


def now_ms() -> int:
    return int(time.time() * 1000)


def batch(seq: int, t0: int, n: int = 3, historical: bool = False) -> bytes:
    readings = []
    for i in range(n):
        ts = t0 + i * 10_000
        readings += [(ENERGY, ts, 1000 + seq * 10 + i), (POWER, ts, 500 + i)]
    return codec.encode_batch(seq, readings, historical)


def stored_batches(engine: Engine, gateway: str) -> list[int]:
    with read(engine) as conn:
        rows = conn.execute(
            sa.select(tables.batches.c.seq)
            .where(tables.batches.c.gateway_id == gateway)
            .order_by(tables.batches.c.seq)
        )
        return [r[0] for r in rows]


@pytest.mark.parametrize("kind", BROKER_KINDS)
def test_batch_is_stored_then_acked_and_a_resend_is_stored_once(
    kind: str, db: Engine, tmp_path: Path
) -> None:
    engine = db
    secret = add_configured_gateway(engine, "school-1")
    t0 = now_ms() - 60_000

    async def scenario() -> None:
        async with (
            running_broker(kind, engine, tmp_path / "broker") as broker,
            running_bridge(engine, broker),
            client(broker.port, "school-1", "school-1", secret) as gw,
        ):
            acks: list[tuple[str, bytes]] = []
            await gw.subscribe("gw/school-1/ack", qos=1)
            rx = asyncio.create_task(collect(gw, acks))
            first = batch(1, t0)
            await gw.publish("gw/school-1/tele", first, qos=1)
            assert await wait_until(lambda: len(acks) == 1)
            # the ack came only after the commit: the batch is there
            assert stored_batches(engine, "school-1") == [1]
            assert messages.decode_ack(acks[0][1]) == messages.Ack(1)
            await gw.publish("gw/school-1/tele", first, qos=1)  # resend (lost ack)
            await gw.publish("gw/school-1/tele", batch(2, t0 + 30_000), qos=1)
            await gw.publish("gw/school-1/tele", b"\x7bnot a batch", qos=1)
            assert await wait_until(lambda: len(acks) == 3)
            rx.cancel()
            by_seq = {messages.decode_ack(p).seq: messages.decode_ack(p) for _, p in acks}
            assert by_seq[1].error is None and by_seq[2].error is None
            assert stored_batches(engine, "school-1") == [1, 2]
            with read(engine) as conn:
                raw = storage.raw_readings(conn, "school-1", [ENERGY], t0, t0 + 3_600_000)
            assert [v for _, v in raw[ENERGY]] == [1010, 1011, 1012, 1020, 1021, 1022]

    asyncio.run(scenario())


def test_presence_follows_sessions_and_ignores_a_late_will(
    sqlite_db: Engine, tmp_path: Path
) -> None:
    engine = sqlite_db
    secret = add_configured_gateway(engine, "school-1")

    def state() -> tuple[bool, int | None, int | None]:
        with read(engine) as conn:
            g = registry.get_gateway(conn, "school-1")
            assert g is not None
            return g["online"], g["boot"], g["session"]

    async def scenario() -> None:
        async with (
            running_broker("mosquitto", engine, tmp_path / "broker") as broker,
            running_bridge(engine, broker),
        ):
            birth = messages.encode_birth("school-1", 7, 2, "0.1.0", 3, now_ms())
            late_will = messages.encode_will("school-1", 7, 1, "0.1.0", 3, now_ms() - 5000)
            async with client(broker.port, "school-1", "school-1", secret) as gw:
                await gw.publish("gw/school-1/state", birth, qos=1, retain=True)
                assert await wait_until(lambda: state() == (True, 7, 2))
                await gw.publish("gw/school-1/state", late_will, qos=1, retain=True)
                await asyncio.sleep(0.5)
                assert state() == (True, 7, 2)  # an older session's will changes nothing
                will = messages.encode_will("school-1", 7, 2, "0.1.0", 3, now_ms())
                await gw.publish("gw/school-1/state", will, qos=1, retain=True)
                assert await wait_until(lambda: state() == (False, 7, 2))

    asyncio.run(scenario())


def test_status_reports_and_desired_configs_flow(sqlite_db: Engine, tmp_path: Path) -> None:
    engine = sqlite_db
    secret = add_configured_gateway(engine, "school-1")

    async def scenario() -> None:
        async with (
            running_broker("mosquitto", engine, tmp_path / "broker") as broker,
            running_bridge(engine, broker),
            client(broker.port, "school-1", "school-1", secret) as gw,
        ):
            got: list[tuple[str, bytes]] = []
            await gw.subscribe("gw/school-1/config/desired", qos=1)
            rx = asyncio.create_task(collect(gw, got))
            status = {
                "gateway": "school-1", "boot": 1, "ts_ms": now_ms(), "uptime_s": 5,
                "fw_version": "0.1.0", "config_version": 1, "free_heap_bytes": None,
                "buffer_depth": 12, "oldest_unsent_ts_ms": None, "dropped_readings": 0,
                "rssi_dbm": None, "reset_cause": None, "meters": [],
            }  # fmt: skip
            await gw.publish("gw/school-1/status", messages.encode_status(status), qos=0)
            report = messages.encode_reported("school-1", 4, 4, "applied", None, now_ms())
            await gw.publish("gw/school-1/config/reported", report, qos=1, retain=True)

            def recorded() -> bool:
                with read(engine) as conn:
                    g = registry.get_gateway(conn, "school-1")
                return bool(g and g["last_status"] and g["reported_config_version"] == 4)

            assert await wait_until(recorded)
            with transaction(engine) as conn:
                store.publish_desired(conn, "school-1", b'{"alg": "HMAC-SHA256"}')
            assert await wait_until(lambda: len(got) == 1)
            rx.cancel()
            assert got == [("gw/school-1/config/desired", b'{"alg": "HMAC-SHA256"}')]
            with read(engine) as conn:
                assert store.outbox_depth(conn) == 0

    asyncio.run(scenario())


def test_a_rollout_goes_on_as_its_reports_arrive_without_waiting_for_a_tick(
    sqlite_db: Engine, tmp_path: Path
) -> None:
    engine = sqlite_db
    gateways = [f"school-{i}" for i in range(4)]
    secrets = {g: add_gateway(engine, g) for g in gateways}  # signing key: 32 zero bytes
    patch = {k: v for k, v in CONFIG.items() if k not in ("version", "gateway")}
    with transaction(engine) as conn:
        org = registry.get_org_by_slug(conn, "town")
        assert org is not None
        rid = rollouts.create(conn, org["id"], patch, now_ms(), batch_size=1)

    def rollout() -> dict:
        with read(engine) as conn:
            return rollouts.get(conn, rid)

    async def one_gateway(port: int, gateway: str) -> None:
        async with client(port, gateway, gateway, secrets[gateway]) as gw:
            await gw.subscribe(f"gw/{gateway}/config/desired", qos=1)
            async for m in gw.messages:
                body = sign.open_envelope(bytes(m.payload), bytes(32))  # type: ignore[arg-type]
                v = json.loads(body)["version"]
                topic = f"gw/{gateway}/config/reported"
                await gw.publish(topic, b"{not a report", qos=1)  # counted, costs nothing
                report = messages.encode_reported(gateway, v, v, "applied", None, now_ms())
                await gw.publish(topic, report, qos=1, retain=True)
                return

    async def scenario() -> int:
        async with (
            running_broker("mosquitto", engine, tmp_path / "broker") as broker,
            # no periodic tick here, and the bridge's own look for ready rollouts is slow: only
            # the reports can move this rollout on after its first batch
            running_bridge(engine, broker, rollout_poll_s=60.0) as bridge,
        ):
            tasks = [asyncio.create_task(one_gateway(broker.port, g)) for g in gateways]
            rollouts.tick(engine, now_ms())  # the first batch, as the server's tick would
            assert await wait_until(lambda: rollout()["state"] == "completed", 20)
            async with asyncio.timeout(10):
                await asyncio.gather(*tasks)
            return bridge.counters.bad_messages

    assert asyncio.run(scenario()) == len(gateways)
    assert rollout()["counts"]["applied"] == len(gateways)
    with read(engine) as conn:
        versions = conn.execute(
            sa.select(tables.gateways.c.reported_config_version).where(
                tables.gateways.c.id.in_(gateways)
            )
        ).scalars()
        assert set(versions) == {1}


def test_two_bridges_share_the_ingest_and_store_every_batch_once(
    postgresql_db: Engine, tmp_path: Path
) -> None:
    engine = postgresql_db
    gateways = [f"school-{i}" for i in range(4)]
    secrets = {g: add_configured_gateway(engine, g) for g in gateways}
    per_gateway = 25
    t0 = now_ms() - 3_600_000

    async def one_gateway(port: int, gateway: str, acks: set[tuple[str, int]]) -> None:
        async with client(port, gateway, gateway, secrets[gateway]) as gw:
            await gw.subscribe(f"gw/{gateway}/ack", qos=1)
            got: list[tuple[str, bytes]] = []
            rx = asyncio.create_task(collect(gw, got))
            for seq in range(1, per_gateway + 1):
                await gw.publish(f"gw/{gateway}/tele", batch(seq, t0 + seq * 60_000), qos=1)
            assert await wait_until(lambda: len(got) >= per_gateway, 30)
            rx.cancel()
            acks.update((gateway, messages.decode_ack(p).seq) for _, p in got)

    async def scenario() -> tuple[int, int]:
        async with (
            running_broker("mosquitto", engine, tmp_path / "broker") as broker,
            running_bridge(engine, broker, instance="a") as a,
            running_bridge(engine, broker, instance="b") as b,
        ):
            acks: set[tuple[str, int]] = set()
            await asyncio.gather(*(one_gateway(broker.port, g, acks) for g in gateways))
            assert acks == {(g, s) for g in gateways for s in range(1, per_gateway + 1)}
            return a.counters.batches, b.counters.batches

    got_a, got_b = asyncio.run(scenario())
    assert got_a + got_b == len(gateways) * per_gateway  # each batch reached one bridge
    assert got_a > 0 and got_b > 0  # both took a share
    for g in gateways:
        assert stored_batches(engine, g) == list(range(1, per_gateway + 1))


def test_bridge_reconnects_after_a_broker_restart(sqlite_db: Engine, tmp_path: Path) -> None:
    engine = sqlite_db
    secret = add_configured_gateway(engine, "school-1")
    t0 = now_ms() - 60_000

    async def scenario() -> None:
        async with (
            running_broker("mosquitto", engine, tmp_path / "broker") as broker,
            running_bridge(engine, broker, reconnect_s=0.2) as bridge,
        ):
            await broker.stop(kill=True)
            await wait_until(lambda: not bridge.connected.is_set())
            await broker.start()
            assert await wait_until(lambda: bridge.connected.is_set(), 15)
            async with client(broker.port, "school-1", "school-1", secret) as gw:
                acks: list[tuple[str, bytes]] = []
                await gw.subscribe("gw/school-1/ack", qos=1)
                rx = asyncio.create_task(collect(gw, acks))
                await gw.publish("gw/school-1/tele", batch(1, t0), qos=1)
                assert await wait_until(lambda: len(acks) == 1)
                rx.cancel()
                die(gw)
        assert stored_batches(engine, "school-1") == [1]

    asyncio.run(scenario())


def test_gateway_is_provisioned_over_mqtt_with_a_claim_token(
    sqlite_db: Engine, tmp_path: Path
) -> None:
    from fleet import auth

    engine = sqlite_db
    with transaction(engine) as conn:
        org = registry.create_org(conn, "town", "Town")
        _, token = auth.create_claim_token(conn, org, now_ms(), 3_600_000, None)
    login = store.claim_login(token)

    async def ask(port: int, body: dict[str, object]) -> dict[str, object]:
        async with client(port, login.username, login.username, login.password) as c:
            got: list[tuple[str, bytes]] = []
            await c.subscribe(f"prov/{login.username}/response", qos=1)
            rx = asyncio.create_task(collect(c, got))
            await c.publish(f"prov/{login.username}/request", json.dumps(body).encode(), qos=1)
            assert await wait_until(lambda: len(got) == 1)
            rx.cancel()
            return json.loads(got[0][1])

    async def scenario() -> None:
        async with (
            running_broker("mosquitto", engine, tmp_path / "broker") as broker,
            running_bridge(engine, broker),
        ):
            await broker.refresh(engine)
            await asyncio.sleep(0.3)
            answer = await ask(broker.port, {"token": token, "gateway_id": "pool-1"})
            assert answer["ok"] is True, answer
            assert answer["gateway_id"] == "pool-1" and answer["status"] == "accepted"
            # the token is used up: the claim login is gone from the broker
            await broker.refresh(engine)
            await asyncio.sleep(0.3)
            from mqtt_helpers import can_connect

            assert not await can_connect(
                broker.port, login.username, login.username, login.password
            )
            # and the new identity works
            user, password = str(answer["mqtt_username"]), str(answer["mqtt_password"])
            assert await can_connect(broker.port, user, user, password)

    asyncio.run(scenario())


def test_a_message_the_database_refuses_costs_the_rest_of_its_group_nothing(
    sqlite_db: Engine,
) -> None:
    from fleet.mqtt.bridge import Bridge, BridgeSettings, _GroupedKind

    engine = sqlite_db
    gateways = ["school-1", "school-2", "school-3"]
    for g in gateways:
        add_gateway(engine, g)

    def decode(gateway: str, payload: bytes) -> int | None:
        if payload == b"bad":
            raise codec.CodecError("not a number")
        return int(payload) if payload else None

    def apply(conn: sa.Connection, items: list[tuple[str, int]], now: int) -> set[int]:
        for gateway, version in items:
            if version < 0:
                raise ValueError("refused by the database")
            conn.execute(
                sa.update(tables.gateways)
                .where(tables.gateways.c.id == gateway)
                .values(reported_config_version=version)
            )
        return set()

    def count(c: object, n: int) -> None:
        c.reports += n  # type: ignore[attr-defined]

    bridge = Bridge(engine, BridgeSettings("127.0.0.1", 1))
    kind = _GroupedKind("test", decode, apply, count)
    group = [("school-1", b"7"), ("school-2", b"-1"), ("school-3", b"bad"), ("school-3", b"9")]
    assert bridge._handle_group(kind, group) == set()  # noqa: SLF001
    with read(engine) as conn:
        versions = dict(
            conn.execute(
                sa.select(tables.gateways.c.id, tables.gateways.c.reported_config_version)
            ).all()
        )
    assert versions == {"school-1": 7, "school-2": None, "school-3": 9}
    assert (bridge.counters.reports, bridge.counters.bad_messages) == (2, 1)
