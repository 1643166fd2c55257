# Modbus server side on CPython and MicroPython: answering requests from a register map.
# Vectors: [APS] MODBUS Application Protocol Specification V1.1b3, section 6 examples.
from portable import raises

from protocols import modbus as m

H = bytes.fromhex


def _read(function, address, count):
    if address + count > 200:
        raise m.ModbusExceptionResponse(function, m.ILLEGAL_DATA_ADDRESS)
    if function <= 2:
        return [(address + i) % 3 == 0 for i in range(count)]
    return [address + i for i in range(count)]


def test_handle_request_answers_from_a_register_map():
    written = []

    def write(function, address, values):
        written.append((function, address, values))

    h = m.handle_request
    assert h(H("0300640003"), _read) == H("0306006400650066")
    assert h(H("0100000004"), _read) == H("010109")
    assert h(H("0300C80001"), _read) == H("8302")  # the callback's exception
    assert h(H("0300000000"), _read) == H("8303")  # count 0
    assert h(H("040000007E"), _read) == H("8403")  # count 126
    assert h(H("03FFFF0002"), _read) == H("8302")  # past 65535
    assert h(H("0500ACFF00"), _read) == H("8501")  # no write callback
    assert h(H("2B0E0100"), _read, write) == H("AB01")
    assert h(H("0500AC1234"), _read, write) == H("8503")
    assert h(H("100001000203000A01"), _read, write) == H("9003")  # byte count mismatch
    assert h(H("0500ACFF00"), _read, write) == H("0500ACFF00")
    assert h(H("0600010003"), _read, write) == H("0600010003")
    assert h(H("0F0013000A02CD01"), _read, write) == H("0F0013000A")
    assert h(H("100001000204000A0102"), _read, write) == H("1000010002")
    assert written == [
        (5, 0xAC, [True]),
        (6, 1, H("0003")),
        (15, 0x13, [c == "1" for c in "1011001110"]),
        (16, 1, H("000A0102")),
    ]


def test_answer_pdus_match_the_spec_examples():
    assert m.read_response_pdu(3, [555, 0, 100]) == H("0306022B00000064")  # [APS] 6.3
    assert m.read_response_pdu(4, H("000A")) == H("0402000A")  # 6.4
    coils = [c == "1" for c in "1011001111010110101"]
    assert m.read_response_pdu(1, coils) == H("0103CD6B05")  # 6.1
    assert m.exception_pdu(3, 2) == H("8302")
    raises(m.RequestError, m.read_response_pdu, 3, [0] * 126)
