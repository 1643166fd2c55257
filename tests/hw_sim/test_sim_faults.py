"""Faults: each occurs at its configured rate (within 20% over 1000 requests), deterministic
under a seed, visible on the wire as what it claims, and never silent: every injected
fault is in the ground truth, and every request without a logged fault gets a clean answer."""

import collections

import pytest
from pymodbus.exceptions import ModbusIOException

from hw_sim.faults import MODBUS_FAULTS, FaultEngine, FaultRule
from hw_sim.scenario import Building
from protocols import modbus

RATES = {
    "crc_error": 0.1,
    "bit_flip": 0.1,
    "no_answer": 0.1,
    "late_answer": 0.1,
    "truncated": 0.1,
    "garbage": 0.1,
    "exception": 0.1,
    "vanish": 0.05,
    "counter_reset": 0.05,
}
REQUEST = modbus.read_request_pdu(4, 72, 2)  # SDM630 total import energy (kWh, f32)


def building(seed=7, faults=None, **meter):
    faults = [{"kind": k, "rate": r} for k, r in RATES.items()] if faults is None else faults
    for f in faults:
        if f["kind"] == "vanish":
            f.setdefault("duration_s", 0)  # gone for this request only: rates stay countable
    return Building(
        {
            "sim": {"seed": seed, "start": "2025-03-10T09:00:00+01:00"},
            "bus": [
                {
                    "name": "bus",
                    "meter": [
                        {"name": "m", "profile": "sdm630", "unit": 1, "faults": faults, **meter}
                    ],
                }
            ],
        }
    )


def clean(frame):
    """A frame that is a valid answer to REQUEST: (CRC ok, register bytes) else None."""
    if frame is None or len(frame) < 5 or modbus.crc16(frame) != 0:
        return None
    return modbus.parse_response_pdu(REQUEST, frame[1:-2], raw=True)


def test_each_fault_occurs_at_its_rate_and_is_logged_with_a_visible_effect():
    b = building()
    bus = b.bus()
    counts = collections.Counter()
    seen = 0
    for _ in range(1000):
        energy_before = b.meter("m").model.counters["energy_import"]
        out = bus.respond(1, REQUEST)
        new = b.truth.faults()[seen:]
        seen += len(new)
        assert len(new) <= 1, "at most one fault per request"
        if not new:  # never silent: no fault logged means a clean, correct answer
            assert clean(out.frame) is not None and not out.garbage and out.delay_s == 0
            continue
        kind = new[0]["fault"]
        counts[kind] += 1
        if kind in ("no_answer", "vanish"):
            assert out.frame is None
        elif kind == "crc_error":
            assert modbus.crc16(out.frame[:-2]) != out.frame[-2] | out.frame[-1] << 8
            assert modbus.crc16(out.frame) != 0
        elif kind == "bit_flip":
            assert len(out.frame) == 9 and modbus.crc16(out.frame) != 0
        elif kind == "truncated":
            assert 1 <= len(out.frame) < 9
            assert len(out.frame) == new[0]["detail"]["sent_bytes"]
        elif kind == "exception":
            assert out.frame[1] == 0x84 and out.frame[2] == 4 and modbus.crc16(out.frame) == 0
        elif kind == "garbage":
            assert clean(out.frame) is not None
            assert out.garbage.hex() == new[0]["detail"]["garbage_hex"]
        elif kind == "late_answer":
            assert clean(out.frame) is not None and out.delay_s == 1.5
        elif kind == "counter_reset":
            after = b.meter("m").model.counters["energy_import"]
            assert after < 1.0 and after <= energy_before  # a new meter counts from zero
            assert clean(out.frame) is not None
    for kind, rate in RATES.items():
        assert counts[kind] == pytest.approx(1000 * rate, rel=0.2), (kind, counts[kind])


def test_fault_draws_are_unbiased_beyond_one_lucky_seed():
    rules = [FaultRule(k, r, dict(MODBUS_FAULTS[k][1])) for k, r in RATES.items()]
    for rule in rules:
        if rule.kind == "vanish":
            rule.params["duration_s"] = 0
    for seed in range(5):
        engine = FaultEngine(rules, seed)
        counts = collections.Counter(
            f.kind for f in (engine.draw(i) for i in range(20_000)) if f is not None
        )
        for kind, rate in RATES.items():
            assert counts[kind] == pytest.approx(20_000 * rate, rel=0.1), (seed, kind)


def fault_sequence(seed):
    b = building(seed)
    for _ in range(200):
        b.bus().respond(1, REQUEST)
    return [
        (f["fault"], f["detail"].get("bit"), f["detail"].get("sent_bytes"))
        for f in b.truth.faults()
    ]


