"""The byte-level codings of the telemetry batch: LEB128 varints (unsigned, and zigzag for
signed values: 0, -1, 1, -2 -> 0, 1, 2, 3) and the four column modes built on them (delta,
delta of delta, constant, raw). Writes at a position of a bytearray that the caller has made
room in (room()), reads bytes with limits; no I/O."""

from protocols.codec import (
    MAX_STEPS,
    MIN_STEPS,
    MODE_CONST,
    MODE_DELTA,
    MODE_DOD,
    MODE_RAW,
    CodecError,
)

MAX_VARINT_BYTES = 10  # 70 bits: enough for the zigzag of a difference of 63-bit values


def room(buf, pos, n):
    """Grow bytearray buf in place unless n bytes fit from pos on (rare: size it well)."""
    if pos + n > len(buf):
        buf.extend(bytearray(max(n, len(buf))))


def put_uvarint(buf, pos, u):
    """Write unsigned u (>= 0) at buf[pos], 7 bits per byte, least significant first; the
    next position."""
    while u >= 0x80:
        buf[pos] = (u & 0x7F) | 0x80
        pos += 1
        u >>= 7
    buf[pos] = u
    return pos + 1


def put_zigzag(buf, pos, v):
    """Write signed v as the unsigned varint of its zigzag form; the next position."""
    return put_uvarint(buf, pos, v + v if v >= 0 else -v - v - 1)


def zigzag_len(v):
    """The number of bytes put_zigzag writes for v."""
    u = v + v if v >= 0 else -v - v - 1
    n = 1
    while u >= 0x80:
        u >>= 7
        n += 1
    return n


def read_uvarint(data, pos, end, what):
    """(value, next pos) of the unsigned varint at data[pos]; CodecError naming what if the
    varint runs past end or is longer than MAX_VARINT_BYTES."""
    value = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise CodecError("batch truncated at byte %d while reading %s" % (start, what))
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
        if pos - start >= MAX_VARINT_BYTES:
            raise CodecError(
                "batch byte %d: %s is a varint longer than %d bytes"
                % (start, what, MAX_VARINT_BYTES)
            )


def read_zigzag(data, pos, end, what):
    """(value, next pos) of the zigzag varint at data[pos]."""
    u, pos = read_uvarint(data, pos, end, what)
    return (u >> 1) ^ -(u & 1), pos


def choose_mode(col):
    """(mode, bytes) of the mode that writes the present values of col in the fewest bytes
    (ties: const, delta, dod, raw)."""
    n = raw = delta = dod = first = 0
    same = True
    prev = prev_d = 0
    for v in col:
        if v is None:
            continue
        raw += zigzag_len(v)
        if n == 0:
            delta = dod = first = raw
        else:
            d = v - prev
            if d:
                same = False
            delta += zigzag_len(d)
            dod += zigzag_len(d if n == 1 else d - prev_d)
            prev_d = d
        prev = v
        n += 1
    if same:
        return MODE_CONST, first
    if delta <= dod and delta <= raw:
        return MODE_DELTA, delta
    if dod <= raw:
        return MODE_DOD, dod
    return MODE_RAW, raw


def put_column(buf, pos, col, mode):
    """Write the present values (not None) of col in the given mode; the next position."""
    n = 0
    prev = prev_d = 0
    for v in col:
        if v is None:
            continue
        if n == 0 or mode == MODE_RAW:
            pos = put_zigzag(buf, pos, v)
            if mode == MODE_CONST:
                return pos
        elif mode == MODE_DELTA:
            pos = put_zigzag(buf, pos, v - prev)
        else:
            d = v - prev
            pos = put_zigzag(buf, pos, d if n == 1 else d - prev_d)
            prev_d = d
        prev = v
        n += 1
    return pos


def read_column(data, pos, end, n, mode):
    """(list of n values, next pos); (None, pos) if a value leaves the +-MAX_STEPS range."""
    col = [0] * n
    v, pos = read_zigzag(data, pos, end, "value")
    col[0] = v
    d = 0
    for i in range(1, n):
        if mode == MODE_CONST:
            col[i] = v
            continue
        x, pos = read_zigzag(data, pos, end, "value")
        if mode == MODE_RAW:
            v = x
        elif mode == MODE_DELTA:
            v += x
        else:
            d = x if i == 1 else d + x
            v += d
        if v > MAX_STEPS or v < MIN_STEPS:
            return None, pos
        col[i] = v
    if col[0] > MAX_STEPS or col[0] < MIN_STEPS:
        return None, pos
    return col, pos
