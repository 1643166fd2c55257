"""Encoder of the telemetry batch (use codec.encode_batch): writes one bytearray, holds one
device's values at a time in small lists, so it fits a gateway's fragmented heap. No I/O."""

from protocols import quantities
from protocols.codec import (
    EXP_MIN,
    FLAG_HISTORICAL,
    FORMAT,
    MAX_CHANNEL,
    MAX_READINGS,
    MAX_SEQ,
    MAX_STEPS,
    MAX_TS_MS,
    MIN_STEPS,
    MULTIPLIERS,
    CodecError,
    channel_name,
    is_int,
    parse_resolution,
    quantise,
)
from protocols.codec_columns import choose_mode, put_column, put_uvarint, put_zigzag, room


def encode(seq, readings, historical, resolution, quantised, out):
    if not is_int(seq) or seq < 0 or seq > MAX_SEQ:
        raise CodecError("seq %r: must be an integer 0..%d" % (seq, MAX_SEQ))
    by_dev = {}  # device id -> number of its readings
    base_ts = -1
    count = 0
    for i in range(len(readings)):
        channel, ts_ms, value = readings[i]
        if value is None:
            continue
        if not is_int(channel) or channel < 0 or channel > MAX_CHANNEL:
            raise CodecError(
                "reading %d: channel %r must be an integer 0..%d" % (i, channel, MAX_CHANNEL)
            )
        if not is_int(ts_ms) or ts_ms < 0 or ts_ms > MAX_TS_MS:
            raise CodecError(
                "reading %d (%s): ts_ms %r must be an integer 0..%d (UTC ms since 1970)"
                % (i, channel_name(channel), ts_ms, MAX_TS_MS)
            )
        if base_ts < 0 or ts_ms < base_ts:
            base_ts = ts_ms
        by_dev[channel >> 8] = by_dev.get(channel >> 8, 0) + 1
        count += 1
    if count > MAX_READINGS:
        raise CodecError("%d readings in one batch: at most %d; split it" % (count, MAX_READINGS))
    if base_ts < 0:
        base_ts = 0
    devices = sorted(by_dev)
    # About 2 bytes per reading; room() grows the buffer in the rare batch that needs more.
    buf = bytearray(32 + 2 * count) if out is None else out
    room(buf, 0, 32)
    buf[0] = FORMAT
    buf[1] = FLAG_HISTORICAL if historical else 0
    pos = put_uvarint(buf, 2, seq)
    pos = put_uvarint(buf, pos, base_ts)
    pos = put_uvarint(buf, pos, len(devices))
    for dev in devices:
        pos = _group(buf, pos, dev, by_dev[dev], readings, base_ts, resolution, quantised)
    if out is None:
        return bytes(memoryview(buf)[:pos])
    return memoryview(buf)[:pos]


# Quantity code -> 1 + (e - EXP_MIN) * 3 + MULTIPLIERS.index(m) of its catalogue resolution
# (0: not looked up yet), made on first use. The catalogue is a text the gateway searches
# (protocols/quantities.py); a batch asks once per channel, so remember the answers.
_CATALOGUE_SCALES = None


def _scale_of(channel, resolution):
    """(m, e) of a channel."""
    r = None
    if resolution is not None:
        r = resolution.get(channel) if hasattr(resolution, "get") else resolution(channel)
    if r is not None:
        return parse_resolution(r)
    global _CATALOGUE_SCALES
    if _CATALOGUE_SCALES is None:
        _CATALOGUE_SCALES = bytearray(256)
    code = channel & 0xFF
    k = _CATALOGUE_SCALES[code]
    if k:
        return MULTIPLIERS[(k - 1) % 3], (k - 1) // 3 + EXP_MIN
    try:
        r = quantities.resolution_of(quantities.name_of(code))
    except KeyError:
        raise CodecError(
            "channel %s: quantity code %d is not in the catalogue; give its resolution"
            % (channel_name(channel), code)
        )
    m, e = parse_resolution(r)
    _CATALOGUE_SCALES[code] = 1 + (e - EXP_MIN) * 3 + MULTIPLIERS.index(m)
    return m, e


