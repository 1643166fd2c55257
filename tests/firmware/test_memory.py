"""What the firmware does for its heap, on the real interpreter where it matters: the app
imported from a ROMFS image runs its bytecode in place (as on a board), plans are computed
once and kept compact, and the unix board's scaled clock that the benchmark's simulated day
runs on."""

from __future__ import annotations

import os
import subprocess

import pytest
from mpy_build import run_check, shared_tree, tool

from firmware.build import ram_report
from protocols.planner import Bus, Device, Item, Planner, due_items, plan


def test_app_imported_from_romfs_keeps_its_bytecode_out_of_the_heap() -> None:
    tree = shared_tree()
    rom = ram_report(tree, rom=True)
    files = ram_report(tree)
    assert [s[2] for s in rom["steps"]] == [None] * len(rom["steps"])  # every module imported
    rom_bytes, file_bytes = rom["steps"][-1][1], files["steps"][-1][1]
    # ~80 KB against ~140 KB on the 64-bit unix port: the difference is the bytecode
    assert rom_bytes < file_bytes - 40000, (rom_bytes, file_bytes)


def _reads() -> list[tuple[Item, int]]:
    reads = []
    for unit, interval in ((1, 1), (2, 2), (3, 5)):
        for k, addr in enumerate((0, 2, 4, 30, 70)):
            reads.append((Item((unit, f"q{k}"), unit, 4, addr, 2), interval))
    return reads


def test_precomputed_plans_are_the_plans_of_every_tick_in_the_callers_form() -> None:
    devices = {u: Device(readable={4: [(0, 80)]}) for u in (1, 2, 3)}
    bus = Bus(19200, 10)
    planner = Planner(_reads(), devices, bus)

    def convert(requests):  # type: ignore[no-untyped-def]
        return [("converted", r) for r in requests]

    assert planner.precompute(convert) is True
    assert planner.reads is None  # only the plans are kept
    for t in range(0, 25):
        want = plan(due_items(_reads(), t), devices, bus, None)
        assert planner.plan_for(t) == convert(want), t
    many = Planner([(Item((1, f"q{i}"), 1, 4, i * 2, 2), i + 1) for i in range(6)],
                   max_cached=4)  # fmt: skip
    assert many.precompute() is False and many.reads is not None  # too many due sets
    assert many.plan_for(6) == plan(due_items(many.reads, 6))


@pytest.mark.parametrize(
    "check", ["poller_plans_of_one_model_are_shared", "poller_keeps_int_and_float_scales_apart"]
)
def test_poller_shares_the_plans_of_meters_of_one_model(check, tmp_path) -> None:
    # checked in mpy_oom_checks.py, which has the poller's test doubles; at its heap size
    run_check(shared_tree(), "mpy_oom_checks", tmp_path / "flash.img", check, 60, heap="128K")


def test_unix_board_clock_scale_runs_the_gateway_clock_faster() -> None:
    tree = shared_tree()
    code = (
        "import time\n"
        "from firmware.boards import load\n"
        "b = load('unix', {'clock_scale': 100})\n"
        "t0, r0 = b.utc_ms(), time.ticks_ms()\n"
        "time.sleep_ms(200)\n"
        "print(b.utc_ms() - t0, time.ticks_diff(time.ticks_ms(), r0))\n"
    )
    out = subprocess.run(
        [tool("micropython"), "-c", code],
        env=dict(os.environ, MICROPYPATH=f"{tree}:.frozen"),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    simulated_ms, real_ms = int(out[0]), int(out[1])
    assert 100 * (real_ms - 5) <= simulated_ms <= 100 * (real_ms + 5), out
