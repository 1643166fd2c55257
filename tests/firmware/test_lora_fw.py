"""The firmware's LoRa receiver on the real MicroPython interpreter (compiled, 96 KB heap)
against hw_sim's RAK3172 on a PTY: it switches the factory-new module to P2P, receives, and
the readings equal the values the simulated sensors logged; duplicates are dropped and
counted; unconfigured senders are ignored."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from mpy_build import micropython, shared_tree

from hw_sim.pytest_plugin import wait_for
from protocols.quantities import channel_id

P2P = {"frequency_hz": 868100000, "spreading_factor": 9, "bandwidth_khz": 125}


@pytest.fixture(scope="module")
def tree() -> Path:
    return shared_tree()


def _receive(tree: Path, tmp_path: Path, building: Any, cfg: dict[str, Any], sends: list[str]):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    radio = building.radio()
    proc = micropython(tree, "firmware.hil", "lora", str(path), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)  # fmt: skip
    try:
        wait_for(lambda: radio.listening or proc.poll() is not None, 10.0)
        time.sleep(0.2)
        for name in sends:
            radio.send_now(name)
            time.sleep(0.05)
        out, err = proc.communicate(timeout=cfg["duration_s"] + 20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "Traceback" not in err, out + err
    readings = []
    stats: dict[str, Any] = {}
    for line in out.splitlines():
        obj = json.loads(line)
        if "r" in obj:
            readings.extend(obj["r"])
        else:
            stats = obj["stats"]
    return readings, stats


def _truth(building: Any, name: str, device_id: int) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for r in building.truth.values(name):
        if r["index"] == min(x["index"] for x in building.truth.values(name, counter=r["counter"])
                             if x["quantity"] == r["quantity"]):  # fmt: skip
            out.setdefault(channel_id(device_id, r["quantity"]), []).append(r["value"])
    return out


def test_received_readings_equal_what_the_sensors_sent(sim_radio, tree, tmp_path) -> None:
    b = sim_radio(
        {"name": "room", "kind": "room_climate", "format": "cayenne_lpp", "address": "5E000001"},
        {"name": "water", "kind": "water_meter", "format": "elsys", "address": "5E000002"},
        {"name": "stranger", "kind": "room_climate", "format": "elsys", "address": "5E0000FF"},
        **P2P,
    )
    cfg = {
        "lora": {"port": b.radio().path, **P2P},
        "sensors": [
            {"id": 21, "name": "room", "address": "5e000001", "format": "cayenne_lpp"},
            {"id": 22, "name": "water", "address": "5E000002", "format": "elsys"},
        ],
        "duration_s": 4.0,
    }
    readings, stats = _receive(tmp_path=tmp_path, tree=tree, building=b, cfg=cfg,
                               sends=["room", "water", "stranger", "room"])  # fmt: skip
    got: dict[int, list[Any]] = {}
    for ch, ts, v in readings:
        got.setdefault(ch, []).append(v)
        assert abs(ts - time.time() * 1000) < 60000  # receive time, UTC ms
    want = {**_truth(b, "room", 21), **_truth(b, "water", 22)}
    assert want and got == want
    assert stats["sensors"]["21"]["frames"] == 2 and stats["sensors"]["22"]["frames"] == 1
    assert stats["sensors"]["21"]["rssi_dbm"] < 0
    assert stats["unknown_senders"] == {"5E0000FF": 1} and stats["module_error"] is None


def test_duplicated_packets_are_dropped_and_counted(sim_radio, tree, tmp_path) -> None:
    b = sim_radio(
        {"name": "room", "kind": "room_climate", "format": "cayenne_lpp", "address": "5E000001",
         "faults": [{"kind": "duplicated", "rate": 1.0}]},
        **P2P,
    )  # fmt: skip
    cfg = {
        "lora": {"port": b.radio().path, **P2P},
        "sensors": [{"id": 21, "name": "room", "address": "5E000001", "format": "cayenne_lpp"}],
        "duration_s": 3.0,
    }
    readings, stats = _receive(tmp_path=tmp_path, tree=tree, building=b, cfg=cfg,
                               sends=["room", "room"])  # fmt: skip
    st = stats["sensors"]["21"]
    assert st["frames"] == 2 and st["duplicates"] == 2
    got: dict[int, list[Any]] = {}
    for ch, _ts, v in readings:
        got.setdefault(ch, []).append(v)
    assert got == _truth(b, "room", 21)
