"""`gatewayctl scan` is the edge scanner (edge/scan.py) behind gatewayctl's port checks: it
finds simulated meters (hw_sim) on an RS-485 PTY, and a missing port gets gatewayctl's clear
error instead of a traceback."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from conftest import run_cli

from hw_sim.scenario import Building

pytestmark = pytest.mark.timeout(60)


def test_scan_finds_the_meters_on_the_bus(sim_bus: Callable[..., Building]) -> None:
    bus = sim_bus("sdm630@1", "sdm630@3", baud=19200, parity="N")
    code, out, err = run_cli("scan", "--port", bus.bus().path, "--bauds", "19200",
                             "--parities", "N", "--units", "1-4", "--json", "--quiet")  # fmt: skip
    assert code == 0, err
    got = json.loads(out)
    assert (got["baud"], got["parity"]) == (19200, "N")
    assert [(u["unit"], u["model"]) for u in got["units"]] == [(1, "sdm630"), (3, "sdm630")]


def test_scan_on_a_missing_port_says_to_plug_the_adapter_in() -> None:
    code, _o, err = run_cli("scan", "--port", "/dev/ttyUSB98", "--units", "1")
    assert (
        code == 1
        and "no serial port /dev/ttyUSB98: is the board (or USB adapter) plugged in" in err
    )
