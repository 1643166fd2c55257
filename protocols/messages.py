"""The JSON messages between gateway and fleet (ack, state, status, config report) and their
MQTT topics. Every decoded message is validated; problems raise codec.CodecError naming the
field. Sans-I/O."""

import json

from protocols import schema as s
from protocols.codec import MAX_SEQ, MAX_TS_MS, CodecError

REPORT_APPLIED = "applied"
REPORT_REJECTED = "rejected"
REPORT_ROLLED_BACK = "rolled_back"

MAX_MESSAGE_BYTES = 65536  # longer messages are refused before parsing

TOPIC_KINDS = ("tele", "ack", "state", "status", "config/desired", "config/reported")


def _schema(name):
    ts = s.Int(0, MAX_TS_MS)
    count = s.Int(0, None)
    version = s.Int(0, 2147483647)
    if name == "ack":
        return s.Obj(
            ("seq", s.Int(0, MAX_SEQ)), ("error", s.Str(1, 1000), s.OPTIONAL), allow_unknown=True
        )
    if name == "state":
        return s.Obj(
            ("online", s.Bool()),
            ("gateway", s.GatewayId()),
            ("boot", s.Int(0, MAX_SEQ)),
            ("session", s.Int(1, MAX_SEQ)),
            ("fw_version", s.Str(1, 32)),
            ("config_version", version),
            ("ts_ms", ts),
            allow_unknown=True,
        )
    if name == "status":
        meter = s.Obj(
            ("id", s.Int(1, 0xFFFFFF)),
            ("polls_ok", count),
            ("timeouts", count),
            ("crc_errors", count),
            ("exceptions", count),
            allow_unknown=True,
        )
        return s.Obj(
            ("gateway", s.GatewayId()),
            ("boot", s.Int(0, MAX_SEQ)),
            ("ts_ms", ts),
            ("uptime_s", count),
            ("fw_version", s.Str(1, 32)),
            ("config_version", version),
            ("free_heap_bytes", s.Null(count)),
            ("buffer_depth", count),
            ("oldest_unsent_ts_ms", s.Null(ts)),
            ("dropped_readings", count),
            ("rssi_dbm", s.Null(s.Int(-200, 0))),
            ("reset_cause", s.Null(s.Str(1, 32))),
            ("meters", s.List(meter, 0, 4096)),
            allow_unknown=True,
        )
    return s.Obj(
        ("gateway", s.GatewayId()),
        ("version", version),
        ("desired_version", version),
        ("status", s.Enum(REPORT_APPLIED, REPORT_REJECTED, REPORT_ROLLED_BACK)),
        ("reason", s.Null(s.Str(1, 2000))),
        ("ts_ms", ts),
        allow_unknown=True,
    )


