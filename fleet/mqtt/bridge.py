"""The fleet's MQTT bridge: telemetry to ingest and the ack after the commit (contract 1),
presence from birth and will (contract 3), status (and the status alerts), config reports,
provisioning requests, and the outbox (desired configs) published by whichever instance claims
it. Owns one broker connection; the rules live elsewhere (fleet.telemetry.ingest,
fleet.db.registry, fleet.alerts, fleet.config_service, fleet.mqtt.provisioning).

Messages that change the database are handled in groups, one transaction per group (telemetry
with group commit; presence, status and config reports with each gateway's messages in arrival
order), because one transaction per message was what limited a rollout to thousands of
gateways. A config report that settles the last pending gateway of a rollout stage (or pushes
its failures past the threshold) advances that rollout at once instead of at the server's next
periodic tick.

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
from typing import Any, Generic, TypeVar

import aiomqtt
from sqlalchemy import Engine

from fleet import alerts, config_service, rollouts
from fleet.db import registry
from fleet.db.engine import transaction
from fleet.mqtt import acl, provisioning, store
from protocols import messages
from protocols.codec import CodecError

log = logging.getLogger("fleet.mqtt.bridge")

SHARE_GROUP = "fleet"
# aiomqtt warns once per publish when more publishes than this await their PUBACK; the outbox
# and the acks of a group commit legitimately have thousands in flight.
PENDING_PUBLISHES_WARNING = 10_000


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
    outbox_batch: int = 1000  # rows claimed and published at once
    db_group_max: int = 500  # presence/status/report messages per transaction
    rollout_poll_s: float = 0.5  # look for rollouts ready to go on (fleet.rollouts.ready_ids)
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


D = TypeVar("D")


@dataclass(frozen=True)
class _GroupedKind(Generic[D]):
    """How the bridge handles one kind of message in groups: decode (in the worker thread,
    outside the transaction; CodecError = a bad message, None = nothing to do), then apply the
    decoded (gateway, message) pairs in the group's transaction; apply returns the rollouts
    whose targets the messages settled."""

    name: str
    decode: Callable[[str, bytes], D | None]
    apply: Callable[[Any, list[tuple[str, D]], int], set[int]]
    count: Callable[[BridgeCounters, int], None]


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
        self._grouped: dict[str, _GroupedKind[Any]] = {
            "state": _GroupedKind("state", _decode_state, _apply_states, _count_states),
            "status": _GroupedKind("status", _decode_status, _apply_statuses, _count_statuses),
            "config/reported": _GroupedKind(
                "config/reported", _decode_reported, _apply_reports, _count_reports
            ),
        }
        self._db_queues: dict[str, asyncio.Queue[tuple[str, bytes]]] = {}
        self._rollout_wake = asyncio.Event()
        self._rollout_ids: set[int] = set()
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
            client.pending_calls_threshold = PENDING_PUBLISHES_WARNING
            for f in self._filters():
                await client.subscribe(f, qos=1)
            self._client = client
            self.counters.connections += 1
            self.connected.set()
            log.info("bridge %s connected to %s:%d", s.instance, s.host, s.port)
            self._tele = asyncio.Queue()  # batches of a lost connection are resent anyway
            # QoS 1 messages of a lost connection come again (or are retained)
            self._db_queues = {kind: asyncio.Queue() for kind in self._grouped}
            loops = [
                asyncio.create_task(self._outbox_loop(client), name="bridge-outbox"),
                asyncio.create_task(self._ingest_loop(client), name="bridge-ingest"),
                asyncio.create_task(self._rollout_loop(), name="bridge-rollouts"),
                *(
                    asyncio.create_task(self._db_loop(kind), name=f"bridge-{kind}")
                    for kind in self._grouped
                ),
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
        elif kind in self._db_queues:
            self._db_queues[kind].put_nowait((gateway, payload))

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

    async def _db_loop(self, kind: str) -> None:
        """Handle one kind in arrival order: whatever queued up while the previous group was
        in the database goes in the next transaction (up to db_group_max messages)."""
        queue = self._db_queues[kind]
        handler = self._grouped[kind]
        while True:
            items = [await queue.get()]
            while len(items) < self.settings.db_group_max and not queue.empty():
                items.append(queue.get_nowait())
            try:
                touched = await self._run_in_pool(self._handle_group, handler, items)
            except Exception:
                log.exception("could not handle %d %s messages", len(items), kind)
                continue
            if touched:
                self._wake_rollouts(touched)

    def _handle_group(self, kind: _GroupedKind[Any], items: list[tuple[str, bytes]]) -> set[int]:
        """Decode every message, apply the good ones in one transaction; if that transaction
        fails, each message again in its own, so one message the database refuses costs no
        other. Returns the rollouts to advance."""
        decoded = []
        for gateway, payload in items:
            try:
                d = kind.decode(gateway, payload)
            except CodecError as e:
                self.counters.bad_messages += 1
                log.warning("ignoring a %s message from %s: %s", kind.name, gateway, e)
                continue
            if d is not None:
                decoded.append((gateway, d))
        if not decoded:
            return set()
        # one lock order for every instance (PostgreSQL); stable, so a gateway's own messages
        # keep their order (a birth before its will)
        decoded.sort(key=lambda item: item[0])
        now = store.now_ms()
        touched: set[int] = set()
        try:
            with transaction(self.engine) as conn:
                touched = kind.apply(conn, decoded, now)
                touched = {r for r in touched if rollouts.should_advance(conn, r)}
            kind.count(self.counters, len(decoded))
            return touched
        except Exception:
            if len(decoded) == 1:
                log.exception("could not handle a %s message from %s", kind.name, decoded[0][0])
                return set()
            log.warning(
                "a group of %d %s messages failed; handling them one by one",
                len(decoded),
                kind.name,
                exc_info=True,
            )
        touched = set()
        for gateway, d in decoded:
            try:
                with transaction(self.engine) as conn:
                    settled = kind.apply(conn, [(gateway, d)], now)
                    touched |= {r for r in settled if rollouts.should_advance(conn, r)}
                kind.count(self.counters, 1)
            except Exception:
                log.exception("could not handle a %s message from %s", kind.name, gateway)
        return touched

    # -- rollouts ------------------------------------------------------------------------

    def _wake_rollouts(self, rollout_ids: set[int]) -> None:
        self._rollout_ids |= rollout_ids
        self._rollout_wake.set()

    async def _rollout_loop(self) -> None:
        """Advance rollouts as soon as they can go on: woken when reports settled a stage (or
        failed a gateway), and every rollout_poll_s for rollouts ready without a report here
        (just created, or settled through another instance). One tick at a time; wakes that
        come meanwhile are taken together. A rollout held back by its rate is left alone until
        it is due. The server's periodic tick still covers report timeouts."""
        loop = asyncio.get_running_loop()
        not_before: dict[int, int] = {}  # rollout id -> due ms (rate)
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.rollout_poll_s):
                    await self._rollout_wake.wait()
            self._rollout_wake.clear()
            ids, self._rollout_ids = self._rollout_ids, set()
            try:
                if not ids:
                    ids = set(await self._run_in_pool(self._ready_rollouts))
                now = store.now_ms()
                ids = {i for i in ids if not_before.get(i, 0) <= now}
                if not ids:
                    continue
                res = await self._run_in_pool(rollouts.tick, self.engine, now, ids)
            except Exception:
                log.exception("could not advance rollouts %s; the periodic tick will", sorted(ids))
                continue
            if res.delivered:
                self.notify_outbox()
            for rollout_id, due_ms in res.due_ms.items():
                not_before[rollout_id] = due_ms
                delay_s = max(0.0, (due_ms - store.now_ms()) / 1000) + 0.002
                loop.call_later(delay_s, self._wake_rollouts, {rollout_id})
            for rollout_id in ids - set(res.due_ms):
                not_before.pop(rollout_id, None)

    def _ready_rollouts(self) -> list[int]:
        with self.engine.connect() as conn:
            return rollouts.ready_ids(conn)

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
            if rows:
                # all at once: paho keeps max_inflight_messages in flight and queues the rest
                await asyncio.gather(
                    *(client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain) for m in rows)
                )
                await self._run_in_pool(self._done, [m.id for m in rows])
                self.counters.outbox_published += len(rows)
            if len(rows) >= self.settings.outbox_batch:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.outbox_interval_s):
                    await self._outbox_wake.wait()


