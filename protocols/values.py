"""Numbers in Modbus registers: decode them from register bytes and encode them back, with word
and byte order, scale, offset and "not available" sentinels. Pure arithmetic: no I/O, no state.

Register bytes are what a read response carries: 2 bytes per register, each big-endian on the
wire [MODBUS Application Protocol Specification V1.1b3, 4.2]. Types: u16 i16 u32 i32 u64 i64
f32 f64 (IEEE 754). Multi-register values put the most significant register first
(word_order "big", the common default); word_order "little" means the device sends the least
significant register first; byte_order "little" swaps the two bytes inside each register.

Missing values decode to None, never to a number: NaN and +-infinity in float types always,
and in integer types the raw "not available" sentinels. By default those are the SunSpec
conventions (u16 0xFFFF, i16 0x8000, u32 0xFFFFFFFF, i32 0x80000000, u64 0xFFFFFFFFFFFFFFFF,
i64 0x8000000000000000) plus i32 0x7FFFFFFF, which several meters use. Pass na=[...] to replace
them (raw values, before scale and offset; for signed types either the bit pattern, e.g. 32768,
or the signed value, -32768), or na=[] to disable them.
"""

import math
import struct

TYPES = ("u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64")

_F32_MAX = 3.4028234663852886e38


_SPECS = {}  # type name -> _make_spec(name), filled on first use


def _spec(type_name):
    """(big-endian format, little-endian format, registers, bits, signed, default sentinels).

    Worked out from the name on first use and kept: a table of all eight built at import took
    about 2 KB of a gateway's heap, and working it out on every decode made garbage for each
    value polled. Sentinels of signed types are signed values."""
    if type_name not in TYPES:
        raise ValueError("unknown value type %r: use one of %s" % (type_name, ", ".join(TYPES)))
    spec = _SPECS.get(type_name)
    if spec is None:
        spec = _SPECS[type_name] = _make_spec(type_name)
    return spec


def _make_spec(type_name):
    c = "HhIiQqfd"[TYPES.index(type_name)]
    bits = int(type_name[1:])
    kind = type_name[0]
    if kind == "f":
        signed = None
        na = ()
    elif kind == "u":
        signed = False
        na = ((1 << bits) - 1,)
    else:
        signed = True
        # i32 0x7FFFFFFF: several meters' "not available" besides SunSpec's 0x80000000
        na = (-(1 << (bits - 1)), 0x7FFFFFFF) if bits == 32 else (-(1 << (bits - 1)),)
    return ">" + c, "<" + c, bits >> 4, bits, signed, na


def _little(order, what):
    if order == "big":
        return False
    if order == "little":
        return True
    raise ValueError('%s must be "big" or "little", not %r' % (what, order))


def register_count(type_name):
    """Registers a value of this type occupies: 1, 2 or 4."""
    return _spec(type_name)[2]


def na_values(type_name, na=None):
    """The sentinels decode() treats as "not available" for this type, normalised (signed types
    as signed values). na=None gives the defaults; a sentinel that does not fit the type is a
    ValueError naming it."""
    spec = _spec(type_name)
    if na is None:
        return spec[5]
    bits = spec[3]
    signed = spec[4]
    out = []
    for v in na:
        if signed is None:
            out.append(float(v))
            continue
        if v != int(v):
            raise ValueError("not-available value %r for %s is not an integer" % (v, type_name))
        v = int(v)
        if signed and (1 << (bits - 1)) <= v < (1 << bits):
            v -= 1 << bits  # bit pattern -> signed value
        lo = -(1 << (bits - 1)) if signed else 0
        hi = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
        if not lo <= v <= hi:
            raise ValueError("not-available value %r does not fit type %s" % (v, type_name))
        out.append(v)
    return tuple(out)


def _reorder(src, start, size, word_little, byte_little):
    # Permute register bytes between the device's layout and most-significant-first. Both
    # swaps are their own inverse, so the same call serves decode and encode.
    out = bytearray(size)
    last = size - 2
    for i in range(0, size, 2):
        dst = last - i if word_little else i
        if byte_little:
            out[dst] = src[start + i + 1]
            out[dst + 1] = src[start + i]
        else:
            out[dst] = src[start + i]
            out[dst + 1] = src[start + i + 1]
    return out


