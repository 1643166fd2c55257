# The gateway's RTU response parser on CPython and MicroPython: chunks of any size, errors
# checked CRC first, silences and surplus bytes. Vectors: [APS] MODBUS Application Protocol
# Specification V1.1b3, 6.3 example (read holding registers 108-110).
from portable import raises

from protocols import modbus as m

H = bytes.fromhex
READ = H("03006B0003")
ANSWER = H("0306022B00000064")  # 555, 0, 100


def test_rtu_response_fed_byte_by_byte():
    frame = m.rtu_frame(17, ANSWER)
    parser = m.RtuResponseParser(17, READ)
    for b in frame[:-1]:
        assert parser.feed(bytes((b,))) is None
    assert parser.feed(frame[-1:]) == [555, 0, 100]
    assert parser.end_of_frame() is None
    parser.start(17, READ, raw=True)
    assert parser.feed(frame) == H("022B00000064")
    raises(m.RequestError, m.RtuResponseParser, 0, H("0600010003"))
    raises(m.RequestError, m.RtuResponseParser, 255, READ)


def test_rtu_response_errors_check_the_crc_first():
    good = m.rtu_frame(17, ANSWER)
    e = raises(m.CrcError, m.RtuResponseParser(17, READ).feed, good[:4] + b"\xff" + good[5:])
    assert e.received == good[-2] | good[-1] << 8 and e.expected != e.received
    # a corrupted unit byte is line noise, not another device
    raises(m.CrcError, m.RtuResponseParser(17, READ).feed, b"\x12" + good[1:])
    e = raises(m.WrongUnitError, m.RtuResponseParser(17, READ).feed, m.rtu_frame(18, ANSWER))
    assert (e.expected, e.received) == (17, 18)
    raises(m.WrongFunctionError, m.RtuResponseParser(17, READ).feed, m.rtu_frame(17, H("0402000A")))
    raises(
        m.UnexpectedLengthError, m.RtuResponseParser(17, READ).feed, m.rtu_frame(17, H("0302000A"))
    )
    e = raises(
        m.ModbusExceptionResponse, m.RtuResponseParser(17, READ).feed, m.rtu_frame(17, H("8302"))
    )
    assert e.unit == 17 and "unit 17" in str(e)
    parser = m.RtuResponseParser(17, READ)  # an unknown function code ends with the silence
    assert parser.feed(m.rtu_frame(17, H("2B0E01"))) is None
    raises(m.WrongFunctionError, parser.end_of_frame)


def test_rtu_response_silence_and_surplus():
    good = m.rtu_frame(17, ANSWER)
    parser = m.RtuResponseParser(17, READ)
    assert parser.end_of_frame() is None  # nothing came: that is the I/O layer's timeout
    assert parser.feed(good[:6]) is None
    e = raises(m.TruncatedFrameError, parser.end_of_frame)
    assert (e.received, e.expected) == (6, 11)
    parser.start(17, READ)
    assert parser.feed(good + b"\x00\x01") == [555, 0, 100]
    assert parser.feed(b"\x02") is None
    assert parser.surplus == b"\x00\x01\x02" and parser.surplus_len == 3
    raises(m.FrameError, parser.end_of_frame)


def test_largest_answers_fill_the_256_byte_frame():
    regs = list(range(125))
    req = m.read_request_pdu(4, 0, 125)
    frame = m.rtu_frame(1, bytes((4, 250)) + m.register_bytes(regs))
    assert len(frame) == 255 == m.rtu_response_len(req)
    assert m.RtuResponseParser(1, req).feed(frame) == regs
    req = m.read_request_pdu(1, 0, 2000)
    frame = m.rtu_frame(1, bytes((1, 250)) + bytes(range(250)))
    assert m.RtuResponseParser(1, req, raw=True).feed(frame) == bytes(range(250))
