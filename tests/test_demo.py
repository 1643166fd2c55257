"""The README's run command works: the demo starts the fleet, simulated buildings and a
provisioned edge agent each; readings reach the fleet's API, and everything stops cleanly when
it is told to (here after a fixed duration)."""

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
    tables = out.split("=== ")
    last = tables[-1]
    assert len(tables) >= 3, out
    for gateway in ("demo-school", "demo-town-hall"):
        assert re.search(gateway + r" \(online, boot 1, config v1 of v1\)", last), out
    # every meter of the last table shows a power reading in watts
    assert len(re.findall(r"power_total\s+[\d,]+\.\d W", last)) == 6, last
    assert "demo stopped" in out
    # nothing the demo started is left running
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in ps, ps
