"""Modbus TCP stream framing for either side: MBAP header in, (transaction id, unit, PDU) out.
Sans-I/O. Reached through protocols.modbus, which loads it on first use.

Source: [TCP] MODBUS Messaging on TCP/IP Implementation Guide V1.0b, 3.1.3.
"""

import struct

from protocols.modbus import MAX_PDU_LEN, FrameError, _hex


# feed(data) buffers; next_frame() returns the next (transaction_id, unit, pdu) or None, or
# raises the next error in order. The MBAP header must carry protocol id 0 and a length of
# 2..254 [TCP 3.1.3]. TCP has no delimiter to resynchronise on: after a header error the
# parser refuses further data (feed raises FrameError) until reset(); close the connection.
class TcpParser:
    """Frames a Modbus TCP byte stream in either direction."""

    def __init__(self):
        self.reset()

    def reset(self):
        self._buf = bytearray()
        self._out = []
        self._broken = False

    def feed(self, data):
        if self._broken:
            raise FrameError("Modbus TCP stream out of step after an earlier error: reconnect")
        buf = self._buf
        buf.extend(data)
        while len(buf) >= 7:
            tid, protocol, length, unit = struct.unpack_from(">HHHB", buf, 0)
            if protocol or not 2 <= length <= MAX_PDU_LEN + 1:
                self._broken = True
                self._out.append(
                    FrameError(
                        "bad Modbus TCP header %s (protocol id %d, length %d; want 0 and 2..254): "
                        "does the device speak RTU over TCP instead?"
                        % (_hex(buf[:7]), protocol, length)
                    )
                )
                self._buf = bytearray()
                return
            if len(buf) < 6 + length:
                return
            self._out.append((tid, unit, bytes(buf[7 : 6 + length])))
            buf[: 6 + length] = b""

    def next_frame(self):
        if not self._out:
            return None
        item = self._out.pop(0)
        if isinstance(item, Exception):
            raise item
        return item