def _scaled(raw, scale, offset_value):
    if scale != 1:
        if 0 < scale < 1:
            inverse = 1 / scale
            divisor = round(inverse)
            # 0.1, 0.01, ...: dividing gives 230.1 where multiplying gives 230.10000000000002
            raw = raw / divisor if abs(inverse - divisor) < 1e-9 * inverse else raw * scale
        else:
            raw = raw * scale
    if offset_value:
        raw = raw + offset_value
    return raw


def decode(
    data,
    reg_index,
    type_name,
    word_order="big",
    byte_order="big",
    scale=1,
    offset_value=0,
    na=None,
):
    """The value at register reg_index (0 = first register in data) of register bytes data:
    raw * scale + offset_value, or None if the raw value is NaN, infinite or a "not available"
    sentinel (see the module docstring for na). Integer types with integer scale and offset
    give ints; anything else gives floats."""
    spec = _spec(type_name)
    nregs = spec[2]
    size = 2 * nregs
    start = 2 * reg_index
    if reg_index < 0 or start + size > len(data):
        raise ValueError(
            "%s at register %d needs registers %d..%d, but the data holds %d registers"
            % (type_name, reg_index, reg_index, reg_index + nregs - 1, len(data) >> 1)
        )
    word_little = _little(word_order, "word_order") and nregs > 1
    byte_little = _little(byte_order, "byte_order")
    if word_little == byte_little:
        raw = struct.unpack_from(spec[1] if byte_little else spec[0], data, start)[0]
    else:
        raw = struct.unpack_from(spec[0], _reorder(data, start, size, word_little, byte_little))[0]
    if spec[4] is None:
        if math.isnan(raw) or math.isinf(raw):
            return None
        if na and raw in na_values(type_name, na):
            return None
    elif raw in (spec[5] if na is None else na_values(type_name, na)):
        return None
    return _scaled(raw, scale, offset_value)


def encode(
    value,
    type_name,
    word_order="big",
    byte_order="big",
    scale=1,
    offset_value=0,
    na=None,
):
    """Register bytes for a physical value, the inverse of decode(): raw = (value -
    offset_value) / scale, rounded to the nearest integer for integer types. None encodes to
    the type's first "not available" sentinel (NaN for floats). A value that does not fit the
    type raises ValueError. (An integer value equal to a sentinel decodes back to None.)"""
    spec = _spec(type_name)
    nregs = spec[2]
    bits = spec[3]
    signed = spec[4]
    word_little = _little(word_order, "word_order") and nregs > 1
    byte_little = _little(byte_order, "byte_order")
    if value is None:
        if signed is None:
            raw = math.nan
        else:
            sentinels = na_values(type_name, na)
            if not sentinels:
                raise ValueError(
                    "cannot encode a missing value as %s: its not-available sentinels are "
                    "disabled" % type_name
                )
            raw = sentinels[0]
    else:
        raw = _unscaled(value, scale, offset_value)
        if signed is None:
            raw = float(raw)
            if bits == 32 and abs(raw) > _F32_MAX and not math.isinf(raw):
                raise ValueError("%r is too large for f32" % (value,))
        else:
            if not isinstance(raw, int):
                if math.isnan(raw) or math.isinf(raw):
                    raise ValueError("%r cannot be encoded as %s" % (value, type_name))
                raw = round(raw)
            lo = -(1 << (bits - 1)) if signed else 0
            hi = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
            if not lo <= raw <= hi:
                raise ValueError(
                    "%r (raw %d) does not fit %s (%d..%d): check scale and offset"
                    % (value, raw, type_name, lo, hi)
                )
    if word_little == byte_little:
        return struct.pack(spec[1] if byte_little else spec[0], raw)
    return bytes(_reorder(struct.pack(spec[0], raw), 0, 2 * nregs, word_little, byte_little))


def _unscaled(value, scale, offset_value):
    if scale == 0:
        raise ValueError("scale 0 cannot be inverted: check the profile")
    raw = value - offset_value if offset_value else value
    if scale == 1:
        return raw
    if isinstance(raw, int) and isinstance(scale, int) and raw % scale == 0:
        return raw // scale  # exact, also beyond float precision
    if 0 < scale < 1:
        inverse = 1 / scale
        multiplier = round(inverse)
        if abs(inverse - multiplier) < 1e-9 * inverse:
            return raw * multiplier
    return raw / scale
