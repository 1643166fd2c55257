"""The gateway's MQTT uplink: sends the store's batches to the fleet and deletes them only on
the fleet's acknowledgement; birth and last will, config messages, status. It owns the broker
connection and nothing else: no polling, no config validation (the agent does those).

Flows (topics gw/<gateway>/<kind>, payloads from protocols/messages.py and protocols/codec.py;
docs/protocol.md has the full description):

* connect with last will ``state`` {online: false, boot, session} (QoS 1, retained); publish
  birth ``state`` {online: true, same boot and session} (retained); subscribe ``ack`` and
  ``config/desired`` (QoS 1);
* resend every unacknowledged batch from the store, in seq order, with its original seq and
  content; then send new batches on ``tele`` (QoS 1): live readings first, the backlog
  (historical) at ``history_readings_per_s`` in the window slots live data does not need;
  at most ``window_batches`` unacknowledged batches; a batch not acknowledged within
  ``ack_timeout_s`` is resent (the fleet ingests idempotently on (gateway, seq));
* ``ack`` {seq} deletes that batch from the store (an ack with an error means the fleet
  refused the batch for good: it is moved aside, counted as dropped and logged);
* a retained ``state`` offline of an older session (a late will) is answered with the birth
  again;
* ``config/desired`` payloads go to the on_config callback; ``report_config`` publishes
  ``config/reported`` (retained; queued while offline); ``publish_status`` sends ``status``
  (QoS 0);
* on loss of the connection: reconnect after 1 s .. 60 s, doubling, with jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from edge.store import PendingBatch, Store
from protocols import codec, messages
from protocols.codec import CodecError

log = logging.getLogger("edge.uplink")

Resolution = dict[int, Any] | Callable[[int], Any] | None  # as codec.encode_batch takes it


@dataclass(frozen=True)
class MqttSettings:
    """Where and how to reach the broker (from the local bootstrap file, never remote).

    TLS is on when tls is True; ca_file None then means the system's CA store. A client
    certificate (cert_file + key_file) and a username/password can be used alone or together."""

    host: str
    port: int = 8883
    tls: bool = True
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password: str | None = None
    client_id: str | None = None  # default: the gateway id (brokers' ACLs use it)
    keepalive_s: int = 30

    def tls_context(self) -> ssl.SSLContext | None:
        """The SSL context for these settings, or None without TLS; OSError/ssl.SSLError with
        the file named if a certificate or key cannot be loaded."""
        if not self.tls:
            return None
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("mqtt: a client certificate needs both cert_file and key_file")
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file is not None:
                ctx.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as e:
            files = ", ".join(f for f in (self.ca_file, self.cert_file, self.key_file) if f)
            raise ValueError(f"mqtt TLS: cannot load {files}: {e}") from e
        return ctx


@dataclass(frozen=True)
class UplinkSettings:
    """How batches flow. Defaults suit a gateway polling a few dozen meters."""

    batch_max_readings: int = 2000  # readings per live batch
    history_batch_max_readings: int = 5000  # readings per historical batch
    send_interval_s: float = 1.0  # live readings wait at most this long before they leave
    window_batches: int = 8  # batches sent and not yet acknowledged (one slot kept for live)
    history_readings_per_s: float = 5000.0  # backlog drain rate; 0 = as fast as acks come
    ack_timeout_s: float = 30.0  # resend a batch not acknowledged within this
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    timeout_s: float = 10.0  # bound on connect, subscribe, publish and disconnect

    def __post_init__(self) -> None:
        if self.window_batches < 2:
            raise ValueError("window_batches must be at least 2 (one is kept for live data)")
        if min(self.batch_max_readings, self.history_batch_max_readings) < 1:
            raise ValueError("batch sizes must be at least 1 reading")
        if self.batch_max_readings > codec.MAX_READINGS:
            raise ValueError(f"batch_max_readings: at most {codec.MAX_READINGS}")
        if self.history_batch_max_readings > codec.MAX_READINGS:
            raise ValueError(f"history_batch_max_readings: at most {codec.MAX_READINGS}")


@dataclass
class UplinkCounters:
    """Since the agent started (not persisted; the store keeps the durable ones)."""

    connections: int = 0  # successful connections to the broker
    reconnects: int = 0  # retries after a lost or failed connection
    sent_batches: int = 0
    sent_readings: int = 0
    resent_batches: int = 0  # after a reconnect, a restart or an ack timeout
    acked_batches: int = 0
    acked_readings: int = 0
    refused_batches: int = 0  # acknowledged with an error: the fleet will never take them
    skipped_readings: int = 0  # values the codec cannot carry (out of range at the resolution)
    config_messages: int = 0
    bad_messages: int = 0  # malformed acks and the like, ignored


@dataclass
class _Flight:
    payload: bytes
    historical: bool
    readings: int
    sent_at: float  # time.monotonic()
    attempts: int = 1


@dataclass
class _Report:
    version: int
    desired_version: int
    status: str
    reason: str | None
    ts_ms: int = field(default=0)


class Uplink:
    """One gateway's connection to the fleet. Run ``await uplink.run()`` as one task (it
    returns only when cancelled, after saying "offline"); the other methods may be called
    from any task of the same event loop.

    gateway: the gateway id (topic gw/<gateway>/...); boot: the store's boot counter
    (``store.increment_boot()`` once per start); on_config(payload: bytes) receives each
    config/desired message and must return quickly (schedule long work in a task);
    resolution: per-channel resolutions for the codec (None: the quantity catalogue's)."""

    def __init__(
        self,
        store: Store,
        gateway: str,
        mqtt: MqttSettings,
        settings: UplinkSettings | None = None,
        *,
        boot: int,
        fw_version: str,
        config_version: int = 0,
        on_config: Callable[[bytes], None] | None = None,
        resolution: Resolution = None,
    ) -> None:
        self.store = store
        self.gateway = gateway
        self.mqtt = mqtt
        self.settings = settings or UplinkSettings()
        self.boot = boot
        self.fw_version = fw_version
        self.config_version = config_version
        self.on_config = on_config
        self.resolution = resolution
        self.counters = UplinkCounters()
        self.session = 0  # counts connection attempts within this boot
        self.connected = False
        self.last_ack_ms: int | None = None  # wall-clock time of the last acknowledgement
        # wall-clock time of the last message from the fleet (ack or config): "contact"
        self.last_contact_ms: int | None = None
        self._rebirth = False
        self._topics = {k: messages.topic(gateway, k) for k in messages.TOPIC_KINDS}
        self._tls = mqtt.tls_context()  # fail at start-up, not on every reconnect
        self._client: aiomqtt.Client | None = None
        self._inflight: dict[int, _Flight] = {}
        self._wake = asyncio.Event()
        self._connected_event = asyncio.Event()
        self._tokens = 0.0
        self._tokens_at = time.monotonic()
        self._pending_report: _Report | None = None
        self._served_ok = False

    # -- public API ---------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, reconnect with backoff; forever, until cancelled."""
        failures = 0
        while True:
            _raise_if_cancelled()
            self.session += 1
            try:
                await self._connect_and_serve()
            except aiomqtt.MqttError as e:
                log.warning("%s", self._explain(e))
            finally:
                self.connected = False
                self._connected_event.clear()
                self._client = None
            # Back off from the minimum again after a connection that worked.
            failures = 0 if self._served_ok else failures + 1
            self.counters.reconnects += 1
            s = self.settings
            cap = min(s.reconnect_max_s, s.reconnect_min_s * 2**failures)
            await asyncio.sleep(random.uniform(cap / 2, cap))

    def notify(self) -> None:
        """New readings were appended: send them now instead of at the next send interval."""
        self._wake.set()

    async def wait_connected(self, timeout_s: float) -> bool:
        """Whether a connection is up within timeout_s."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._connected_event.wait()
        except TimeoutError:
            return False
        return True

    async def publish_status(self, status: dict[str, Any]) -> bool:
        """Publish a status message (fields of messages.encode_status; a bad dict raises
        CodecError), QoS 0. False if there is no connection right now: status is periodic,
        the next one will do."""
        payload = messages.encode_status(status)
        return await self._publish_now(self._topics["status"], payload, retain=False, qos=0)

    async def report_config(
        self, version: int, desired_version: int, status: str, reason: str | None
    ) -> bool:
        """Report the configuration running now (version) and what became of desired_version
        (messages.REPORT_APPLIED / REPORT_REJECTED / REPORT_ROLLED_BACK, reason for the
        latter two). Sets config_version for the next birth message. Without a connection the
        report is kept (the latest only) and published on connect; returns whether it went."""
        self.config_version = version
        report = _Report(version, desired_version, status, reason, _now_ms())
        self._encode_report(report)  # a bad report raises here, in the caller
        self._pending_report = report
        return await self._flush_report()

    def status_fields(self) -> dict[str, Any]:
        """The buffer fields of the status message (buffer_depth, oldest_unsent_ts_ms,
        dropped_readings) plus this uplink's counters under "uplink"."""
        st = self.store.status()
        return {
            "buffer_depth": st.depth,
            "oldest_unsent_ts_ms": st.oldest_unsent_ts_ms,
            "dropped_readings": st.dropped_readings,
            "uplink": dict(self.counters.__dict__),
        }

    def encode(self, batch: PendingBatch) -> bytes:
        """The telemetry payload of a batch. Values the codec cannot carry at their resolution
        are left out (counted in skipped_readings), the same ones every time, so a resent
        batch keeps its content."""
        try:
            return codec.encode_batch(batch.seq, batch.readings, batch.historical, self.resolution)
        except CodecError as e:
            kept = []
            for r in batch.readings:
                try:
                    codec.encode_batch(batch.seq, [r], batch.historical, self.resolution)
                except CodecError as bad:
                    log.error("batch %d: reading left out: %s", batch.seq, bad)
                    self.counters.skipped_readings += 1
                else:
                    kept.append(r)
            if len(kept) == len(batch.readings):
                raise  # not a per-reading problem: a bug, do not hide it
            log.error("batch %d: %s", batch.seq, e)
            return codec.encode_batch(batch.seq, kept, batch.historical, self.resolution)

    # -- connection ---------------------------------------------------------------------

    def _state(self, online: bool) -> bytes:
        return messages.encode_state(
            online,
            self.gateway,
            self.boot,
            self.session,
            self.fw_version,
            self.config_version,
            _now_ms(),
        )

    async def _connect_and_serve(self) -> None:
        self._served_ok = False
        m = self.mqtt
        client = aiomqtt.Client(
            m.host,
            m.port,
            username=m.username,
            password=m.password,
            identifier=m.client_id or self.gateway,
            will=aiomqtt.Will(self._topics["state"], self._state(False), qos=1, retain=True),
            clean_session=True,
            keepalive=m.keepalive_s,
            timeout=self.settings.timeout_s,
            tls_context=self._tls,
        )
        async with client:
            t = self.settings.timeout_s
            await client.publish(self._topics["state"], self._state(True), qos=1, retain=True)
            await client.subscribe(self._topics["ack"], qos=1, timeout=t)
            await client.subscribe(self._topics["config/desired"], qos=1, timeout=t)
            await client.subscribe(self._topics["state"], qos=1, timeout=t)
            self._client = client
            self.connected = True
            self._connected_event.set()
            self.counters.connections += 1
            self._served_ok = True
            log.info(
                "connected to %s:%d (boot %d, session %d)",
                m.host,
                m.port,
                self.boot,
                self.session,
            )
            try:
                await self._flush_report()
                await self._serve(client)
            except asyncio.CancelledError:
                # Shutting down: say offline ourselves (a clean disconnect sends no will).
                try:
                    await client.publish(
                        self._topics["state"], self._state(False), qos=1, retain=True, timeout=2
                    )
                except aiomqtt.MqttError:
                    pass
                raise

    async def _serve(self, client: aiomqtt.Client) -> None:
        tasks = (
            asyncio.create_task(self._receive(client), name="uplink-receive"),
            asyncio.create_task(self._send(client), name="uplink-send"),
        )
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _explain(self, e: aiomqtt.MqttError) -> str:
        where = f"{self.mqtt.host}:{self.mqtt.port}"
        text = str(e)
        if isinstance(e, aiomqtt.MqttCodeError) and e.rc in (4, 5, 134, 135):
            return (
                f"broker {where} refused the connection ({text}): check username/password or "
                "the client certificate in the gateway's config file"
            )
        return f"broker {where}: {text}; retrying"

    async def _publish_now(self, topic: str, payload: bytes, retain: bool, qos: int = 1) -> bool:
        client = self._client
        if client is None or not self.connected:
            return False
        try:
            await client.publish(
                topic, payload, qos=qos, retain=retain, timeout=self.settings.timeout_s
            )
        except aiomqtt.MqttError as e:
            log.warning("publish on %s failed: %s", topic, e)
            return False
        return True

    def _encode_report(self, r: _Report) -> bytes:
        return messages.encode_reported(
            self.gateway, r.version, r.desired_version, r.status, r.reason, r.ts_ms
        )

    async def _flush_report(self) -> bool:
        report = self._pending_report
        if report is None:
            return True
        ok = await self._publish_now(
            self._topics["config/reported"], self._encode_report(report), retain=True
        )
        if ok and self._pending_report is report:
            self._pending_report = None
        return ok

    # -- receiving ----------------------------------------------------------------------

    async def _receive(self, client: aiomqtt.Client) -> None:
        ack_topic = self._topics["ack"]
        desired_topic = self._topics["config/desired"]
        state_topic = self._topics["state"]
        async for msg in client.messages:
            payload = msg.payload if isinstance(msg.payload, bytes | bytearray) else b""
            if msg.topic.value == state_topic:
                self._on_state(bytes(payload))
                continue
            self.last_contact_ms = _now_ms()
            if msg.topic.value == ack_topic:
                self._on_ack(bytes(payload))
            elif msg.topic.value == desired_topic:
                self.counters.config_messages += 1
                if self.on_config is not None:
                    try:
                        self.on_config(bytes(payload))
                    except Exception:
                        log.exception("the config handler failed on a config/desired message")

    def _on_ack(self, payload: bytes) -> None:
        try:
            ack = messages.decode_ack(payload)
        except CodecError as e:
            self.counters.bad_messages += 1
            log.warning("ignoring a malformed ack: %s", e)
            return
        n = self.store.ack(ack.seq, error=ack.error)
        flight = self._inflight.pop(ack.seq, None)
        self.last_ack_ms = _now_ms()
        if ack.error is not None:
            if n or flight is not None:
                self.counters.refused_batches += 1
                log.error(
                    "the fleet refused batch %d for good (%d readings moved aside, counted as "
                    "dropped): %s",
                    ack.seq,
                    n,
                    ack.error,
                )
        elif n or flight is not None:
            self.counters.acked_batches += 1
            self.counters.acked_readings += n
        self._wake.set()

    def _on_state(self, payload: bytes) -> None:
        """A late last will of an earlier session overwrote our retained birth: say it again."""
        try:
            state = messages.decode_state(payload)
        except CodecError as e:
            self.counters.bad_messages += 1
            log.warning("ignoring a malformed state message: %s", e)
            return
        if not state["online"] and (state["boot"], state["session"]) < (self.boot, self.session):
            log.info(
                "a late last will of boot %d session %d replaced our birth: publishing it again",
                state["boot"],
                state["session"],
            )
            self._rebirth = True
            self._wake.set()

    # -- sending ------------------------------------------------------------------------

    async def _send(self, client: aiomqtt.Client) -> None:
        self._inflight.clear()
        for batch in self.store.unacked_batches():
            await self._publish_batch(client, batch, resend=True)
        while True:
            _raise_if_cancelled()
            self._wake.clear()
            await self._send_due(client)
            # asyncio.timeout, not wait_for: on 3.11, wait_for can swallow a cancellation that
            # arrives as the event is set, and this loop would then never end.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._next_wait_s()):
                    await self._wake.wait()

    def _next_wait_s(self) -> float:
        wait = self.settings.send_interval_s
        if self._inflight:
            oldest = min(f.sent_at for f in self._inflight.values())
            due = oldest + self.settings.ack_timeout_s - time.monotonic()
            wait = min(wait, max(due, 0.01))
        return wait

    async def _send_due(self, client: aiomqtt.Client) -> None:
        s = self.settings
        if self._rebirth:
            self._rebirth = False
            await client.publish(
                self._topics["state"], self._state(True), qos=1, retain=True, timeout=s.timeout_s
            )
        now = time.monotonic()
        for seq in sorted(self._inflight):
            f = self._inflight.get(seq)
            if f is not None and now - f.sent_at >= s.ack_timeout_s:
                f.sent_at = now
                f.attempts += 1
                self.counters.resent_batches += 1
                await client.publish(self._topics["tele"], f.payload, qos=1, timeout=s.timeout_s)
        while len(self._inflight) < s.window_batches:
            batch = self.store.next_live_batch(s.batch_max_readings)
            if batch is None:
                break
            await self._publish_batch(client, batch, resend=False)
        self._refill_tokens()
        # The backlog never takes the last window slot: live data always finds one.
        while len(self._inflight) < s.window_batches - 1 and self._tokens >= 1:
            limit = min(s.history_batch_max_readings, int(min(self._tokens, 1e9)))
            batch = self.store.next_historical_batch(limit)
            if batch is None:
                break
            self._tokens -= len(batch.readings)
            await self._publish_batch(client, batch, resend=False)

    def _refill_tokens(self) -> None:
        rate = self.settings.history_readings_per_s
        now = time.monotonic()
        if rate <= 0:
            self._tokens = math.inf
        else:
            cap = max(float(self.settings.history_batch_max_readings), rate)
            self._tokens = min(cap, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now

    async def _publish_batch(
        self, client: aiomqtt.Client, batch: PendingBatch, resend: bool
    ) -> None:
        payload = self.encode(batch)
        # Registered before publishing: the ack can come back before our PUBACK does.
        self._inflight[batch.seq] = _Flight(
            payload, batch.historical, len(batch.readings), time.monotonic()
        )
        if resend:
            self.counters.resent_batches += 1
        else:
            self.counters.sent_batches += 1
            self.counters.sent_readings += len(batch.readings)
        await client.publish(self._topics["tele"], payload, qos=1, timeout=self.settings.timeout_s)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _raise_if_cancelled() -> None:
    """Re-raise a cancellation that was swallowed on the way: on Python 3.11, asyncio.wait_for
    (which aiomqtt uses for every publish) returns normally if the awaited thing completes in
    the same loop turn as the cancel; a loop that then carried on would never end."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
