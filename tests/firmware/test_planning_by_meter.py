"""The poller plans one meter at a time on the real interpreter (tests/firmware/
mpy_plan_checks.py): the plans are those of planning every meter together, a loaded meter
holds no Items until it is planned, and the planner plans each due set once."""

from __future__ import annotations

import pytest
from mpy_build import run_check, shared_tree


@pytest.mark.parametrize(
    "check",
    [
        "poller_plans_meter_by_meter_as_all_together",
        "meters_hold_no_items_until_planned",
        "planner_plans_each_due_set_once",
    ],
)
def test_start_up_planning(check, tmp_path) -> None:
    run_check(shared_tree(), "mpy_plan_checks", tmp_path / "unused", check, 60, heap="512K")
