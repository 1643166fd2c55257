"""Async Modbus RTU master on one board UART (RS-485): t3.5 silence before each request, the
answer collected with protocols' RtuResponseParser, every wait bounded. No decoding here.

Same rules as edge/poller.RtuMaster (docs/edge.md, "RTU timing"): RTU answers carry no request
id, so after a request timed out the line must stay silent for the timeout (capped) before a
different request goes out, and again after an answered retry of it (that answer may have been
the late one to the first attempt, the retry's own still to come): a late answer is never taken
for the answer to the next request."""

import asyncio
import time

from protocols import modbus
from protocols.modbus import ModbusError, ModbusExceptionResponse

try:
    from micropython import const
except ImportError:  # CPython (type checks, docs)

    def const(x):
        return x


_POLL_MS = const(2)  # how often a waiting task looks at the UART
_GAP_MIN_US = const(20000)  # silence that ends an answer (USB adapters / PTYs deliver in bursts)
_QUIET_MARGIN_US = const(2000)
_QUIET_MAX_US = const(1000000)  # longest wait for a noisy line to fall silent
_RECOVERY_MAX_US = const(500000)
_RETRY_EXCEPTIONS = (4, 5, 6, 10, 11)  # busy / failed once: worth a retry; 1-3 are not


class NoAnswerError(ModbusError):
    """The device did not answer in time."""


class RtuMaster:
    """One request at a time on one UART. transact() returns the answer's register bytes
    (a fresh bytes object) or raises a protocols.modbus error / NoAnswerError."""

    def __init__(self, uart, recover_after_error=True):
        self.uart = uart
        self.recover_after_error = recover_after_error
        bits = uart.bits_per_char
        self.char_us = int(modbus.char_time_s(uart.baud, bits) * 1000000)
        self.t35_us = int(modbus.silence_s(uart.baud, bits) * 1000000)
        self.noise_bytes = 0
        self._rx = bytearray(64)
        # Load the parser's module now, while the heap is still in one piece.
        self._new_parser = modbus.RtuResponseParser
        self._parser = None
        self._last_us = time.ticks_us()
        self._recovery_us = 0  # extra silence owed after a failed request
        # The request (unit, pdu) that timed out and when: its answer may still come, late.
        self._unanswered = None
        self._unanswered_us = 0

    def _answered(self, unit, pdu):
        """A valid answer came. To a retry of the request that timed out it may be the late
        answer to the first attempt, the retry's own still to come: then the next different
        request still owes the silence, counted from now."""
        if self._unanswered is not None and self._unanswered == (unit, pdu):
            self._unanswered_us = time.ticks_us()
        else:
            self._recovery_us = 0

    async def _quiet(self):
        """Wait until the line was silent for t3.5 (or the recovery time), dropping noise."""
        silence = max(self.t35_us + _QUIET_MARGIN_US, self._recovery_us)
        self._recovery_us = 0
        start = time.ticks_us()
        uart = self.uart
        rx = self._rx
        while True:
            n = uart.readinto(rx)
            now = time.ticks_us()
            if n:
                self.noise_bytes += n
                self._last_us = now
            elif time.ticks_diff(now, self._last_us) >= silence:
                return
            if time.ticks_diff(now, start) >= _QUIET_MAX_US:
                return
            await asyncio.sleep_ms(_POLL_MS)

    async def transact(self, unit, pdu, timeout_ms):
        """Send pdu to unit and collect its answer; timeout_ms runs from the end of the
        request to the first byte, plus the answer's own wire time."""
        if self._unanswered is not None and self._unanswered != (unit, pdu):
            # A late answer to the request that timed out would pass for this other one's:
            # the owed silence counts from the timeout (or the retry's answer), not from
            # that request. A retry of that same request keeps counting from its first
            # attempt: either answer is one to it.
            if time.ticks_diff(self._unanswered_us, self._last_us) > 0:
                self._last_us = self._unanswered_us
            self._unanswered = None
        await self._quiet()
        if self._parser is None:
            self._parser = self._new_parser(unit, pdu, True)
        else:
            self._parser.start(unit, pdu, True)
        parser = self._parser
        frame = modbus.rtu_frame(unit, pdu)
        uart = self.uart
        uart.write(frame)
        start = time.ticks_us()
        # On a PTY write() returns at once; on a UART when the frame left. Count the wire
        # time either way (the slave cannot answer before it heard the frame).
        budget = (
            len(frame) * self.char_us
            + timeout_ms * 1000
            + modbus.rtu_response_len(pdu) * self.char_us
        )
        gap = max(self.t35_us, _GAP_MIN_US)
        got = 0
        last = start
        if self.recover_after_error:
            self._recovery_us = min(timeout_ms * 1000, _RECOVERY_MAX_US)
        rx = self._rx
        try:
            while True:
                n = uart.readinto(rx)
                now = time.ticks_us()
                if n:
                    got += n
                    last = now
                    try:
                        result = parser.feed(memoryview(rx)[:n])
                    except ModbusExceptionResponse:
                        self._answered(unit, pdu)  # a valid answer all the same
                        raise
                    if result is not None:
                        self._answered(unit, pdu)
                        return bytes(result)
                    continue
                over = time.ticks_diff(now, start) >= budget
                if got and (time.ticks_diff(now, last) >= gap or over):
                    result = parser.end_of_frame()  # raises for a truncated answer
                    if result is not None:
                        self._answered(unit, pdu)
                        return bytes(result)
                if over:
                    if self.recover_after_error:
                        self._unanswered = (unit, pdu)
                        self._unanswered_us = now
                    raise NoAnswerError(
                        "unit %d on %s did not answer within %d ms: check wiring, unit id, "
                        "baud rate and parity" % (unit, uart.description, timeout_ms)
                    )
                await asyncio.sleep_ms(_POLL_MS)
        finally:
            self._last_us = last if got else time.ticks_add(start, len(frame) * self.char_us)
            if parser.surplus_len:
                self.noise_bytes += parser.surplus_len

    async def read(self, unit, pdu, timeout_ms, retries, stats=None):
        """transact(), retried up to `retries` times after a timeout, a bad frame or a busy
        device; each failure is counted in stats (a MeterStats). The last error is raised."""
        attempt = 0
        while True:
            try:
                return await self.transact(unit, pdu, timeout_ms)
            except ModbusError as exc:
                if stats is not None:
                    stats.count(exc)
                retry = not isinstance(exc, ModbusExceptionResponse) or (
                    exc.code in _RETRY_EXCEPTIONS
                )
                if not retry or attempt >= retries:
                    raise
                attempt += 1
