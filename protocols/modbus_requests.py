"""Modbus server side (meter, simulator): frames the requests a master sends on an RTU bus,
among other devices' answers and line noise. Sans-I/O. Reached through protocols.modbus.

Sources as in protocols.modbus: [APS] Application Protocol V1.1b3, [SL] Serial Line V1.02.
"""

from protocols.modbus import (
    MAX_RTU_UNIT,
    RTU_EXCEPTION_LEN,
    RTU_MAX_FRAME_LEN,
    FrameError,
    _crc_error,
    _truncated,
    crc16,
    function_name,
    rtu_response_len,
)


def _request_len(buf, p, avail):
    # RTU length of a request at buf[p] from its function code [APS 6]: 0 = more bytes
    # needed, -1 = unknowable (a function not served here: framed by the silence)
    function = buf[p + 1]
    if 1 <= function <= 6:
        return 8
    if function in (15, 16):  # byte count at PDU offset 5
        return 9 + buf[p + 6] if avail > 6 else 0
    return -1


# feed(data) buffers; next_frame() returns the next (unit, pdu) or None, or raises the next
# error in order (all ModbusError). Requests to every unit come out, broadcast (unit 0)
# included: the caller decides which units it serves and never answers unit 0. Call
# end_of_frame() whenever the line was silent for t3.5 [SL 2.5.1.1].
# - Requests are framed by the length their function code implies, as soon as complete.
# - An unknown function code has no derivable length: its frame comes out at end_of_frame()
#   if its CRC is valid, so the caller can answer ILLEGAL FUNCTION (01).
# - A bus also carries the other devices' answers (and with some adapters the echo of our
#   own): right after a request to unit u, a CRC-valid frame that answers it is skipped and
#   counted in `responses_seen`. A 05/06 answer is an exact echo of its request, so the same
#   request sent again right after it is taken for that echo once (the master retries).
# - A bad CRC is reported once (CrcError); then the parser hunts byte by byte for the next
#   valid frame and resynchronises at end_of_frame(). A frame cut short by the silence is a
#   TruncatedFrameError; a valid frame to a reserved unit (248..255) a FrameError.
class RtuRequestParser:
    """Server side: frames the requests a master sends on an RTU bus."""

    def __init__(self):
        self._buf = bytearray()
        self._pos = 0
        self._hunting = False
        self._last = None  # PDU of the last request expecting an answer, and its unit
        self._last_unit = 0
        self._out = []
        self.responses_seen = 0

    def feed(self, data):
        if self._pos:
            self._buf[: self._pos] = b""
            self._pos = 0
        self._buf.extend(data)
        self._scan(False)

    def end_of_frame(self):
        if len(self._buf) > self._pos:
            self._scan(True)
        if self._buf:
            self._buf[:] = b""
        self._pos = 0
        self._hunting = False

    def next_frame(self):
        if not self._out:
            return None
        item = self._out.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def _scan(self, eof):
        buf = self._buf
        while True:
            p = self._pos
            avail = len(buf) - p
            if avail < 2:
                if eof and avail and not self._hunting:
                    self._fail(_truncated(avail, 4, buf[p]))
                return
            length, kind = self._match(buf, p, avail)
            if length > 0:
                self._pos = p + length
                self._hunting = False
                if kind:
                    self.responses_seen += 1
                    self._last = None
                else:
                    self._emit(buf[p], bytes(buf[p + 1 : p + length - 2]))
                continue
            if length < 0 or (self._hunting and (kind or avail >= RTU_MAX_FRAME_LEN)):
                # no valid frame starts at p: report once, then hunt byte by byte
                if not self._hunting:
                    self._hunting = True
                    self._fail(_crc_error(memoryview(buf)[p : p - length]))
                self._pos = p + 1
                continue
            if eof:
                self._pos = len(buf)
                if not self._hunting:
                    self._at_silence(buf, p, avail)
                return
            if avail >= RTU_MAX_FRAME_LEN:
                self._hunting = True
                self._pos = p + 1
                self._fail(
                    FrameError(
                        "%d bytes without a valid request: is a device with another baud rate "
                        "or protocol on the bus?" % avail
                    )
                )
                continue
            return

    def _match(self, buf, p, avail):
        # (length, kind) of a CRC-valid frame at p, kind 0 a request, 1 the answer to the last
        # request; (0, 0) if bytes are missing to decide; (0, 1) if the length is unknowable;
        # (-length, 0) if every reading is complete and none is valid.
        function = buf[p + 1]
        req_len = _request_len(buf, p, avail)
        if req_len == 0:
            return 0, 0
        ans_len = 0
        prefer_answer = False
        last = self._last
        if last is not None and buf[p] == self._last_unit:
            if function == last[0] | 0x80:
                ans_len = RTU_EXCEPTION_LEN
            elif function == last[0]:
                if function <= 4:
                    if avail < 3:
                        return 0, 0
                    ans_len = 5 + buf[p + 2]
                    prefer_answer = ans_len == rtu_response_len(last)
                elif function > 6:
                    ans_len = 8
                elif avail >= 6 and buf[p + 2 : p + 6] == last[1:5]:
                    ans_len = 8  # a 05/06 answer is an exact echo of the request
                    prefer_answer = True
        if not ans_len:
            if req_len < 0:
                return 0, 1
            order = ((req_len, 0),)
        elif req_len < 0:
            order = ((ans_len, 1),)
        elif ans_len == req_len:  # the same bytes: one CRC check, the kind decides
            order = ((req_len, 1 if prefer_answer else 0),)
        elif ans_len < req_len:
            order = ((ans_len, 1), (req_len, 0))
        else:
            order = ((req_len, 0), (ans_len, 1))
        view = memoryview(buf)
        for length, kind in order:
            if length > avail:
                return 0, 0
            if not crc16(view[p : p + length]):
                return length, kind
        return -(req_len if req_len > 0 else ans_len), 0

    def _emit(self, unit, pdu):
        self._last = None
        if unit > MAX_RTU_UNIT:
            self._out.append(FrameError("request to reserved unit %d (248..255) [SL 2.2]" % unit))
            return
        if unit:
            self._last = pdu
            self._last_unit = unit
        self._out.append((unit, pdu))

    def _at_silence(self, buf, p, avail):
        # the buffered rest is one whole frame [SL 2.5.1.1]
        frame = memoryview(buf)[p:]
        length = _request_len(buf, p, avail)
        if avail >= 4 and not crc16(frame):
            last = self._last
            if length < 0:
                self._emit(buf[p], bytes(frame[1:-2]))
            elif length == 0:
                self._fail(
                    FrameError(
                        "%d-byte request for %s is too short" % (avail, function_name(buf[p + 1]))
                    )
                )
            elif last is not None and buf[p] == self._last_unit and buf[p + 1] & 0x7F == last[0]:
                self.responses_seen += 1  # an odd answer to the last request: the master judges
                self._last = None
            else:
                self._fail(
                    FrameError(
                        "request of %d bytes for %s has a valid CRC but should have %d"
                        % (avail, function_name(buf[p + 1]), length)
                    )
                )
        elif length > avail or length == 0:
            self._fail(_truncated(avail, max(length, avail + 1), buf[p]))
        else:
            self._fail(_crc_error(frame))

    def _fail(self, error):
        self._last = None
        self._out.append(error)
