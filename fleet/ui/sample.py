"""Sample data and simulated gateways for the UI's screenshots and browser tests: an
organisation with sites, users and gateways (known MQTT secrets and signing keys), and
SimGateway, which talks MQTT as a gateway does (birth and will, status, telemetry batches of
protocols.codec, verifies the signed desired configuration and reports it applied). Not used
by the running fleet."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from sqlalchemy import Engine

from fleet import admin, alerts, auth, config_service
from fleet.db import registry
from fleet.db.engine import transaction
from protocols import codec, messages, sign
from protocols.quantities import channel_id

PASSWORD = "sample-password"
POWER = channel_id(1, "power_total")
ENERGY = channel_id(1, "energy_import")


def sample_config(port: str = "/dev/ttyUSB0") -> dict[str, Any]:
    """One SDM630 (energy and power) on an RS-485 bus, batches every 30 s."""
    return {
        "buses": [{"id": "rs485-1", "type": "rtu", "port": port}],
        "meters": [{"id": 1, "name": "Hauptzähler", "bus": "rs485-1", "unit": 1,
                    "profile": "sdm630", "quantities": ["energy_import", "power_total"]}],
        "uplink": {"batch_interval_s": 30},
    }  # fmt: skip


@dataclass
class SampleGateway:
    id: str
    secret: str
    key: bytes


@dataclass
class Sample:
    org_slug: str
    admin_email: str
    other_slug: str
    other_email: str
    gateways: list[SampleGateway] = field(default_factory=list)


def make_sample(engine: Engine, gateway_ids: tuple[str, ...] = ("schule-nord-1", "rathaus-1"),
                with_alert: bool = False) -> Sample:  # fmt: skip
    """Organisation "musterstadt" (admin admin@musterstadt.example) with two sites and
    accepted, configured gateways; organisation "nachbarstadt" with an operator and nothing
    else (to show isolation). Passwords: PASSWORD."""
    s = Sample("musterstadt", "admin@musterstadt.example", "nachbarstadt",
               "operator@nachbarstadt.example")  # fmt: skip
    org = admin.create_org(engine, s.org_slug, "Stadt Musterstadt")
    admin.create_user(engine, s.admin_email, PASSWORD, s.org_slug, "admin", name="Alex Admin")
    admin.create_org(engine, s.other_slug, "Gemeinde Nachbarstadt")
    admin.create_user(engine, s.other_email, PASSWORD, s.other_slug, "operator")
    now = registry.now_ms()
    with transaction(engine) as conn:
        sites = [
            registry.create_site(
                conn, org, "Grundschule Nord", floor_area_m2=2400, building_type="Schule"
            ),
            registry.create_site(
                conn, org, "Rathaus", floor_area_m2=3100, building_type="Verwaltung"
            ),
        ]
        for i, gid in enumerate(gateway_ids):
            secret = auth.new_gateway_secret()
            key = bytes.fromhex(auth.new_signing_key())
            registry.create_gateway(
                conn, gid, org, site_id=sites[i % len(sites)], name=gid.replace("-", " ").title(),
                status="accepted", tags=("schule",) if i % 2 == 0 else ("verwaltung",),
                credential_hash=auth.hash_gateway_secret(secret), signing_key=key,
            )  # fmt: skip
            config_service.set_desired(conn, gid, sample_config(), now, None, "initial")
            s.gateways.append(SampleGateway(gid, secret, key))
        if with_alert and len(gateway_ids) > 1:
            alerts.open_alert(conn, gateway_ids[-1], alerts.OFFLINE, now)
    return s


class SimGateway:
    """One simulated gateway on the broker at 127.0.0.1:port (see module docstring)."""

    def __init__(self, gw: SampleGateway, port: int, boot: int = 1) -> None:
        self.gw = gw
        self.port = port
        self.boot = boot
        self.version = 0
        self.apply = True  # False: receive configurations but never report (a stuck gateway)
        self.seq = 0
        self.acked: set[int] = set()
        self.connected = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None

    def topic(self, kind: str) -> str:
        return messages.topic(self.gw.id, kind)

    async def start(self, timeout_s: float = 20.0) -> None:
        """Connect (retrying until the broker knows the account) and announce itself."""
        self._task = asyncio.create_task(self._run(timeout_s), name=f"sim {self.gw.id}")
        waiter = asyncio.create_task(self.connected.wait())
        await asyncio.wait([waiter, self._task], timeout=timeout_s,
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        if not self.connected.is_set():
            waiter.cancel()
            if self._task.done():
                self._task.result()
            raise TimeoutError(f"{self.gw.id} did not connect within {timeout_s} s")

    async def _run(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            ts = int(time.time() * 1000)
            will = aiomqtt.Will(
                self.topic("state"),
                messages.encode_will(self.gw.id, self.boot, 1, "sim-1.0", self.version, ts),
                qos=1, retain=True,
            )  # fmt: skip
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", self.port, identifier=self.gw.id, username=self.gw.id,
                    password=self.gw.secret, will=will, timeout=5,
                ) as c:  # fmt: skip
                    self._client = c
                    await c.subscribe(self.topic("config/desired"), qos=1)
                    await c.subscribe(self.topic("ack"), qos=1)
                    birth = messages.encode_birth(self.gw.id, self.boot, 1, "sim-1.0",
                                                  self.version, ts)  # fmt: skip
                    await c.publish(self.topic("state"), birth, qos=1, retain=True)
                    await c.publish(self.topic("status"), self._status(), qos=0)
                    self.connected.set()
                    async for m in c.messages:
                        await self._on_message(c, m.topic.value, bytes(m.payload))  # type: ignore[arg-type]
                return
            except aiomqtt.MqttError:
                if self.connected.is_set() or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)  # the broker's password file is refreshed every second

    def _status(self) -> bytes:
        return messages.encode_status({
            "gateway": self.gw.id, "boot": self.boot, "ts_ms": int(time.time() * 1000),
            "uptime_s": 3600, "fw_version": "sim-1.0", "config_version": self.version,
            "free_heap_bytes": 81_920, "buffer_depth": 0, "oldest_unsent_ts_ms": None,
            "dropped_readings": 0, "rssi_dbm": -61, "reset_cause": "power_on",
            "meters": [{"id": 1, "polls_ok": 120, "timeouts": 0, "crc_errors": 0, "exceptions": 0}],
        })  # fmt: skip

    async def _on_message(self, c: aiomqtt.Client, topic: str, payload: bytes) -> None:
        if topic == self.topic("ack"):
            self.acked.add(messages.decode_ack(payload).seq)
        elif topic == self.topic("config/desired") and payload:
            doc = json.loads(sign.open_envelope(payload, self.gw.key))
            version = doc["version"]
            if doc["gateway"] != self.gw.id or version <= self.version or not self.apply:
                return
            self.version = version
            report = messages.encode_reported(self.gw.id, version, version,
                                              messages.REPORT_APPLIED, None,
                                              int(time.time() * 1000))  # fmt: skip
            await c.publish(self.topic("config/reported"), report, qos=1, retain=True)

    async def send_history(self, minutes: int = 90, step_s: int = 60) -> int:
        """Readings of the last minutes (power and a growing energy counter), one batch per
        20 readings; returns when the fleet acknowledged all of them. Returns the count."""
        assert self._client is not None
        now = int(time.time() * 1000)
        start = now - minutes * 60_000
        readings = []
        energy = 1_250_000.0
        for i in range(minutes * 60 // step_s):
            ts = start + i * step_s * 1000
            power = round(4200 + 1800 * math.sin(i / 9) + 300 * math.sin(i / 2.3))
            energy += power * step_s / 3600
            readings += [(POWER, ts, power), (ENERGY, ts, round(energy))]
        sent = []
        for i in range(0, len(readings), 40):
            self.seq += 1
            part = sorted(readings[i : i + 40])
            await self._client.publish(
                self.topic("tele"), codec.encode_batch(self.seq, part), qos=1
            )
            sent.append(self.seq)
        deadline = time.monotonic() + 20
        while not set(sent) <= self.acked:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.gw.id}: batches {sent} not acknowledged")
            await asyncio.sleep(0.05)
        return len(readings)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task