def _group(buf, pos, dev, count, readings, base_ts, resolution, quantised):
    # Rows are the distinct timestamps, columns the quantity codes. Each column is its own
    # small list: a long-running gateway's heap is fragmented, and no single allocation here
    # grows with the batch (no list of all readings, no dict of timestamps).
    ts_list = []
    colmap = bytearray(256)  # quantity code -> present, then -> column
    for r in readings:
        if r[2] is not None and r[0] >> 8 == dev:
            colmap[r[0] & 0xFF] = 1
            _add_sorted(ts_list, r[1])
    nts = len(ts_list)
    codes = bytearray(sum(colmap))
    nch = 0
    for code in range(256):
        if colmap[code]:
            codes[nch] = code
            colmap[code] = nch
            nch += 1
    columns = [None] * nch
    for c in range(nch):
        columns[c] = [None] * nts
    t = 0
    for r in readings:
        if r[2] is None or r[0] >> 8 != dev:
            continue
        if ts_list[t] != r[1]:
            t = _find(ts_list, r[1])
        col = columns[colmap[r[0] & 0xFF]]
        if col[t] is not None:
            raise CodecError("two readings of %s at ts_ms %d" % (channel_name(r[0]), r[1]))
        col[t] = r[2]
    has_gaps = count != nts * nch
    # Quantise in place and pick each column's cheapest mode before writing anything.
    descs = bytearray(nch)
    size = 0  # bytes of all value columns
    for c in range(nch):
        channel = (dev << 8) | codes[c]
        m, e = _scale_of(channel, resolution)
        col = columns[c]
        for t in range(nts):
            v = col[t]
            if v is None:
                continue
            if quantised:
                if not is_int(v) or v > MAX_STEPS or v < MIN_STEPS:
                    raise CodecError(
                        "%s at ts_ms %d: quantised value %r must be an integer within +-%d"
                        % (channel_name(channel), ts_list[t], v, MAX_STEPS)
                    )
            else:
                try:
                    col[t] = quantise(v, m, e)
                except CodecError as err:
                    raise CodecError(
                        "%s at ts_ms %d: %s" % (channel_name(channel), ts_list[t], err)
                    )
        rcode = (e - EXP_MIN) * 3 + MULTIPLIERS.index(m)
        mode, n = choose_mode(col)
        descs[c] = (mode << 6) | rcode
        size += n
    # Varints take at most 10 bytes: room for the header, timestamps, bitmap and values.
    room(buf, pos, 30 + 2 * nch + 10 * nts + (nch * nts + 7) // 8 + size)
    pos = put_uvarint(buf, pos, dev)
    pos = put_uvarint(buf, pos, (nch << 1) | (1 if has_gaps else 0))
    pos = put_uvarint(buf, pos, nts)
    for c in range(nch):
        buf[pos] = codes[c]
        buf[pos + 1] = descs[c]
        pos += 2
    pos = put_uvarint(buf, pos, ts_list[0] - base_ts)
    if nts > 1:
        prev_d = ts_list[1] - ts_list[0]
        pos = put_uvarint(buf, pos, prev_d)
        for t in range(2, nts):
            d = ts_list[t] - ts_list[t - 1]
            pos = put_zigzag(buf, pos, d - prev_d)
            prev_d = d
    if has_gaps:
        byte = bit = 0
        for c in range(nch):
            for v in columns[c]:
                if v is not None:
                    byte |= 1 << bit
                bit += 1
                if bit == 8:
                    buf[pos] = byte
                    pos += 1
                    byte = bit = 0
        if bit:
            buf[pos] = byte
            pos += 1
    for c in range(nch):
        pos = put_column(buf, pos, columns[c], descs[c] >> 6)
    return pos


def _add_sorted(ts_list, ts):
    """Insert ts into the ascending list unless present (fast when readings come in order)."""
    if not ts_list or ts > ts_list[-1]:
        ts_list.append(ts)
    elif ts != ts_list[-1]:
        i = _find(ts_list, ts)
        if ts_list[i] != ts:
            ts_list.insert(i, ts)


def _find(ts_list, ts):
    """The index of the first element >= ts (binary search)."""
    lo = 0
    hi = len(ts_list)
    while lo < hi:
        mid = (lo + hi) >> 1
        if ts_list[mid] < ts:
            lo = mid + 1
        else:
            hi = mid
    return lo
