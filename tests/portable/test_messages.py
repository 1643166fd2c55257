import json

from portable import raises

from protocols import messages as m
from protocols.codec import CodecError

T0 = 1700000000000


def status():
    return {
        "gateway": "rathaus-1",
        "boot": 12,
        "ts_ms": T0,
        "uptime_s": 3600,
        "fw_version": "0.1.0",
        "config_version": 7,
        "free_heap_bytes": 41230,
        "buffer_depth": 120,
        "oldest_unsent_ts_ms": T0 - 60000,
        "dropped_readings": 0,
        "rssi_dbm": -67,
        "reset_cause": "power_on",
        "meters": [{"id": 1, "polls_ok": 360, "timeouts": 2, "crc_errors": 0, "exceptions": 1}],
    }


def test_ack_round_trip_and_refusal():
    assert json.loads(m.encode_ack(42)) == {"seq": 42}
    assert m.decode_ack(m.encode_ack(42)) == m.Ack(42)
    refused = m.decode_ack(m.encode_ack(43, "batch format 0x7b unknown"))
    assert refused.seq == 43 and refused.error == "batch format 0x7b unknown"
    assert "ack.seq: must be >= 0" in str(raises(CodecError, m.decode_ack, b'{"seq": -1}'))
    assert "ack.seq: missing" in str(raises(CodecError, m.decode_ack, b"{}"))
    assert "not valid JSON" in str(raises(CodecError, m.decode_ack, b"{seq: 1}"))
    assert "UTF-8" in str(raises(CodecError, m.decode_ack, b"\xff"))


def test_birth_and_will_carry_the_session():
    birth = m.decode_state(m.encode_birth("rathaus-1", 12, 1, "0.1.0", 7, T0))
    will = m.decode_state(m.encode_will("rathaus-1", 12, 1, "0.1.0", 7, T0))
    assert birth["online"] is True and will["online"] is False
    assert birth["boot"] == will["boot"] == 12 and birth["session"] == will["session"] == 1
    err = raises(CodecError, m.encode_birth, "Rathaus 1", 12, 1, "0.1.0", 7, T0)
    assert "state.gateway" in str(err)


def test_late_will_of_an_earlier_session_does_not_mark_offline():
    old_will = m.decode_state(m.encode_will("gw-1", 12, 1, "0.1.0", 7, T0))
    new_birth = m.decode_state(m.encode_birth("gw-1", 12, 2, "0.1.0", 7, T0 + 5000))
    after_reboot = m.decode_state(m.encode_birth("gw-1", 13, 1, "0.1.0", 7, T0 + 9000))
    new_will = m.decode_state(m.encode_will("gw-1", 12, 2, "0.1.0", 7, T0 + 5000))
    assert m.state_supersedes(new_birth, None)
    assert not m.state_supersedes(old_will, new_birth)  # late will: ignored
    assert m.state_supersedes(new_will, new_birth)  # this session ended
    assert not m.state_supersedes(new_birth, new_will)  # a repeated birth does not revive it
    assert m.state_supersedes(after_reboot, new_will)
    assert not m.state_supersedes(new_will, after_reboot)


def test_status_round_trip_and_field_errors():
    assert m.decode_status(m.encode_status(status())) == status()
    s = status()
    s["free_heap_bytes"] = None  # Linux agents report null
    s["rssi_dbm"] = None
    s["firmware_extra"] = {"x": 1}  # unknown fields pass (newer gateways)
    assert m.decode_status(m.encode_status(s)) == s
    s = status()
    s["meters"][0]["timeouts"] = -1
    del s["buffer_depth"]
    err = str(raises(CodecError, m.encode_status, s))
    assert "status.buffer_depth: missing (required)" in err
    assert "status.meters[0].timeouts: must be >= 0" in err


def test_config_report():
    data = m.encode_reported("gw-1", 6, 7, m.REPORT_ROLLED_BACK, "no fleet contact for 600 s", T0)
    doc = m.decode_reported(data)
    assert doc["status"] == "rolled_back" and doc["version"] == 6 and doc["desired_version"] == 7
    err = raises(CodecError, m.encode_reported, "gw-1", 7, 7, "done", None, T0)
    assert "reported.status: must be one of applied, rejected, rolled_back" in str(err)


def test_topics():
    assert m.topic("rathaus-1", "tele") == "gw/rathaus-1/tele"
    assert m.topic("rathaus-1", "config/desired") == "gw/rathaus-1/config/desired"
    assert m.parse_topic("gw/rathaus-1/config/reported") == ("rathaus-1", "config/reported")
    assert m.parse_topic(b"gw/rathaus-1/ack") == ("rathaus-1", "ack")
    for bad in ("gw/rathaus-1/nope", "gw/Rathaus/tele", "prov/abc/claim", "gw/rathaus-1", None):
        raises(CodecError, m.parse_topic, bad)
    raises(CodecError, m.topic, "x", "tele")
    raises(CodecError, m.topic, "rathaus-1", "telemetry")
