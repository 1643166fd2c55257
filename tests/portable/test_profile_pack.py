"""The packed profile form the firmware reads (protocols/profile_pack.py) carries every field of
every bundled profile unchanged, types included, and names the line of a broken file. Runs on
CPython and MicroPython."""

import gc
import sys

from portable import raises

from protocols import profile_pack as pp
from protocols import profiles as pr


def _same(p, u):
    assert (u.model, u.max_registers, u.turnaround_ms) == (p.model, p.max_registers,
                                                           p.turnaround_ms)  # fmt: skip
    assert len(u.quantities) == len(p.quantities)  # and each name below: the same names
    for name in p.quantities:
        a = p.quantities[name]
        b = u.quantities[name]
        assert a == b, (name, a, b)
        for x, y in zip(a, b):
            assert type(x) is type(y), (name, x, y)  # 10 and 10.0 scale alike, decode alike
    for f in (1, 2, 3, 4):
        assert u.readable_blocks(f) == p.readable_blocks(f)


def test_every_bundled_profile_survives_packing():
    # Never a profile and its packed copy at once, so it fits a board's heap (64K here):
    # the packed lines, read back and packed again, give the same lines (the text keeps every
    # field and its type); sdm120 is also compared field by field.
    models = pr.bundled_profiles()
    if sys.implementation.name == "micropython":
        # the validator and a packed copy of a large profile overflow this 64K heap; the board
        # never holds both (tests/firmware/test_packed_profiles.py unpacks every model there)
        models = ["sdm120", "iem3255"]
    for model in models:
        lines = list(pp.pack_lines(pr.load_profile(model)))
        gc.collect()
        again = list(pp.pack_lines(pp.unpack(lines)))
        again.sort()  # MicroPython's dicts keep no order
        lines.sort()
        assert again == lines, (model, again, lines)
        lines = again = None
        gc.collect()
    p = pr.load_profile("sdm120")
    _same(p, pp.unpack(pp.pack_lines(p)))  # line by line, as from a file on a board


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
