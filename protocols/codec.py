"""The compact binary telemetry batch (layout: docs/protocol.md): its limits, the decoded
Batch, resolutions and exact quantisation. Sans-I/O: bytes in, values out and back.

The encoder and decoder live in codec_encode.py and codec_decode.py (imported on first use,
so a gateway never loads the decoder and each file compiles within a small heap)."""

import gc
import math
import sys

from protocols import quantities

FORMAT = 0xB1  # first byte of every batch: format 1 of the telemetry batch
FLAG_HISTORICAL = 0x01
KNOWN_FLAGS = 0x01

MAX_READINGS = 100000  # per batch; the decoder refuses more, so the encoder does too
MAX_SEQ = 9007199254740991  # 2**53 - 1: exact in JSON numbers and JavaScript
MAX_TS_MS = 253402300799999  # 9999-12-31T23:59:59.999Z
MAX_CHANNEL = 0xFFFFFFFF  # device id < 2**24, quantity code < 2**8
MAX_STEPS = 4611686018427387903  # 2**62 - 1: the largest |value / resolution|
MIN_STEPS = -MAX_STEPS  # a constant: negating a big int allocates on MicroPython
# Float constants, so that comparisons allocate nothing on MicroPython (floats are boxed).
_FLOAT_STEPS = 4.6e18  # just below MAX_STEPS
_NEG_FLOAT_STEPS = -4.6e18
_INF = float("inf")
_NEG_INF = -_INF

# Column modes, the 2 high bits of a channel's descriptor byte.
MODE_DELTA = 0  # first value, then differences to the previous present value
MODE_DOD = 1  # first value, first difference, then differences of differences
MODE_CONST = 2  # one value that every present cell has
MODE_RAW = 3  # every value on its own

# A resolution is m * 10**e; the descriptor's 6 low bits are (e - EXP_MIN) * 3 + index of m.
MULTIPLIERS = (1, 2, 5)
EXP_MIN = -10
EXP_MAX = 10


class CodecError(ValueError):
    """A batch or message that cannot be encoded or decoded; the message says what and where."""


def is_int(x):
    """An int that is not a bool (bool is an int on CPython but not on MicroPython).

    The same as schema.is_int, repeated so that encoding never loads the schema module."""
    return isinstance(x, int) and x is not True and x is not False


def _first_use(module):
    # Compiling a module from source takes several times its size in heap; on MicroPython a
    # collection first gives the compiler one unfragmented heap instead of scattered holes.
    if module not in sys.modules:
        gc.collect()


def encode_batch(seq, readings, historical=False, resolution=None, quantised=False, out=None):
    """Encode readings [(channel, ts_ms, value), ...] into one batch (bytes).

    value None means "no reading" and is not sent. resolution: None (the quantity catalogue's
    default per channel), a dict channel -> resolution (absent channels use the catalogue) or
    a callable channel -> resolution; a resolution is a number (0.1) or an (m, e) pair.
    quantised=True: the values are already the integers value / resolution (exact; for
    firmware that scales raw register values itself, and to re-encode Batch.steps).
    out: a bytearray to write into (a gateway preallocates one, since a fragmented heap may
    have no free block as large as a batch); then the result is a memoryview of it, valid
    until the next call, and out grows in place if the batch does not fit."""
    _first_use("protocols.codec_encode")
    from protocols import codec_encode

    return codec_encode.encode(seq, readings, historical, resolution, quantised, out)


def decode_batch(data, max_readings=MAX_READINGS):
    """Decode one batch: a Batch, or CodecError for any malformed, truncated or oversized input."""
    _first_use("protocols.codec_decode")
    from protocols import codec_decode

    return codec_decode.decode(data, max_readings)


def batch_to_json(batch):
    """The batch as readable JSON text (channel names, one reading per line), for debugging."""
    _first_use("protocols.codec_json")
    from protocols import codec_json

    return codec_json.to_json(batch)


def batch_from_json(text):
    """Parse batch_to_json's text back into a Batch (values re-quantised at the resolutions)."""
    _first_use("protocols.codec_json")
    from protocols import codec_json

    return codec_json.from_json(text)


