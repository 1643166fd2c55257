"""Broker access control on both embedded brokers (Mosquitto with the generated password and
ACL files, amqtt with the fleet's plugins): a gateway logs in only with its current secret and
publishes and subscribes only on its own topics; revoked credentials are refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import pytest
from mqtt_helpers import (
    BROKER_KINDS,
    add_gateway,
    can_connect,
    client,
    collect,
    die,
    fleet_client,
    running_broker,
    wait_until,
)
from sqlalchemy import Engine

from fleet.db import registry
from fleet.db.engine import transaction
from fleet.mqtt import acl, store
from fleet.mqtt.acl import Access

pytestmark = pytest.mark.timeout(60)


def test_acl_rules_keep_each_account_to_its_topics() -> None:
    assert acl.allowed("school-1", "school-1", "gw/school-1/tele", Access.PUBLISH)
    assert not acl.allowed("school-1", "school-1", "gw/school-2/tele", Access.PUBLISH)
    assert not acl.allowed("school-1", "school-1", "gw/school-1/ack", Access.PUBLISH)
    assert acl.allowed("school-1", "school-1", "gw/school-1/ack", Access.SUBSCRIBE)
    assert not acl.allowed("school-1", "school-1", "gw/+/ack", Access.SUBSCRIBE)
    assert not acl.allowed("school-1", "school-1", "gw/#", Access.SUBSCRIBE)
    assert acl.allowed(acl.FLEET_USER, "f", "$share/fleet/gw/+/tele", Access.SUBSCRIBE)
    claim = "prov_" + "ab" * 16
    assert acl.allowed(acl.PROVISION_USER, claim, f"prov/{claim}/request", Access.PUBLISH)
    assert not acl.allowed(acl.PROVISION_USER, claim, "gw/school-1/tele", Access.PUBLISH)
    assert not acl.allowed(None, "x", "gw/x/tele", Access.PUBLISH)


@pytest.mark.parametrize("kind", BROKER_KINDS)
def test_gateway_publishes_and_subscribes_only_on_its_own_topics(
    kind: str, sqlite_db: Engine, tmp_path: Path
) -> None:
    engine = sqlite_db
    secret_a = add_gateway(engine, "school-a")
    add_gateway(engine, "school-b")

    async def scenario() -> None:
        async with running_broker(kind, engine, tmp_path / "broker") as broker:
            seen: list[tuple[str, bytes]] = []
            async with fleet_client(broker) as fleet:
                await fleet.subscribe("gw/#", qos=1)
                task = asyncio.create_task(collect(fleet, seen))
                async with client(broker.port, "school-a", "school-a", secret_a) as gw:
                    await gw.publish("gw/school-b/tele", b"forged", qos=1)
                    await gw.publish("gw/school-b/state", b"forged", qos=1, retain=True)
                    await gw.publish("gw/school-a/ack", b"self-ack", qos=1)
                    await gw.publish("gw/school-a/tele", b"mine", qos=1)
                    assert await wait_until(lambda: ("gw/school-a/tele", b"mine") in seen)
                    # amqtt refuses subscriptions to other gateways' topics (SUBACK 0x80);
                    # Mosquitto (MQTT 3.1.1) grants them but never delivers on them.
                    for other in ("gw/school-b/ack", "gw/+/ack", "gw/#"):
                        granted = await gw.subscribe(other, qos=1)
                        if kind == "amqtt":
                            assert [getattr(q, "value", q) for q in granted] == [0x80]
                    got: list[tuple[str, bytes]] = []
                    rx = asyncio.create_task(collect(gw, got))
                    await gw.subscribe("gw/school-a/ack", qos=1)
                    await fleet.publish("gw/school-b/ack", b'{"seq": 1}', qos=1)
                    await fleet.publish("gw/school-a/ack", b'{"seq": 2}', qos=1)
                    assert await wait_until(lambda: len(got) >= 1)
                    await asyncio.sleep(0.2)
                    assert got == [("gw/school-a/ack", b'{"seq": 2}')]  # not school-b's
                    rx.cancel()
                await asyncio.sleep(0.2)
                task.cancel()
            assert [t for t, p in seen if p == b"forged"] == []
            assert ("gw/school-a/ack", b"self-ack") not in seen

    asyncio.run(scenario())


@pytest.mark.parametrize("kind", BROKER_KINDS)
def test_wrong_revoked_and_rotated_credentials_are_refused(
    kind: str, sqlite_db: Engine, tmp_path: Path
) -> None:
    engine = sqlite_db
    secret = add_gateway(engine, "school-a")
    pending_secret = add_gateway(engine, "school-p", status="pending")

    async def scenario() -> None:
        async with running_broker(kind, engine, tmp_path / "broker") as broker:
            port = broker.port
            assert await can_connect(port, "school-a", "school-a", secret)
            assert not await can_connect(port, "school-a", "school-a", secret + "x")
            assert not await can_connect(port, "school-a", "school-b", secret)
            # client id must be the username (amqtt checks it; Mosquitto's ACL is by username)
            if kind == "amqtt":
                assert not await can_connect(port, "other", "school-a", secret)
            assert not await can_connect(port, "school-p", "school-p", pending_secret)
            assert not await can_connect(port, "anon", "", "")
            async with client(port, "school-a", "school-a", secret) as live:
                with transaction(engine) as conn:
                    registry.set_gateway_status(conn, "school-a", "revoked")
                await broker.refresh(engine)
                await asyncio.sleep(0.5)  # Mosquitto reloads on SIGHUP
                # the live connection of the revoked gateway is dropped, too
                with pytest.raises(aiomqtt.MqttError):
                    await live.publish("gw/school-a/tele", b"x", qos=1, timeout=2)
            assert not await can_connect(port, "school-a", "school-a", secret)
            with transaction(engine) as conn:
                registry.set_gateway_status(conn, "school-p", "accepted")
            await broker.refresh(engine)
            await asyncio.sleep(0.3)
            assert await can_connect(port, "school-p", "school-p", pending_secret)

    asyncio.run(scenario())


@pytest.mark.parametrize("kind", BROKER_KINDS)
def test_a_last_will_on_another_gateways_topic_never_arrives(
    kind: str, sqlite_db: Engine, tmp_path: Path
) -> None:
    engine = sqlite_db
    secret_a = add_gateway(engine, "school-a")
    add_gateway(engine, "school-b")
    secret_c = add_gateway(engine, "school-c")

    async def scenario() -> None:
        async with running_broker(kind, engine, tmp_path / "broker") as broker:
            seen: list[tuple[str, bytes]] = []
            async with fleet_client(broker) as fleet:
                await fleet.subscribe("gw/#", qos=1)
                task = asyncio.create_task(collect(fleet, seen))
                will = aiomqtt.Will("gw/school-b/state", b"forged-will", qos=1, retain=True)
                try:
                    gw = client(broker.port, "school-a", "school-a", secret_a, will=will)
                    await gw.__aenter__()
                    die(gw)  # no DISCONNECT: the will is due
                    await asyncio.sleep(0.5)
                except aiomqtt.MqttError:
                    pass  # amqtt refuses the login outright
                # control: a will on its own state topic does arrive
                will = aiomqtt.Will("gw/school-c/state", b"own-will", qos=1, retain=True)
                gw = client(broker.port, "school-c", "school-c", secret_c, will=will)
                await gw.__aenter__()
                die(gw)
                assert await wait_until(lambda: ("gw/school-c/state", b"own-will") in seen)
                task.cancel()
            assert ("gw/school-b/state", b"forged-will") not in seen

    asyncio.run(scenario())


def test_claim_login_is_derived_from_the_token_hash() -> None:
    login = store.claim_login("claim_abc")
    assert acl.is_claim_id(login.username)
    assert len(login.password) == 32
