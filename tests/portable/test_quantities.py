from portable import raises

from protocols import quantities as q


def test_codes_are_unique_and_fit_one_byte():
    codes = [v[0] for v in q.QUANTITIES.values()]
    assert len(codes) == len(set(codes))
    assert all(0 < c < 256 for c in codes)


def test_channel_id_round_trips():
    ch = q.channel_id(513, "energy_import")
    assert q.split_channel(ch) == (513, "energy_import")


def test_unknown_quantity_is_a_key_error():
    raises(KeyError, q.code_of, "flux_capacitance")


def test_lookups_agree_with_the_catalogue_dict():
    table = q.QUANTITIES
    assert len(table) == 50
    for name in table:
        code, unit, resolution = table[name]
        assert q.entry_of(name) == (code, unit, resolution)
        assert q.is_quantity(name)
        assert q.code_of(name) == code and q.name_of(code) == name
        assert q.unit_of(name) == unit and q.resolution_of(name) == resolution


def test_catalogue_values_keep_their_units_and_number_types():
    assert q.entry_of("voltage_l1") == (1, "V", 0.1)
    assert q.entry_of("power_factor_total") == (26, "", 0.001)
    assert q.entry_of("temperature") == (64, "°C", 0.1)
    assert q.entry_of("gas_volume") == (69, "m³", 0.001)
    assert q.entry_of("battery_level") == (76, "%", 1)
    assert type(q.resolution_of("power_total")) is int
    assert type(q.resolution_of("pressure")) is int and q.resolution_of("pressure") == 10
    assert type(q.resolution_of("frequency")) is float


def test_near_misses_are_unknown():
    for name in ("", " ", "voltage", "voltage_l1 ", "voltage_l1 1", "V", "0.1", "#", 1, None):
        assert not q.is_quantity(name)
        raises(KeyError, q.entry_of, name)
    for code in (0, 36, 63, 77, 95, 98, 255, -1, 1.5, "1"):
        raises(KeyError, q.name_of, code)
