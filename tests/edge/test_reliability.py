"""Reliability of the whole gateway: the agent as a real process polling hw_sim meters with 10%
faults, a real Mosquitto that goes down and comes back, a fleet that stops acknowledging and
comes back, and 20 SIGKILLs at random moments during polling and uplink. Afterwards the fleet
holds exactly the values the meters served, each exactly once (matched request by request:
truth_match)."""

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
from truth_match import lost_polls, match_readings, requests_on_bus, scenario_toml

from edge.agent import StatusError, read_status
from edge.testing import Mosquitto
from hw_sim.truth import read_jsonl
from protocols import codec, quantities
from protocols.profiles import load_profile

GW = "gw-reliable"
QUANTITIES = ["voltage_l1", "power_total", "energy_import", "voltage_l1_l2", "energy_import_l1"]
FAULTS = [  # 10% of requests in all; none of them delivers values
    {"kind": "crc_error", "rate": 0.03},
    {"kind": "no_answer", "rate": 0.03},
    {"kind": "exception", "rate": 0.02},
    {"kind": "truncated", "rate": 0.02},
]
KILLS = 20
RETRIES = 1  # the bus's retries: a request reaches the meter at most 1 + RETRIES times
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
                "retries": RETRIES,
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
        self.starts_ms: list[int] = []  # wall clock before each start

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.starts_ms.append(int(time.time() * 1000))
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge.cli", "run", "--config", str(self.toml)],
                cwd=self.toml.parent, stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip

    async def wait_running(self, data_dir: Path, timeout_s: float = 60.0) -> None:
        """Until this process has counted its boot and started polling and uplink (its pid is
        in the status file), so that a kill lands in that work, not in interpreter start-up
        (which takes seconds on a loaded machine)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                st = read_status(data_dir)
            except StatusError:
                st = {}
            if st.get("pid") == self.proc.pid and st.get("running"):
                return
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"agent not running within {timeout_s} s: {self.log.read_text()[-3000:]}"
        )

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


@pytest.mark.timeout(240)
def test_no_reading_lost_or_doubled_through_kills_outages_and_faults(
    tmp_path: Path, mosquitto: Mosquitto, fleet_receiver: Any, sim_process: Any
) -> None:
    rng = random.Random(4)
    # The meters run in their own process, as real ones are their own devices: their wire
    # timing then never waits for this process's interpreter (the fleet stand-in, the checks).
    (tmp_path / "building.toml").write_text(scenario_toml(tmp_path / "bus0", 38400, (1, 2), FAULTS))
    sim = sim_process("building.toml", "--truth", "truth.jsonl")
    data = tmp_path / "data"
    toml = _write_config(tmp_path, mosquitto.port, str(tmp_path / "bus0"))
    agent = AgentProcess(toml, tmp_path / "agent.log")

    async def run() -> list[tuple[int, int, Any]]:
        async with fleet_receiver(mosquitto) as rx:
            agent.start()
            try:
                for i in range(KILLS):
                    await agent.wait_running(data)
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
                await agent.wait_running(data)
                await asyncio.sleep(3)
                # let the buffer drain: everything acknowledged
                deadline = time.monotonic() + 40
                while time.monotonic() < deadline:
                    st = read_status(data)
                    if st.get("buffer_depth") == 0 and st.get("running"):
                        break
                    await asyncio.sleep(0.5)
            finally:
                agent.terminate()
            assert rx.conflicts == 0  # a resent seq always carried the same readings
            return rx.readings(GW)

    readings = asyncio.run(run())
    assert sim["stop"]() == 0
    records = read_jsonl(tmp_path / "truth.jsonl")

    status = read_status(data)
    log = (tmp_path / "agent.log").read_text()
    # drained: at most the readings of the tick the final SIGTERM let finish after the uplink
    # had stopped (the agent stops its pollers between ticks): stored, sent at the next start
    # (lost_polls below counts that final poll as the one the stop may cut short)
    assert status["buffer_depth"] <= 2 * len(QUANTITIES), log[-3000:]
    assert status["boot"] == KILLS + 1  # every start was counted, and survived its kill
    assert len([r for r in records if r["type"] == "fault"]) >= 8  # the faults really happened

    keys = [(ch, ts) for ch, ts, _v in readings]
    assert len(set(keys)) == len(keys), "a reading arrived twice"
    requests = requests_on_bus(records, load_profile("sdm630"), RETRIES, agent.starts_ms)
    # every reading the fleet holds is a value a meter served for it, and no served value
    # counts for two readings
    match_readings(requests, readings, lambda device: device, _quantise)
    # every value served reached the fleet, except those of the meter polls cut short by a
    # kill (one meter poll in flight per kill, plus the final stop)
    lost = lost_polls(requests, QUANTITIES)
    assert len(lost) <= KILLS + 1, lost
    assert len(readings) > 100
