"""Every mistake in a meter profile is reported with its file, field and reason, all at once.
Runs on CPython and MicroPython; apart from test_profiles.py so each fits a small heap."""

import os

from portable import raises

from protocols import profiles as pr

DIR = "/tmp/eg_profiles_errors"
FILE = DIR + "/testmeter.json: "
V1 = '"voltage_l1": {"address": 0, "unit": "V"}'


def profile(quantities, extra=""):
    return (
        '{"model": "testmeter", "manufacturer": "T", "name": "T", "phases": 3, "source": "test",'
        ' "defaults": {"function": 4, "type": "f32"}%s, "quantities": {%s}}' % (extra, quantities)
    )


def errors(text, model="testmeter"):
    try:
        os.mkdir(DIR)
    except OSError:
        pass  # exists
    path = DIR + "/" + model + ".json"
    with open(path, "w") as f:
        f.write(text)
    return raises(pr.ProfileError, pr.load_profile, path).errors


def test_bad_json_gives_file_and_position():
    # An unquoted text on line 3 (MicroPython's json accepts a missing comma, so not that)
    err = errors('{\n  "model": "testmeter",\n  "name": Test\n}\n')
    assert len(err) == 1 and "Expecting value" in err[0]
    assert err[0].startswith(FILE + "invalid JSON at line 3, column 11: ")


# (quantities, extra top-level text, the one error expected)
CASES = (
    ('"flux": {"address": 0, "unit": "V"}', "", "quantities.flux: unknown quantity"),
    (
        '"energy_import": {"address": 72, "unit": "kWh"}',
        "",
        "quantities.energy_import.unit: 'kWh' is not the catalogue unit 'Wh'",
    ),
    (
        V1 + ', "voltage_l2": {"address": 1, "unit": "V"}',
        "",
        "quantities.voltage_l2: registers 1..2 (function 4) overlap quantities.voltage_l1 at 0..1",
    ),
    (
        '"power_l1": {"address": 0, "unit": "W", "type": "f33"}',
        "",
        "quantities.power_l1.type: 'f33' is not one of u16, i16, u32, i32, u64, i64, f32, f64",
    ),
    (
        '"voltage_l1": {"address": 0, "unit": "V", "scael": 2}',
        "",
        "quantities.voltage_l1.scael: unknown key (allowed: address, unit, ",
    ),
    (
        '"voltage_l1": {"address": 65535, "unit": "V"}',
        "",
        "quantities.voltage_l1.address: 65535 + 2 registers runs past 65535",
    ),
    (
        V1,
        ', "identify": {"probes": [{"address": 0, "type": "u16"}]}',
        "identify.probes[0]: needs exactly one of equals, prefix or range",
    ),
)


def test_each_mistake_names_file_field_and_reason():
    for quantities, extra, expected in CASES:
        err = errors(profile(quantities, extra))
        assert len(err) == 1 and err[0].startswith(FILE + expected), (expected, err)


def test_every_mistake_is_reported_at_once():
    text = (
        '{"model": "testmeter", "phases": 2, "source": "", "limits": {"max_registers": 200},'
        ' "readable": [[65530, 10]], "serial": {"parity": "X"},'
        ' "quantities": {"power_l1": {"address": 70000, "unit": "W", "function": 5,'
        ' "type": "u16", "scale": 0}}}'
    )
    fields = [line.split(": ")[1] for line in errors(text)]
    for f in (
        "manufacturer",
        "name",
        "phases",
        "source",
        "limits.max_registers",
        "serial.parity",
        "readable[0]",
        "quantities.power_l1.address",
        "quantities.power_l1.function",
        "quantities.power_l1.scale",
    ):
        assert f in fields, f


def test_model_must_match_its_file_and_phases():
    err = errors(profile(V1), model="othername")
    assert err == [
        DIR + "/othername.json: model: 'testmeter' does not match the file name othername.json"
    ]
    one = profile('"voltage_l2": {"address": 0, "unit": "V"}').replace('s": 3', 's": 1')
    assert errors(one)[0].endswith("single-phase meter (phases 1) has no L2 or L3 quantities")
