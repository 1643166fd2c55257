"""Property tests of the Modbus framing and parsers (CPython, hypothesis): arbitrary bytes in
arbitrary chunks never raise anything but ModbusError, and what the builders frame parses back
to the same content however the bytes are split."""

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from protocols import modbus as m

UNITS = st.integers(1, 247)
ANY_BYTES = st.binary(max_size=600)


def _reference_crc(data: bytes) -> int:
    # bit by bit as [SL] 6.2.2 describes it
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


@st.composite
def requests(draw):
    """A valid request PDU of any supported function."""
    function = draw(st.sampled_from([1, 2, 3, 4, 5, 6, 15, 16]))
    limit = {1: 2000, 2: 2000, 3: 125, 4: 125, 5: 1, 6: 1, 15: 1968, 16: 123}[function]
    count = draw(st.integers(1, limit))
    address = draw(st.integers(0, 0x10000 - count))
    if function <= 4:
        return m.read_request_pdu(function, address, count)
    if function == 5:
        return m.write_single_coil_pdu(address, draw(st.booleans()))
    if function == 6:
        return m.write_single_register_pdu(address, draw(st.integers(0, 0xFFFF)))
    if function == 15:
        return m.write_multiple_coils_pdu(
            address, draw(st.lists(st.booleans(), min_size=count, max_size=count))
        )
    regs = draw(st.lists(st.integers(0, 0xFFFF), min_size=count, max_size=count))
    return m.write_multiple_registers_pdu(address, regs)


@given(st.binary(max_size=300))
def test_crc_matches_the_bitwise_algorithm_and_checks_itself(data):
    crc = m.crc16(data)
    assert crc == _reference_crc(data)
    assert m.crc16(data + bytes((crc & 0xFF, crc >> 8))) == 0


@given(st.binary(min_size=1, max_size=250), st.data())
def test_crc_detects_every_single_byte_error(data, draw):
    i = draw.draw(st.integers(0, len(data) - 1))
    flip = draw.draw(st.integers(1, 255))
    bad = data[:i] + bytes((data[i] ^ flip,)) + data[i + 1 :]
    assert m.crc16(bad) != m.crc16(data)


@given(ANY_BYTES, st.lists(st.integers(0, 600), max_size=8), requests(), UNITS)
def test_response_parser_turns_any_bytes_into_results_or_modbus_errors(data, cuts, request, unit):
    parser = m.RtuResponseParser(unit, request)
    for chunk in _chunks(data, cuts):
        try:
            parser.feed(chunk)
        except m.ModbusError:
            pass
    try:
        parser.end_of_frame()
    except m.ModbusError:
        pass


@given(
    ANY_BYTES, st.lists(st.integers(0, 600), max_size=8), st.lists(st.integers(0, 600), max_size=4)
)
def test_request_parser_turns_any_bytes_into_frames_or_modbus_errors(data, cuts, silences):
    parser = m.RtuRequestParser()
    for i, chunk in enumerate(_chunks(data, cuts)):
        parser.feed(chunk)
        if i in silences:
            parser.end_of_frame()
        _drain(parser)
    parser.end_of_frame()
    for unit, pdu in _drain(parser):
        assert 0 <= unit <= 247 and 1 <= len(pdu) <= 253


@given(ANY_BYTES, st.lists(st.integers(0, 600), max_size=8))
def test_tcp_parser_turns_any_bytes_into_frames_or_modbus_errors(data, cuts):
    parser = m.TcpParser()
    for chunk in _chunks(data, cuts):
        try:
            parser.feed(chunk)
        except m.ModbusError:
            return
        _drain(parser)


def _drain(parser):
    frames = []
    while True:
        try:
            frame = parser.next_frame()
        except m.ModbusError:
            continue
        if frame is None:
            return frames
        frames.append(frame)


@given(st.lists(st.tuples(st.integers(0, 247), requests()), min_size=1, max_size=6), st.data())
def test_requests_split_anyhow_parse_back(frames, data):
    for (u1, p1), (u2, p2) in zip(frames, frames[1:], strict=False):
        assume(not (u1 == u2 and p1 == p2 and p1[0] in (5, 6)))  # taken for the echo: documented
    assume(all(u or p[0] >= 5 for u, p in frames))  # reads are never broadcast
    wire = b"".join(m.rtu_frame(u, p) for u, p in frames)
    parser = m.RtuRequestParser()
    got = []
    for chunk in _chunks(wire, data.draw(st.lists(st.integers(0, len(wire)), max_size=10))):
        parser.feed(chunk)
        got += _drain(parser)
    assert got == frames


