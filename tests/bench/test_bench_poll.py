"""`python -m bench.poll --quick --json` runs and its JSON holds the promised keys and bounds."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PEERS = ["naive", "esphome"] + [
    "telegraf_" + s for s in ("none", "shrink", "rearrange", "aggressive", "max_insert")
]
PLAN_KEYS = {"requests", "registers", "bus_ms", "refused_requests", "values_lost", "valid"}


def run_bench():
    proc = subprocess.run(
        [sys.executable, "-m", "bench.poll", "--quick", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "tg_max_insert" in proc.stderr  # the table goes to stderr under --json
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_quick_json_has_the_promised_keys_and_bounds():
    out = run_bench()
    assert out["benchmark"] == "poll" and out["quick"] is True
    assert out["baud"] == 9600 and out["bits_per_char"] == 11
    assert {"python", "platform", "machine"} <= set(out["machine"])
    assert out["date_utc"].endswith("+00:00")
    bundled = sorted(p.stem for p in (ROOT / "protocols" / "profiles").glob("*.json"))
    assert [p["model"] for p in out["profiles"]] == bundled
    for p in out["profiles"]:
        planner = p["planner"]
        assert set(planner) >= PLAN_KEYS and planner["valid"], p["model"]
        assert planner["requests"] <= p["quantities"] == p["naive"]["requests"]
        for peer in PEERS:
            assert set(p[peer]) >= PLAN_KEYS, (p["model"], peer)
            if p[peer]["valid"]:
                # the planner is optimal, so no valid peer plan is cheaper
                assert planner["bus_ms"] <= p[peer]["bus_ms"] + 1e-6, (p["model"], peer)
        assert p["best_peer"] in PEERS and p[p["best_peer"]]["valid"]
        assert 1 <= p["telegraf_max_insert"]["fill"] <= 125
    ratios = [p["ratio_to_best_peer"] for p in out["profiles"]]
    assert out["worst_ratio_to_best_peer"] == max(ratios) <= 1.0
    speedups = [p["speedup_vs_naive"] for p in out["profiles"]]
    assert out["min_speedup_vs_naive"] == min(speedups) >= 1.0
