"""The JSON debug form of a telemetry batch (use codec.batch_to_json / batch_from_json) and
readable channel names. For people and tools; the wire format is the binary batch. No I/O."""

import json

from protocols import codec, quantities
from protocols.codec import CodecError


def to_json(batch):
    """The batch as readable JSON text: channel names, one reading per line."""
    lines = ['{"seq": %d, "historical": %s,' % (batch.seq, "true" if batch.historical else "false")]
    lines.append(' "resolutions": {')
    chans = sorted(batch.resolutions)
    for i in range(len(chans)):
        name = json.dumps(codec.channel_name(chans[i]))
        sep = "," if i + 1 < len(chans) else ""
        lines.append("  %s: %s%s" % (name, json.dumps(batch.resolution(chans[i])), sep))
    lines.append(" },")
    lines.append(' "readings": [')
    rs = batch.readings
    for i in range(len(rs)):
        channel, ts_ms, value = rs[i]
        name = json.dumps(codec.channel_name(channel))
        sep = "," if i + 1 < len(rs) else ""
        lines.append("  [%s, %d, %s]%s" % (name, ts_ms, json.dumps(value), sep))
    lines.append(" ]}")
    return "\n".join(lines)


def from_json(text):
    """Parse the JSON debug form back into a Batch (values re-quantised at their resolutions)."""
    try:
        doc = json.loads(text)
    except Exception as e:  # ValueError; RecursionError (CPython) or RuntimeError on deep nesting
        raise CodecError("batch JSON: not valid JSON (%s)" % e)
    if not isinstance(doc, dict):
        raise CodecError("batch JSON: must be an object")
    for key in ("seq", "historical", "resolutions", "readings"):
        if key not in doc:
            raise CodecError("batch JSON: %s is missing" % key)
    res = doc["resolutions"]
    rs = doc["readings"]
    if not isinstance(res, dict) or not isinstance(rs, list):
        raise CodecError("batch JSON: resolutions must be an object and readings a list")
    if doc["historical"] is not True and doc["historical"] is not False:
        raise CodecError("batch JSON: historical must be true or false")
    resolutions = {}
    for name in res:
        resolutions[parse_channel_name(name)] = codec.parse_resolution(res[name])
    readings = []
    for i in range(min(len(rs), codec.MAX_READINGS + 1)):
        r = rs[i]
        if not isinstance(r, list) or len(r) != 3:
            raise CodecError("batch JSON: readings[%d] must be [channel name, ts_ms, value]" % i)
        channel = parse_channel_name(r[0])
        if channel not in resolutions:
            raise CodecError("batch JSON: readings[%d]: %s has no resolution" % (i, r[0]))
        if r[2] is None:
            raise CodecError("batch JSON: readings[%d]: value must be a number" % i)
        readings.append((channel, r[1], r[2]))
    data = codec.encode_batch(doc["seq"], readings, doc["historical"], resolutions)
    return codec.decode_batch(data)


def parse_channel_name(name):
    """Inverse of channel_name; CodecError if malformed or the quantity is unknown."""
    if not isinstance(name, str) or name.count("/") != 1:
        raise CodecError("channel name %r: expected <device id>/<quantity>" % (name,))
    dev, q = name.split("/")
    if not dev.isdigit() or len(dev) > 8 or int(dev) > 0xFFFFFF:
        raise CodecError("channel name %r: device id must be a number below 16777216" % (name,))
    if q[:1] == "#" and q[1:].isdigit() and len(q) <= 4 and int(q[1:]) < 256:
        code = int(q[1:])
    elif quantities.is_quantity(q):
        code = quantities.code_of(q)
    else:
        raise CodecError("channel name %r: unknown quantity %r" % (name, q))
    return (int(dev) << 8) | code
