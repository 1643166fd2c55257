"""Property tests of the telemetry codec and the JSON messages (CPython only)."""

import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from protocols import codec, messages
from protocols.codec import MAX_STEPS, MAX_TS_MS, CodecError, decode_batch, encode_batch

T0 = 1700000000000

channels = st.builds(
    lambda dev, code: (dev << 8) | code,
    st.one_of(st.integers(0, 5), st.integers(0, 0xFFFFFF)),
    st.one_of(st.sampled_from([1, 7, 14, 27, 28, 64]), st.integers(0, 255)),
)
resolutions = st.tuples(st.sampled_from([1, 2, 5]), st.integers(-10, 10))
timestamps = st.one_of(
    st.integers(T0, T0 + 86_400_000), st.integers(0, MAX_TS_MS), st.sampled_from([0, MAX_TS_MS])
)
steps = st.one_of(
    st.integers(-300, 300),
    st.integers(-MAX_STEPS, MAX_STEPS),
    st.sampled_from([MAX_STEPS, -MAX_STEPS]),
)


def _valid_batches():
    readings = st.lists(st.tuples(channels, timestamps, steps), max_size=60)
    return st.builds(
        lambda rs, seq, hist: encode_batch(seq, _unique(rs), hist, lambda ch: (1, -1), True),
        readings,
        st.integers(0, codec.MAX_SEQ),
        st.booleans(),
    )


def _unique(readings):
    seen = {}
    for ch, ts, v in readings:
        seen[(ch, ts)] = v
    return [(ch, ts, v) for (ch, ts), v in seen.items()]


@given(st.binary(max_size=300))
def test_decoding_random_bytes_gives_a_batch_or_codec_error(data):
    try:
        decode_batch(data)
    except CodecError:
        pass


@given(st.binary(max_size=200))
def test_decoding_random_bodies_after_a_valid_header_gives_a_batch_or_codec_error(body):
    try:
        decode_batch(b"\xb1\x00\x01\x80\xd0\x95\xff\xbc\x31" + body)
    except CodecError:
        pass


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(_valid_batches(), st.data())
def test_decoding_corrupted_batches_gives_a_batch_or_codec_error(data, draw):
    data = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 4))):
        op = draw.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = draw.draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= draw.draw(st.integers(1, 255))
        elif op == "insert":
            data[pos:pos] = draw.draw(st.binary(min_size=1, max_size=12))
        elif op == "delete" and data:
            del data[pos]
        else:
            del data[pos:]
    try:
        decode_batch(bytes(data))
    except CodecError:
        pass


@given(
    st.lists(st.tuples(channels, timestamps, steps), max_size=80),
    st.dictionaries(channels, resolutions),
    st.integers(0, codec.MAX_SEQ),
    st.booleans(),
)
def test_quantised_readings_round_trip_exactly(readings, res, seq, historical):
    readings = _unique(readings)
    scale = {ch: res.get(ch, (1, 0)) for ch, _, _ in readings}
    data = encode_batch(seq, readings, historical, scale, quantised=True)
    batch = decode_batch(data)
    assert batch.seq == seq and batch.historical is historical
    assert sorted(batch.steps) == sorted(readings)
    assert batch.resolutions == scale
    # order: by device, then time, then quantity code
    keys = [(ch >> 8, ts, ch & 0xFF) for ch, ts, _ in batch.steps]
    assert keys == sorted(keys)
    for (ch, _ts, value), (_, _, n) in zip(batch.readings, batch.steps, strict=True):
        assert value == codec.dequantise(n, *scale[ch])
    assert encode_batch(seq, batch.steps, historical, batch.resolutions, quantised=True) == data


@given(
    st.lists(
        st.tuples(
            channels,
            timestamps,
            st.one_of(
                st.floats(-1e9, 1e9, allow_nan=False),
                st.integers(-(10**12), 10**12),
                st.none(),
            ),
        ),
        max_size=60,
    ),
    st.sampled_from([0.001, 0.01, 0.1, 0.5, 1, 2, 10, 100, 0.002, 0.05]),
)
def test_values_round_trip_at_their_resolution(readings, resolution):
    readings = _unique(readings)
    m, e = codec.parse_resolution(resolution)
    data = encode_batch(1, readings, resolution=lambda ch: resolution)
    batch = decode_batch(data)
    expected = sorted((ch, ts, codec.quantise(v, m, e)) for ch, ts, v in readings if v is not None)
    assert sorted(batch.steps) == expected
    for _, _, value in batch.readings:
        assert isinstance(value, int) == (e >= 0)
    # the decoded values re-encode to the same integers
    again = encode_batch(1, batch.readings, resolution=lambda ch: resolution)
    assert decode_batch(again).steps == batch.steps


@given(st.floats(-1e12, 1e12, allow_nan=False), resolutions)
def test_quantise_is_within_half_a_step(value, res):
    m, e = res
    try:
        n = codec.quantise(value, m, e)
    except CodecError:
        assume(False)
    assert abs(n * m * 10.0**e - value) <= m * 10.0**e * (0.5 + 1e-9) + abs(value) * 1e-15


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(),
        st.text(max_size=20),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=30,
)


@given(json_values)
def test_messages_reject_arbitrary_json_only_with_codec_error(doc):
    text = json.dumps(doc)
    for decode in (
        messages.decode_ack,
        messages.decode_state,
        messages.decode_status,
        messages.decode_reported,
        codec.batch_from_json,
    ):
        try:
            decode(text)
        except CodecError:
            pass


@given(st.binary(max_size=200))
def test_messages_reject_arbitrary_bytes_only_with_codec_error(data):
    for decode in (messages.decode_ack, messages.decode_state, codec.batch_from_json):
        try:
            decode(data)
        except CodecError:
            pass


def test_deeply_nested_json_is_a_codec_error():
    with pytest.raises(CodecError, match="not valid JSON"):
        messages.decode_ack("[" * 60000)
