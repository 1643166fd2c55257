# Modbus core on CPython and MicroPython: CRC, framing, broadcast rules, wire timing, errors.
# Vectors: [APS] MODBUS Application Protocol Specification V1.1b3 section 6 examples, [SL] MODBUS
# over Serial Line V1.02, the CRC-16/MODBUS check value of the CRC RevEng catalogue.
from portable import approx, raises

from protocols import modbus as m

H = bytes.fromhex
READ = H("03006B0003")  # [APS] 6.3: read holding registers 108-110
WRITE = H("0600010003")  # [APS] 6.6: write register 2 = 3


def test_crc_matches_published_vectors():
    assert m.crc16(b"123456789") == 0x4B37  # CRC RevEng catalogue, CRC-16/MODBUS check
    assert m.crc16(H("0207")) == 0x1241  # [SL] appendix B: sent as 41 12
    assert m.rtu_frame(1, H("030000000A")) == H("01030000000AC5CD")
    assert m.crc16(H("01030000000AC5CD")) == 0  # a whole frame's CRC is 0
    assert m.crc16(H("0A"), m.crc16(H("0103000000"))) == m.crc16(H("01030000000A"))  # resumable


def test_broadcast_is_for_writes_only_and_unanswered():
    assert "broadcast" in str(raises(m.RequestError, m.rtu_frame, 0, READ))
    raises(m.RequestError, m.expects_response, 0, READ)
    assert m.rtu_frame(0, WRITE)[0] == 0
    assert m.expects_response(0, WRITE) is False
    assert m.expects_response(1, READ) is True
    assert "reserved" in str(raises(m.RequestError, m.rtu_frame, 248, READ))
    assert m.rtu_frame(247, READ)[0] == 247
    assert isinstance(raises(m.RequestError, m.rtu_frame, 1, b""), ValueError)


def test_tcp_frame_has_mbap_header():
    # transaction 1, protocol 0, length 6 (unit id + 5 PDU bytes), unit 0x11
    assert m.tcp_frame(1, 0x11, READ) == H("000100000006" + "1103006B0003")
    assert m.tcp_frame(0xFFFF, 0, READ)[:2] == b"\xff\xff"
    raises(m.RequestError, m.tcp_frame, 65536, 1, READ)


def test_wire_timing_and_lengths():
    assert approx(m.char_time_s(9600), 11 / 9600)
    assert approx(m.silence_s(9600), 3.5 * 11 / 9600)  # 4.01 ms
    assert approx(m.t15_s(9600, 10), 1.5 * 10 / 9600)
    assert m.silence_s(38400) == 0.00175  # [SL] 2.5.1.1: fixed above 19200 baud
    assert m.t15_s(115200) == 0.00075
    raises(ValueError, m.char_time_s, 0)
    assert m.rtu_request_len(READ) == 8
    assert m.rtu_response_len(H("030000000A")) == 25
    assert m.rtu_response_len(H("0100000013")) == 8  # 19 coils: 3 data bytes
    assert m.rtu_response_len(WRITE) == 8
    raises(m.RequestError, m.rtu_response_len, H("2B0E0100"))


def test_bits_pack_lsb_first():
    bits = [1, 0, 1, 1, 0, 0, 1, 1, 1, 0]  # [APS] 6.11 example
    assert m.pack_bits(bits) == H("CD01")
    assert m.unpack_bits(H("CD01"), 0, 10) == [bool(b) for b in bits]
    assert m.register_bytes([10, 0x102]) == H("000A0102")
    raises(m.RequestError, m.register_bytes, [65536])


def test_exception_response_names_the_code():
    names = {
        1: "ILLEGAL FUNCTION",
        2: "ILLEGAL DATA ADDRESS",
        3: "ILLEGAL DATA VALUE",
        4: "SERVER DEVICE FAILURE",
        5: "ACKNOWLEDGE",
        6: "SERVER DEVICE BUSY",
        8: "MEMORY PARITY ERROR",
        10: "GATEWAY PATH UNAVAILABLE",
        11: "GATEWAY TARGET DEVICE FAILED TO RESPOND",
    }
    for code, name in names.items():
        e = m.ModbusExceptionResponse(0x83, code, 7)
        assert (e.function, e.code, e.name, e.unit) == (3, code, name, 7)
        assert name in str(e) and "unit 7" in str(e)
        assert isinstance(e, m.ModbusError)
    assert "UNKNOWN" in m.ModbusExceptionResponse(3, 0x42).name


def test_frame_errors_share_one_base():
    for cls in (
        m.CrcError,
        m.WrongUnitError,
        m.WrongFunctionError,
        m.UnexpectedLengthError,
        m.TruncatedFrameError,
    ):
        assert issubclass(cls, m.FrameError) and issubclass(cls, m.ModbusError)
    assert not issubclass(m.RequestError, m.ModbusError)
