"""Fixtures of the firmware tests: a Mosquitto of the test's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.testing import Mosquitto, find_mosquitto


@pytest.fixture
def broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    if find_mosquitto() is None:
        pytest.skip(reason="mosquitto is not installed: skipped on a user's machine only, CI fails")
    b = Mosquitto(tmp_path / "broker")
    b.start()
    try:
        yield b
    finally:
        b.stop()
