"""edge scan and edge read against a simulated RS-485 bus: the scan finds the line settings,
the units and their models; read prints every quantity with its unit, as a table or JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from edge.cli import main
from hw_sim.scenario import Building
from protocols.profiles import load_profile

METERS = [
    {"name": "m3", "profile": "sdm630", "unit": 3},
    {"name": "m7", "profile": "sdm72dm", "unit": 7},
    {"name": "m12", "profile": "iem3255", "unit": 12},
]


@pytest.fixture(scope="module")
def bus() -> Iterator[Building]:
    with Building({"bus": [{"name": "b1", "baud": 19200, "parity": "N", "meter": METERS}]}) as b:
        yield b


def test_scan_finds_baud_units_and_models(
    bus: Building, capsys: pytest.CaptureFixture[str]
) -> None:
    path = bus.bus().path
    code = main(["scan", "--port", path, "--units", "1-14", "--bauds", "9600,19200",
                 "--parities", "N", "--json", "--quiet"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (out["baud"], out["parity"]) == (19200, "N")
    assert [(u["unit"], u["model"]) for u in out["units"]] == [
        (3, "sdm630"), (7, "sdm72dm"), (12, "iem3255"),
    ]  # fmt: skip
    # 9600 was tried first (units 1-10 only), then 19200 found unit 3 and kept that setting
    assert bus.truth.events(event="wrong_line_settings")


def test_scan_table_and_nothing_found(bus: Building, capsys: pytest.CaptureFixture[str]) -> None:
    path = bus.bus().path
    assert (
        main(["scan", "--port", path, "--units", "3", "--bauds", "19200", "--parities", "N"]) == 0
    )
    out = capsys.readouterr().out
    assert "1 meter(s) at 19200 baud 8N1" in out and "Eastron SDM630" in out
    assert (
        main(["scan", "--port", path, "--units", "4-5", "--bauds", "19200", "--parities", "N"]) == 1
    )
    assert "No meter answered" in capsys.readouterr().out


def test_read_prints_every_quantity_with_unit(
    bus: Building, capsys: pytest.CaptureFixture[str]
) -> None:
    path = bus.bus().path
    code = main(["read", "--port", path, "--unit", "3", "--profile", "sdm630", "--baud", "19200",
                 "--parity", "N"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines()[3:]}
    truth = bus.truth.latest("m3")
    assert len(lines) == len(truth) == len(load_profile("sdm630").quantities)
    v = truth["voltage_l1"]
    assert lines["voltage_l1"] == [f"{v:.1f}", "V"]
    assert lines["energy_import"][1] == "Wh"


def test_read_json_matches_ground_truth(bus: Building, capsys: pytest.CaptureFixture[str]) -> None:
    path = bus.bus().path
    code = main(["read", "--port", path, "--unit", "7", "--profile", "sdm72dm", "--baud", "19200",
                 "--parity", "N", "--json"])  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {k: v["value"] for k, v in doc["values"].items()} == bus.truth.latest("m7")
    assert doc["values"]["power_total"]["unit"] == "W"


def test_read_errors_tell_the_technician_what_to_check(
    bus: Building, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    path = bus.bus().path
    assert main(["read", "--port", path, "--unit", "4", "--profile", "sdm630", "--baud", "19200",
                 "--parity", "N", "--timeout-ms", "100"]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert "unit 4" in err and "did not answer" in err and "check wiring" in err
    assert main(["read", "--port", "/dev/ttyNOPE0", "--unit", "1", "--profile", "sdm630"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["read", "--port", path, "--unit", "1", "--profile", "nosuchmeter"]) == 2
    assert "known models" in capsys.readouterr().err


def test_help_is_enough_on_its_own(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in ("scan", "read", "status", "run"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
    out = capsys.readouterr().out
    assert "edge scan --port /dev/ttyUSB0" in out and "--profile" in out
