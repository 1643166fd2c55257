"""The telemetry batch: the documented bytes, and round trips of realistic readings."""

import json

from codec_vectors import DOC_BYTES, DOC_GAP_BYTES, DOC_READINGS, E1, T0, T2, V1
from portable import raises

from protocols import codec
from protocols import quantities as q
from protocols.codec import CodecError, decode_batch, encode_batch


def _sorted(readings):
    return sorted([r for r in readings if r[2] is not None])


def _round_trip(readings, **kw):
    batch = decode_batch(encode_batch(9, readings, **kw))
    assert batch.seq == 9
    return batch


def test_small_batch_has_the_documented_bytes():
    assert encode_batch(5, DOC_READINGS) == DOC_BYTES
    batch = decode_batch(DOC_BYTES)
    assert batch.seq == 5 and batch.historical is False
    assert batch.readings == [
        (V1, T0, 230.1),
        (E1, T0, 1234),
        (V1, T0 + 10000, 230.4),
        (E1, T0 + 10000, 1240),
        (V1, T0 + 20000, 229.9),
        (E1, T0 + 20000, 1246),
        (T2, T0 + 5000, 21.5),
    ]
    assert batch.resolutions == {V1: (1, -1), E1: (1, 0), T2: (1, -1)}


def test_missing_value_and_historical_flag_have_the_documented_bytes():
    readings = [
        (V1, T0, 230.1),
        (E1, T0, 1234),
        (V1, T0 + 10000, 230.4),
        (E1, T0 + 10000, None),  # the meter did not answer this register block
        (V1, T0 + 20050, 229.9),
        (E1, T0 + 20050, 1246),
    ]
    assert encode_batch(6, readings, historical=True) == DOC_GAP_BYTES
    batch = decode_batch(DOC_GAP_BYTES)
    assert batch.historical is True
    assert sorted(batch.readings) == _sorted(readings)


def test_values_come_back_exactly_at_their_resolution():
    readings = [(V1, T0 + i * 10000, 229.0 + i * 0.1) for i in range(20)]
    batch = _round_trip(readings)
    for (ch, ts, value), (ch2, ts2, n) in zip(batch.readings, batch.steps):
        assert (ch, ts) == (ch2, ts2)
        assert n == round((ts - T0) / 10000) + 2290
        assert value == n / 10  # the float nearest to the decimal, e.g. 229.3


def test_negative_values_and_resolutions_above_one():
    readings = [
        (q.channel_id(3, "power_total"), T0, -1520),
        (q.channel_id(3, "power_total"), T0 + 1000, 30),
        (q.channel_id(3, "pressure"), T0, 101325),  # resolution 10 Pa
        (q.channel_id(3, "pressure"), T0 + 1000, 101296),
        (q.channel_id(3, "temperature"), T0, -12.3),
        (q.channel_id(3, "temperature"), T0 + 1000, -0.1),
    ]
    batch = _round_trip(readings)
    assert sorted(batch.readings) == sorted(
        [
            (q.channel_id(3, "power_total"), T0, -1520),
            (q.channel_id(3, "power_total"), T0 + 1000, 30),
            (q.channel_id(3, "pressure"), T0, 101330),
            (q.channel_id(3, "pressure"), T0 + 1000, 101300),
            (q.channel_id(3, "temperature"), T0, -12.3),
            (q.channel_id(3, "temperature"), T0 + 1000, -0.1),
        ]
    )
    assert isinstance(batch.readings[0][2], int)


def test_counters_constants_and_noise_pick_their_cheapest_modes():
    # a counter rising ~100 Wh per poll: differences need 2 bytes, their changes 1
    counter = [(E1, T0 + i * 10000, 500000 + i * 100 + (i % 2)) for i in range(12)]
    const = [(q.channel_id(1, "energy_export"), T0 + i * 10000, 0) for i in range(12)]
    # +-6 V noise: each value is 1 byte, each difference 2
    noise = [(V1, T0 + i * 10000, 6.0 if i % 2 else -6.0) for i in range(12)]
    data = encode_batch(1, counter + const + noise)
    batch = decode_batch(data)
    assert sorted(batch.readings) == sorted(counter + const + noise)
    modes = {}
    # descriptors follow the codes of the one group: [dev, nch, nts, code, desc, ...]
    pos = data.index(bytes([0x01, 0x06, 12])) + 3
    for _ in range(3):
        modes[data[pos]] = data[pos + 1] >> 6
        pos += 2
    assert modes[1] == codec.MODE_RAW
    assert modes[28] == codec.MODE_DOD  # a counter with a steady rate
    assert modes[29] == codec.MODE_CONST
    assert len(data) < 2 * 36


def test_many_groups_and_unordered_input():
    readings = []
    for dev in (300, 7, 4095, 12):
        for i in range(3):
            readings.append((q.channel_id(dev, "co2"), T0 + dev * 3 + i * 60000, 400 + dev + i))
            readings.append((q.channel_id(dev, "humidity"), T0 + dev * 3 + i * 60000, 40.5))
    readings.reverse()
    batch = _round_trip(readings)
    assert sorted(batch.readings) == _sorted(readings)
    assert [r[0] >> 8 for r in batch.readings[::6]] == [7, 12, 300, 4095]


def test_batch_json_debug_form_round_trips():
    v = q.channel_id(1, "voltage_l1")
    e = q.channel_id(1, "energy_import")
    batch = decode_batch(encode_batch(3, [(v, T0, 230.1), (e, T0, 1234), (v, T0 + 10000, 229.8)]))
    text = codec.batch_to_json(batch)
    doc = json.loads(text)
    assert doc["seq"] == 3 and doc["historical"] is False
    assert doc["resolutions"] == {"1/voltage_l1": 0.1, "1/energy_import": 1}
    assert doc["readings"][0] == ["1/voltage_l1", T0, 230.1]
    assert codec.batch_from_json(text) == batch


def test_batch_json_errors():
    good = '{"seq": 1, "historical": false, "resolutions": {"1/voltage_l1": 0.1}, "readings": %s}'
    cases = [
        ("[]", "must be an object"),
        ('{"seq": 1}', "historical is missing"),
        (good % '[["1/voltage_l9", 1, 2]]', "unknown quantity"),
        (good % '[["1/voltage_l1", 1]]', "readings[0] must be"),
        (good % '[["1/frequency", 1, 50]]', "has no resolution"),
        (good % '[["1/voltage_l1", -5, 230]]', "ts_ms"),
        (good % '[["1/voltage_l1", 5, "230"]]', "not a number"),
    ]
    for text, words in cases:
        err = raises(CodecError, codec.batch_from_json, text)
        assert words in str(err), str(err)


def test_catalogue_scales_are_the_same_when_remembered():
    # the encoder remembers each code's catalogue resolution after the first batch asks
    from protocols import codec_encode

    for code in range(256):
        try:
            r = q.resolution_of(q.name_of(code))
        except KeyError:
            continue
        want = codec.parse_resolution(r)
        assert codec_encode._scale_of((3 << 8) | code, None) == want, code  # looked up
        assert codec_encode._scale_of((9 << 8) | code, None) == want, code  # remembered
