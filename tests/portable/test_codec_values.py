"""The telemetry codec's inputs: resolutions, rounding, value types, channel names."""

from codec_vectors import E1, T0, V1
from portable import raises

from protocols import codec, codec_json
from protocols import quantities as q
from protocols.codec import CodecError, decode_batch, encode_batch


def _round_trip(readings, **kw):
    batch = decode_batch(encode_batch(9, readings, **kw))
    assert batch.seq == 9
    return batch


def test_halves_round_away_from_zero():
    assert codec.quantise(230.15, 1, -1) == 2302
    assert codec.quantise(-0.05, 1, -1) == -1
    assert codec.quantise(0.05, 1, -1) == 1
    assert codec.quantise(0.04999, 1, -1) == 0
    assert codec.quantise(25, 5, 0) == 5
    assert codec.quantise(-7, 2, 0) == -4  # -3.5 -> -4
    assert codec.quantise(1234567890123457, 1, -3) == 1234567890123457000  # ints stay exact


def test_none_values_are_not_sent_and_empty_batches_work():
    batch = _round_trip([(V1, T0, None)])
    assert batch.readings == [] and batch.resolutions == {}
    assert _round_trip([]).readings == []


def test_bool_values_are_sent_as_zero_and_one():
    m = q.channel_id(5, "motion")
    batch = _round_trip([(m, T0, True), (m, T0 + 1, False)])
    assert batch.readings == [(m, T0, 1), (m, T0 + 1, 0)]


def test_resolution_overrides_by_dict_callable_and_pair():
    f = q.channel_id(1, "frequency")
    readings = [(f, T0, 49.987), (V1, T0, 230.06)]
    assert sorted(_round_trip(readings, resolution={f: 0.001}).readings) == [
        (V1, T0, 230.1),
        (f, T0, 49.987),
    ]
    assert sorted(_round_trip(readings, resolution=lambda ch: 0.5).readings) == [
        (V1, T0, 230.0),
        (f, T0, 50.0),
    ]
    assert _round_trip([(V1, T0, 230.06)], resolution={V1: (2, -2)}).readings == [(V1, T0, 230.06)]


def test_unknown_quantity_code_needs_a_resolution():
    ch = (9 << 8) | 250
    err = raises(CodecError, encode_batch, 1, [(ch, T0, 1.5)])
    assert "9/#250" in str(err) and "resolution" in str(err)
    assert _round_trip([(ch, T0, 1.5)], resolution={ch: 0.5}).readings == [(ch, T0, 1.5)]


def test_quantised_input_is_taken_as_exact_integers():
    batch = _round_trip([(E1, T0, 123456789012), (V1, T0, -5)], quantised=True)
    assert batch.steps == [(V1, T0, -5), (E1, T0, 123456789012)]
    assert batch.readings == [(V1, T0, -0.5), (E1, T0, 123456789012)]
    again = encode_batch(9, batch.steps, resolution=batch.resolutions, quantised=True)
    assert decode_batch(again) == batch


def test_parse_resolution():
    assert codec.parse_resolution(0.1) == (1, -1)
    assert codec.parse_resolution(0.001) == (1, -3)
    assert codec.parse_resolution(0.5) == (5, -1)
    assert codec.parse_resolution(20) == (2, 1)
    assert codec.parse_resolution(1) == (1, 0)
    for bad in (0, -1, 0.3, 1e12, float("nan"), True, "0.1", (3, 0)):
        raises(CodecError, codec.parse_resolution, bad)


def test_channel_names():
    assert codec.channel_name(V1) == "1/voltage_l1"
    assert codec.channel_name((7 << 8) | 250) == "7/#250"
    assert codec_json.parse_channel_name("1/voltage_l1") == V1
    assert codec_json.parse_channel_name("7/#250") == (7 << 8) | 250
    for bad in ("voltage_l1", "x/voltage_l1", "1/nope", "1/#256", 5):
        raises(CodecError, codec_json.parse_channel_name, bad)


def test_encoding_into_a_preallocated_buffer():
    readings = [(V1, T0 + i * 10000, 230.0 + i) for i in range(40)]
    want = encode_batch(4, readings)
    out = bytearray(16)  # too small: grows in place
    view = encode_batch(4, readings, out=out)
    assert bytes(view) == want and len(out) >= len(want)
    big = bytearray(1024)
    assert bytes(encode_batch(4, readings, out=big)) == want
    assert len(big) == 1024
