"""The gateway's uplink to the fleet over firmware/mqtt.py: birth and last will with boot and
session counters, batches from the flash buffer with their persistent seq numbers (resent with
identical bytes), acknowledgements, config messages, status. No polling, no config checks.

Same protocol as edge/uplink.py (docs/protocol.md): will + retained birth on gw/<id>/state,
subscriptions to ack, config/desired and state (QoS 1); on connect every unacknowledged batch
is resent as stored, in seq order; then new batches at most `window` unacknowledged, the
backlog (historical batches) at backlog_readings_per_s and never in the last window slot;
a batch not acknowledged within ack_timeout_s is resent; an ack with an error sets the batch
aside (the buffer counts it as dropped). Reconnects back off 1 s .. 60 s with jitter."""

import asyncio
import gc
import json
import sys
import time

from firmware.mqtt import MQTTError, backoff_ms

# protocols/messages.py validates with the schema module; the gateway only writes these few
# messages and reads acks, so it builds them here with the same fields and saves ~25 KB heap.


def topic(gateway, kind):
    """gw/<gateway>/<kind>, as protocols.messages.topic."""
    return "gw/" + gateway + "/" + kind


def decode_ack(payload):
    """(seq, error or None) of an ack message; ValueError naming the problem."""
    doc = json.loads(payload)
    seq = doc.get("seq") if isinstance(doc, dict) else None
    if not isinstance(seq, int) or seq is True or seq is False or seq < 0:
        raise ValueError("ack: seq must be an integer >= 0, got %r" % (seq,))
    err = doc.get("error")
    if err is not None and not isinstance(err, str):
        raise ValueError("ack: error must be text")
    return seq, err


def decode_state(payload):
    """(online, boot, session) of a state message; ValueError if malformed."""
    doc = json.loads(payload)
    try:
        return bool(doc["online"]), int(doc["boot"]), int(doc["session"])
    except (KeyError, TypeError) as e:
        raise ValueError("state: %r" % e)


# A fragmented heap shrinks batches down to this many readings before the uplink gives up
# and reconnects (which frees the connection's buffers).
MIN_BATCH_READINGS = 6
GROW_AFTER = 8  # full batches in a row at a lowered cap before it doubles again


