"""The portable tests of protocols/ run again on the real MicroPython interpreter, with the
heap of a small board (-X heapsize=64K), exactly as ARCHITECTURE requires of protocols/."""

import subprocess
from pathlib import Path

import pytest

PORTABLE = Path(__file__).resolve().parent.parent / "portable"
MODULES = sorted(p.name for p in PORTABLE.glob("test_*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_portable_module_passes_on_micropython(micropython_bin, module):
    proc = subprocess.run(
        [micropython_bin, "-X", "heapsize=64K", str(PORTABLE / "mpy_runner.py"), module],
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    last = out.strip().splitlines()[-1]
    assert last.endswith(" 0 failed") and not last.startswith("0 passed"), out


def test_portable_tests_exist():
    assert MODULES, "no portable tests found"
