"""A small asyncio MQTT 3.1.1 client for MicroPython (CONNECT with will, keepalive, QoS 0/1
publish with PUBACK tracking, SUBSCRIBE, TLS). It owns one connection and never retries by
itself: the caller reconnects, waiting backoff_ms(failures) between attempts."""

import asyncio
import random
import struct
import time

try:
    from micropython import const
except ImportError:  # CPython (type checking, tools)

    def const(x):
        return x


_CONNECT = const(0x10)
_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBSCRIBE = const(0x82)
_SUBACK = const(0x90)
_PINGREQ = const(0xC0)
_PINGRESP = const(0xD0)
_DISCONNECT = const(0xE0)

_REFUSED = (
    None,
    "unacceptable protocol version",
    "client id rejected",
    "server unavailable",
    "bad user name or password: check the credentials in the gateway's settings",
    "not authorised: check the credentials and the broker's ACL for this gateway",
)


class MQTTError(OSError):
    """The connection failed or broke; the message says where and why. Reconnect."""


class ConnectRefused(MQTTError):
    """The broker answered CONNECT with a refusal (bad credentials, unknown client)."""


def backoff_ms(failures, min_ms=1000, max_ms=60000):
    """Wait before reconnect attempt number failures+1: doubling from min_ms up to max_ms,
    with jitter in the upper half so a fleet of gateways does not reconnect in lockstep."""
    cap = min_ms << min(failures, 16)
    if cap > max_ms:
        cap = max_ms
    half = cap // 2
    return half + random.getrandbits(20) % (half + 1)


def _str(s):
    return s.encode() if isinstance(s, str) else s


