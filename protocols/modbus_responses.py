"""Modbus for the bus master: collects the RTU answer to one request from chunks of any size
and checks it. Sans-I/O. Reached through protocols.modbus, which loads it on first use.

Sources as in protocols.modbus: [APS] Application Protocol V1.1b3, [SL] Serial Line V1.02.
"""

from protocols.modbus import (
    RTU_EXCEPTION_LEN,
    RTU_MAX_FRAME_LEN,
    FrameError,
    ModbusExceptionResponse,
    RequestError,
    WrongUnitError,
    _crc_error,
    _error,
    _request_shape,
    _truncated,
    check_rtu_unit,
    crc16,
)
from protocols.modbus_client import _parse


# The RTU answer to one request, fed in chunks of any size.
#
# feed(data) returns None until the frame is complete, then what parse_response_pdu returns,
# or raises ModbusExceptionResponse, CrcError, WrongUnitError, WrongFunctionError,
# UnexpectedLengthError or FrameError. The frame's length comes from its own header; its CRC
# is checked before anything else, so garbage is a CrcError, never a wrong unit. Call
# end_of_frame() when the I/O layer saw the silence t3.5: it raises TruncatedFrameError for a
# started, incomplete frame, completes a frame with an unknown function code, and does
# nothing when no byte came (a missing answer is the I/O layer's timeout).
#
# After the result or an error, further bytes are not parsed but kept in `surplus` (the
# first 256; surplus_len counts all). The result stays valid (its CRC was good); a later
# end_of_frame() raises FrameError if surplus came before the silence, so a master that waits
# for the silence before its next request can report a noisy bus.
# start(unit, request_pdu, raw) re-arms the parser for the next request without allocating.
class RtuResponseParser:
    """Gateway side: collects and checks the RTU answer to one request."""

    def __init__(self, unit, request_pdu, raw=False):
        self._buf = bytearray(RTU_MAX_FRAME_LEN)
        self.surplus = b""
        self.start(unit, request_pdu, raw)

    def start(self, unit, request_pdu, raw=False):
        _request_shape(request_pdu)
        check_rtu_unit(unit, request_pdu)
        if unit == 0:
            raise RequestError("unit 0 is broadcast: nobody answers, there is nothing to parse")
        self.unit = unit
        self.request_pdu = request_pdu
        self.raw = raw
        self.surplus = b""
        self.surplus_len = 0
        self._n = 0
        self._need = 0  # frame length once known; -1: unknown function code
        self._state = 0  # 0 collecting, 1 answered, 2 failed

    def feed(self, data):
        if self._state:
            self._keep_surplus(data)
            return None
        buf = self._buf
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            n = self._n
            need = self._need
            if need > 0:
                take = min(need, RTU_MAX_FRAME_LEN) - n
            elif need < 0:
                take = RTU_MAX_FRAME_LEN - n
            else:
                take = 2 - n if n < 2 else 1
            take = min(take, len(view) - pos)
            buf[n : n + take] = view[pos : pos + take]
            n += take
            pos += take
            self._n = n
            if need == 0 and n >= 2:
                need = buf[1]
                if need & 0x80:
                    need = RTU_EXCEPTION_LEN
                elif 1 <= need <= 4:
                    need = 5 + buf[2] if n > 2 else 0
                else:
                    need = 8 if need in (5, 6, 15, 16) else -1
                self._need = need
            if n == need or n == RTU_MAX_FRAME_LEN:
                self._keep_surplus(view[pos:])
                return self._complete(n)
        return None

    def end_of_frame(self):
        n = self._n
        if self._state or not n:
            if self._state == 1 and self.surplus_len:
                raise FrameError(
                    "%d bytes followed the answer of unit %d before the silence: another device "
                    "is talking or the line is noisy" % (self.surplus_len, self.unit)
                )
            return None
        if self._need < 0 and n >= 4:
            return self._complete(n)
        self._state = 2
        if n >= 4 and crc16(memoryview(self._buf)[:n]) == 0:
            raise FrameError(
                "unit %d sent %d bytes with a valid CRC but announced %d"
                % (self.unit, n, self._need)
            )
        raise _truncated(n, max(self._need, n + 1), self.unit)

    def _keep_surplus(self, data):
        if data:
            self.surplus_len += len(data)
            if len(self.surplus) < RTU_MAX_FRAME_LEN:
                self.surplus += bytes(data[: RTU_MAX_FRAME_LEN - len(self.surplus)])

    def _complete(self, n):
        self._state = 2
        frame = memoryview(self._buf)[:n]
        if crc16(frame):
            raise _crc_error(frame)
        if frame[0] != self.unit:
            raise _error(
                WrongUnitError,
                self.unit,
                frame[0],
                "unit %d answered although unit %d was asked: a second master on the bus, or a "
                "device answering for the wrong unit id" % (frame[0], self.unit),
            )
        try:
            result = _parse(self.request_pdu, frame, 1, n - 2, self.raw, self.unit)
        except ModbusExceptionResponse:
            self._state = 1  # a valid answer all the same
            raise
        self._state = 1
        return result
