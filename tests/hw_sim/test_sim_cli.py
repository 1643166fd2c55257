"""The hw-sim command line and the fixtures: help that explains, scenarios that load, a
subprocess building a client can read, and teardown that leaves nothing behind."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sim_clients import CodecClient

from hw_sim import cli, scenario
from hw_sim.faults import LORA_FAULTS, MODBUS_FAULTS
from hw_sim.truth import read_jsonl
from protocols import modbus, profiles

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "hw_sim.md"


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "hw_sim.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_help_explains_every_command():
    top = run_cli("--help")
    assert top.returncode == 0
    for word in (
        "run",
        "meter",
        "profiles",
        "scenarios",
        "faults",
        "docs/hw_sim.md",
        "/dev/ttyUSB1",
        "parity N",
    ):
        assert word in top.stdout, word
    for command, words in {
        "run": ("--json", "--speed", "--seed", "--truth", "--state", "school"),
        "meter": ("--profile", "--unit", "--port", "--tcp", "--baud", "--parity"),
        "profiles": ("--json",),
        "scenarios": ("name",),
        "faults": ("--json",),
    }.items():
        out = run_cli(command, "--help")
        assert out.returncode == 0
        for word in words:
            assert word in out.stdout, (command, word)


def test_profiles_lists_every_bundled_model(capsys):
    assert cli.main(["profiles", "--json"]) == 0
    listed = {p["model"] for p in json.loads(capsys.readouterr().out)}
    assert listed == set(profiles.bundled_profiles())


def test_faults_lists_every_kind(capsys):
    assert cli.main(["faults", "--json"]) == 0
    assert {f["kind"] for f in json.loads(capsys.readouterr().out)} == (
        set(MODBUS_FAULTS) | set(LORA_FAULTS)
    )


@pytest.mark.parametrize("name", ["school", "town_hall", "indoor_pool", "depot"])
def test_example_scenarios_load_and_explain_themselves(name):
    assert name in scenario.bundled_scenarios()
    text = scenario.resolve(name).read_text()
    assert text.startswith("#") and "docs/hw_sim.md" in text
    b = scenario.load(name)
    assert b.meters and b.sensors


def test_bad_scenario_gets_an_error_a_person_can_act_on(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[bus]]\nbaud = 9600\n[[bus.meter]]\nname = "m"\nprofile = "sdm999"\nunit = 1\n'
    )
    out = run_cli("run", str(bad))
    assert out.returncode == 1
    assert "sdm999" in out.stderr and "known models" in out.stderr


def test_hw_sim_run_as_subprocess_serves_a_client_and_writes_the_ground_truth(
    sim_process, tmp_path
):
    info = sim_process("school", "--truth", "truth.jsonl", "--seed", "5")
    bus = next(e for e in info["endpoints"] if e["kind"] == "rtu")
    assert bus["framing"] == "9600 8E1" and os.path.exists(bus["path"])
    assert [m["unit"] for m in bus["meters"]] == [1, 2, 3]
    spec = profiles.load_profile("sdm630").quantity("voltage_l1")
    client = CodecClient(bus["path"], baud=9600, parity="E", timeout_s=2.0)
    try:
        volts = []
        for _ in range(3):
            try:  # the school's main meter injects rare CRC errors and silences
                volts.append(client.value(1, spec))
            except (TimeoutError, modbus.ModbusError):
                pass
    finally:
        client.close()
    assert volts and all(200 < v < 260 for v in volts)
    assert info["stop"]() == 0
    records = read_jsonl(tmp_path / "truth.jsonl")
    served = [r["value"] for r in records if r["type"] == "value" and r["source"] == "main"]
    assert served[-len(volts) :] == volts
    assert records[0]["event"] == "started" and records[-1]["event"] == "stopped"


def test_meter_command_serves_a_profile_on_tcp(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hw_sim.cli",
            "meter",
            "--profile",
            "sdm120",
            "--unit",
            "4",
            "--tcp",
            "127.0.0.1:0",
            "--json",
            "--duration",
            "20",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        info = json.loads(proc.stdout.readline())
        (ep,) = info["endpoints"]
        assert ep["kind"] == "tcp" and ep["meters"][0]["profile"] == "sdm120"
        from pymodbus.client import ModbusTcpClient

        client = ModbusTcpClient("127.0.0.1", port=ep["port"], timeout=2)
        assert client.connect()
        r = client.read_input_registers(0, count=2, device_id=4)
        client.close()
        assert not r.isError()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()
    assert proc.returncode == 0


def test_docs_explain_connection_scenarios_faults_truth_and_timing_limits():
    text = DOC.read_text()
    for heading in (
        "Connect a gateway",
        "Scenario file",
        "Faults",
        "Ground truth",
        "Wire timing",
        "Limits",
        "pytest",
    ):
        assert heading in text, heading
    for key in (
        scenario._BUILDING
        | scenario._SIM
        | scenario._BUS
        | scenario._TCP
        | scenario._METER
        | scenario._RADIO
        | scenario._SENSOR
    ):
        assert f"`{key}`" in text, f"scenario setting {key} is not documented"
    for kind in (*MODBUS_FAULTS, *LORA_FAULTS):
        assert f"`{kind}`" in text, f"fault {kind} is not documented"
    for field in ("ts_ms", "source", "quantity", "value", "fault", "event"):
        assert f"`{field}`" in text


INNER = textwrap.dedent("""
    import os, threading
    seen = {}

    def fds():
        return len(os.listdir("/proc/self/fd"))

    def test_0_baseline():
        seen["fds"] = fds()

    def test_1_everything(sim_bus, sim_tcp, sim_radio, sim_process):
        seen["paths"] = [sim_bus("sdm630@1").bus().path, sim_radio().radio().path]
        sim_tcp("sdm120@2")
        seen["pid"] = sim_process("depot")["pid"]

    def test_2_nothing_left_behind():
        assert not [t.name for t in threading.enumerate() if t.name.startswith("hw_sim")]
        assert not [p for p in seen["paths"] if os.path.exists(p)]
        assert fds() == seen["fds"]
        try:
            os.kill(seen["pid"], 0)
            alive = True
        except ProcessLookupError:
            alive = False
        assert not alive
""")


def test_fixtures_tear_down_threads_ptys_sockets_and_processes(tmp_path):
    (tmp_path / "test_inner.py").write_text(INNER)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "hw_sim.pytest_plugin",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 passed" in out.stdout