def _rlen(n):
    """The remaining-length field of a fixed header (1..4 bytes)."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return out


class MQTTClient:
    """One MQTT 3.1.1 session. on_message(topic: bytes, payload: memoryview, retained: bool)
    is called by the receiving task for every PUBLISH and must not keep payload (copy it);
    it runs before our PUBACK, so a crash in it means the broker redelivers.

    Every wait is bounded by timeout_s; a broken connection makes isconnected() False and
    sets the down event (wait_down())."""

    def __init__(
        self,
        client_id,
        host,
        port=1883,
        user=None,
        password=None,
        keepalive_s=30,
        ssl=None,
        timeout_s=10,
        on_message=None,
        max_in_bytes=16384,
    ):
        self.client_id = _str(client_id)
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.keepalive_s = keepalive_s
        self.ssl = ssl  # an ssl.SSLContext (or True for the port's defaults) to use TLS
        self.timeout_ms = int(timeout_s * 1000)
        self.on_message = on_message
        self.max_in_bytes = max_in_bytes
        self.will = None
        self.error = None  # why the last connection ended (text)
        self.dropped_messages = 0  # incoming messages larger than max_in_bytes
        self._r = None
        self._w = None
        self._tasks = []
        self._lock = asyncio.Lock()
        self._acked = asyncio.Event()
        self._down = asyncio.Event()
        self._down.set()
        self._pending = {}  # packet id -> None while waiting for PUBACK/SUBACK
        self._suback = {}  # packet id -> granted QoS
        self._pid = 0
        self._last_rx = 0
        self._last_tx = 0

    def set_will(self, topic, payload, retain=True, qos=1):
        """The last will for the next connect (the broker publishes it if we vanish)."""
        self.will = (_str(topic), _str(payload), retain, qos)

    def isconnected(self):
        return not self._down.is_set()

    async def wait_down(self):
        """Returns once the connection is lost (or closed)."""
        await self._down.wait()

    # -- connection -----------------------------------------------------------------

    async def connect(self, clean=True):
        """Open the socket, send CONNECT, wait for CONNACK; MQTTError (or ConnectRefused)."""
        self.close()
        where = "%s:%d" % (self.host, self.port)
        try:
            if self.ssl:
                self._r, self._w = await asyncio.wait_for_ms(
                    asyncio.open_connection(self.host, self.port, ssl=self.ssl), self.timeout_ms
                )
            else:
                self._r, self._w = await asyncio.wait_for_ms(
                    asyncio.open_connection(self.host, self.port), self.timeout_ms
                )
        except asyncio.TimeoutError:
            raise MQTTError("broker %s: no connection within %d ms" % (where, self.timeout_ms))
        except OSError as e:
            raise MQTTError(
                "broker %s: cannot connect (%s): check host, port, network" % (where, e)
            )
        flags = 0x02 if clean else 0
        size = 10 + 2 + len(self.client_id)
        will = self.will
        if will:
            flags |= 0x04 | (will[3] << 3) | (0x20 if will[2] else 0)
            size += 4 + len(will[0]) + len(will[1])
        user = _str(self.user) if self.user else None
        pw = _str(self.password) if self.password is not None and user else None
        if user:
            flags |= 0x80
            size += 2 + len(user)
        if pw is not None:
            flags |= 0x40
            size += 2 + len(pw)
        pkt = bytearray(b"\x10")
        pkt += _rlen(size)
        pkt += b"\x00\x04MQTT\x04"
        pkt += struct.pack("!BH", flags, self.keepalive_s)
        for field in (self.client_id,) + ((will[0], will[1]) if will else ()) + (user, pw):
            if field is not None:
                pkt += struct.pack("!H", len(field))
                pkt += field
        try:
            self._w.write(pkt)
            await asyncio.wait_for_ms(self._w.drain(), self.timeout_ms)
            head = await asyncio.wait_for_ms(self._r.readexactly(4), self.timeout_ms)  # type: bytes
        except asyncio.TimeoutError:
            self.close()
            raise MQTTError("broker %s: no CONNACK within %d ms" % (where, self.timeout_ms))
        except (OSError, EOFError) as e:
            self.close()
            raise MQTTError("broker %s: connection lost during CONNECT (%s)" % (where, e))
        except ValueError as e:  # mbedTLS reports a failed handshake as ValueError
            self.close()
            raise MQTTError(
                "broker %s: TLS handshake failed (%s): check ca_file and the broker's "
                "certificate (host name, expiry)" % (where, str(e).strip())
            )
        if head[0] != _CONNACK or head[1] != 2:
            self.close()
            raise MQTTError("broker %s: answered CONNECT with packet 0x%02x" % (where, head[0]))
        rc = head[3]
        if rc:
            self.close()
            why = _REFUSED[rc] if rc < len(_REFUSED) else "code %d" % rc
            raise ConnectRefused("broker %s refused the connection: %s" % (where, why))
        self.error = None
        self._pending = {}
        self._suback = {}
        self._last_rx = self._last_tx = time.ticks_ms()
        self._down.clear()
        self._tasks = [asyncio.create_task(self._receive()), asyncio.create_task(self._keepalive())]

    def close(self, reason=None):
        """Drop the connection at once (no DISCONNECT: the broker publishes the will)."""
        if reason and self.error is None:
            self.error = reason
        self._down.set()
        self._acked.set()  # wake publishers so they notice
        w = self._w
        self._r = self._w = None
        if w is not None:
            try:
                w.close()
            except OSError:
                pass
        me = asyncio.current_task()
        for t in self._tasks:
            if t is not me:
                t.cancel()
        self._tasks = []

    async def disconnect(self):
        """A clean goodbye: DISCONNECT (the broker drops the will), then close."""
        if self.isconnected():
            try:
                await self._send((b"\xe0\x00",))
            except MQTTError:
                pass
        self.close()

    # -- sending --------------------------------------------------------------------

    def _next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    async def _send(self, parts):
        """Write the parts of one packet as a unit, bounded by timeout_ms."""
        if not self.isconnected():
            raise MQTTError("not connected to the broker (%s)" % (self.error or "closed"))
        async with self._lock:
            w = self._w
            if w is None:
                raise MQTTError("not connected to the broker (%s)" % (self.error or "closed"))
            try:
                for p in parts:
                    w.write(p)
                await asyncio.wait_for_ms(w.drain(), self.timeout_ms)
            except asyncio.TimeoutError:
                self.close("the broker took no data for %d ms" % self.timeout_ms)
                raise MQTTError(self.error)
            except OSError as e:
                self.close("write failed: %s" % e)
                raise MQTTError(self.error)
            self._last_tx = time.ticks_ms()

    async def _wait_ack(self, pid, what):
        deadline = time.ticks_add(time.ticks_ms(), self.timeout_ms)
        while pid in self._pending:
            if not self.isconnected():
                raise MQTTError("connection lost waiting for %s (%s)" % (what, self.error))
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                self._pending.pop(pid, None)
                self.close("no %s within %d ms" % (what, self.timeout_ms))
                raise MQTTError(self.error)
            self._acked.clear()
            try:
                await asyncio.wait_for_ms(self._acked.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def publish(self, topic, payload, qos=1, retain=False):
        """Publish; with qos 1, returns once the broker's PUBACK came (MQTTError otherwise).
        payload may be bytes, bytearray or memoryview; it is written without copying."""
        topic = _str(topic)
        payload = _str(payload)
        n = len(payload)
        head = bytearray(1)
        head[0] = 0x30 | (qos << 1) | (1 if retain else 0)
        head += _rlen(2 + len(topic) + n + (2 if qos else 0))
        head += struct.pack("!H", len(topic))
        if qos:
            pid = self._next_pid()
            tail = struct.pack("!H", pid)
            self._pending[pid] = None
            await self._send((head, topic, tail, payload))
            await self._wait_ack(pid, "PUBACK")
        else:
            await self._send((head, topic, payload))

    async def subscribe(self, topic, qos=1):
        """Subscribe and wait for SUBACK; MQTTError if the broker refuses the topic."""
        topic = _str(topic)
        pid = self._next_pid()
        self._pending[pid] = None
        head = bytearray(b"\x82")
        head += _rlen(2 + 2 + len(topic) + 1)
        head += struct.pack("!HH", pid, len(topic))
        await self._send((head, topic, bytes((qos,))))
        await self._wait_ack(pid, "SUBACK")
        if self._suback.pop(pid, 0) == 0x80:
            raise MQTTError("broker refused the subscription to %s: check its ACL" % topic)

    # -- receiving ------------------------------------------------------------------

    async def _keepalive(self):
        ka_ms = self.keepalive_s * 1000
        try:
            while self.isconnected():
                await asyncio.sleep_ms(min(ka_ms // 4, 1000) or 1000)
                now = time.ticks_ms()
                if time.ticks_diff(now, self._last_rx) > ka_ms * 3 // 2:
                    self.close("no data from the broker for %d s (keepalive)" % self.keepalive_s)
                    return
                if time.ticks_diff(now, self._last_tx) >= ka_ms // 2:
                    await self._send((b"\xc0\x00",))
        except MQTTError:
            pass

    async def _receive(self):
        try:
            while True:
                await self._receive_one()
        except asyncio.CancelledError:
            raise
        except (OSError, EOFError) as e:
            self.close("connection lost: %s" % (e or type(e).__name__))
        except Exception as e:  # a protocol violation: do not carry on with a confused stream
            self.close("bad data from the broker: %r" % e)

    async def _read(self, n):
        data = await self._r.readexactly(n)
        self._last_rx = time.ticks_ms()
        return data

    async def _receive_one(self):
        kind = (await self._read(1))[0]
        size = 0
        shift = 0
        while True:
            b = (await self._read(1))[0]
            size |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            if shift > 21:
                raise ValueError("remaining length over 4 bytes")
        t = kind & 0xF0
        if t == _PUBLISH:
            await self._on_publish(kind, size)
            return
        data = await self._read(size) if size else b""
        if t == _PUBACK or t == _SUBACK:
            pid = (data[0] << 8) | data[1]
            if t == _SUBACK:
                self._suback[pid] = data[2]
            self._pending.pop(pid, None)
            self._acked.set()
        # PINGRESP and anything else only refresh _last_rx.

    async def _on_publish(self, kind, size):
        if size > self.max_in_bytes:
            self.dropped_messages += 1
            while size:  # skip it in small pieces
                n = min(size, 512)
                await self._read(n)
                size -= n
            return
        data = await self._read(size)
        mv = memoryview(data)
        tlen = (data[0] << 8) | data[1]
        topic = bytes(mv[2 : 2 + tlen])
        pos = 2 + tlen
        qos = (kind >> 1) & 3
        pid = 0
        if qos:
            pid = (data[pos] << 8) | data[pos + 1]
            pos += 2
        if self.on_message is not None:
            self.on_message(topic, mv[pos:], bool(kind & 1))
        if qos == 1:
            await self._send((struct.pack("!BBH", _PUBACK, 2, pid),))
