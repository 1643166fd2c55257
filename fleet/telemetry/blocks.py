"""The packed block of one channel's raw readings in one hour (telemetry_blocks.data): exact
integer steps at a resolution, delta-coded and zlib-compressed. Pure functions, no SQL.

Layout (before zlib): version 0x01, resolution code (protocols.codec: (e + 10) * 3 + index of
m), value mode (0: deltas, 1: deltas of deltas), count (uvarint), then the timestamps as ms
since the hour start: first (uvarint), then zigzag deltas of deltas; then the values: first
(zigzag), then zigzag deltas (mode 0) or first delta and zigzag deltas of deltas (mode 1)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from protocols.codec import EXP_MIN, MULTIPLIERS, dequantise

VERSION = 1
HOUR_MS = 3_600_000
_ZLIB_LEVEL = 9


class BlockError(ValueError):
    """A stored block that does not decode: the database was damaged or written by a newer
    fleet version; restore the table from a backup or upgrade the fleet."""


def res_code(m: int, e: int) -> int:
    return (e - EXP_MIN) * 3 + MULTIPLIERS.index(m)


def res_of_code(code: int) -> tuple[int, int]:
    return MULTIPLIERS[code % 3], code // 3 + EXP_MIN


def common_resolution(resolutions: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """One resolution at which every value of every given resolution is an exact integer."""
    first = resolutions[0]
    if all(r == first for r in resolutions):
        return first
    return 1, min(e for _, e in resolutions)


def rescale(n: int, res: tuple[int, int], to: tuple[int, int]) -> int:
    """Steps n at resolution res as steps at the finer resolution `to` (exact)."""
    if res == to:
        return n
    m, e = res
    return n * m * 10 ** (e - to[1]) // to[0]


def _put_uvarint(out: bytearray, u: int) -> None:
    while u >= 0x80:
        out.append((u & 0x7F) | 0x80)
        u >>= 7
    out.append(u)


def _put_zigzag(out: bytearray, v: int) -> None:
    _put_uvarint(out, (v << 1) if v >= 0 else ((-v) << 1) - 1)


def encode_block(
    hour_ts_ms: int, ts_ms: Sequence[int], steps: Sequence[int], res: tuple[int, int]
) -> bytes:
    """Pack one channel-hour: ts_ms strictly ascending within [hour, hour + 1 h), steps the
    integer values at resolution res (see protocols.codec)."""
    n = len(ts_ms)
    if n == 0 or n != len(steps):
        raise ValueError("a block needs as many values as timestamps, at least one")
    head = bytearray((VERSION, res_code(*res)))
    body = bytearray()
    _put_uvarint(body, n)
    prev = ts_ms[0] - hour_ts_ms
    if not 0 <= prev < HOUR_MS or ts_ms[-1] - hour_ts_ms >= HOUR_MS:
        raise ValueError(f"block of hour {hour_ts_ms} holds timestamps outside that hour")
    _put_uvarint(body, prev)
    prev_d = 0
    for i in range(1, n):
        d = ts_ms[i] - ts_ms[i - 1]
        _put_zigzag(body, d - prev_d)
        prev_d = d
    best = b""
    for mode in (0, 1):
        vals = bytearray(body)
        _put_zigzag(vals, steps[0])
        prev_v = steps[0]
        prev_dv = 0
        for i in range(1, n):
            dv = steps[i] - prev_v
            _put_zigzag(vals, dv if mode == 0 else dv - prev_dv)
            prev_v = steps[i]
            prev_dv = dv
        packed = bytes((*head, mode)) + zlib.compress(bytes(vals), _ZLIB_LEVEL)
        if not best or len(packed) < len(best):
            best = packed
    return best


def decode_block(hour_ts_ms: int, data: bytes) -> tuple[list[int], list[int], tuple[int, int]]:
    """(timestamps, steps, resolution) of a packed block."""
    if len(data) < 4 or data[0] != VERSION:
        raise BlockError(
            f"telemetry block of hour {hour_ts_ms}: unknown format "
            f"{data[:1].hex() or 'empty'} (this fleet reads version {VERSION})"
        )
    res = res_of_code(data[1])
    mode = data[2]
    try:
        raw = zlib.decompress(data[3:])
    except zlib.error as exc:
        raise BlockError(f"telemetry block of hour {hour_ts_ms}: corrupt ({exc})") from exc
    pos = 0
    end = len(raw)

    def uvarint() -> int:
        nonlocal pos
        shift = 0
        u = 0
        while True:
            if pos >= end:
                raise BlockError(f"telemetry block of hour {hour_ts_ms}: truncated")
            b = raw[pos]
            pos += 1
            u |= (b & 0x7F) << shift
            if b < 0x80:
                return u
            shift += 7

    def zigzag() -> int:
        u = uvarint()
        return (u >> 1) if not u & 1 else -((u + 1) >> 1)

    n = uvarint()
    ts = [hour_ts_ms + uvarint()]
    d = 0
    for _ in range(n - 1):
        d += zigzag()
        ts.append(ts[-1] + d)
    steps = [zigzag()]
    dv = 0
    for _ in range(n - 1):
        if mode == 0:
            steps.append(steps[-1] + zigzag())
        else:
            dv += zigzag()
            steps.append(steps[-1] + dv)
    if pos != end:
        raise BlockError(f"telemetry block of hour {hour_ts_ms}: {end - pos} bytes left over")
    return ts, steps, res


def values_of(steps: Sequence[int], res: tuple[int, int]) -> list[float]:
    m, e = res
    return [dequantise(n, m, e) for n in steps]
