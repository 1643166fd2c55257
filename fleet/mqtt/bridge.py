"""The fleet's MQTT bridge: telemetry to ingest and the ack after the commit (contract 1),
presence from birth and will (contract 3), status (and the status alerts), config reports,
provisioning requests, and the outbox (desired configs) published by whichever instance claims
it. Owns one broker connection; the rules live elsewhere (fleet.telemetry.ingest,
fleet.db.registry, fleet.alerts, fleet.config_service, fleet.mqtt.provisioning).

Subscriptions: with a broker that has shared subscriptions, ``$share/fleet/gw/+/tele``,
``.../status`` and ``$share/fleet/prov/+/request`` (each message to one instance), and
``gw/+/state`` and ``gw/+/config/reported`` plainly (every instance reads the retained ones; the
updates are idempotent)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from sqlalchemy import Engine

from fleet import alerts
from fleet.db import registry
from fleet.db.engine import transaction
from fleet.mqtt import acl, provisioning, store
from protocols import messages
from protocols.codec import CodecError

log = logging.getLogger("fleet.mqtt.bridge")

SHARE_GROUP = "fleet"


@dataclass(frozen=True)
class BridgeSettings:
    host: str
    port: int
    username: str | None = acl.FLEET_USER
    password: str | None = None
    tls_context: ssl.SSLContext | None = None
    shared_subscriptions: bool = True
    # what gateways are told in provisioning answers (mqtts://host:8883 in production)
    public_broker_url: str = "mqtt://localhost:1883"
    instance: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    ingest_workers: int = 4
    group_commit_max: int = 256  # batches per ingest transaction
    group_commit_wait_s: float = 0.002  # how long a batch may wait for others to join it
    outbox_interval_s: float = 0.2
    outbox_batch: int = 500
    reconnect_s: float = 1.0
    keepalive_s: int = 30


@dataclass
class BridgeCounters:
    connections: int = 0
    batches: int = 0
    acks: int = 0
    no_ack: int = 0  # transient failure (database down): the gateway resends
    states: int = 0
    statuses: int = 0
    reports: int = 0
    provisioning_requests: int = 0
    outbox_published: int = 0
    bad_messages: int = 0


# ingest([(gateway_id, payload), ...]) in one transaction -> per batch the ack to publish
# after the commit, or None (no ack: the gateway resends)
IngestFn = Callable[[list[tuple[str, bytes]]], list[bytes | None]]


def default_ingest(engine: Engine) -> IngestFn:
    """fleet.telemetry.ingest.Ingestor.ingest_many (group commit), reduced to the acks."""
    from fleet.telemetry.ingest import Ingestor

    ingestor = Ingestor(engine)

    def run(items: list[tuple[str, bytes]]) -> list[bytes | None]:
        return [r.ack for r in ingestor.ingest_many(items)]

    return run


class Bridge:
    """Run ``await bridge.run()`` as a task; it reconnects until cancelled."""

    def __init__(
        self, engine: Engine, settings: BridgeSettings, ingest: IngestFn | None = None
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.ingest = ingest or default_ingest(engine)
        self.counters = BridgeCounters()
        self.connected = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._pool = ThreadPoolExecutor(settings.ingest_workers, thread_name_prefix="ingest")
        self._slots = asyncio.Semaphore(settings.ingest_workers)
        self._outbox_wake = asyncio.Event()
        self._tele: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- public -------------------------------------------------------------------------

    def notify_outbox(self) -> None:
        """Something was queued in the outbox by this process: publish it now."""
        self._outbox_wake.set()

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self._connect_and_serve()
                except aiomqtt.MqttError as e:
                    log.warning(
                        "broker %s:%d: %s; reconnecting", self.settings.host, self.settings.port, e
                    )
                finally:
                    self.connected.clear()
                    self._client = None
                await asyncio.sleep(self.settings.reconnect_s)
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)

    # -- connection ---------------------------------------------------------------------

    def _filters(self) -> list[str]:
        shared = [
            "gw/+/tele",
            "gw/+/status",
            f"prov/+/{acl.PROV_REQUEST}",
        ]
        if self.settings.shared_subscriptions:
            shared = [f"$share/{SHARE_GROUP}/{f}" for f in shared]
        return [*shared, "gw/+/state", "gw/+/config/reported"]

    async def _connect_and_serve(self) -> None:
        s = self.settings
        async with aiomqtt.Client(
            s.host,
            s.port,
            username=s.username,
            password=s.password,
            identifier=f"fleet-{s.instance}"[:64],
            tls_context=s.tls_context,
            clean_session=True,
            keepalive=s.keepalive_s,
            timeout=10,
            max_inflight_messages=200,
        ) as client:
            for f in self._filters():
                await client.subscribe(f, qos=1)
            self._client = client
            self.counters.connections += 1
            self.connected.set()
            log.info("bridge %s connected to %s:%d", s.instance, s.host, s.port)
            self._tele = asyncio.Queue()  # batches of a lost connection are resent anyway
            loops = [
                asyncio.create_task(self._outbox_loop(client), name="bridge-outbox"),
                asyncio.create_task(self._ingest_loop(client), name="bridge-ingest"),
            ]
            try:
                async for msg in client.messages:
                    self._dispatch(client, msg)
                    for task in loops:
                        if task.done():
                            task.result()
            finally:
                for task in loops:
                    task.cancel()
                await asyncio.gather(*loops, return_exceptions=True)
                for task in list(self._tasks):
                    task.cancel()

    def _dispatch(self, client: aiomqtt.Client, msg: aiomqtt.Message) -> None:
        topic = msg.topic.value
        payload = bytes(msg.payload) if isinstance(msg.payload, bytes | bytearray) else b""
        if topic.startswith("prov/"):
            parts = topic.split("/")
            if len(parts) == 3 and acl.is_claim_id(parts[1]) and parts[2] == acl.PROV_REQUEST:
                self._spawn(self._on_provisioning(client, parts[1], payload))
            else:
                self.counters.bad_messages += 1
            return
        try:
            gateway, kind = messages.parse_topic(topic)
        except CodecError as e:
            self.counters.bad_messages += 1
            log.warning("ignoring a message: %s", e)
            return
        if kind == "tele":
            self.counters.batches += 1
            self._tele.put_nowait((gateway, payload))
        elif kind == "state":
            self._spawn(self._in_db(self._on_state, gateway, payload))
        elif kind == "status":
            self._spawn(self._in_db(self._on_status, gateway, payload))
        elif kind == "config/reported":
            self._spawn(self._in_db(self._on_reported, gateway, payload))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_in_pool(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # -- telemetry ----------------------------------------------------------------------

    async def _ingest_loop(self, client: aiomqtt.Client) -> None:
        """Group commit: take what arrived within group_commit_wait_s (up to group_commit_max
        batches), ingest it in one transaction in a worker thread, then publish the acks."""
        s = self.settings
        while True:
            items = [await self._tele.get()]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(s.group_commit_wait_s):
                    while len(items) < s.group_commit_max:
                        items.append(await self._tele.get())
            while len(items) < s.group_commit_max and not self._tele.empty():
                items.append(self._tele.get_nowait())
            await self._slots.acquire()
            self._spawn(self._ingest_and_ack(client, items))

    async def _ingest_and_ack(self, client: aiomqtt.Client, items: list[tuple[str, bytes]]) -> None:
        try:
            loop = asyncio.get_running_loop()
            try:
                acks = await loop.run_in_executor(self._pool, self.ingest, items)
            except Exception:
                self.counters.no_ack += len(items)
                log.exception("ingest of %d batches failed; no acks (gateways resend)", len(items))
                return
        finally:
            self._slots.release()
        sends = []
        for (gateway, _), ack in zip(items, acks, strict=True):
            if ack is None:
                self.counters.no_ack += 1
            else:
                sends.append(client.publish(messages.topic(gateway, "ack"), ack, qos=1))
        results = await asyncio.gather(*sends, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                log.warning("an ack was not sent (%s); the gateway resends the batch", r)
            else:
                self.counters.acks += 1

    # -- presence, status, config reports ----------------------------------------------------

    async def _in_db(self, handler: Callable[[str, bytes], None], gateway: str, payload: bytes):
        try:
            await self._run_in_pool(handler, gateway, payload)
        except CodecError as e:
            self.counters.bad_messages += 1
            log.warning("ignoring a message from %s: %s", gateway, e)
        except Exception:
            log.exception("could not handle a message from %s", gateway)

    def _on_state(self, gateway: str, payload: bytes) -> None:
        if not payload:
            return  # a cleared retained message
        state = messages.decode_state(payload)
        if state["gateway"] != gateway:
            raise CodecError(f"state: gateway {state['gateway']!r} on the topic of {gateway!r}")
        with transaction(self.engine) as conn:
            registry.set_presence(
                conn,
                gateway,
                online=state["online"],
                boot=state["boot"],
                session=state["session"],
                ts_ms=store.now_ms(),
                fw_version=state["fw_version"],
                config_version=state["config_version"],
            )
        self.counters.states += 1

    def _on_status(self, gateway: str, payload: bytes) -> None:
        status = messages.decode_status(payload)
        if status["gateway"] != gateway:
            raise CodecError(f"status: gateway {status['gateway']!r} on the topic of {gateway!r}")
        now = store.now_ms()
        with transaction(self.engine) as conn:
            row = registry.get_gateway(conn, gateway)
            if row is not None:
                previous = row["last_status"] or None  # the status before this one
                registry.record_status(conn, gateway, status, now)
                alerts.check_status(conn, gateway, status, previous, now)
        self.counters.statuses += 1

    def _on_reported(self, gateway: str, payload: bytes) -> None:
        if not payload:
            return
        report = messages.decode_reported(payload)
        if report["gateway"] != gateway:
            raise CodecError(f"report: gateway {report['gateway']!r} on the topic of {gateway!r}")
        from fleet import config_service

        with transaction(self.engine) as conn:
            if registry.get_gateway(conn, gateway) is not None:
                config_service.record_reported(conn, gateway, report, store.now_ms())
        self.counters.reports += 1

    # -- provisioning -------------------------------------------------------------------------

    async def _on_provisioning(self, client: aiomqtt.Client, claim_id: str, payload: bytes) -> None:
        self.counters.provisioning_requests += 1
        try:
            answer = await self._run_in_pool(
                provisioning.handle_request,
                self.engine,
                claim_id,
                payload,
                self.settings.public_broker_url,
            )
        except Exception:
            log.exception("provisioning request of %s failed", claim_id)
            return  # no answer: the gateway asks again
        with contextlib.suppress(aiomqtt.MqttError):
            await client.publish(acl.prov_topic(claim_id, acl.PROV_RESPONSE), answer, qos=1)

    # -- outbox --------------------------------------------------------------------------

    def _claim(self) -> list[store.OutboxMessage]:
        with transaction(self.engine) as conn:
            return store.claim_outbox(
                conn, self.settings.instance, self.settings.outbox_batch, store.now_ms()
            )

    def _done(self, ids: list[int]) -> None:
        with transaction(self.engine) as conn:
            store.outbox_done(conn, ids)

    async def _outbox_loop(self, client: aiomqtt.Client) -> None:
        while True:
            self._outbox_wake.clear()
            try:
                rows = await self._run_in_pool(self._claim)
            except Exception:
                log.exception("could not read the MQTT outbox; retrying")
                rows = []
            for i in range(0, len(rows), 100):
                chunk = rows[i : i + 100]
                await asyncio.gather(
                    *(client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain) for m in chunk)
                )
                await self._run_in_pool(self._done, [m.id for m in chunk])
                self.counters.outbox_published += len(chunk)
            if len(rows) >= self.settings.outbox_batch:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.outbox_interval_s):
                    await self._outbox_wake.wait()
