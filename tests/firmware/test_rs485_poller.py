"""The firmware's RS-485 Modbus master and poller on the real MicroPython interpreter (compiled
modules, 96 KB heap) against hw_sim meters on a PTY: values equal the simulator's ground truth,
timestamps sit on the wall-clock ticks, a silent meter is counted and backed off."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from mpy_build import micropython, shared_tree

from hw_sim.faults import LateAnswers
from protocols.quantities import channel_id

QUANTITIES = ["voltage_l1", "current_l1", "power_total", "energy_import", "frequency"]


@pytest.fixture(scope="module")
def tree() -> Path:
    return shared_tree()


def _run(tree: Path, tmp: Path, cfg: dict[str, Any], what: str = "poll") -> tuple[list, dict]:
    path = tmp / "cfg.json"
    path.write_text(json.dumps(cfg))
    # 112K, not 96K: protocols modules loaded as .mpy take ~60 KB of a 64-bit heap here
    # (frozen into flash on a board); at 96K the poller alone runs but fragments.
    proc = micropython(tree, "firmware.hil", what, str(path), heap="112K", stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=cfg["duration_s"] + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "Traceback" not in err, out + err
    readings: list = []
    stats: dict = {}
    for line in out.splitlines():
        obj = json.loads(line)
        if "r" in obj:
            readings.append(obj["r"])
        else:
            stats = obj["stats"]
    return readings, stats


def _bus(path: str, **kw: Any) -> dict[str, Any]:
    bus = {"type": "rtu", "id": "b1", "port": path, "baud": 19200, "parity": "N",
           "stopbits": 1, "timeout_ms": 200, "retries": 1}  # fmt: skip
    bus.update(kw)
    return bus


def _by_channel_truth(building: Any, ids: dict[str, int]) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for r in building.truth.values():
        if r["quantity"] in QUANTITIES and r["source"] in ids:
            out.setdefault(channel_id(ids[r["source"]], r["quantity"]), []).append(r["value"])
    return out


def _assert_matches_truth(got: dict[int, list[Any]], truth: dict[int, list[Any]]) -> None:
    """Every value read equals the one served, in order; the process may stop after the
    meter served the last answer and before the firmware read it (one value short)."""
    assert set(got) == set(truth)
    for ch, vals in got.items():
        assert vals == truth[ch][: len(vals)], ch
        assert len(truth[ch]) - len(vals) <= 1, ch


def _by_channel(calls: list) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for call in calls:
        for ch, _ts, v in call:
            out.setdefault(ch, []).append(v)
    return out


def test_polled_values_equal_ground_truth_on_aligned_ticks(sim_bus, tree, tmp_path) -> None:
    b = sim_bus({"name": "m1", "profile": "sdm630", "unit": 1},
                {"name": "m2", "profile": "sdm72dm", "unit": 2}, baud=19200, parity="N")  # fmt: skip
    meters = [
        {"id": 11, "name": "m1", "bus": "b1", "unit": 1, "profile": "sdm630",
         "interval_s": 1, "quantities": QUANTITIES},
        {"id": 12, "name": "m2", "bus": "b1", "unit": 2, "profile": "sdm72dm", "interval_s": 2,
         "quantities": ["power_total", "energy_import"]},
    ]  # fmt: skip
    calls, stats = _run(tree, tmp_path, {"buses": [_bus(b.bus().path)], "meters": meters,
                                         "duration_s": 4.5})  # fmt: skip
    assert len(calls) >= 4, stats  # m1 every second, m2 every other second
    for call in calls:
        ts = {r[1] for r in call}
        assert len(ts) == 1 and next(iter(ts)) % 1000 == 0  # one tick per append, on the second
    m2_ts = {r[1] for call in calls for r in call if r[0] >> 8 == 12}
    assert m2_ts and all(t % 2000 == 0 for t in m2_ts)
    got = _by_channel(calls)
    truth = _by_channel_truth(b, {"m1": 11, "m2": 12})
    _assert_matches_truth(got, truth)
    assert set(got) == {channel_id(11, q) for q in QUANTITIES} | {
        channel_id(12, q) for q in ("power_total", "energy_import")
    }
    assert stats["11"]["polls_ok"] >= 4 and stats["11"]["polls_failed"] == 0
    assert stats["12"]["timeouts"] == 0 and stats["b1"]["ticks_missed"] == 0
    assert stats["mem_free"] > 0


def test_silent_meter_is_counted_and_backed_off_while_others_keep_schedule(
    sim_bus, tree, tmp_path
) -> None:
    b = sim_bus({"name": "m1", "profile": "sdm630", "unit": 1}, baud=19200, parity="N")
    meters = [
        {"id": 11, "name": "m1", "bus": "b1", "unit": 1, "profile": "sdm630",
         "interval_s": 1, "quantities": ["power_total"]},
        {"id": 13, "name": "ghost", "bus": "b1", "unit": 9, "profile": "sdm630",
         "interval_s": 1, "quantities": ["power_total"]},
    ]  # fmt: skip
    calls, stats = _run(tree, tmp_path, {"buses": [_bus(b.bus().path, timeout_ms=100)],
                                         "meters": meters, "duration_s": 5.5})  # fmt: skip
    ghost = stats["13"]
    # first failure retried once, then backoff: 1 s, 2 s ... so far fewer than 1 try per tick
    assert ghost["polls_ok"] == 0 and ghost["timeouts"] >= 3
    assert ghost["polls_failed"] <= 4 and "did not answer" in ghost["last_error"]
    assert stats["11"]["polls_ok"] >= 5 and stats["11"]["polls_failed"] == 0
    _assert_matches_truth(_by_channel(calls), _by_channel_truth(b, {"m1": 11}))


@pytest.mark.parametrize("retries", [1, 0])
def test_a_late_answer_never_passes_for_the_answer_to_another_request(
    sim_bus, tree, tmp_path, retries
) -> None:
    # The meter answers some requests 100 ms past its turnaround; the firmware waits 80 ms.
    # The four requests have answers of one shape and RTU answers carry no request id, so
    # only silence on the line keeps the late answer (or, after a retry, the retry's own
    # answer) from being taken for the next request's: a voltage stored as a power.
    names = ["voltage_l1", "power_total", "voltage_l1_l2", "energy_import_l1"]
    b = sim_bus({"name": "m1", "profile": "sdm630", "unit": 1}, baud=38400, parity="N")
    b.bus().meters[1].faults = LateAnswers(100)
    meters = [{"id": 11, "name": "m1", "bus": "b1", "unit": 1, "profile": "sdm630",
               "interval_s": 1, "quantities": names}]  # fmt: skip
    bus = _bus(b.bus().path, baud=38400, timeout_ms=80, retries=retries)
    calls, stats = _run(tree, tmp_path, {"buses": [bus], "meters": meters, "duration_s": 6.5})
    served: dict[int, list[Any]] = {}
    for r in b.truth.values("m1"):
        served.setdefault(channel_id(11, r["quantity"]), []).append(r["value"])
    # A late answer to the run's very last request may be cut short by the run's end before
    # the firmware's wait for it ran out: count those the meter served requests after.
    last_served = max(r["ts_ms"] for r in b.truth.values("m1"))
    late = sum(f["ts_ms"] < last_served for f in b.truth.faults("m1", fault="late_answer"))
    got = _by_channel(calls)
    for ch, vals in got.items():
        # each reading a value served for its own quantity, in order, none twice (after a
        # late answer the meter served the request twice: the firmware keeps one of them)
        left = iter(served[ch])
        assert all(v in left for v in vals), (ch, vals, served[ch])
    assert late >= 2 and stats["11"]["timeouts"] >= late, (late, stats)
    assert {ch: len(v) >= 3 for ch, v in got.items()} == {channel_id(11, n): True for n in names}