def load_json(data, what):
    """Parse JSON text or UTF-8 bytes of at most MAX_MESSAGE_BYTES; CodecError otherwise."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        if len(data) > MAX_MESSAGE_BYTES:
            raise CodecError("%s: %d bytes, at most %d" % (what, len(data), MAX_MESSAGE_BYTES))
        try:
            data = str(data, "utf-8")
        except UnicodeError:
            raise CodecError("%s: not UTF-8 text" % what)
    if not isinstance(data, str):
        raise CodecError("%s: must be bytes or text" % what)
    if len(data) > MAX_MESSAGE_BYTES:
        raise CodecError("%s: %d characters, at most %d" % (what, len(data), MAX_MESSAGE_BYTES))
    try:
        return json.loads(data)
    except Exception as e:  # ValueError; RecursionError (CPython) or RuntimeError on deep nesting
        raise CodecError("%s: not valid JSON (%s)" % (what, e))


def _check(doc, name):
    errors = []
    s.validate(doc, _schema(name), name, errors)
    if errors:
        raise CodecError("; ".join(errors))
    return doc


def _decode(data, name):
    return _check(load_json(data, name), name)


def _encode(doc, name):
    return json.dumps(_check(doc, name)).encode()


class Ack:
    """An acknowledgement of batch seq: stored (error None) or refused for good (error says why)."""

    def __init__(self, seq, error=None):
        self.seq = seq
        self.error = error

    def __eq__(self, other):
        return isinstance(other, Ack) and self.seq == other.seq and self.error == other.error

    def __repr__(self):
        return "Ack(seq=%d, error=%r)" % (self.seq, self.error)


def encode_ack(seq, error=None):
    """Fleet -> gateway, after the batch is stored (or refused for good, with a reason)."""
    doc = {"seq": seq}
    if error is not None:
        doc["error"] = error
    return _encode(doc, "ack")


def decode_ack(data):
    doc = _decode(data, "ack")
    return Ack(doc["seq"], doc.get("error"))


def encode_state(online, gateway, boot, session, fw_version, config_version, ts_ms):
    """The retained presence message: birth (online=True) or last will (online=False)."""
    doc = {
        "online": online,
        "gateway": gateway,
        "boot": boot,
        "session": session,
        "fw_version": fw_version,
        "config_version": config_version,
        "ts_ms": ts_ms,
    }
    return _encode(doc, "state")


def encode_birth(gateway, boot, session, fw_version, config_version, ts_ms):
    return encode_state(True, gateway, boot, session, fw_version, config_version, ts_ms)


def encode_will(gateway, boot, session, fw_version, config_version, ts_ms):
    return encode_state(False, gateway, boot, session, fw_version, config_version, ts_ms)


def decode_state(data):
    """A state message as a dict (fields of docs/protocol.md; unknown fields kept)."""
    return _decode(data, "state")


def state_supersedes(new, current):
    """Whether decoded state new replaces current (None if there is none yet).

    Sessions are ordered by (boot, session): a message of an older session, such as a late
    last will, never overrides a newer one; within one session, offline follows online."""
    if current is None:
        return True
    a = (new["boot"], new["session"])
    b = (current["boot"], current["session"])
    if a != b:
        return a > b
    return not new["online"] or current["online"]


def encode_status(status):
    """Gateway health: a dict with the fields of docs/protocol.md (extra fields pass through)."""
    return _encode(status, "status")


def decode_status(data):
    return _decode(data, "status")


def encode_reported(gateway, version, desired_version, status, reason, ts_ms):
    """Gateway -> fleet: the config version it runs and what became of the desired one."""
    doc = {
        "gateway": gateway,
        "version": version,
        "desired_version": desired_version,
        "status": status,
        "reason": reason,
        "ts_ms": ts_ms,
    }
    return _encode(doc, "reported")


def decode_reported(data):
    return _decode(data, "reported")


def topic(gateway, kind):
    """The MQTT topic gw/<gateway>/<kind> of one gateway's messages of one kind."""
    if not s.is_gateway_id(gateway):
        raise CodecError("gateway id %r: must be 3-64 characters a-z, 0-9 or -" % (gateway,))
    if kind not in TOPIC_KINDS:
        raise CodecError("topic kind %r: must be one of %s" % (kind, ", ".join(TOPIC_KINDS)))
    return "gw/" + gateway + "/" + kind


def parse_topic(name):
    """(gateway, kind) of a gw/<gateway>/<kind> topic; CodecError for any other topic."""
    if isinstance(name, (bytes, bytearray)):
        try:
            name = str(name, "utf-8")
        except UnicodeError:
            name = None
    parts = name.split("/", 2) if isinstance(name, str) else ()
    if (
        len(parts) != 3
        or parts[0] != "gw"
        or not s.is_gateway_id(parts[1])
        or parts[2] not in TOPIC_KINDS
    ):
        raise CodecError("topic %r is not gw/<gateway id>/<%s>" % (name, "|".join(TOPIC_KINDS)))
    return parts[1], parts[2]