@given(st.binary(max_size=80), requests())
def test_after_noise_and_a_silence_the_next_request_is_found(noise, request):
    assume(request[0] >= 5)  # broadcast: never taken for an answer to a request in the noise
    parser = m.RtuRequestParser()
    parser.feed(noise)
    parser.end_of_frame()
    _drain(parser)
    parser.feed(m.rtu_frame(0, request))
    assert _drain(parser) == [(0, request)]


@st.composite
def register_maps(draw):
    start = draw(st.integers(0, 65000))
    regs = draw(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=125))
    return start, regs


@given(register_maps(), st.data(), UNITS, st.lists(st.integers(0, 300), max_size=6))
def test_read_round_trip_through_server_and_client(reg_map, data, unit, cuts):
    start, regs = reg_map
    function = data.draw(st.sampled_from([1, 2, 3, 4]))
    offset = data.draw(st.integers(0, len(regs) - 1))
    count = data.draw(st.integers(1, len(regs) - offset))
    request = m.read_request_pdu(function, start + offset, count)

    def read(fn, address, n):
        values = regs[address - start : address - start + n]
        return [v & 1 == 1 for v in values] if fn <= 2 else values

    answer = m.handle_request(request, read)
    parser = m.RtuResponseParser(unit, request)
    result = None
    for chunk in _chunks(m.rtu_frame(unit, answer), cuts):
        result = parser.feed(chunk) if result is None else result
    assert result == read(function, start + offset, count)
    assert m.parse_response_pdu(request, answer) == result
    assert m.rtu_response_len(request) == len(answer) + 3


@given(requests(), UNITS, st.lists(st.integers(0, 300), max_size=6))
def test_write_round_trip_through_server_and_client(request, unit, cuts):
    assume(request[0] >= 5)
    seen = []
    answer = m.handle_request(request, None, lambda fn, address, values: seen.append(values))
    assert len(seen) == 1
    parser = m.RtuResponseParser(unit, request)
    result = None
    for chunk in _chunks(m.rtu_frame(unit, answer), cuts):
        result = parser.feed(chunk) if result is None else result
    address = request[1] << 8 | request[2]
    assert result[0] == address


@given(requests(), UNITS, st.data())
def test_a_corrupted_answer_is_never_accepted(request, unit, data):
    assume(request[0] <= 4)
    count = request[3] << 8 | request[4]
    values = [False] * count if request[0] <= 2 else [0] * count
    frame = m.rtu_frame(unit, m.read_response_pdu(request[0], values))
    i = data.draw(st.integers(0, len(frame) - 1))
    bad = frame[:i] + bytes((frame[i] ^ data.draw(st.integers(1, 255)),)) + frame[i + 1 :]
    parser = m.RtuResponseParser(unit, request)
    try:
        result = parser.feed(bad)
        if result is None:
            parser.end_of_frame()
    except m.ModbusError:
        return
    raise AssertionError(f"corrupted answer accepted: {bad.hex()} -> {result!r}")


@given(
    st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 255), requests()), max_size=5),
    st.data(),
)
def test_tcp_frames_split_anyhow_parse_back(frames, data):
    wire = b"".join(m.tcp_frame(t, u, p) for t, u, p in frames)
    parser = m.TcpParser()
    got = []
    for chunk in _chunks(wire, data.draw(st.lists(st.integers(0, len(wire)), max_size=10))):
        parser.feed(chunk)
        got += _drain(parser)
    assert got == frames


@settings(max_examples=300)
@given(st.integers(-5, 20), st.integers(-5, 70000), st.integers(-5, 2100))
def test_read_builder_returns_a_valid_request_or_a_request_error(function, address, count):
    try:
        pdu = m.read_request_pdu(function, address, count)
    except m.RequestError:
        return
    assert function in (1, 2, 3, 4) and address >= 0 and address + count <= 0x10000
    assert m.handle_request(pdu, lambda fn, a, n: [0] * n)[0] == function
