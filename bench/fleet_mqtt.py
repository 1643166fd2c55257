"""A minimal asyncio MQTT 3.1.1 client for the fleet benchmark: CONNECT/CONNACK (with will and
login), SUBSCRIBE/SUBACK, PUBLISH at QoS 0/1 with PUBACK both ways, PINGREQ and DISCONNECT.
Enough to simulate 10,000 gateways from one process (one asyncio.Protocol per connection, no
thread, no task per client); not a general client: no QoS 2, no reconnect, no session resume."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

CONNECT, CONNACK, PUBLISH, PUBACK = 0x10, 0x20, 0x30, 0x40
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 0x82, 0x90, 0xC0, 0xD0, 0xE0

CONNACK_CODES = {
    1: "unacceptable protocol version",
    2: "client id rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


class MqttError(RuntimeError):
    """The broker refused or dropped a connection; the message says which and why."""


class Will(NamedTuple):
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def _length(n: int) -> bytes:
    """MQTT's remaining-length varint."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _str(b: bytes) -> bytes:
    return len(b).to_bytes(2, "big") + b


def connect_packet(
    client_id: str,
    username: str | None,
    password: str | None,
    keepalive_s: int,
    will: Will | None = None,
    clean_session: bool = True,
) -> bytes:
    flags = 0x02 if clean_session else 0
    payload = _str(client_id.encode())
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += _str(will.topic.encode()) + _str(will.payload)
    if username is not None:
        flags |= 0x80
        payload += _str(username.encode())
    if password is not None:
        flags |= 0x40
        payload += _str(password.encode())
    body = b"\x00\x04MQTT\x04" + bytes([flags]) + keepalive_s.to_bytes(2, "big") + payload
    return bytes([CONNECT]) + _length(len(body)) + body


def publish_packet(topic: bytes, payload: bytes, qos: int, retain: bool, pid: int) -> bytes:
    head = _str(topic) + (pid.to_bytes(2, "big") if qos else b"")
    first = PUBLISH | (qos << 1) | (1 if retain else 0)
    return bytes([first]) + _length(len(head) + len(payload)) + head + payload


class MiniClient(asyncio.Protocol):
    """One MQTT connection. Override (or assign) on_message(topic, payload, retain) and
    on_puback(pid); incoming QoS 1 messages are acknowledged before on_message runs."""

    def __init__(
        self,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        *,
        keepalive_s: int = 60,
        will: Will | None = None,
        on_message: Callable[[str, bytes, bool], None] | None = None,
        on_puback: Callable[[int], None] | None = None,
    ) -> None:
        self.client_id = client_id
        self.username = username
        self.password = password
        self.keepalive_s = keepalive_s
        self.will = will
        if on_message is not None:
            self.on_message = on_message  # type: ignore[method-assign]
        if on_puback is not None:
            self.on_puback = on_puback  # type: ignore[method-assign]
        self.transport: asyncio.Transport | None = None
        self.last_write = 0.0
        self._buf = bytearray()
        self._pid = 0
        self._connack: asyncio.Future[int] | None = None
        self._subacks: dict[int, asyncio.Future[bytes]] = {}
        self.closed: asyncio.Future[None] | None = None
        self.received = 0

    # -- hooks --------------------------------------------------------------------------

    def on_message(self, topic: str, payload: bytes, retain: bool) -> None:
        pass

    def on_puback(self, pid: int) -> None:
        pass

    # -- API ----------------------------------------------------------------------------

    async def connect(self, host: str, port: int, timeout_s: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        self.closed = loop.create_future()
        self._connack = loop.create_future()
        async with asyncio.timeout(timeout_s):
            await loop.create_connection(lambda: self, host, port)
            self._write(
                connect_packet(
                    self.client_id, self.username, self.password, self.keepalive_s, self.will
                )
            )
            code = await self._connack
        if code != 0:
            self.close()
            why = CONNACK_CODES.get(code, f"code {code}")
            raise MqttError(f"{self.client_id}: the broker refused the connection: {why}")

    async def subscribe(self, filters: Iterable[str], qos: int = 1, timeout_s: float = 30) -> None:
        pid = self._next_pid()
        body = pid.to_bytes(2, "big") + b"".join(_str(f.encode()) + bytes([qos]) for f in filters)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._subacks[pid] = fut
        self._write(bytes([SUBSCRIBE]) + _length(len(body)) + body)
        async with asyncio.timeout(timeout_s):
            codes = await fut
        if any(c == 0x80 for c in codes):
            raise MqttError(f"{self.client_id}: subscription refused ({list(codes)})")

    def publish(
        self, topic: str | bytes, payload: bytes, qos: int = 1, retain: bool = False
    ) -> int:
        """Send a PUBLISH; returns its packet id (0 at QoS 0); on_puback(pid) follows."""
        pid = self._next_pid() if qos else 0
        t = topic.encode() if isinstance(topic, str) else topic
        self._write(publish_packet(t, payload, qos, retain, pid))
        return pid

    def ping(self) -> None:
        self._write(bytes([PINGREQ, 0]))

    def disconnect(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(bytes([DISCONNECT, 0]))
            self.transport.close()

    def close(self) -> None:
        """Drop the connection without DISCONNECT (the broker publishes the will)."""
        if self.transport is not None:
            self.transport.abort()

    @property
    def connected(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        err = MqttError(f"{self.client_id}: connection lost ({exc or 'closed by the broker'})")
        for fut in [self._connack, *self._subacks.values()]:
            if fut is not None and not fut.done():
                fut.set_exception(err)
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos, end = 0, len(buf)
        while end - pos >= 2:
            n = shift = 0
            i = pos + 1
            complete = False
            while i < end:
                b = buf[i]
                n |= (b & 0x7F) << shift
                shift += 7
                i += 1
                if b < 0x80:
                    complete = True
                    break
            if not complete or i + n > end:
                break  # the rest of the packet has not arrived yet
            self._packet(buf[pos], bytes(buf[i : i + n]))
            pos = i + n
        if pos:
            del buf[:pos]

    # -- internals ------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise MqttError(f"{self.client_id}: not connected")
        self.transport.write(data)
        self.last_write = time.monotonic()

    def _next_pid(self) -> int:
        self._pid = self._pid % 65535 + 1
        return self._pid

    def _packet(self, first: int, body: bytes) -> None:
        kind = first & 0xF0
        if kind == PUBLISH:
            qos = (first >> 1) & 3
            tl = int.from_bytes(body[:2], "big")
            topic = body[2 : 2 + tl].decode()
            pos = 2 + tl
            if qos:
                if self.transport is not None and not self.transport.is_closing():
                    self.transport.write(bytes([PUBACK, 2]) + body[pos : pos + 2])
                pos += 2
            self.received += 1
            self.on_message(topic, body[pos:], bool(first & 1))
        elif kind == PUBACK:
            self.on_puback(int.from_bytes(body[:2], "big"))
        elif kind == CONNACK:
            if self._connack is not None and not self._connack.done():
                self._connack.set_result(body[1])
        elif kind == SUBACK:
            fut = self._subacks.pop(int.from_bytes(body[:2], "big"), None)
            if fut is not None and not fut.done():
                fut.set_result(body[2:])
        # PINGRESP: nothing to do


async def keep_alive(clients: Iterable[MiniClient], interval_s: float = 5.0) -> None:
    """Until cancelled: PINGREQ on every connection idle for half its keep-alive (one task for
    all connections instead of one per client)."""
    while True:
        await asyncio.sleep(interval_s)
        now = time.monotonic()
        for c in clients:
            if c.connected and now - c.last_write > c.keepalive_s / 2:
                c.ping()
