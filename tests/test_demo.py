"""The README's run command works: the demo starts buildings, agents and a broker, readings
arrive, and everything stops cleanly when it is told to (here after a fixed duration)."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_shows_readings_arriving_and_stops_cleanly(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "demo", "--duration", "14", "--refresh", "6", "--interval", "2",
         "--workdir", str(tmp_path / "demo")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    stored = [int(n) for n in re.findall(r"(\d+) readings stored", out)]
    assert stored and stored[-1] > 0, out
    assert "demo-school (online)" in out and "demo-town-hall (online)" in out, out
    assert "power_total" in out
    assert "demo stopped" in out
    # nothing the demo started is left running
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in ps, ps