# -- the grouped kinds: decode outside the transaction, apply inside it -----------------------


def _decode_state(gateway: str, payload: bytes) -> dict[str, Any] | None:
    if not payload:
        return None  # a cleared retained message
    state = messages.decode_state(payload)
    if state["gateway"] != gateway:
        raise CodecError(f"state: gateway {state['gateway']!r} on the topic of {gateway!r}")
    return state


def _apply_states(conn: Any, states: list[tuple[str, dict[str, Any]]], now: int) -> set[int]:
    for gateway, state in states:
        registry.set_presence(
            conn,
            gateway,
            online=state["online"],
            boot=state["boot"],
            session=state["session"],
            ts_ms=now,
            fw_version=state["fw_version"],
            config_version=state["config_version"],
        )
    return set()


def _decode_status(gateway: str, payload: bytes) -> dict[str, Any]:
    status = messages.decode_status(payload)
    if status["gateway"] != gateway:
        raise CodecError(f"status: gateway {status['gateway']!r} on the topic of {gateway!r}")
    return status


def _apply_statuses(conn: Any, statuses: list[tuple[str, dict[str, Any]]], now: int) -> set[int]:
    for gateway, status in statuses:
        row = registry.get_gateway(conn, gateway)
        if row is not None:
            previous = row["last_status"] or None  # the status before this one
            registry.record_status(conn, gateway, status, now)
            alerts.check_status(conn, gateway, status, previous, now)
    return set()


def _decode_reported(gateway: str, payload: bytes) -> dict[str, Any] | None:
    if not payload:
        return None
    report = messages.decode_reported(payload)
    if report["gateway"] != gateway:
        raise CodecError(f"report: gateway {report['gateway']!r} on the topic of {gateway!r}")
    return report


def _apply_reports(conn: Any, reports: list[tuple[str, dict[str, Any]]], now: int) -> set[int]:
    return config_service.record_reported_many(conn, reports, now)


def _count_states(c: BridgeCounters, n: int) -> None:
    c.states += n


def _count_statuses(c: BridgeCounters, n: int) -> None:
    c.statuses += n


def _count_reports(c: BridgeCounters, n: int) -> None:
    c.reports += n
