# Modbus server side on CPython and MicroPython: framing the requests on an RTU bus (other
# devices' answers, noise, silences) and answering them from a register map.
# Vectors: [APS] MODBUS Application Protocol Specification V1.1b3, section 6 examples.

from protocols import modbus as m

H = bytes.fromhex
REQUESTS = (
    (1, H("0100130013")),  # [APS] 6.1-6.12 requests, each to its own unit
    (2, H("0200C40016")),
    (3, H("03006B0003")),
    (4, H("0400080001")),
    (5, H("0500ACFF00")),
    (6, H("0600010003")),
    (7, H("0F0013000A02CD01")),
    (8, H("100001000204000A0102")),
    (0, H("0600010003")),  # broadcast
)


def _frames(parser):
    out = []
    while True:
        try:
            item = parser.next_frame()
        except m.ModbusError as e:
            item = type(e).__name__
        if item is None:
            return out
        out.append(item)


def test_requests_of_every_function_fed_byte_by_byte():
    wire = b"".join(m.rtu_frame(u, pdu) for u, pdu in REQUESTS)
    parser = m.RtuRequestParser()
    for b in wire:
        parser.feed(bytes((b,)))
    assert _frames(parser) == list(REQUESTS)  # framed by length, no silence needed


def test_answers_of_other_devices_are_skipped():
    parser = m.RtuRequestParser()
    parser.feed(m.rtu_frame(9, H("03006B0003")))
    parser.end_of_frame()
    parser.feed(m.rtu_frame(9, H("0306022B00000064")))  # unit 9 answers
    parser.end_of_frame()
    parser.feed(m.rtu_frame(9, H("0500ACFF00")) + m.rtu_frame(9, H("8501")))  # exception answer
    parser.feed(m.rtu_frame(9, H("0600010003")) * 3)  # request, its echo, the same again
    assert (
        _frames(parser) == [(9, H("03006B0003")), (9, H("0500ACFF00"))] + [(9, H("0600010003"))] * 2
    )
    assert parser.responses_seen == 3


def test_unknown_function_comes_out_at_the_silence():
    parser = m.RtuRequestParser()
    parser.feed(m.rtu_frame(1, H("41DEAD")))
    assert _frames(parser) == []
    parser.end_of_frame()
    assert _frames(parser) == [(1, H("41DEAD"))]
    parser.feed(m.rtu_frame(1, H("11")))  # report server ID: not served here either
    parser.end_of_frame()
    assert _frames(parser) == [(1, H("11"))]


def test_noise_is_reported_once_then_the_parser_resynchronises():
    good = m.rtu_frame(3, H("03006B0003"))
    parser = m.RtuRequestParser()
    parser.feed(b"\x00" + good)  # a glitch byte as the driver turns on
    assert _frames(parser) == ["CrcError", (3, H("03006B0003"))]
    parser.feed(good[:5] + b"\xee\xee\xee\xee\xee")
    parser.end_of_frame()
    parser.feed(good)
    assert _frames(parser) == ["CrcError", (3, H("03006B0003"))]
    parser.feed(good[:5])
    parser.end_of_frame()
    assert _frames(parser) == ["TruncatedFrameError"]
    frame = b"\xfa" + H("03006B0003")  # unit 250 is reserved [SL 2.2]: built by hand
    crc = m.crc16(frame)
    parser.feed(frame + bytes((crc & 0xFF, crc >> 8)))
    assert _frames(parser) == ["FrameError"]
