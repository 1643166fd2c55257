"""Meter profiles load from the bundled JSON files and from user files, with the registers the
manufacturers document. Runs on CPython and MicroPython (mistakes: test_profiles_errors.py)."""

import os

from portable import raises

from protocols import profiles as pr

DIR = "/tmp/eg_profiles_portable"


def write(model, text):
    try:
        os.mkdir(DIR)
    except OSError:
        pass  # exists
    path = DIR + "/" + model + ".json"
    with open(path, "w") as f:
        f.write(text)
    return path


def profile(quantities, extra=""):
    return (
        '{"model": "testmeter", "manufacturer": "T", "name": "T", "phases": 3, "source": "test",'
        ' "defaults": {"function": 4, "type": "f32"}%s, "quantities": {%s}}' % (extra, quantities)
    )


V1 = '"voltage_l1": {"address": 0, "unit": "V"}'


def test_every_bundled_profile_loads():
    models = pr.bundled_profiles()
    assert len(models) >= 8
    for model in models:
        p = pr.load_profile(model)
        assert p.model == model and p.quantities and p.source
        for spec in p.quantities.values():
            assert spec.count == pr.TYPES[spec.type]
        p = spec = None  # a small board holds one profile at a time


def test_sdm630_registers_match_the_eastron_table():
    # Eastron SDM630 protocol: 30001 L1 volts at 0x0000, 30073 total import kWh at 0x0048,
    # both 32-bit floats in input registers (function 04)
    p = pr.load_profile("sdm630")
    v = p.quantity("voltage_l1")
    assert (v.function, v.address, v.count, v.type, v.word_order, v.byte_order) == (
        4,
        0,
        2,
        "f32",
        "big",
        "big",
    )
    assert (v.scale, v.offset, v.unit, v.code, v.na, v.resolution) == (1, 0, "V", 1, None, 0.1)
    e = p.quantity("energy_import")
    assert (e.function, e.address, e.scale, e.unit) == (4, 0x0048, 1000, "Wh")
    assert p.readable_blocks(4) == [(0, 88), (200, 26), (342, 40)]
    assert p.readable_blocks(3) == [] and p.functions() == [4] and p.max_registers == 80


def test_abb_integer_registers():
    # ABB B23/B24 manual: active import kWh at 5000h, 4 registers, 0.01 kWh; PF at 5B3Ah
    abb = pr.load_profile("abb_b23")
    e = abb.quantity("energy_import")
    assert (e.function, e.address, e.count, e.type, e.scale) == (3, 0x5000, 4, "u64", 10)
    assert abb.quantity("power_factor_total").na == (0x7FFF,)


def test_gavazzi_registers_send_the_low_word_first():
    # Carlo Gavazzi EM24-DIN protocol: INT32 low word first, kWh(+) TOT at 003Eh, 11 per read
    em24 = pr.load_profile("em24")
    assert em24.quantity("voltage_l1").word_order == "little" and em24.max_registers == 11
    assert em24.quantity("energy_import").address == 0x003E


def test_quantity_a_meter_lacks_is_a_key_error_naming_what_it_has():
    e = raises(KeyError, pr.load_profile("sdm72dm").quantity, "voltage_l1")
    assert "energy_import" in str(e) and "sdm72dm" in str(e)


def test_identify_probes():
    ident = pr.load_profile("sdm630").identify
    code = ident.probes[0]
    assert ident.strong and (code.function, code.address, code.type) == (3, 0xFC02, "u16")
    assert pr.probe_matches(code, 0x70) and not pr.probe_matches(code, 0x89)
    name = pr.load_profile("abb_b23").identify.probes[0]
    assert name.count == 6 and name.type == "ascii"
    assert pr.probe_matches(name, pr.probe_text(b"B23 312-100\x00"))
    assert not pr.probe_matches(name, pr.probe_text(b"A43 \xff\x00B23"))
    weak = pr.load_profile("umg96rm").identify
    assert not weak.strong and pr.probe_matches(weak.probes[0], 50.02)
    for v in (float("nan"), None, 70.0):
        assert not pr.probe_matches(weak.probes[0], v)


def test_user_profiles_by_path_and_folder_override_bundled_ones():
    path = write("testmeter", profile(V1))
    assert pr.load_profile(path).quantity("voltage_l1").address == 0
    p = pr.load_profile("testmeter", dirs=[DIR])
    assert p.path == path and p.max_registers == 125 and p.identify is None
    write("sdm120", profile(V1.replace("0", "2")).replace("testmeter", "sdm120"))
    assert pr.load_profile("sdm120", dirs=[DIR]).quantity("voltage_l1").address == 2
    assert pr.load_profile("sdm120").quantity("voltage_l1").address == 0
    os.remove(DIR + "/sdm120.json")


def test_missing_profile_lists_known_models():
    e = raises(pr.ProfileNotFound, pr.load_profile, "sdm999")
    assert "sdm999" in str(e) and "sdm630" in str(e)
    raises(pr.ProfileNotFound, pr.load_profile, "/tmp/no/such/profile.json")
