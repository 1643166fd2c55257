"""`python -m bench.codec --quick --json` runs and keeps the codec's promises: at most 3 bytes
per reading and at least 10 times smaller than ThingsBoard-style JSON."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_bench():
    proc = subprocess.run(
        [sys.executable, "-m", "bench.codec", "--quick", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "json/codec" in proc.stderr  # the table goes to stderr under --json
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_quick_json_keeps_the_size_promises():
    out = run_bench()
    assert out["benchmark"] == "codec" and out["quick"] is True
    assert out["quantities"] == 35 and out["readings"] == out["hours"] * 360 * 35
    assert 0 < out["bytes_per_reading"] <= 3.0
    assert out["json_bytes_per_reading"] >= 10 * out["bytes_per_reading"]
    assert out["hourly_bytes_per_reading"] < out["bytes_per_reading"]
    minute, hour = out["batches"]
    assert (minute["batch_minutes"], hour["batch_minutes"]) == (1, 60)
    for row in out["batches"]:
        for key in ("json", "json_zlib", "raw_zlib", "raw_lzma"):
            assert row[key + "_bytes_per_reading"] > 0
        # the codec beats deflated JSON on the same batches
        assert row["codec_bytes_per_reading"] < row["json_zlib_bytes_per_reading"]
    assert out["encode_readings_per_s"] > 10_000 and out["decode_readings_per_s"] > 10_000
    small = out["micropython_heap"][0]
    assert small["readings"] == 210 and small["ok"] and small["fits_64k"], small
    assert small["batch_bytes"] < 3 * 210
