"""Fixtures of the end-to-end suite: the shared test modules it builds on (tests/edge's ground
truth matching, tests/firmware's .mpy build) and the tools it cannot run without."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edge.testing import find_mosquitto

HERE = Path(__file__).resolve().parent
for shared in (HERE.parent / "edge", HERE.parent / "firmware"):
    if str(shared) not in sys.path:
        sys.path.append(str(shared))


@pytest.fixture
def need_mosquitto() -> None:
    if find_mosquitto() is None:
        pytest.skip(
            reason="mosquitto is not installed (apt-get install mosquitto): skipped on a user's "
            "machine only, CI fails"
        )
