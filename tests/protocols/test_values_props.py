"""Property tests of register value decoding and encoding (CPython, hypothesis): round trips
for every type and order, agreement with an independent reference, missing values."""

import math
import struct

from hypothesis import given
from hypothesis import strategies as st

from protocols import values as v

ORDERS = st.sampled_from(["big", "little"])
INT_RANGES = {
    "u16": (0, 2**16 - 1),
    "i16": (-(2**15), 2**15 - 1),
    "u32": (0, 2**32 - 1),
    "i32": (-(2**31), 2**31 - 1),
    "u64": (0, 2**64 - 1),
    "i64": (-(2**63), 2**63 - 1),
}
FORMATS = {
    "u16": "H",
    "i16": "h",
    "u32": "I",
    "i32": "i",
    "u64": "Q",
    "i64": "q",
    "f32": "f",
    "f64": "d",
}


def _reference(data: bytes, type_name: str, word_order: str, byte_order: str):
    # independent of values.py: regroup registers, then let struct read big-endian
    regs = [data[i : i + 2] for i in range(0, len(data), 2)]
    if byte_order == "little":
        regs = [r[::-1] for r in regs]
    if word_order == "little":
        regs = regs[::-1]
    return struct.unpack(">" + FORMATS[type_name], b"".join(regs))[0]


@st.composite
def typed_bytes(draw):
    type_name = draw(st.sampled_from(v.TYPES))
    data = draw(
        st.binary(
            min_size=2 * v.register_count(type_name), max_size=2 * v.register_count(type_name)
        )
    )
    return type_name, data


@given(typed_bytes(), ORDERS, ORDERS)
def test_decode_agrees_with_the_reference_or_says_missing(typed, word_order, byte_order):
    type_name, data = typed
    got = v.decode(data, 0, type_name, word_order, byte_order, na=[])
    want = _reference(data, type_name, word_order, byte_order)
    if type_name[0] == "f" and (math.isnan(want) or math.isinf(want)):
        assert got is None
    else:
        assert got == want
    with_na = v.decode(data, 0, type_name, word_order, byte_order)
    assert with_na is None or with_na == got


@given(st.data(), st.sampled_from(sorted(INT_RANGES)), ORDERS, ORDERS)
def test_integers_round_trip_exactly(data, type_name, word_order, byte_order):
    lo, hi = INT_RANGES[type_name]
    value = data.draw(st.integers(lo, hi))
    raw = v.encode(value, type_name, word_order, byte_order)
    assert len(raw) == 2 * v.register_count(type_name)
    back = v.decode(raw, 0, type_name, word_order, byte_order)
    if value in v.na_values(type_name):
        assert back is None
    else:
        assert back == value and isinstance(back, int)


@given(st.floats(allow_nan=False, allow_infinity=False), ORDERS, ORDERS)
def test_f64_round_trips_exactly(value, word_order, byte_order):
    raw = v.encode(value, "f64", word_order, byte_order)
    assert v.decode(raw, 0, "f64", word_order, byte_order) == value


@given(st.floats(width=32, allow_nan=False, allow_infinity=False), ORDERS, ORDERS)
def test_f32_round_trips_exactly(value, word_order, byte_order):
    raw = v.encode(value, "f32", word_order, byte_order)
    assert v.decode(raw, 0, "f32", word_order, byte_order) == value


@given(
    st.sampled_from(["u16", "i16", "u32", "i32"]),
    st.sampled_from([0.001, 0.01, 0.1, 0.5, 1, 10, 1000]),
    st.integers(-100, 100),
    st.data(),
)
def test_scaled_values_round_trip_within_half_a_step(type_name, scale, offset_value, data):
    lo, hi = INT_RANGES[type_name]
    raw = data.draw(st.integers(lo + 1, hi - 1))  # clear of the sentinels at the ends
    value = raw * scale + offset_value
    encoded = v.encode(value, type_name, scale=scale, offset_value=offset_value)
    assert v.decode(encoded, 0, type_name, scale=scale, offset_value=offset_value, na=[]) == (
        v.decode(
            struct.pack(">" + FORMATS[type_name], raw),
            0,
            type_name,
            scale=scale,
            offset_value=offset_value,
            na=[],
        )
    )
    jitter = data.draw(st.floats(-0.49, 0.49)) * scale
    again = v.decode(
        v.encode(value + jitter, type_name, scale=scale, offset_value=offset_value),
        0,
        type_name,
        scale=scale,
        offset_value=offset_value,
        na=[],
    )
    assert abs(again - value) <= abs(scale) * 0.5 + 1e-9 * max(1.0, abs(value))


@given(st.sampled_from(sorted(INT_RANGES)), st.integers(-(2**65), 2**65))
def test_out_of_range_integers_are_refused(type_name, value):
    lo, hi = INT_RANGES[type_name]
    try:
        v.encode(value, type_name)
    except ValueError:
        assert not lo <= value <= hi
    else:
        assert lo <= value <= hi
