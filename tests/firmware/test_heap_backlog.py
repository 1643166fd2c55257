"""Hardware in the loop on a small heap: the firmware run from a ROMFS image as on a board
(firmware/romrun.py) at BACKLOG_HEAP, against hw_sim meters, a real Mosquitto and an
acknowledging fleet stand-in. A broker outage builds a backlog on flash; once the broker is
back, the backlog drains in order, nothing lost, nothing doubled, even when the heap is too
fragmented for a full batch (the uplink takes smaller ones instead of reconnecting over and
over). Budget: under 20 s."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from mpy_build import run_check, shared_tree
from test_hil import (
    Gateway,
    Harness,
    _sync,
    assert_outage_drained_in_order,
    broker_outage,
    config_doc,
    settings_for,
)

from firmware import romrun

# The smallest heap the whole app starts in from ROMFS on the 64-bit unix port (~82 KB of
# it is the app's own objects after import). FW_BACKLOG_HEAP overrides.
BACKLOG_HEAP = os.environ.get("FW_BACKLOG_HEAP", "144K")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("romfs") / "app.romfs"
    path.write_bytes(romrun.build_image(shared_tree()))
    return path


class RomGateway(Gateway):
    """The gateway started as a board starts it: bytecode in place from a ROMFS image."""

    def __init__(self, image: Path, workdir: Path, settings: dict, heap: str) -> None:
        super().__init__(workdir, workdir, settings, heap)
        self.image = image

    def start(self) -> None:
        self.starts += 1
        cmd = romrun.command(self.image, self.heap, "firmware.run_unix", self.data,
                             self.settings_path)  # fmt: skip
        with self.log.open("ab") as log:
            log.write(b"--- start %d\n" % self.starts)
            self.proc = subprocess.Popen(
                cmd, cwd=str(self.data.parent), stdout=log, stderr=subprocess.STDOUT
            )


@_sync
async def test_backlog_of_an_outage_drains_on_a_small_heap(
    image, broker, sim_bus, tmp_path
) -> None:
    b = sim_bus("sdm630@1", "sdm630@2", baud=19200, parity="N")
    doc = config_doc(b.bus().path)
    for m in doc["meters"]:
        del m["quantities"]  # every quantity of the profile: a backlog of many readings
    doc["uplink"] = {"batch_interval_s": 1, "max_batch_readings": 400}
    gw = RomGateway(image, tmp_path, settings_for(broker, doc), BACKLOG_HEAP)
    async with Harness(broker) as h:
        outage = await broker_outage(
            h, gw, broker, 15, 12, 1000, "the backlog drained and live readings after the outage"
        )
    out = gw.output()
    assert "out of memory; reconnecting" not in out, out[-3000:]
    assert_outage_drained_in_order(h.rx, outage)


def _check(tmp_path: Path, name: str) -> None:
    run_check(shared_tree(), "mpy_heap_checks", tmp_path / "flash", name, 30)


def test_uplink_takes_smaller_batches_on_a_fragmented_heap(tmp_path) -> None:
    _check(tmp_path, "uplink_halves")


def test_a_desired_config_without_heap_is_retried_then_checked_after_a_restart(tmp_path) -> None:
    _check(tmp_path, "config_memory")
