"""pytest fixtures that start simulated hardware in one line and tear it down cleanly.

Registered for the whole suite from tests/conftest.py (pytest_plugins). In-process fixtures
run the simulator in background threads of the test process; ``sim_process`` runs
``hw-sim run`` as a subprocess. Every fixture stops what it started: no stray threads,
PTYs, sockets or processes survive a test.

    def test_reads_power(sim_bus):
        b = sim_bus("sdm630@1", baud=19200)
        port = b.bus().path            # open it like /dev/ttyUSB0
        ...
        assert b.truth.latest("sdm630@1")["power_total"] == value_read
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hw_sim import scenario
from hw_sim.scenario import Building

_SIM_KEYS = ("seed", "speed", "start", "ground_truth", "state_file")


def _meter(spec: str | dict[str, Any], i: int) -> dict[str, Any]:
    """'sdm630@3' (profile at unit; named 'sdm630@3') or a full meter table."""
    if isinstance(spec, dict):
        out = dict(spec)
        out.setdefault("name", f"{out.get('profile', 'meter')}@{out.get('unit', i + 1)}")
        return out
    profile, _, unit = spec.partition("@")
    return {"name": spec, "profile": profile, "unit": int(unit or i + 1)}


def _split(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    sim = {k: options.pop(k) for k in _SIM_KEYS if k in options}
    building = {k: options.pop(k) for k in ("load", "timezone") if k in options}
    return sim, building, options


@pytest.fixture
def sim_building() -> Iterator[Callable[..., Building]]:
    """sim_building(scenario, **sim_overrides): start a scenario (bundled name, file path
    or config dict) and return its running Building."""
    started: list[Building] = []

    def start(source: str | dict[str, Any], **overrides: Any) -> Building:
        if isinstance(source, dict):
            config = dict(source)
            config["sim"] = {**config.get("sim", {}), **overrides}
            building = Building(config, source="<test>")
        else:
            building = scenario.load(str(source), **overrides)
        started.append(building)
        return building.start()

    yield start
    for building in reversed(started):
        building.stop()


@pytest.fixture
def sim_bus(sim_building: Callable[..., Building]) -> Callable[..., Building]:
    """sim_bus(*meters, baud=9600, parity="E", stopbits=1, faults=..., seed=..., speed=...):
    one RS-485 bus on a PTY with meters given as "profile@unit" or meter tables. Returns
    the Building; ``.bus().path`` is the port to open, ``.truth`` the ground truth."""

    def start(
        *meters: str | dict[str, Any], faults: list[dict[str, Any]] | None = None, **options: Any
    ) -> Building:
        sim, building, bus = _split(dict(options))
        tables = [_meter(m, i) for i, m in enumerate(meters or ("sdm630@1",))]
        if faults is not None:
            for t in tables:
                t.setdefault("faults", faults)
        config = {
            "building": {"name": "test bus", **building},
            "sim": sim,
            "bus": [{"name": "bus", **bus, "meter": tables}],
        }
        return sim_building(config)

    return start


@pytest.fixture
def sim_tcp(sim_building: Callable[..., Building]) -> Callable[..., Building]:
    """sim_tcp(*meters, host="127.0.0.1", port=0, ...): meters behind one Modbus TCP
    endpoint. ``.tcp().port`` is the port to connect to."""

    def start(
        *meters: str | dict[str, Any], faults: list[dict[str, Any]] | None = None, **options: Any
    ) -> Building:
        sim, building, tcp = _split(dict(options))
        tables = [_meter(m, i) for i, m in enumerate(meters or ("sdm630@1",))]
        if faults is not None:
            for t in tables:
                t.setdefault("faults", faults)
        config = {
            "building": {"name": "test tcp", **building},
            "sim": sim,
            "tcp": [{"name": "tcp", **tcp, "meter": tables}],
        }
        return sim_building(config)

    return start


@pytest.fixture
def sim_radio(sim_building: Callable[..., Building]) -> Callable[..., Building]:
    """sim_radio(*sensors, network_mode=1, frequency_hz=..., ...): a RAK3172 on a PTY with
    sensors given as "kind:format" (e.g. "room_climate:elsys") or sensor tables.
    ``.radio().path`` is the UART to open at 115200 8N1; ``.radio().send_now(name)``
    makes a sensor send at once."""

    def start(*sensors: str | dict[str, Any], **options: Any) -> Building:
        sim, building, radio = _split(dict(options))
        tables = []
        for i, s in enumerate(sensors or ("room_climate:cayenne_lpp",)):
            if isinstance(s, str):
                kind, _, fmt = s.partition(":")
                s = {"name": s, "kind": kind, "format": fmt or "cayenne_lpp"}
            t = dict(s)
            t.setdefault("name", f"sensor{i + 1}")
            t.setdefault("address", f"{0x5E000001 + i:08X}")
            tables.append(t)
        config = {
            "building": {"name": "test radio", **building},
            "sim": sim,
            "radio": [{"name": "radio", **radio, "sensor": tables}],
        }
        return sim_building(config)

    return start


@pytest.fixture
def sim_process(tmp_path: Any) -> Iterator[Callable[..., dict[str, Any]]]:
    """sim_process(scenario, *args): run ``hw-sim run SCENARIO --json ARGS`` as a
    subprocess (working directory: the test's tmp_path); returns its endpoint info (the
    JSON line) plus ``pid`` and ``stop()``. Stopped with SIGTERM (then SIGKILL) at
    teardown at the latest."""
    procs: list[subprocess.Popen[str]] = []

    def start(source: str, *args: str, timeout_s: float = 20.0) -> dict[str, Any]:
        cmd = [sys.executable, "-m", "hw_sim.cli", "run", source, "--json", *args]
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(tmp_path),
            start_new_session=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        line = proc.stdout.readline() if ready else ""
        if not line:
            proc.kill()
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"hw-sim run {source} did not start: {err.strip()}")
        info: dict[str, Any] = json.loads(line)
        info["pid"] = proc.pid

        def stop(timeout_s: float = 10.0) -> int:
            """SIGTERM, as Ctrl-C would; returns the exit code."""
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            return proc.wait(timeout=timeout_s)

        info["stop"] = stop
        return info

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def wait_for(predicate: Callable[[], Any], timeout_s: float = 5.0, poll_s: float = 0.01) -> Any:
    """Poll until predicate() is truthy; returns its value or raises AssertionError."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(poll_s)
