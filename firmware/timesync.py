"""Wall-clock time for the gateway: NTP (SNTP over UDP, non-blocking) sets the board's clock,
and readings taken before the first sync are held and corrected once the offset is known.
No readings are sent with an unsynced timestamp; no other module sets the clock."""

import asyncio
import socket
import struct

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


MIN_VALID_MS = const(1704067200000)  # 2024-01-01: a board clock below this was never set
_NTP_DELTA_S = const(2208988800)  # seconds from 1900-01-01 (NTP) to 1970-01-01
_HOLD_MAX = const(2000)  # readings held before the first sync (RAM); the oldest go first


class NtpError(OSError):
    """No usable answer from the NTP server; the message names it."""


async def ntp_ms(host, timeout_ms=2000, port=123):
    """UTC ms from an SNTP server, every wait bounded by timeout_ms; NtpError otherwise."""
    try:
        addr = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0][-1]
    except OSError as e:
        raise NtpError("NTP server %s: name not resolved (%s): check DNS" % (host, e))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setblocking(False)
        q = bytearray(48)
        q[0] = 0x1B  # LI 0, version 3, mode 3 (client)
        s.sendto(q, addr)
        waited = 0
        while True:
            try:
                data = s.recv(48)
                break
            except OSError:
                if waited >= timeout_ms:
                    raise NtpError("NTP server %s: no answer within %d ms" % (host, timeout_ms))
                await asyncio.sleep_ms(20)
                waited += 20
    finally:
        s.close()
    if len(data) < 48:
        raise NtpError("NTP server %s: short answer (%d bytes)" % (host, len(data)))
    secs, frac = struct.unpack("!II", data[40:48])
    if secs == 0:
        raise NtpError("NTP server %s: answered without a time (kiss-of-death?)" % host)
    return (secs - _NTP_DELTA_S) * 1000 + (frac * 1000 >> 32)


class TimeSync:
    """The gateway's clock. sink.append(readings) passes readings on, holding those stamped
    before the first sync (timestamp < MIN_VALID_MS) until the offset is known; they then go
    to the sink with ts_ms + offset. Readings are (channel, ts_ms, value)."""

    def __init__(self, board, sink, host="pool.ntp.org", interval_s=3600, query=None):
        self.board = board
        self.sink = sink
        self.host = host
        self.interval_s = interval_s
        self.query = query or ntp_ms
        self.offset_ms = None  # synced clock minus the board's unsynced clock
        self.held = []
        self.dropped = 0
        self.syncs = 0
        self.last_error = None
        if self.synced():
            self.offset_ms = 0

    def now_ms(self):
        return self.board.utc_ms()

    def synced(self):
        return self.offset_ms is not None or self.board.utc_ms() >= MIN_VALID_MS

    def append(self, readings):
        if self.offset_ms is not None:
            off = self.offset_ms
            if off:  # a reading stamped just before the sync
                readings = [(c, t + off if t < MIN_VALID_MS else t, v) for c, t, v in readings]
            return self.sink.append(readings)
        for r in readings:
            if len(self.held) >= _HOLD_MAX:
                self.held.pop(0)
                self.dropped += 1
            self.held.append(r)
        return None

    def set_time(self, utc_ms):
        """The true UTC now: set the board clock and release the held readings, corrected."""
        before = self.board.utc_ms()
        self.board.set_utc_ms(utc_ms)
        if self.offset_ms is None:
            self.offset_ms = utc_ms - before if before < MIN_VALID_MS else 0
        self.syncs += 1
        held, self.held = self.held, []
        if held:
            self.append(held)

    async def run(self):
        """Sync now and every interval_s (retrying every 30 s until the first success)."""
        while True:
            try:
                self.set_time(await self.query(self.host))
                self.last_error = None
                wait_s = self.interval_s
            except OSError as e:
                self.last_error = str(e)
                wait_s = 30 if self.syncs == 0 else self.interval_s
            await asyncio.sleep(wait_s)
