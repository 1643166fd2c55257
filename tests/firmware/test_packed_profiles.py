"""Meters load on the gateway from the packed profiles the build writes (protocols/profile_pack.py)
exactly as from the JSON files, without the JSON parser and validator, and keep less heap."""

from __future__ import annotations

import json
import subprocess

from mpy_build import micropython, shared_tree

from protocols import profile_pack, profiles


def _load(how: str, models: list[str]) -> dict:  # type: ignore[type-arg]
    proc = micropython(shared_tree(), "mpy_profile_checks", how, *models, heap="512K",
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_the_compiled_tree_carries_a_packed_profile_of_every_bundled_model() -> None:
    folder = shared_tree() / "protocols" / "profiles"
    for model in profiles.bundled_profiles():
        text = (folder / (model + profile_pack.SUFFIX)).read_text()
        assert profile_pack.unpack(text).quantities == profiles.load_profile(model).quantities


def test_packed_and_json_profiles_give_the_poller_the_same_meters() -> None:
    models = profiles.bundled_profiles()
    packed = _load("packed", models)  # fails if it reaches the JSON loader
    from_json = _load("json", models)
    assert len(packed["meters"]) == len(models)
    assert packed["meters"] == from_json["meters"]
    # one str per distinct type/order/unit, no validator leftovers
    assert packed["kept"] < from_json["kept"], (packed["kept"], from_json["kept"])
