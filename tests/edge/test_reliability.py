"""Reliability of the whole gateway: the agent as a real process polling hw_sim meters with 10%
faults, a real Mosquitto that goes down and comes back, a fleet that stops acknowledging and
comes back, and 20 SIGKILLs at random moments during polling and uplink. Afterwards the fleet
holds exactly the values the meters served, each exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edge.agent import read_status
from edge.testing import Mosquitto
from hw_sim.scenario import Building
from protocols import codec, quantities
from protocols.quantities import channel_id

GW = "gw-reliable"
QUANTITIES = ["voltage_l1", "power_total", "energy_import", "voltage_l1_l2", "energy_import_l1"]
FAULTS = [  # 10% of requests in all; none of them delivers values
    {"kind": "crc_error", "rate": 0.03},
    {"kind": "no_answer", "rate": 0.03},
    {"kind": "exception", "rate": 0.02},
    {"kind": "truncated", "rate": 0.02},
]
KILLS = 20
REPO = Path(__file__).resolve().parents[2]


def _write_config(tmp: Path, port: int, bus_path: str) -> Path:
    doc = {
        "version": 1,
        "gateway": GW,
        "buses": [
            {
                "type": "rtu",
                "id": "b1",
                "port": bus_path,
                "baud": 38400,
                "parity": "N",
                "timeout_ms": 80,
                "retries": 1,
            }
        ],  # fmt: skip
        "meters": [
            {
                "id": u,
                "name": f"m{u}",
                "bus": "b1",
                "unit": u,
                "profile": "sdm630",
                "interval_s": 1,
                "quantities": QUANTITIES,
            }  # fmt: skip
            for u in (1, 2)
        ],
        "uplink": {"batch_interval_s": 1},
    }
    (tmp / "config.json").write_text(json.dumps(doc))
    toml = tmp / "gateway.toml"
    toml.write_text(
        f'[gateway]\nid = "{GW}"\ndata_dir = "data"\ninitial_config = "config.json"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\ntls = false\nkeepalive_s = 5\n'
        '[signing]\nkey = "00112233445566778899aabbccddeeff"\n'
        "[status]\ninterval_s = 5\n"
    )
    return toml


class AgentProcess:
    def __init__(self, toml: Path, log: Path) -> None:
        self.toml = toml
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge.cli", "run", "--config", str(self.toml)],
                cwd=self.toml.parent, stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        self.starts += 1

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _quantise(channel: int, value: float) -> Any:
    m, e = codec.parse_resolution(quantities.resolution_of(quantities.name_of(channel & 0xFF)))
    return codec.dequantise(codec.quantise(value, m, e), m, e)


@pytest.mark.timeout(180)
def test_no_reading_lost_or_doubled_through_kills_outages_and_faults(
    tmp_path: Path, mosquitto: Mosquitto, fleet_receiver: Any
) -> None:
    rng = random.Random(4)
    meters = [{"name": f"m{u}", "profile": "sdm630", "unit": u, "faults": FAULTS} for u in (1, 2)]
    scenario = {
        "sim": {"seed": 7},
        "bus": [
            {
                "name": "b1",
                "baud": 38400,
                "parity": "N",
                "link": str(tmp_path / "bus0"),
                "meter": meters,
            }
        ],  # fmt: skip
    }
    with Building(scenario) as b:
        toml = _write_config(tmp_path, mosquitto.port, str(tmp_path / "bus0"))
        agent = AgentProcess(toml, tmp_path / "agent.log")

        async def run() -> dict[int, list[tuple[int, Any]]]:
            async with fleet_receiver(mosquitto) as rx:
                agent.start()
                try:
                    for i in range(KILLS):
                        await asyncio.sleep(rng.uniform(0.4, 2.4))
                        agent.kill()
                        if i == 4:
                            rx.pause()  # the fleet stops acknowledging
                        if i == 8:
                            rx.resume()
                        if i == 11:
                            mosquitto.stop(kill=True)  # the broker goes away
                        if i == 14:
                            mosquitto.start()
                        agent.start()
                    await asyncio.sleep(3)
                    # let the buffer drain: everything acknowledged
                    deadline = time.monotonic() + 40
                    while time.monotonic() < deadline:
                        st = read_status(tmp_path / "data")
                        if st.get("buffer_depth") == 0 and st.get("running"):
                            break
                        await asyncio.sleep(0.5)
                finally:
                    agent.terminate()
                assert rx.conflicts == 0  # a resent seq always carried the same readings
                got: dict[int, list[tuple[int, Any]]] = {}
                for ch, ts, v in rx.readings(GW):
                    got.setdefault(ch, []).append((ts, v))
                return got

        got = asyncio.run(run())
        truth = b.truth.values()
        faults = b.truth.faults()

    status = read_status(tmp_path / "data")
    log = (tmp_path / "agent.log").read_text()
    assert status["buffer_depth"] == 0, log[-3000:]
    assert KILLS - 5 <= status["boot"] <= KILLS + 1  # a kill during start-up may precede the count
    assert len(faults) >= 8  # the faults really happened

    # Ground truth per channel and tick: the meter latched its value shortly after the tick.
    # A retry after a timeout can make the meter serve twice in one tick (the first answer
    # came too late and was discarded): either value is one the meter served then.
    served: dict[tuple[int, int], list[Any]] = {}
    for r in truth:
        if r["quantity"] not in QUANTITIES:
            continue
        ch = channel_id(int(r["source"][1:]), r["quantity"])
        tick = r["ts_ms"] // 1000 * 1000
        served.setdefault((ch, tick), []).append(_quantise(ch, r["value"]))
    received: dict[tuple[int, int], Any] = {}
    for ch, items in got.items():
        for ts, v in items:
            assert (ch, ts) not in received, f"reading {ch} at {ts} arrived twice"
            received[(ch, ts)] = v
    # every reading the fleet holds is a value a meter served at that tick
    for key, v in received.items():
        assert key in served, f"reading {key} = {v} was never served"
        assert v in served[key], (key, served[key], v)
    # every value served reached the fleet, except the polls cut short by a kill (one meter
    # poll in flight per kill, plus the final stop)
    lost_polls = {(ch >> 8, tick) for (ch, tick) in served if (ch, tick) not in received}
    assert len(lost_polls) <= KILLS + 1, sorted(lost_polls)
    assert len(received) > 100
