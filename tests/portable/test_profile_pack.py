"""The packed profile form the firmware reads (protocols/profile_pack.py) carries every field of
every bundled profile unchanged, types included, and names the line of a broken file. Runs on
CPython and MicroPython."""

from portable import raises

from protocols import profile_pack as pp
from protocols import profiles as pr


def _same(p, u):
    assert (u.model, u.max_registers, u.turnaround_ms) == (p.model, p.max_registers,
                                                           p.turnaround_ms)  # fmt: skip
    assert sorted(u.quantities) == sorted(p.quantities)
    for name in p.quantities:
        a = p.quantities[name]
        b = u.quantities[name]
        assert a == b, (name, a, b)
        for x, y in zip(a, b):
            assert type(x) is type(y), (name, x, y)  # 10 and 10.0 scale alike, decode alike
    for f in (1, 2, 3, 4):
        assert u.readable_blocks(f) == p.readable_blocks(f)


def test_every_bundled_profile_survives_packing():
    for model in pr.bundled_profiles():
        p = pr.load_profile(model)
        _same(p, pp.unpack(pp.pack(p)))
        p = None


def test_a_profile_with_na_values_turnaround_and_float_offsets_survives_packing():
    # abb_b23 has na lists; build one with every odd field set
    spec = pp.QuantitySpec("power_factor_l1", 23, 3, 7, 1, "i16", "little", "big", 0.001,
                           -273.15, "", 0.001, (32767,))  # fmt: skip
    spec2 = pp.QuantitySpec("energy_import", 28, 3, 8, 4, "u64", "big", "little", 10, 0,
                            "Wh", 1, ())  # fmt: skip
    prof = pp.PackedProfile("odd", 60, 25, {3: [(0, 12)]}, {spec.name: spec, spec2.name: spec2})
    text = pp.pack(prof)
    back = pp.unpack(text)
    _same(prof, back)
    assert back.quantities["energy_import"].na == ()
    assert back.quantities["power_factor_l1"].unit == ""


def test_a_broken_packed_profile_names_its_line():
    good = pp.pack(pr.load_profile("sdm120"))
    lines = good.split("\n")
    lines[3] = lines[3].replace(" f32 ", " ")  # one field short
    e = raises(pp.PackError, pp.unpack, "\n".join(lines))
    assert "line 4" in str(e), str(e)
    e = raises(pp.PackError, pp.unpack, "R 4 0 10\n")
    assert "no M line" in str(e)
    e = raises(pp.PackError, pp.unpack, "M sdm120 x -\n" + "\n".join(lines[1:]))
    assert "line 1" in str(e)


def test_a_missing_packed_file_gives_none():
    assert pp.load_packed("no_such_model") is None
