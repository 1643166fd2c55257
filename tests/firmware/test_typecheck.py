"""The firmware type-checks with mypy against the MicroPython stubs of each board it ships to
(firmware/build.py typecheck; scripts/bootstrap.sh installs the stubs into .cache/stubs)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from firmware.build import ROOT, typecheck


@pytest.mark.parametrize("board", ["esp32", "rp2"])
def test_firmware_type_checks_against_the_boards_stubs(board: str, capfd) -> None:  # type: ignore[no-untyped-def]
    stubs = ROOT / ".cache" / "stubs" / board
    mypy = Path(sys.executable).parent / "mypy"
    if not (stubs / "machine.pyi").exists() or not mypy.exists():
        pytest.skip(reason=f"no stubs in {stubs} or no mypy: run scripts/bootstrap.sh "
                    "(skipped on a user's machine only, CI fails)")  # fmt: skip
    status = typecheck(board, stubs, str(mypy))
    out = capfd.readouterr().out
    assert status == 0, out
    assert "Success: no issues found" in out, out
