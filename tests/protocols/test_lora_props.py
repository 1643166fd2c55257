"""Property tests for the LoRa payload decoders, the P2P envelope and the RAK3172 AT parser:
arbitrary bytes give readings or the typed errors, never anything else, and round trips hold."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import lora, lora_p2p, quantities
from protocols import rak3172 as rak
from protocols import rak3172_sim as sim

# Bytes that start real fields, so that generated payloads get past the first byte often.
_KEY_BYTES = [
    0x01,
    0x03,
    0x04,
    0x05,
    0x07,
    0x0B,
    0x20,
    0x67,
    0x68,
    0x73,
    0x75,
    0x7D,
    0x88,
    0xC8,
    0xCE,
    0xFF,
]
payloads = st.one_of(
    st.binary(max_size=80),
    st.lists(st.one_of(st.sampled_from(_KEY_BYTES), st.integers(0, 255)), max_size=80).map(bytes),
)


@settings(max_examples=300, deadline=None)
@given(fmt=st.text(max_size=12), payload=st.binary(max_size=8))
def test_unknown_format_names_give_a_payload_error(fmt, payload):
    if fmt in lora.FORMATS:
        return
    try:
        lora.decode(fmt, payload)
    except lora.LoraPayloadError as e:
        assert "known formats" in e.reason
    else:
        raise AssertionError(f"decoded with unknown format {fmt!r}")


# What each format can carry: (quantity, index, lowest, highest, step) in catalogue units.
CARRIED = {
    "cayenne_lpp": [
        ("temperature", None, -3276.8, 3276.7, 0.1),
        ("humidity", None, 0, 127.5, 0.5),
        ("pressure", None, 0, 655350, 10),
        ("battery", None, 0, 655.35, 0.01),
        ("co2", None, 0, 65535, 1),
        ("illuminance", None, 0, 65535, 1),
        ("motion", None, 0, 255, 1),
        ("pulse_count", None, 0, 2**32 - 1, 1),
        ("heat_energy", None, 0, 2**32 - 1, 1),
    ],
    "elsys": [
        ("temperature", 0, -3276.8, 3276.7, 0.1),
        ("temperature", 2, -3276.8, 3276.7, 0.1),
        ("humidity", 0, 0, 255, 1),
        ("battery", 0, 0, 65.535, 0.001),
        ("pulse_count", 1, 0, 2**32 - 1, 1),
        ("pulse_count", 2, 0, 2**32 - 1, 1),
        ("pressure", 0, 0, 429496729.5, 0.1),
        ("tvoc", 0, 0, 65535, 1),
    ],
    "milesight_am103": [
        ("battery_level", 0, 0, 255, 1),
        ("temperature", 0, -3276.8, 3276.7, 0.1),
        ("humidity", 0, 0, 127.5, 0.5),
        ("co2", 0, 0, 65535, 1),
    ],
    "milesight_am307": [("motion", 0, 0, 255, 1), ("pressure", 0, 0, 655350, 10)],
    "milesight_em300_di": [("pulse_count", 0, 0, 2**32 - 1, 1)],
}


@st.composite
def readings_of(draw, fmt):
    out = []
    for _ in range(draw(st.integers(1, 6))):
        quantity, index, lo, hi, step = draw(st.sampled_from(CARRIED[fmt]))
        steps = draw(st.integers(0, round((hi - lo) / step)))
        value = lo + steps * step
        out.append((quantity, value, draw(st.integers(0, 255)) if index is None else index))
    return out


@st.composite
def damaged_valid_payloads(draw, fmt):
    """A valid payload of fmt, cut short, extended or with one byte changed."""
    good = lora.encode(fmt, draw(readings_of(fmt)))
    cut = draw(st.integers(0, len(good)))
    tail = draw(st.binary(max_size=6))
    return draw(st.sampled_from([good[:cut], good + tail, good[:cut] + tail + good[cut + 1 :]]))


@settings(max_examples=800, deadline=None)
@given(data=st.data(), fmt=st.sampled_from(lora.FORMATS))
def test_decoding_any_bytes_gives_readings_or_a_payload_error(data, fmt):
    payload = data.draw(st.one_of(payloads, damaged_valid_payloads(fmt)))
    try:
        readings = lora.decode(fmt, payload)
    except lora.LoraPayloadError as e:
        assert e.format_name == fmt
        assert 0 <= e.offset <= len(payload)
        return
    for r in readings:
        assert r.quantity in quantities.QUANTITIES
        assert isinstance(r.value, (int, float)) and math.isfinite(r.value)
        assert 0 <= r.index <= 255


@settings(max_examples=300, deadline=None)
@given(data=st.data(), fmt=st.sampled_from(lora.FORMATS))
def test_encode_then_decode_keeps_every_reading_at_its_resolution(data, fmt):
    readings = data.draw(readings_of(fmt))
    decoded = lora.decode(fmt, lora.encode(fmt, readings))
    assert [(r.quantity, r.index) for r in decoded] == [(q, i) for q, _, i in readings]
    for r, (_, value, _) in zip(decoded, readings, strict=True):
        assert math.isclose(r.value, value, rel_tol=1e-9, abs_tol=1e-6)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300))
def test_parsing_any_bytes_as_a_p2p_frame_gives_a_frame_or_a_payload_error(data):
    try:
        frame = lora_p2p.parse_p2p_frame(data)
    except lora.LoraPayloadError as e:
        assert e.format_name == "p2p"
        return
    assert frame.format_name in lora.FORMATS and len(frame.address_hex) == 8


@settings(max_examples=300, deadline=None)
@given(
    address=st.integers(0, 2**32 - 1),
    counter=st.integers(0, 65535),
    fmt=st.sampled_from(lora.FORMATS),
    payload=st.binary(min_size=1, max_size=241),
    flip=st.integers(0, 250 * 8 - 1),
)
def test_p2p_frames_round_trip_and_any_single_bit_flip_is_caught(
    address, counter, fmt, payload, flip
):
    frame = lora_p2p.build_p2p_frame(f"{address:08x}", counter, fmt, payload)
    assert lora_p2p.parse_p2p_frame(frame) == (f"{address:08X}", counter, fmt, payload)
    bit = flip % (len(frame) * 8)
    damaged = bytearray(frame)
    damaged[bit // 8] ^= 1 << (bit % 8)
    try:
        lora_p2p.parse_p2p_frame(bytes(damaged))
    except lora.LoraPayloadError:
        return
    raise AssertionError(f"bit {bit} flip not detected")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["A", "B", "C", "D", "E"]), st.integers(0, 65535)), max_size=200
    )
)
def test_duplicate_filter_stays_within_its_bound(frames):
    f = lora_p2p.DuplicateFilter(max_devices=3)
    for address, counter in frames:
        status = f.check(address, counter)
        assert status.lost >= 0 and not (status.duplicate and status.restarted)
        assert len(f) <= 3


uart_bytes = st.one_of(
    st.binary(max_size=400),
    st.lists(
        st.sampled_from(
            [
                b"OK\r\n",
                b"+EVT:RXP2P:-60:9:",
                b"0A1B",
                b"\r\n",
                b"\n",
                b"AT_",
                b"ERROR",
                b"+EVT:",
                b"RXP2P, RSSI -1, SNR 2",
                b"\xff",
                b"AT+VER=",
                b":",
            ]
        ),
        max_size=60,
    ).map(b"".join),
)


@settings(max_examples=600, deadline=None)
@given(data=uart_bytes, cuts=st.lists(st.integers(0, 400), max_size=10))
def test_at_parser_never_raises_and_chunking_does_not_matter(data, cuts):
    whole = rak.AtParser(max_line_bytes=64).feed(data)
    chunked = rak.AtParser(max_line_bytes=64)
    events = []
    last = 0
    for cut in sorted(c for c in cuts if c <= len(data)) + [len(data)]:
        events += chunked.feed(data[last:cut])
        last = cut
        assert len(chunked._buf) <= 64
    assert events == whole
    kinds = (
        rak.AtOk,
        rak.AtError,
        rak.AtValue,
        rak.AtText,
        rak.AtEvent,
        rak.RxP2P,
        rak.LineTooLong,
        rak.MalformedLine,
    )
    assert all(isinstance(e, kinds) for e in events)


@settings(max_examples=500, deadline=None)
@given(
    rssi=st.integers(-150, 0), snr=st.integers(-30, 30), payload=st.binary(min_size=1, max_size=250)
)
def test_emulated_receive_events_parse_back_exactly(rssi, snr, payload):
    assert rak.AtParser().feed(sim.format_rx_p2p(rssi, snr, payload)) == [
        rak.RxP2P(rssi, snr, payload)
    ]
    assert sim.parse_command(rak.send(payload)).args == (payload.hex().upper(),)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=80), st.binary(max_size=80)))
def test_parse_command_gives_a_command_or_an_at_command_error(line):
    try:
        cmd = sim.parse_command(line)
    except rak.AtCommandError:
        return
    assert cmd.name.startswith("AT") and cmd.form in ("run", "query", "help", "set")
