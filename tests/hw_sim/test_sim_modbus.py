"""Every bundled meter profile, read by independent clients (pymodbus over RTU-on-PTY and
over TCP; the protocols/ codec over plain pyserial), gives the values the ground truth
recorded; meters answer as their model does (exception 02 outside readable blocks, 03 for
too many registers, unit ids sharing one bus)."""

import pytest
from sim_clients import pymodbus_read, pymodbus_value

from protocols import modbus, profiles

MODELS = profiles.bundled_profiles()
FAST = {"baud": 115200, "parity": "N"}


def meter(model, unit=7):
    return {"name": "m", "profile": model, "unit": unit, "turnaround_ms": 1}


def assert_matches_truth(b, spec, got, served_before):
    served = b.truth.values("m", quantity=spec.name)
    assert len(served) == served_before + 1, f"{spec.name}: one read, one ground-truth record"
    assert got == pytest.approx(served[-1]["value"], rel=1e-12, abs=1e-12), spec.name


@pytest.mark.parametrize("model", MODELS)
def test_pymodbus_over_rtu_on_pty_reads_what_the_ground_truth_recorded(
    sim_bus, pymodbus_serial, model
):
    b = sim_bus(meter(model), **FAST)
    client = pymodbus_serial(b.bus().path, 115200)
    profile = profiles.load_profile(model)
    assert profile.quantities
    for spec in profile.quantities.values():
        before = len(b.truth.values("m", quantity=spec.name))
        r = pymodbus_read(client, spec, 7)
        assert not r.isError(), f"{spec.name}: {r}"
        assert_matches_truth(b, spec, pymodbus_value(client, r.registers, spec), before)


@pytest.mark.parametrize("model", MODELS)
def test_protocols_codec_over_pyserial_reads_what_the_ground_truth_recorded(
    sim_bus, codec_client, model
):
    b = sim_bus(meter(model), baud=115200, parity="E")
    client = codec_client(b.bus().path, baud=115200, parity="E")
    for spec in profiles.load_profile(model).quantities.values():
        before = len(b.truth.values("m", quantity=spec.name))
        got = client.value(7, spec)
        served = b.truth.values("m", quantity=spec.name)
        assert len(served) == before + 1
        assert got == served[-1]["value"]  # same codec both sides: bit-exact


@pytest.mark.parametrize("model", MODELS)
def test_pymodbus_over_tcp_reads_what_the_ground_truth_recorded(sim_tcp, pymodbus_tcp, model):
    b = sim_tcp(meter(model))
    client = pymodbus_tcp(b.tcp().port)
    for spec in profiles.load_profile(model).quantities.values():
        before = len(b.truth.values("m", quantity=spec.name))
        r = pymodbus_read(client, spec, 7)
        assert not r.isError(), f"{spec.name}: {r}"
        assert_matches_truth(b, spec, pymodbus_value(client, r.registers, spec), before)
        assert b.truth.values("m", quantity=spec.name)[-1]["via"] == "tcp"


def unreadable_address(profile, function):
    """A register no readable block, quantity or probe of the model covers."""
    taken = [(s.address, s.count) for s in profile.quantities.values() if s.function == function]
    taken += profile.readable_blocks(function)
    if profile.identify:
        taken += [
            (p.address, max(p.count, 2)) for p in profile.identify.probes if p.function == function
        ]
    for address in range(100, 65000, 97):
        if all(not (a <= address < a + n) for a, n in taken):
            return address
    raise AssertionError("no free address")


@pytest.mark.parametrize("model", MODELS)
def test_unmapped_register_is_answered_with_exception_02(sim_bus, codec_client, model):
    profile = profiles.load_profile(model)
    function = profile.functions()[0]
    b = sim_bus(meter(model), **FAST)
    client = codec_client(b.bus().path, baud=115200, parity="N")
    with pytest.raises(modbus.ModbusExceptionResponse) as exc:
        client.request(7, function, unreadable_address(profile, function), 2)
    assert exc.value.code == modbus.ILLEGAL_DATA_ADDRESS
    # too many registers at once: exception 03, as the model's limit says
    if profile.max_registers < 125:
        spec = min(profile.quantities.values(), key=lambda s: s.address)
        with pytest.raises(modbus.ModbusExceptionResponse) as exc:
            client.request(7, spec.function, spec.address, profile.max_registers + 1)
        assert exc.value.code == modbus.ILLEGAL_DATA_VALUE
    assert b.truth.values("m") == []  # nothing served, nothing recorded


def test_identification_register_answers_as_the_model(sim_bus, codec_client):
    # SDM630 meter code 0x0070 in holding register 0xFC02 (profile's identify probe)
    b = sim_bus(meter("sdm630"), **FAST)
    client = codec_client(b.bus().path, baud=115200, parity="N")
    assert client.request(7, 3, 0xFC02, 1) == b"\x00\x70"


def test_several_unit_ids_share_one_bus(sim_bus, codec_client):
    b = sim_bus(
        {"name": "main", "profile": "sdm630", "unit": 1, "turnaround_ms": 1},
        {"name": "kitchen", "profile": "sdm120", "unit": 2, "turnaround_ms": 1},
        {"name": "hall", "profile": "iem3255", "unit": 3, "turnaround_ms": 1},
        **FAST,
    )
    client = codec_client(b.bus().path, baud=115200, parity="N", timeout_s=0.2)
    for unit, name in ((1, "main"), (2, "kitchen"), (3, "hall")):
        spec = b.meter(name).profile.quantity("voltage_l1")
        assert client.value(unit, spec) == b.truth.latest(name)["voltage_l1"]
    with pytest.raises(TimeoutError):  # nobody at unit 4: silence, as on a real bus
        client.request(4, 4, 0, 2)


def test_unknown_unit_on_tcp_gets_gateway_exception(sim_tcp, pymodbus_tcp):
    b = sim_tcp(meter("sdm630", unit=1))
    r = pymodbus_tcp(b.tcp().port).read_input_registers(0, count=2, device_id=9)
    assert r.isError() and r.exception_code == modbus.GATEWAY_TARGET_FAILED
