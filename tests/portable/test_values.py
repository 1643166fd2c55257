# Register values on CPython and MicroPython: every type from known bytes, word and byte
# order, scale and offset, missing values. Vectors: IEEE 754 (230.0 = 0x43660000 in float32,
# 0x406CC00000000000 in float64); SunSpec "not implemented" sentinels.
from portable import approx, raises

from protocols import values as v

H = bytes.fromhex


def test_each_type_decodes_known_bytes():
    assert v.decode(H("1234"), 0, "u16") == 0x1234
    assert v.decode(H("FF38"), 0, "i16") == -200
    assert v.decode(H("00012345"), 0, "u32") == 0x12345
    assert v.decode(H("FFFFFF38"), 0, "i32") == -200
    assert v.decode(H("0000000100000002"), 0, "u64") == (1 << 32) + 2
    assert v.decode(H("FFFFFFFFFFFFFF38"), 0, "i64") == -200
    assert v.decode(H("43660000"), 0, "f32") == 230.0
    assert v.decode(H("406CC00000000000"), 0, "f64") == 230.0
    assert v.decode(H("0000" + "43660000"), 1, "f32") == 230.0  # at register 1
    assert [v.register_count(t) for t in v.TYPES] == [1, 1, 2, 2, 4, 4, 2, 4]


def test_word_and_byte_order():
    # the same float32 230.0 as four kinds of meter send it
    assert v.decode(H("43660000"), 0, "f32", "big", "big") == 230.0
    assert v.decode(H("00004366"), 0, "f32", "little", "big") == 230.0  # low word first
    assert v.decode(H("66430000"), 0, "f32", "big", "little") == 230.0  # bytes swapped
    assert v.decode(H("00006643"), 0, "f32", "little", "little") == 230.0
    assert v.decode(H("0002000000000001"), 0, "u64", word_order="little") == (1 << 48) + 2
    assert v.decode(H("3412"), 0, "u16", byte_order="little") == 0x1234
    assert v.encode(0x12345678, "u32", "little", "big") == H("56781234")
    assert v.encode(0x12345678, "u32", "big", "little") == H("34127856")


def test_scale_and_offset():
    assert v.decode(H("08FD"), 0, "u16", scale=0.1) == 230.1  # not 230.10000000000002
    assert v.decode(H("04D2"), 0, "u16", scale=1000) == 1234000  # kWh -> Wh
    assert isinstance(v.decode(H("04D2"), 0, "u16", scale=1000), int)
    assert approx(v.decode(H("0064"), 0, "i16", scale=0.5, offset_value=-40), 10.0)
    assert v.encode(230.1, "u16", scale=0.1) == H("08FD")
    assert v.encode(10.0, "i16", scale=0.5, offset_value=-40) == H("0064")
    assert v.encode(1234000, "u32", scale=1000) == H("000004D2")
    assert v.encode(0.26, "u16", scale=0.1) == H("0003")  # rounds to the type


def test_missing_values_are_none():
    for data, t in (
        (H("FFFF"), "u16"),
        (H("8000"), "i16"),
        (H("FFFFFFFF"), "u32"),
        (H("80000000"), "i32"),
        (H("7FFFFFFF"), "i32"),
        (H("FFFFFFFFFFFFFFFF"), "u64"),
        (H("8000000000000000"), "i64"),
        (H("7FC00000"), "f32"),  # NaN
        (H("7F800000"), "f32"),  # +inf
        (H("FF800000"), "f32"),  # -inf
        (H("7FF8000000000000"), "f64"),
    ):
        assert v.decode(data, 0, t) is None, (data, t)
    assert v.decode(H("FFFF"), 0, "u16", na=[]) == 65535  # sentinels disabled
    assert v.decode(H("7FC00000"), 0, "f32", na=[]) is None  # NaN never is a number
    assert v.decode(H("8000"), 0, "i16", na=[32768]) is None  # bit pattern or value
    assert v.decode(H("8000"), 0, "i16", na=[-32768]) is None
    assert v.decode(H("0000"), 0, "u16", na=[0]) is None
    assert v.encode(None, "u16") == H("FFFF")
    assert v.encode(None, "i32") == H("80000000")
    assert v.decode(v.encode(None, "f64"), 0, "f64") is None
    raises(ValueError, v.encode, None, "u16", na=[])


def test_bad_arguments_say_what_is_wrong():
    assert "u8" in str(raises(ValueError, v.decode, H("00"), 0, "u8"))
    assert "register" in str(raises(ValueError, v.decode, H("0000"), 0, "u32"))
    raises(ValueError, v.decode, H("0000"), 0, "u16", "middle")
    raises(ValueError, v.encode, 70000, "u16")
    raises(ValueError, v.encode, -1, "u32")
    raises(ValueError, v.encode, 1e39, "f32")
    raises(ValueError, v.encode, 1, "u16", scale=0)
    raises(ValueError, v.na_values, "u16", [70000])
