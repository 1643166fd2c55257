"""The bundled profile files against the catalogue, values.py, the manufacturers' example frames
and docs/meters.md; the validator and the JSON error locator against brute force and CPython's
own parser (hypothesis). CPython only."""

import copy
import json
import re
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import profiles as pr
from protocols import values
from protocols.profiles import jsonpos
from protocols.quantities import QUANTITIES

ROOT = Path(__file__).resolve().parent.parent.parent
DOC = (ROOT / "docs" / "meters.md").read_text()
MODELS = pr.bundled_profiles()


def raw_of(model):
    return json.loads((Path(pr.profiles_dir()) / (model + ".json")).read_text())


def small_profile(quantities):
    return {
        "model": "t",
        "manufacturer": "T",
        "name": "T",
        "phases": 3,
        "source": "test",
        "defaults": {"function": 4, "type": "f32"},
        "quantities": quantities,
    }


def test_the_required_meters_are_bundled():
    for model in ("sdm630", "sdm120", "sdm72dm", "abb_b23", "umg96rm", "em24", "iem3255"):
        assert model in MODELS
    assert len(MODELS) >= 8


def test_each_file_names_its_source_and_uses_catalogue_units():
    for model in MODELS:
        raw = raw_of(model)
        assert raw["model"] == model and len(raw["source"].strip()) > 40, model
        for name, q in raw["quantities"].items():
            assert q["unit"] == QUANTITIES[name][1], (model, name)
        for text in [raw["source"], *raw.get("notes", [])]:
            assert len(text) <= 300, (model, "keep texts short: a board parses them whole")


def test_single_phase_meters_map_only_l1():
    for model in MODELS:
        p = pr.load_profile(model)
        if p.phases == 1:
            assert not [n for n in p.quantities if "_l2" in n or "_l3" in n]


def test_types_agree_with_values_py():
    assert pr.TYPE_NAMES == values.TYPES
    for t in pr.TYPE_NAMES:
        assert pr.TYPES[t] == values.register_count(t)


def test_every_bundled_quantity_round_trips_through_values_py():
    for model in MODELS:
        for s in pr.load_profile(model).quantities.values():
            value = 123 * s.scale + s.offset
            data = values.encode(value, s.type, s.word_order, s.byte_order, s.scale, s.offset, s.na)
            assert len(data) == 2 * s.count
            got = values.decode(
                data, 0, s.type, s.word_order, s.byte_order, s.scale, s.offset, s.na
            )
            assert abs(got - value) <= 1e-6 * abs(value), (model, s.name)


def test_abb_example_response_decodes_as_the_manual_says():
    # ABB A43/A44 User Manual 2CMC48001M0201 rev. C, "Communication with Modbus", example
    # response to a read from 5B00h (same map as B23/B24): the bytes and the manual's values.
    p = pr.load_profile("abb_b23")
    frames = {
        "voltage_l2_l3": ("00000FCA", 404.2),  # L3-L2 voltage 00000FCAh = 4042 -> 404.2 V
        "power_total": ("0001E8E4", 1251.56),  # 125156 -> 1251.56 W
        "reactive_power_l2": ("FFFFD04A", -122.14),  # -12214 -> -122.14 var
        "frequency": ("1383", 49.95),  # 4995 -> 49.95 Hz
        "power_factor_total": ("03CC", 0.972),  # 972 -> 0.972
    }
    for name, (hexbytes, expected) in frames.items():
        s = p.quantity(name)
        got = values.decode(
            bytes.fromhex(hexbytes), 0, s.type, s.word_order, s.byte_order, s.scale, s.offset, s.na
        )
        assert abs(got - expected) < 1e-9, name
    s = p.quantity("current_l1")  # "FF FF ..." means no data at an address
    assert (
        values.decode(b"\xff" * 4, 0, s.type, s.word_order, s.byte_order, s.scale, s.offset, s.na)
        is None
    )


def test_em24_sends_the_low_word_first():
    # EM24-DIN communication protocol 2.1: INT32 word order LSW -> MSW, bytes MSB first;
    # V L1-N in Volt*10 and kWh(+) TOT in kWh*10.
    p = pr.load_profile("em24")
    v = p.quantity("voltage_l1")
    raw = (2301).to_bytes(4, "big")
    data = raw[2:] + raw[:2]
    assert (
        values.decode(data, 0, v.type, v.word_order, v.byte_order, v.scale, v.offset, v.na) == 230.1
    )
    e = p.quantity("energy_import")
    raw = (123456).to_bytes(4, "big")
    assert (
        values.decode(raw[2:] + raw[:2], 0, e.type, e.word_order, e.byte_order, e.scale) == 12345600
    )


