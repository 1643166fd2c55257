"""The firmware's flash log on the real MicroPython interpreter (compiled, 96 KB heap) on
littlefs: a torn write at every byte offset of a record loses that record and nothing else,
a crash between a batch and the state neither loses nor doubles readings, seq and boot
survive restarts, resent batches are identical, and the bound drops the oldest (counted)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mpy_build import run_check, shared_tree


@pytest.fixture(scope="module")
def tree() -> Path:
    return shared_tree()


def _check(tree: Path, tmp_path: Path, name: str) -> str:
    return run_check(tree, "mpy_flashlog_checks", tmp_path / "flash.img", name, 60)


def test_torn_write_at_every_byte_of_a_record_loses_only_that_record(tree, tmp_path) -> None:
    out = _check(tree, tmp_path, "torn_every_offset")
    assert (
        int(out.split()[-1]) == 3 * 52
    )  # 8 header + 2 count + 2 readings of 21 bytes  # every offset of the record, three ways


def test_crash_between_batch_file_and_state_loses_and_doubles_nothing(tree, tmp_path) -> None:
    _check(tree, tmp_path, "crash_between_batch_and_state")


def test_seq_boot_and_acks_survive_restarts_and_resends_are_identical(tree, tmp_path) -> None:
    _check(tree, tmp_path, "seq_boot_ack_persist")


def test_bound_drops_oldest_readings_and_counts_them(tree, tmp_path) -> None:
    _check(tree, tmp_path, "bound_drops_oldest")


def test_old_readings_go_out_as_historical(tree, tmp_path) -> None:
    _check(tree, tmp_path, "historical_flag")
