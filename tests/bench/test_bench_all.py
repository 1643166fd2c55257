"""`python -m bench.all` runs each benchmark module in its own process, collects the JSON on its
last line, reports a failing one without stopping the others, and writes the figures (with
their baselines and targets side by side, the machine and the date) between the markers of the
benchmarks page, leaving the hand-written text around them alone. Fake benchmark modules keep
this fast; the real ones are run by their own tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench import all as bench_all

ROOT = Path(__file__).resolve().parents[2]

FAKE_OK = """
import json, sys
print("a table for people", file=sys.stderr)
print("some progress on stdout")
print(json.dumps({"benchmark": "fake", "quick": "--quick" in sys.argv, "machine": {},
                  "readings_per_s": 123456.7, "bytes_per_reading": 1.27,
                  "baseline_bytes_per_reading": 23.9, "baseline": {"readings_per_s": 1000},
                  "targets": {"bytes_per_reading": 3}, "stages": list(range(100)),
                  "argv": sys.argv[1:]}))
"""
FAKE_BROKEN = """
import sys
print("starting")
sys.exit("the broker could not be started")
"""
PAGE = """# Benchmarks

Hand-written explanations that must stay.

<!-- bench.all:begin -->
old generated figures
<!-- bench.all:end -->

## More prose

Also stays.
"""


def run_all(tmp_path: Path, *args: str) -> tuple[int, dict, str]:
    (tmp_path / "fake_ok.py").write_text(FAKE_OK)
    (tmp_path / "fake_broken.py").write_text(FAKE_BROKEN)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    proc = subprocess.run(
        [sys.executable, "-m", "bench.all", "--json", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_collects_results_writes_the_marked_section_and_keeps_the_prose(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text(PAGE)
    code, out, err = run_all(tmp_path, "--quick", "--modules", "fake_ok", "--out", str(page))
    assert code == 0, err
    assert out["benchmark"] == "all" and out["quick"] is True and out["failed"] == []
    result = out["results"]["fake_ok"]
    assert result["readings_per_s"] == 123456.7 and result["argv"] == ["--json", "--quick"]
    assert result["elapsed_s"] >= 0
    assert "a table for people" in err  # each benchmark's table reaches the user
    assert out["machine"]["cores"] == os.cpu_count() and out["machine"]["ram_gib"] > 0
    text = page.read_text()
    assert text.startswith("# Benchmarks\n\nHand-written explanations that must stay.\n")
    assert text.endswith("## More prose\n\nAlso stays.\n")
    assert "old generated figures" not in text
    section = text[text.index(bench_all.BEGIN) : text.index(bench_all.END)]
    assert out["date_utc"] in section and f"{os.cpu_count()} cores" in section
    assert "quick" in section
    # figure, value, baseline of the same run, target: side by side
    assert "| `bytes_per_reading` | 1.27 | 23.9 | 3 |" in section
    assert "| `readings_per_s` | 123,457 | 1,000 |  |" in section
    assert "`stages`" not in section  # too long for a cell: in the JSON only


def test_a_failing_benchmark_is_reported_and_the_others_still_run(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\nProse only, no markers yet.\n")
    code, out, err = run_all(tmp_path, "--modules", "fake_broken,fake_ok", "--out", str(page))
    assert code == 1
    assert out["failed"] == ["fake_broken"] and out["quick"] is False
    assert "exit status 1" in out["results"]["fake_broken"]["error"]
    assert out["results"]["fake_ok"]["argv"] == ["--json"]  # a full run: no --quick
    text = page.read_text()
    assert text.startswith("# Benchmarks\n\nProse only, no markers yet.\n")
    assert bench_all.BEGIN in text and bench_all.END in text  # appended at the end
    assert "### fake_broken\n\nFailed: exit status 1" in text
    assert "### fake_ok" in text


def test_quick_runs_write_no_page_unless_asked(tmp_path: Path) -> None:
    code, out, err = run_all(tmp_path, "--quick", "--modules", "fake_ok")
    assert code == 0 and out["written"] is None
    assert "figures written" not in err


def test_markers_in_the_wrong_order_are_an_error_that_says_what_to_fix(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text(f"# B\n{bench_all.END}\n{bench_all.BEGIN}\n")
    code, out, err = run_all(tmp_path, "--modules", "fake_ok", "--out", str(page))
    assert code == 1 and str(page) in out["failed"]
    assert "must both be there, in this order" in err
    assert page.read_text() == f"# B\n{bench_all.END}\n{bench_all.BEGIN}\n"  # untouched
