"""The frame envelope our LoRa sensors use in P2P mode: who sent a payload, in which format, with
which frame counter; and a filter that spots repeated and lost frames. Sans-I/O, no radio here.

Layout (docs/lora.md): [version << 4 | format code][address x4][counter x2][payload][CRC-16 x2].
"""

from collections import OrderedDict, namedtuple

from protocols.lora import FORMATS, LoraEncodeError, LoraPayloadError

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


# A parsed frame. address_hex: 8 upper-case hex digits; format_name: one of lora.FORMATS.
P2PFrame = namedtuple("P2PFrame", "address_hex counter format_name payload")

# What DuplicateFilter.check learnt about one frame.
FrameStatus = namedtuple("FrameStatus", "duplicate lost restarted")

VERSION = const(1)
HEADER_BYTES = const(7)  # version/format, 4-byte address, 2-byte counter
MAX_FRAME_BYTES = const(250)  # AT+PSEND takes at most 500 hex digits (RAK3172 quick start)
MAX_PAYLOAD_BYTES = const(241)  # 250 - 7 header - 2 CRC


def crc16_ccitt(data, crc=0xFFFF):
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, not reflected, no final xor."""
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def build_p2p_frame(address_hex, counter, format_name, payload):
    """One P2P radio frame: [version<<4 | format][address x4][counter x2][payload][CRC x2]."""
    if format_name not in FORMATS:
        raise LoraEncodeError(
            "unknown format %r; known formats: %s" % (format_name, ", ".join(FORMATS))
        )
    ok = isinstance(address_hex, str) and len(address_hex) == 8
    for c in address_hex if ok else "":
        ok = ok and c in "0123456789abcdefABCDEF"
    if not ok:
        raise LoraEncodeError(
            "sensor address %r must be 8 hex digits, e.g. 'A1B2C3D4'" % (address_hex,)
        )
    if not 0 <= counter <= 0xFFFF:
        raise LoraEncodeError("frame counter %r must be 0..65535" % (counter,))
    if not 1 <= len(payload) <= MAX_PAYLOAD_BYTES:
        raise LoraEncodeError(
            "payload of %d bytes: a P2P frame carries 1..%d" % (len(payload), MAX_PAYLOAD_BYTES)
        )
    frame = bytes(((VERSION << 4) | FORMATS.index(format_name),))
    frame += int(address_hex, 16).to_bytes(4, "big") + counter.to_bytes(2, "big") + bytes(payload)
    return frame + crc16_ccitt(frame).to_bytes(2, "big")


def parse_p2p_frame(data):
    """P2PFrame(address_hex, counter, format_name, payload) of one received radio frame.

    Raises LoraPayloadError (format "p2p") if the frame is too short or too long, fails its CRC or
    carries an unknown version or format."""
    n = len(data)
    if n < HEADER_BYTES + 3:
        raise LoraPayloadError(
            "p2p", 0, "frame of %d bytes is too short: header, payload and CRC need 10" % n
        )
    if n > MAX_FRAME_BYTES:
        raise LoraPayloadError("p2p", MAX_FRAME_BYTES, "frame of %d bytes is longer than 250" % n)
    sent = (data[n - 2] << 8) | data[n - 1]
    computed = crc16_ccitt(data[: n - 2])
    if sent != computed:
        raise LoraPayloadError(
            "p2p",
            n - 2,
            "CRC mismatch (frame 0x%04X, computed 0x%04X): corrupted, or not from one of our sensors"
            % (sent, computed),
        )
    if data[0] >> 4 != VERSION:
        raise LoraPayloadError(
            "p2p",
            0,
            "frame version %d not supported (this gateway reads version 1)" % (data[0] >> 4),
        )
    code = data[0] & 0x0F
    if code >= len(FORMATS):
        raise LoraPayloadError("p2p", 0, "unknown payload format code %d" % code)
    address_hex = "%08X" % int.from_bytes(bytes(data[1:5]), "big")
    return P2PFrame(
        address_hex, (data[5] << 8) | data[6], FORMATS[code], bytes(data[HEADER_BYTES : n - 2])
    )


class DuplicateFilter:
    """Spots repeated and lost P2P frames from (address, counter) in bounded memory.

    Remembers the last counter of up to max_devices sensors; the least recently heard one is
    forgotten first (its next frame then counts as new, with nothing lost)."""

    def __init__(self, max_devices=64):
        if max_devices < 1:
            raise ValueError("max_devices must be at least 1")
        self._max = max_devices
        self._last = OrderedDict()

    def check(self, address_hex, counter):
        """FrameStatus(duplicate, lost, restarted) of one frame; remembers it.

        lost: frames missing since the last one heard (counter gap). restarted: the counter went
        backwards, so the sensor restarted (or an old frame was replayed); nothing counts as lost."""
        last = self._last.pop(address_hex, None)
        status = FrameStatus(False, 0, False)
        if last is not None:
            diff = (counter - last) & 0xFFFF
            if diff == 0:
                status = FrameStatus(True, 0, False)
            elif diff < 0x8000:
                status = FrameStatus(False, diff - 1, False)
            else:
                status = FrameStatus(False, 0, True)
        self._last[address_hex] = counter
        while len(self._last) > self._max:
            del self._last[next(iter(self._last))]
        return status

    def __len__(self):
        return len(self._last)