class Uplink:
    """One gateway's connection to the fleet; run() as one task, forever.

    client: firmware.mqtt.MQTTClient (not connected); buffer: firmware.flashlog.Buffer
    (unacked(), batch(seq), next_batch(max_readings, now_ms), oldest_unsent_ts_ms(),
    live_window_ms, ack(seq, error)); now_ms(): UTC ms; on_config(payload bytes): the
    config/desired messages (must return at once).

    Live readings leave every batch_interval_s (each batch is one flash file: fewer, larger
    batches spare the flash), in as many batches of at most max_batch_readings as they fill,
    one after the other; the buffer hands out readings oldest first, so after an outage
    the backlog drains first, at backlog_readings_per_s, then live data resumes."""

    def __init__(
        self,
        client,
        buffer,
        gateway,
        boot,
        fw_version,
        now_ms,
        config_version=0,
        on_config=None,
        window=4,
        max_batch_readings=200,
        batch_interval_s=10,
        backlog_readings_per_s=2000,
        ack_timeout_s=30,
    ):
        self.client = client
        self.buffer = buffer
        self.gateway = gateway
        self.boot = boot
        self.fw_version = fw_version
        self.now_ms = now_ms
        self.config_version = config_version
        self.on_config = on_config
        self.window = max(2, window)
        self.max_batch_readings = max_batch_readings
        self.batch_cap = max_batch_readings  # lowered while the heap is too fragmented
        self.memory_retries = 0
        self._full_takes = 0  # full batches in a row at a lowered cap
        self.batch_interval_ms = int(batch_interval_s * 1000)
        self.backlog_readings_per_s = backlog_readings_per_s
        self.ack_timeout_ms = int(ack_timeout_s * 1000)
        self.session = 0
        self.last_contact_ms = None  # UTC ms of the last message from the fleet
        self.connected = False
        self.sent_batches = 0
        self.resent_batches = 0
        self.acked_batches = 0
        self.refused_batches = 0
        self.bad_messages = 0
        self.reconnects = 0
        self._t_state = topic(gateway, "state").encode()
        self._t_ack = topic(gateway, "ack").encode()
        self._t_desired = topic(gateway, "config/desired").encode()
        self._t_tele = topic(gateway, "tele").encode()
        self._inflight = {}  # seq -> ticks_ms when sent
        self._wake = asyncio.Event()
        self._rebirth = False
        self._report = None  # the latest config report not yet published
        self._tokens = 0
        self._tokens_at = time.ticks_ms()
        self._taken_at = time.ticks_add(time.ticks_ms(), -self.batch_interval_ms)
        self._behind = False  # the last live batch was full: more live readings wait
        client.on_message = self._on_message

    # -- public ---------------------------------------------------------------------

    def notify(self):
        """New readings are in the buffer: consider sending now."""
        self._wake.set()

    async def run(self):
        failures = 0
        while True:
            self.session += 1
            served = False
            try:
                await self._connect()
                served = True
                await self._serve()
            except MQTTError as e:
                print("uplink: %s" % e)
            except OSError as e:
                print("uplink: network error %r" % e)
            except MemoryError as e:  # a fragmented heap: drop the connection's buffers, retry
                print("uplink: out of memory (%r); reconnecting" % e)
                sys.print_exception(e)  # where: the log is all a technician has
            finally:
                self.connected = False
                self.client.close()
            failures = 0 if served else failures + 1
            self.reconnects += 1
            gc.collect()
            await asyncio.sleep_ms(backoff_ms(failures))

    async def publish_status(self, status):
        """Publish a status dict (the fields of docs/protocol.md), QoS 0; False if offline."""
        if not self.connected:
            return False
        try:
            await self.client.publish(topic(self.gateway, "status"), json.dumps(status), qos=0)
        except MQTTError:
            return False
        return True

    async def report_config(self, version, desired_version, status, reason):
        """Report the running config version and what became of desired_version; kept (the
        latest only) and published on connect while offline. Returns whether it went out."""
        self.config_version = version
        self._report = json.dumps(
            {
                "gateway": self.gateway,
                "version": version,
                "desired_version": desired_version,
                "status": status,
                "reason": reason,
                "ts_ms": self.now_ms(),
            }
        )
        return await self._flush_report()

    def counters(self):
        return {
            "session": self.session,
            "sent_batches": self.sent_batches,
            "resent_batches": self.resent_batches,
            "acked_batches": self.acked_batches,
            "refused_batches": self.refused_batches,
            "bad_messages": self.bad_messages,
            "reconnects": self.reconnects,
            "memory_retries": self.memory_retries,
            "batch_cap": self.batch_cap,
        }

    # -- connection -----------------------------------------------------------------

    def _state(self, online):
        return json.dumps(
            {
                "online": online,
                "gateway": self.gateway,
                "boot": self.boot,
                "session": self.session,
                "fw_version": self.fw_version,
                "config_version": self.config_version,
                "ts_ms": self.now_ms(),
            }
        )

    async def _connect(self):
        c = self.client
        c.set_will(self._t_state, self._state(False), retain=True, qos=1)
        await c.connect()
        await c.publish(self._t_state, self._state(True), qos=1, retain=True)
        await c.subscribe(self._t_ack, 1)
        await c.subscribe(self._t_desired, 1)
        await c.subscribe(self._t_state, 1)
        self.connected = True
        print("uplink: connected (boot %d, session %d)" % (self.boot, self.session))
        await self._flush_report()

    async def _flush_report(self):
        report = self._report
        if report is None or not self.connected:
            return report is None
        try:
            await self.client.publish(
                topic(self.gateway, "config/reported"), report, qos=1, retain=True
            )
        except MQTTError:
            return False
        if self._report is report:
            self._report = None
        return True

    async def _serve(self):
        self._inflight = {}
        for seq in self.buffer.unacked():
            await self._publish(seq)
        while self.client.isconnected():
            self._wake.clear()
            await self._send_due()
            try:
                await asyncio.wait_for_ms(self._wake.wait(), self._wait_ms())
            except asyncio.TimeoutError:
                pass
        raise MQTTError("connection lost: %s" % self.client.error)

    def _wait_ms(self):
        wait = self.batch_interval_ms
        now = time.ticks_ms()
        for sent in self._inflight.values():
            due = time.ticks_diff(time.ticks_add(sent, self.ack_timeout_ms), now)
            if due < wait:
                wait = due
        return max(wait, 10)

    async def _publish(self, seq, payload=None):
        """Send batch seq: payload (a new batch) or its stored bytes (a resend)."""
        if payload is None:
            b = self.buffer.batch(seq)
            if b is None:  # damaged on flash (CRC) or gone: it can never be sent as it was
                print("uplink: batch %d unreadable on flash; set aside" % seq)
                self.buffer.ack(seq, "unreadable on the gateway's flash")
                self._inflight.pop(seq, None)
                return
            payload = b.payload
            b = None
            self.resent_batches += 1
        else:
            self.sent_batches += 1
        # Registered before publishing: the fleet's ack can arrive before the PUBACK.
        self._inflight[seq] = time.ticks_ms()
        await self.client.publish(self._t_tele, payload, qos=1)

    async def _send_due(self):
        if self._rebirth:
            self._rebirth = False
            await self.client.publish(self._t_state, self._state(True), qos=1, retain=True)
        now = time.ticks_ms()
        for seq in sorted(self._inflight):
            sent = self._inflight.get(seq)
            if sent is not None and time.ticks_diff(now, sent) >= self.ack_timeout_ms:
                await self._publish(seq)
        self._refill()
        buf = self.buffer
        while len(self._inflight) < self.window:
            oldest = buf.oldest_unsent_ts_ms()
            if oldest is None:
                break
            now_ms = self.now_ms()
            limit = self.max_batch_readings
            if now_ms - oldest > buf.live_window_ms:  # backlog: at the drain rate
                # never in the last window slot: live data's acks keep flowing
                if len(self._inflight) >= self.window - 1 or self._tokens < 1:
                    break
                if self._tokens < limit:
                    limit = int(self._tokens)
            elif (
                not self._behind
                and time.ticks_diff(time.ticks_ms(), self._taken_at) < self.batch_interval_ms
            ):
                break
            b = self._take(limit, now_ms)
            if b is None:
                break
            if isinstance(b, int):  # stored before the heap ran out: send it as stored
                await self._publish(b)
                gc.collect()
                continue
            self._taken_at = time.ticks_ms()
            if b.historical:
                self._tokens -= b.count
            # A cap below the readings of one interval must not leave live data behind
            # (where it would turn historical): a full batch is followed at once.
            self._behind = not b.historical and b.count >= min(limit, self.batch_cap)
            seq, payload = b.seq, b.payload
            b = None
            await self._publish(seq, payload)
            payload = None
            gc.collect()

    def _take(self, limit, now_ms):
        """buffer.next_batch, smaller on a fragmented heap: on MemoryError collect and
        retry with half the readings, down to MIN_BATCH_READINGS; the cap then grows back,
        doubling after GROW_AFTER batches in a row taken whole. Returns the Batch, None, or
        the seq of a batch stored before the error struck (resend it from flash). Raises
        MemoryError only when even the smallest batch cannot be made (the run loop then
        reconnects, backing off)."""
        buf = self.buffer
        while True:
            n = min(limit, self.batch_cap)
            seq = buf.next_seq
            try:
                b = buf.next_batch(n, now_ms)
            except MemoryError:
                b = None
                gc.collect()
                if buf.next_seq != seq:
                    return seq
                self.memory_retries += 1
                if n <= MIN_BATCH_READINGS:
                    raise
                self.batch_cap = max(MIN_BATCH_READINGS, n // 2)
                self._full_takes = 0
                print("uplink: out of memory taking %d readings; trying %d" % (n, self.batch_cap))
                continue
            if b is not None and b.count >= n and self.batch_cap < self.max_batch_readings:
                self._full_takes += 1
                if self._full_takes >= GROW_AFTER:  # the heap may have room again
                    self._full_takes = 0
                    self.batch_cap = min(self.max_batch_readings, self.batch_cap * 2)
            return b

    def _refill(self):
        now = time.ticks_ms()
        rate = self.backlog_readings_per_s
        cap = max(rate, self.max_batch_readings)
        self._tokens = min(cap, self._tokens + time.ticks_diff(now, self._tokens_at) * rate / 1000)
        self._tokens_at = now

    # -- receiving ------------------------------------------------------------------

    def _on_message(self, topic, payload, retained):
        if topic == self._t_state:
            self._on_state(payload)
            return
        self.last_contact_ms = self.now_ms()
        if topic == self._t_ack:
            try:
                seq, error = decode_ack(bytes(payload))
            except ValueError as e:
                self.bad_messages += 1
                print("uplink: ignoring a malformed ack: %s" % e)
                return
            self.buffer.ack(seq, error)
            known = self._inflight.pop(seq, None) is not None
            if error is not None:
                self.refused_batches += 1
                print("uplink: the fleet refused batch %d for good: %s" % (seq, error))
            elif known:
                self.acked_batches += 1
            self._wake.set()
        elif topic == self._t_desired and self.on_config is not None:
            self.on_config(bytes(payload))

    def _on_state(self, payload):
        """A late will of an earlier session replaced our retained birth: say it again."""
        try:
            online, boot, session = decode_state(bytes(payload))
        except ValueError:
            self.bad_messages += 1
            return
        if not online and (boot, session) < (self.boot, self.session):
            self._rebirth = True
            self._wake.set()
