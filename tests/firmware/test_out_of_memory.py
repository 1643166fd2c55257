"""The firmware when the heap or the flash runs short (issue #6), on the real MicroPython
interpreter (compiled modules; tests/firmware/mpy_oom_checks.py): the poller keeps polling
through MemoryErrors and counts what it could not keep, the flash log loses no reading and
writes no record after a torn one when a flush fails, and a desired configuration the heap
cannot check costs one restart, not one on every delivery of the retained message."""

from __future__ import annotations

from pathlib import Path

import pytest
from mpy_build import run_check, shared_tree


@pytest.fixture(scope="module")
def tree() -> Path:
    return shared_tree()


# Not the usual 96K: meter profiles loaded from .mpy files and this checks module, compiled
# from source on the interpreter, need more; the checks make the heap or flash fail on purpose.
HEAP = "128K"


def _check(tree: Path, tmp_path: Path, name: str) -> str:
    return run_check(tree, "mpy_oom_checks", tmp_path / "flash.img", name, 60, heap=HEAP)


def test_poller_stores_the_tick_after_retrying_a_failed_append(tree, tmp_path) -> None:
    _check(tree, tmp_path, "poller_retries_append")


def test_poller_retries_a_decode_that_ran_out_of_memory(tree, tmp_path) -> None:
    _check(tree, tmp_path, "poller_retries_decode")


def test_poller_counts_readings_it_cannot_store_and_keeps_polling(tree, tmp_path) -> None:
    _check(tree, tmp_path, "poller_drops_and_goes_on")


def test_poller_run_survives_a_tick_that_runs_out_of_memory(tree, tmp_path) -> None:
    _check(tree, tmp_path, "poller_run_survives_a_failing_tick")


def test_buffer_loses_nothing_when_a_record_write_is_torn(tree, tmp_path) -> None:
    _check(tree, tmp_path, "buffer_torn_write_loses_nothing")


def test_buffer_retries_a_flush_that_ran_out_of_memory(tree, tmp_path) -> None:
    _check(tree, tmp_path, "buffer_memory_error_at_flush_is_retried")


def test_buffer_keeps_ram_readings_while_the_flash_fails(tree, tmp_path) -> None:
    _check(tree, tmp_path, "buffer_failing_flash_keeps_ram_readings")


def test_buffer_counts_readings_of_a_long_append_it_cannot_keep(tree, tmp_path) -> None:
    _check(tree, tmp_path, "buffer_long_append_counts_what_it_cannot_keep")


def test_config_given_up_for_memory_costs_one_restart_not_one_per_delivery(tree, tmp_path) -> None:
    _check(tree, tmp_path, "config_given_up_restarts_once")