def test_same_seed_gives_the_same_faults_and_another_seed_others():
    assert fault_sequence(3) == fault_sequence(3)
    assert fault_sequence(3) != fault_sequence(4)


def test_vanished_meter_stays_silent_for_its_duration_then_returns():
    b = building(faults=[{"kind": "vanish", "rate": 1.0, "duration_s": 60}])
    bus = b.bus()
    assert bus.respond(1, REQUEST).frame is None
    b.meter("m").faults.rules.clear()  # no new vanishing from here on
    b.clock.advance(30_000)
    assert bus.respond(1, REQUEST).frame is None  # still gone
    b.clock.advance(31_000)
    assert clean(bus.respond(1, REQUEST).frame) is not None  # back
    logged = b.truth.faults(fault="vanish")
    assert [f["detail"].get("ongoing", False) for f in logged] == [False, True]


def test_counter_reset_restarts_energy_from_zero_as_a_replaced_meter(sim_bus, codec_client):
    b = sim_bus(
        {
            "name": "m",
            "profile": "sdm630",
            "unit": 1,
            "turnaround_ms": 1,
            "energy_import_wh": 5_000_000,
        },
        baud=115200,
        parity="N",
    )
    client = codec_client(b.bus().path, baud=115200, parity="N")
    spec = b.meter("m").profile.quantity("energy_import")
    assert client.value(1, spec) >= 5_000_000
    b.meter("m").faults.rules.append(FaultRule("counter_reset", 1.0))
    assert client.value(1, spec) < 1_000
    (fault,) = b.truth.faults(fault="counter_reset")
    assert fault["detail"]["counters_before"]["energy_import"] >= 5_000_000


def test_crc_error_on_the_pty_is_caught_by_the_client_and_logged(sim_bus, codec_client):
    b = sim_bus(
        {"name": "m", "profile": "sdm630", "unit": 1, "turnaround_ms": 1},
        baud=115200,
        parity="N",
        faults=[{"kind": "crc_error", "rate": 1.0}],
    )
    client = codec_client(b.bus().path, baud=115200, parity="N")
    with pytest.raises(modbus.CrcError):
        client.request(1, 4, 0, 2)
    assert [f["fault"] for f in b.truth.faults("m")] == ["crc_error"]
    assert b.truth.values("m") == []  # the client got no values, so none are truth


def test_tcp_faults_reach_a_pymodbus_client_and_are_logged(sim_tcp, pymodbus_tcp):
    b = sim_tcp(
        {"name": "m", "profile": "sdm630", "unit": 1},
        faults=[{"kind": "exception", "rate": 1.0, "code": 6}],
    )
    client = pymodbus_tcp(b.tcp().port)
    r = client.read_input_registers(0, count=2, device_id=1)
    assert r.isError() and r.exception_code == 6
    assert b.truth.faults("m", fault="exception")[0]["detail"]["code"] == 6
    b.meter("m").faults.rules[:] = [FaultRule("no_answer", 1.0)]
    client = pymodbus_tcp(b.tcp().port, timeout=0.3)
    with pytest.raises(ModbusIOException):
        client.read_input_registers(0, count=2, device_id=1)
    assert b.truth.faults("m", fault="no_answer")


def test_tcp_bit_flip_gives_a_wrong_value_that_the_log_explains(sim_tcp, pymodbus_tcp):
    b = sim_tcp(
        {"name": "m", "profile": "sdm630", "unit": 1}, faults=[{"kind": "bit_flip", "rate": 1.0}]
    )
    client = pymodbus_tcp(b.tcp().port)
    r = client.read_input_registers(0, count=2, device_id=1)
    assert not r.isError()  # TCP has no CRC: the flipped value looks plausible
    (fault,) = b.truth.faults("m")
    assert fault["fault"] == "bit_flip" and fault["detail"]["byte"] >= 9  # in the data
    assert b.truth.values("m") == []  # and it is not ground truth


def test_invalid_fault_settings_are_refused_with_a_clear_message():
    from hw_sim.scenario import ScenarioError

    with pytest.raises(ScenarioError, match="unknown fault kind 'crc'"):
        building(faults=[{"kind": "crc", "rate": 0.1}])
    with pytest.raises(ScenarioError, match="add up to 1.200"):
        building(faults=[{"kind": "no_answer", "rate": 0.6}, {"kind": "crc_error", "rate": 0.6}])
    with pytest.raises(ScenarioError, match="Modbus TCP has no CRC"):
        Building(
            {
                "tcp": [
                    {
                        "meter": [
                            {
                                "name": "m",
                                "profile": "sdm630",
                                "unit": 1,
                                "faults": [{"kind": "crc_error", "rate": 0.1}],
                            }
                        ]
                    }
                ]
            }
        )
