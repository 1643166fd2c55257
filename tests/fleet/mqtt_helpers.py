"""Helpers of the MQTT tests (F2): gateways with known secrets, the two embedded brokers, a
running bridge and scripted MQTT clients."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
from sqlalchemy import Engine

from fleet import auth
from fleet.db import registry
from fleet.db.engine import transaction
from fleet.mqtt import acl
from fleet.mqtt.broker import AmqttBroker, ManagedMosquitto, free_port

BROKER_KINDS = ("mosquitto", "amqtt")


def add_gateway(engine: Engine, gateway_id: str, status: str = "accepted") -> str:
    """An organisation (once) and a gateway with a fresh MQTT secret; returns the secret."""
    secret = auth.new_gateway_secret()
    with transaction(engine) as conn:
        org = registry.get_org_by_slug(conn, "town")
        org_id = org["id"] if org else registry.create_org(conn, "town", "Town")
        registry.create_gateway(
            conn,
            gateway_id,
            org_id,
            status=status,
            credential_hash=auth.hash_gateway_secret(secret),
            signing_key=bytes(32),
        )
    return secret


def make_broker(kind: str, engine: Engine, folder: Path) -> ManagedMosquitto | AmqttBroker:
    port = free_port()
    if kind == "mosquitto":
        return ManagedMosquitto(folder, port, bind="127.0.0.1")
    return AmqttBroker(engine, folder, port, bind="127.0.0.1")


@contextlib.asynccontextmanager
async def running_broker(
    kind: str, engine: Engine, folder: Path
) -> AsyncIterator[ManagedMosquitto | AmqttBroker]:
    broker = make_broker(kind, engine, folder)
    await broker.refresh(engine)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


def client(port: int, client_id: str, username: str, password: str, **kw: Any) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=client_id,
        username=username,
        password=password,
        clean_session=True,
        timeout=5,
        **kw,
    )


def fleet_client(
    broker: ManagedMosquitto | AmqttBroker, client_id: str = "observer"
) -> aiomqtt.Client:
    return client(broker.port, client_id, acl.FLEET_USER, broker.fleet_password)


async def collect(c: aiomqtt.Client, into: list[tuple[str, bytes]]) -> None:
    async for m in c.messages:
        into.append((m.topic.value, bytes(m.payload)))  # type: ignore[arg-type]


async def wait_until(cond: Any, timeout_s: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not cond():
        if loop.time() > end:
            return False
        await asyncio.sleep(0.05)
    return True


async def can_connect(port: int, client_id: str, username: str, password: str, **kw: Any) -> bool:
    try:
        async with client(port, client_id, username, password, **kw):
            return True
    except aiomqtt.MqttError:
        return False


def die(c: aiomqtt.Client) -> None:
    """Drop the connection without a DISCONNECT packet (power cut): the broker sends the will."""
    sock = c._client.socket()  # noqa: SLF001
    if sock is not None:
        sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]


# meter 1: energy_import + power_total; LoRa sensor 100: temperature (as tests/fleet/conftest.py)
CONFIG: dict[str, Any] = {
    "version": 1,
    "gateway": "",
    "buses": [{"id": "rs485-1", "type": "rtu", "port": "/dev/ttyUSB0"}],
    "meters": [
        {"id": 1, "name": "Main", "bus": "rs485-1", "unit": 1, "profile": "sdm630",
         "quantities": ["energy_import", "power_total"]}
    ],
    "lora": {"port": "/dev/ttyUSB1", "frequency_hz": 868100000},
    "sensors": [
        {"id": 100, "name": "Room 1", "address": "A1B2C3D4", "format": "elsys",
         "quantities": ["temperature"]}
    ],
}  # fmt: skip


def add_configured_gateway(engine: Engine, gateway_id: str) -> str:
    """add_gateway plus the devices and channels of CONFIG; returns the secret."""
    secret = add_gateway(engine, gateway_id)
    with transaction(engine) as conn:
        registry.sync_devices_from_config(conn, gateway_id, dict(CONFIG, gateway=gateway_id))
    return secret


@contextlib.asynccontextmanager
async def running_bridge(
    engine: Engine, broker: ManagedMosquitto | AmqttBroker, instance: str = "test", **kw: Any
) -> AsyncIterator[Any]:
    from fleet.mqtt.bridge import Bridge, BridgeSettings

    settings = BridgeSettings(
        "127.0.0.1",
        broker.port,
        password=broker.fleet_password,
        shared_subscriptions=broker.supports_shared_subscriptions,
        public_broker_url=f"mqtt://127.0.0.1:{broker.port}",
        instance=instance,
        **kw,
    )
    bridge = Bridge(engine, settings)
    task = asyncio.create_task(bridge.run())
    try:
        async with asyncio.timeout(10):
            await bridge.connected.wait()
        yield bridge
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
