"""The batch size cap on the real MicroPython interpreter (compiled, 96 KB heap) on
littlefs: the flash log hands out at most 96 readings a batch (its encode buffer is sized by
that), encoded from the records where they lie to the same bytes the codec makes of a plain
list, and the uplink keeps live data live when one interval fills more than one batch."""

from __future__ import annotations

from pathlib import Path

import pytest
from mpy_build import run_check, shared_tree

from protocols.codec import encode_batch


@pytest.fixture(scope="module")
def tree() -> Path:
    return shared_tree()


NOW_MS = 1767225600000


def _readings(n: int) -> list[tuple[int, int, float | int]]:
    out: list[tuple[int, int, float | int]] = []
    for i in range(n):
        row, q = divmod(i, 40)
        dev, code = divmod(q, 10)
        v = 2300 + i if code < 6 else (i % 50) + 0.5
        out.append(((dev + 1) << 8 | (code + 1), NOW_MS - 60000 + row * 1000, v))
    return out


def test_log_batches_hold_at_most_96_readings_encoded_as_the_codec_does(tree, tmp_path) -> None:
    out = run_check(tree, "mpy_batch_checks", tmp_path / "flash.img", "log_caps_batches", 60)
    batches = [line.split() for line in out.splitlines() if line.startswith("batch ")]
    assert [int(b[2]) for b in batches] == [96, 96, 8]
    want = _readings(200)
    at = 0
    for _, seq, count, payload in batches:
        n = int(count)
        assert bytes.fromhex(payload) == encode_batch(int(seq), want[at : at + n], False), seq
        at += n


def test_uplink_sends_an_interval_that_fills_two_batches_at_once(tree, tmp_path) -> None:
    run_check(tree, "mpy_batch_checks", tmp_path / "flash.img",
              "uplink_sends_full_batches_back_to_back", 60)  # fmt: skip