class Batch:
    """A decoded telemetry batch.

    readings: list of (channel, ts_ms, value), value an int when the channel's resolution is
    >= 1, else a float; steps: the same with the exact integer value / resolution instead;
    resolutions: channel -> (m, e). Order: by device id, then ts_ms, then quantity code."""

    def __init__(self, seq, historical, steps, resolutions):
        self.seq = seq
        self.historical = historical
        self.steps = steps
        self.resolutions = resolutions
        readings = []
        for channel, ts_ms, n in steps:
            m, e = resolutions[channel]
            readings.append((channel, ts_ms, dequantise(n, m, e)))
        self.readings = readings

    def resolution(self, channel):
        """The resolution of a channel as a number (0.1, 1, 10, ...)."""
        m, e = self.resolutions[channel]
        return resolution_value(m, e)

    def __eq__(self, other):
        return (
            isinstance(other, Batch)
            and self.seq == other.seq
            and self.historical == other.historical
            and self.steps == other.steps
            and self.resolutions == other.resolutions
        )

    def __repr__(self):
        return "Batch(seq=%d, historical=%s, %d readings)" % (
            self.seq,
            self.historical,
            len(self.steps),
        )


def resolution_value(m, e):
    """m * 10**e: an int when >= 1, else the float nearest to the decimal (0.1, not 0.1000..1)."""
    if e >= 0:
        return m * 10**e
    return m / 10**-e


_PARSED = {}  # resolution -> (m, e): the few a gateway uses, parsed once


def parse_resolution(resolution):
    """(m, e) with resolution == m * 10**e, m in 1, 2, 5 and -10 <= e <= 10; or CodecError.

    Accepts a number (0.1, 1, 0.5, 10) or an (m, e) pair."""
    if isinstance(resolution, tuple):
        if len(resolution) == 2:
            m, e = resolution
            if is_int(m) and m in MULTIPLIERS and is_int(e) and EXP_MIN <= e <= EXP_MAX:
                return m, e
        raise CodecError(
            "resolution %r: (m, e) needs m in 1, 2, 5 and e in -10..10" % (resolution,)
        )
    if (is_int(resolution) or isinstance(resolution, float)) and 0 < resolution < _INF:
        found = _PARSED.get(resolution)
        if found is not None:
            return found
        guess = math.floor(math.log10(resolution))
        for e in (guess, guess - 1, guess + 1):  # log10 may round across a power of ten
            for m in MULTIPLIERS:
                r = resolution_value(m, e)
                if EXP_MIN <= e <= EXP_MAX and abs(resolution - r) <= r * 1e-9:
                    if len(_PARSED) >= 32:
                        _PARSED.clear()
                    _PARSED[resolution] = (m, e)
                    return m, e
    raise CodecError(
        "resolution %r: must be 1, 2 or 5 times a power of ten from 1e-10 to 5e10" % (resolution,)
    )


def quantise(value, m, e):
    """value / (m * 10**e) rounded half away from zero, as an int; CodecError if impossible.

    Ints are divided exactly. Floats are computed as value * 10**-e / m when e < 0, so that a
    decimal such as 230.15 at resolution 0.1 rounds as written (2302)."""
    if value is True or value is False:
        value = int(value)
    if is_int(value):
        if e >= 0:
            num = value
            den = m * 10**e
        else:
            num = value * 10**-e
            den = m
        a = num if num >= 0 else -num
        q = a // den
        r = a - q * den
        if r + r >= den:
            q += 1
        n = q if num >= 0 else -q
    elif isinstance(value, float):
        if value != value or value == _INF or value == _NEG_INF:
            raise CodecError("value %r is not a finite number" % (value,))
        # Few float temporaries: each one is a heap allocation on MicroPython.
        if e < 0:
            x = value * 10**-e if m == 1 else value * 10**-e / m
        else:
            x = value / (m * 10**e)
        if _NEG_FLOAT_STEPS <= x <= _FLOAT_STEPS:
            n = math.floor(x)
            frac = x - n
            if frac > 0.5 or (frac == 0.5 and x > 0):
                n += 1
            return n
        n = MAX_STEPS + 1
    else:
        raise CodecError("value %r is not a number" % (value,))
    if n > MAX_STEPS or n < MIN_STEPS:
        raise CodecError(
            "value %r is too large for resolution %r" % (value, resolution_value(m, e))
        )
    return n


def dequantise(n, m, e):
    """n * m * 10**e: an int when the resolution is >= 1, else the float nearest to it."""
    if e >= 0:
        return n * m * 10**e
    return n * m / 10**-e


def channel_name(channel):
    """Readable channel name: "<device id>/<quantity>", or "<device id>/#<code>" if unknown."""
    code = channel & 0xFF
    try:
        return "%d/%s" % (channel >> 8, quantities.name_of(code))
    except KeyError:
        return "%d/#%d" % (channel >> 8, code)