def test_docs_list_every_bundled_meter_with_its_quantities():
    for model in MODELS:
        p = pr.load_profile(model)
        row = [line for line in DOC.splitlines() if line.startswith(f"| {model} |")]
        assert row, "docs/meters.md has no table row for " + model
        cells = [c.strip() for c in row[0].strip("|").split("|")]
        assert cells[1] == p.manufacturer and cells[2] == p.name
        assert int(cells[4]) == len(p.quantities), model
        section = DOC.split(f"### {model}: ")[1].split("\n### ")[0]
        listed = re.search(r"Quantities \((\d+)\): ([^.]*)\.", section)
        assert listed and sorted(listed.group(2).split(", ")) == sorted(p.quantities), model
        assert p.source in section.replace("\n", " ") or p.source[:60] in section


def test_release_drops_the_validator_and_the_next_load_compiles_it_again():
    import sys

    pr.load_profile("sdm120")
    pr.release()
    assert "protocols.profiles.checkq" not in sys.modules
    assert pr.load_profile("sdm120").quantity("voltage_l1").address == 0


def test_validate_without_consume_leaves_the_input_alone():
    raw = raw_of("sdm630")
    before = copy.deepcopy(raw)
    p = pr.validate(raw, "sdm630.json")
    assert raw == before and p.quantities == pr.load_profile("sdm630").quantities


def test_load_all_prefers_user_files(tmp_path):
    raw = raw_of("sdm120")
    raw["quantities"]["voltage_l1"]["address"] = 2
    (tmp_path / "sdm120.json").write_text(json.dumps(raw))
    profiles = {p.model: p for p in pr.load_all(dirs=[str(tmp_path)])}
    assert set(profiles) == set(MODELS)
    assert profiles["sdm120"].quantity("voltage_l1").address == 2


# ---------------------------------------------------------------- properties

NAMES = sorted(n for n, v in QUANTITIES.items() if v[1] in ("V", "A", "W"))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 60), st.sampled_from(("u16", "u32", "u64"))),
        min_size=1,
        max_size=12,
    )
)
def test_overlaps_are_reported_exactly_when_registers_are_shared(regs):
    quantities = {}
    for (address, typ), name in zip(regs, NAMES, strict=False):
        quantities[name] = {"address": address, "type": typ, "unit": QUANTITIES[name][1]}
    spans = [(q["address"], q["address"] + pr.TYPES[q["type"]]) for q in quantities.values()]
    shared = any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1 :])
    try:
        pr.validate(small_profile(quantities), "t.json")
        assert not shared
    except pr.ProfileError as e:
        assert shared and all("overlap" in line for line in e.errors)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(1, 50)), max_size=10))
def test_readable_blocks_are_sorted_merged_and_cover_the_same_registers(blocks):
    raw = small_profile({"voltage_l1": {"address": 0, "unit": "V"}})
    raw["readable"] = [list(b) for b in blocks]
    got = pr.validate(raw, "t.json").readable_blocks(4)
    covered = set()
    for s, n in blocks:
        covered.update(range(s, s + n))
    got_covered = set()
    for i, (s, n) in enumerate(got):
        got_covered.update(range(s, s + n))
        if i:
            assert got[i - 1][0] + got[i - 1][1] < s  # sorted, apart and not touching
    assert got_covered == covered


JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 70000)
    | st.floats(allow_nan=False)
    | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(MODELS), st.data())
def test_any_damage_to_a_profile_is_a_profile_error_never_a_crash(model, data):
    raw = raw_of(model)
    target = raw
    path = []
    while isinstance(target, (dict, list)) and target and data.draw(st.booleans()):
        key = data.draw(
            st.sampled_from(sorted(target) if isinstance(target, dict) else range(len(target)))
        )
        path.append(key)
        if not isinstance(target[key], (dict, list)):
            break
        target = target[key]
    replacement = data.draw(JSONISH)
    if path:
        holder = raw
        for k in path[:-1]:
            holder = holder[k]
        holder[path[-1]] = replacement
    else:
        raw = replacement
    try:
        pr.validate(raw, model + ".json", consume=data.draw(st.booleans()))
    except pr.ProfileError as e:
        assert e.errors and all(line.startswith(model + ".json: ") for line in e.errors)


SAMPLE = (Path(pr.profiles_dir()) / "sdm120.json").read_text()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(SAMPLE) - 1), st.sampled_from(["", ",", "}", "]", '"', "x", ":", "1"]))
def test_json_error_position_matches_cpython(pos, insert):
    text = SAMPLE[:pos] + insert + SAMPLE[pos + (1 if insert == "" else 0) :]
    try:
        json.loads(text)
        expected = None
    except json.JSONDecodeError as e:
        expected = e.pos
    offset, reason = jsonpos.locate(text)
    assert (offset if reason else None) == expected, (reason, text[max(0, pos - 20) : pos + 20])
