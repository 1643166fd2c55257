"""Decoder of the telemetry batch (use codec.decode_batch). Any byte string gives a Batch
or a CodecError, never another exception; every count is checked against the bytes left and
the reading limit before anything is allocated. No I/O."""

from protocols.codec import (
    EXP_MAX,
    EXP_MIN,
    FLAG_HISTORICAL,
    FORMAT,
    KNOWN_FLAGS,
    MAX_SEQ,
    MAX_STEPS,
    MAX_TS_MS,
    MULTIPLIERS,
    Batch,
    CodecError,
)
from protocols.codec_columns import read_column, read_uvarint, read_zigzag

_MAX_RCODE = (EXP_MAX - EXP_MIN) * 3 + 2


def decode(data, max_readings):
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError("batch must be bytes, not %s" % type(data).__name__)
    if isinstance(data, memoryview):
        data = bytes(data)
    end = len(data)
    if end < 5:
        raise CodecError("batch of %d bytes is too short (at least 5)" % end)
    if data[0] != FORMAT:
        raise CodecError(
            "not a telemetry batch: first byte 0x%02x, expected 0x%02x" % (data[0], FORMAT)
        )
    flags = data[1]
    if flags & ~KNOWN_FLAGS:
        raise CodecError("batch flags 0x%02x: unknown flags set (a newer format?)" % flags)
    seq, pos = read_uvarint(data, 2, end, "seq")
    if seq > MAX_SEQ:
        raise CodecError("batch seq %d is above %d" % (seq, MAX_SEQ))
    base_ts, pos = read_uvarint(data, pos, end, "base ts_ms")
    if base_ts > MAX_TS_MS:
        raise CodecError("batch base ts_ms %d is after the year 9999" % base_ts)
    ngroups, pos = read_uvarint(data, pos, end, "group count")
    if ngroups * 6 > end - pos:  # a group takes at least 6 bytes
        raise CodecError("batch claims %d groups in %d bytes" % (ngroups, end - pos))
    steps = []
    resolutions = {}
    dev = -1
    for _ in range(ngroups):
        dev, pos = _group(data, pos, end, base_ts, dev, steps, resolutions, max_readings)
    if pos != end:
        raise CodecError("batch has %d unexpected bytes after the last group" % (end - pos))
    return Batch(seq, bool(flags & FLAG_HISTORICAL), steps, resolutions)


def _group(data, pos, end, base_ts, prev_dev, steps, resolutions, max_readings):
    start = pos
    dev, pos = read_uvarint(data, pos, end, "device id")
    if dev <= prev_dev or dev > 0xFFFFFF:
        raise CodecError(
            "batch byte %d: device id %d must be < 16777216 and above the previous group's %d"
            % (start, dev, prev_dev)
        )
    n, pos = read_uvarint(data, pos, end, "channel count")
    nch = n >> 1
    has_gaps = n & 1
    nts, pos = read_uvarint(data, pos, end, "timestamp count")
    if nch < 1 or nch > 256 or nts < 1 or nts > end - pos or 2 * nch > end - pos:
        raise CodecError(
            "batch byte %d: device %d claims %d channels x %d timestamps in %d bytes"
            % (start, dev, nch, nts, end - pos)
        )
    codes = bytearray(nch)
    descs = bytearray(nch)
    for c in range(nch):
        codes[c] = data[pos]
        descs[c] = data[pos + 1]
        pos += 2
        if c and codes[c] <= codes[c - 1]:
            raise CodecError("device %d: quantity codes are not strictly ascending" % dev)
        if descs[c] & 0x3F > _MAX_RCODE:
            raise CodecError("device %d, code %d: undefined resolution code" % (dev, codes[c]))
    ts_list = [0] * nts
    v, pos = read_uvarint(data, pos, end, "first timestamp")
    ts = base_ts + v
    ts_list[0] = ts
    if nts > 1:
        d, pos = read_uvarint(data, pos, end, "timestamp delta")
        for t in range(1, nts):
            if t > 1:
                dd, pos = read_zigzag(data, pos, end, "timestamp delta")
                d += dd
            if d < 1:
                raise CodecError("device %d: timestamps are not strictly increasing" % dev)
            ts += d
            ts_list[t] = ts
    if ts > MAX_TS_MS:
        raise CodecError("device %d: ts_ms %d is after the year 9999" % (dev, ts))
    counts = [nts] * nch
    bitmap = None
    present = nch * nts
    if has_gaps:
        nbytes = (present + 7) >> 3
        if nbytes > end - pos:
            raise CodecError("device %d: presence bitmap truncated" % dev)
        bitmap = data[pos : pos + nbytes]
        pos += nbytes
        if present & 7 and bitmap[nbytes - 1] >> (present & 7):
            raise CodecError("device %d: presence bitmap has padding bits set" % dev)
        present = 0
        for c in range(nch):
            n = 0
            for k in range(c * nts, c * nts + nts):
                if bitmap[k >> 3] & (1 << (k & 7)):
                    n += 1
            if n == 0:
                raise CodecError("device %d: quantity code %d has no values" % (dev, codes[c]))
            counts[c] = n
            present += n
    if len(steps) + present > max_readings:
        raise CodecError("batch holds more than %d readings" % max_readings)
    columns = [None] * nch
    for c in range(nch):
        columns[c], pos = read_column(data, pos, end, counts[c], descs[c] >> 6)
        if columns[c] is None:
            raise CodecError(
                "device %d, code %d: value beyond +-%d steps" % (dev, codes[c], MAX_STEPS)
            )
        r = descs[c] & 0x3F
        resolutions[(dev << 8) | codes[c]] = (MULTIPLIERS[r % 3], r // 3 + EXP_MIN)
    # Readings row by row: (channel, ts_ms, steps)
    at = [0] * nch
    for t in range(nts):
        ts = ts_list[t]
        for c in range(nch):
            if bitmap is None:
                i = t
            else:
                k = c * nts + t
                if not bitmap[k >> 3] & (1 << (k & 7)):
                    continue
                i = at[c]
                at[c] = i + 1
            steps.append(((dev << 8) | codes[c], ts, columns[c][i]))
    return dev, pos
