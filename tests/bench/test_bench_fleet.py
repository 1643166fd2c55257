"""`python -m bench.fleet --quick --json` runs end to end (fleet serve with Mosquitto on SQLite
and PostgreSQL, the raw broker baseline, disk size, a 500-gateway rollout) and its figures
hold together: every key the issue asks for, nothing refused or lost, the baselines where
physics puts them. Targets are not asserted here (they are for the full run on a quiet
machine); the invariants are."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEYS = (
    "sqlite_readings_per_s",
    "postgres_readings_per_s",
    "broker_raw_ratio",
    "ack_p50_ms",
    "ack_p99_ms",
    "disk_bytes_per_reading",
    "rollout_10k_s",
)


def run_bench():
    proc = subprocess.run(
        [sys.executable, "-m", "bench.fleet", "--quick", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "ingest end to end, SQLite" in proc.stderr  # the table goes to stderr under --json
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_quick_run_reports_consistent_figures():
    out = run_bench()
    assert out["benchmark"] == "fleet" and out["quick"] is True
    assert out["machine"]["cpus"] and out["date_utc"]
    for key in KEYS:
        assert key in out, key
    assert set(out["targets"]) == {
        "sqlite_readings_per_s",
        "broker_raw_ratio",
        "disk_bytes_per_reading",
        "rollout_10k_s",
    }

    # Ingest: every batch acked (the bench raises otherwise); the broker alone is faster than
    # broker + fleet + database, and the ratio is the ratio of the two rates.
    assert out["ingest_readings"] == out["ingest_gateways"] * out["plan"]["batches"] * 220
    assert out["duplicate_acks"] == 0  # one ack per batch, none for a batch not in flight
    assert 0 < out["sqlite_readings_per_s"] < out["broker_raw_readings_per_s"]
    ratio = out["sqlite_readings_per_s"] / out["broker_raw_readings_per_s"]
    assert abs(out["broker_raw_ratio"] - ratio) < 1e-3
    assert out["baseline"]["broker_raw_readings_per_s"] == out["broker_raw_readings_per_s"]
    assert 0 < out["ack_p50_ms"] <= out["ack_p99_ms"]
    assert 0 < out["ack_p50_ms_saturated"] <= out["ack_p99_ms_saturated"]
    if out["postgres_readings_per_s"] is None:  # only where PostgreSQL is not reachable
        assert os.environ.get("CI", "").lower() != "true", out.get("postgres_skipped")
        assert out["postgres_skipped"]
    else:
        assert 0 < out["postgres_readings_per_s"] < out["broker_raw_readings_per_s"]
        assert 0 < out["postgres_ack_p50_ms"] <= out["postgres_ack_p99_ms"]

    # Disk: a day of readings all stored and compacted; blocks + aggregates far below one row
    # per reading, and the per-table figures add up to the file.
    assert out["disk_days"] == 1.0 and out["disk_readings"] == 2 * 8640 * 20
    assert 0 < out["disk_bytes_per_reading"] < out["naive_disk_bytes_per_reading"] / 5
    tables = out["disk_per_table_bytes_per_reading"]
    assert tables["telemetry_blocks"] > 0 and tables["telemetry_15min"] > 0
    assert abs(sum(tables.values()) - out["disk_bytes_per_reading"]) < 0.05

    # Rollout: 500 gateways, every one applied; the fleet cannot beat the bare broker round
    # trip, and each gateway could hold its connection (file limit of the broker).
    assert out["rollout_gateways"] == 500
    assert out["rollout_stages"] == round(1 / out["rollout_batch_share"])
    assert 0 < out["rollout_raw_round_s"] < out["rollout_10k_s"]
    assert out["rollout_create_request_s"] < out["rollout_10k_s"]
    assert out["rollout_broker_fd_limit"] > out["rollout_gateways"]
