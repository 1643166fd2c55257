# Modbus master side on CPython and MicroPython: request PDUs and response parsing.
# Vectors: [APS] MODBUS Application Protocol Specification V1.1b3, section 6 examples.
from portable import raises

from protocols import modbus as m

H = bytes.fromhex
READ = H("03006B0003")  # [APS] 6.3: read holding registers 108-110
ANSWER = H("0306022B00000064")  # ... = 555, 0, 100


def test_request_pdus_match_the_spec_examples():
    assert m.read_request_pdu(1, 0x13, 0x13) == H("0100130013")  # [APS] 6.1
    assert m.read_request_pdu(2, 0xC4, 0x16) == H("0200C40016")  # 6.2
    assert m.read_request_pdu(3, 0x6B, 3) == READ  # 6.3
    assert m.read_request_pdu(4, 8, 1) == H("0400080001")  # 6.4
    assert m.write_single_coil_pdu(0xAC, True) == H("0500ACFF00")  # 6.5
    assert m.write_single_coil_pdu(0xAC, False) == H("0500AC0000")
    assert m.write_single_register_pdu(1, 3) == H("0600010003")  # 6.6
    bits = [1, 0, 1, 1, 0, 0, 1, 1, 1, 0]
    assert m.write_multiple_coils_pdu(0x13, bits) == H("0F0013000A02CD01")  # 6.11
    assert m.write_multiple_registers_pdu(1, [10, 0x102]) == H("100001000204000A0102")  # 6.12
    assert m.write_multiple_registers_pdu(1, H("000A0102")) == H("100001000204000A0102")


def test_builders_refuse_what_the_spec_forbids():
    bad = (
        (m.read_request_pdu, 3, 0, 0),
        (m.read_request_pdu, 3, 0, 126),
        (m.read_request_pdu, 1, 0, 2001),
        (m.read_request_pdu, 3, 65535, 2),
        (m.read_request_pdu, 3, 65536, 1),
        (m.read_request_pdu, 7, 0, 1),
        (m.write_single_register_pdu, 0, 65536),
        (m.write_single_register_pdu, 0, -1),
        (m.write_multiple_registers_pdu, 0, bytes(248)),
        (m.write_multiple_registers_pdu, 0, b"\x00"),
        (m.write_multiple_coils_pdu, 0, bytes(1969)),
    )
    for case in bad:
        assert isinstance(raises(m.RequestError, case[0], *case[1:]), ValueError)
    assert len(m.read_request_pdu(3, 65535, 1)) == 5
    assert len(m.read_request_pdu(4, 0, 125)) == 5
    assert len(m.write_multiple_coils_pdu(0, bytes(1968))) == 6 + 246


def test_responses_parse_for_every_function():  # [APS] 6.1-6.12 answer examples
    p = m.parse_response_pdu
    coils = p(H("0100130013"), H("0103CD6B05"))
    assert coils == [c == "1" for c in "1011001111010110101"]
    assert p(H("0200C40016"), H("0203ACDB35"))[:3] == [False, False, True]
    assert p(READ, ANSWER) == [555, 0, 100]
    assert p(READ, ANSWER, raw=True) == H("022B00000064")
    assert p(H("0400080001"), H("0402000A")) == [10]
    assert p(H("0500ACFF00"), H("0500ACFF00")) == (0xAC, True)
    assert p(H("0600010003"), H("0600010003")) == (1, 3)
    assert p(H("0F0013000A02CD01"), H("0F0013000A")) == (0x13, 10)
    assert p(H("100001000204000A0102"), H("1000010002")) == (1, 2)


def test_answers_that_do_not_fit_the_request_are_rejected():
    p = m.parse_response_pdu
    e = raises(m.ModbusExceptionResponse, p, READ, H("8302"))
    assert (e.function, e.code, e.name) == (3, 2, "ILLEGAL DATA ADDRESS")
    e = raises(m.WrongFunctionError, p, READ, H("0406022B00000064"))
    assert (e.expected, e.received) == (3, 4)
    e = raises(m.UnexpectedLengthError, p, READ, H("0304022B0000"))
    assert (e.expected, e.received) == (6, 4)
    raises(m.FrameError, p, READ, H("0306022B0000"))  # byte count says 6, carries 4
    raises(m.FrameError, p, H("0600010003"), H("0600010004"))  # echo differs
    raises(m.FrameError, p, READ, H("8302FF"))
    raises(m.FrameError, p, READ, b"")
    raises(m.RequestError, p, H("2B0E0100"), H("2B"))
