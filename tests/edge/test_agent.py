"""The whole agent in-process with a real Mosquitto, the acknowledging fleet stand-in and hw_sim
meters: readings equal the ground truth, a remote configuration is applied without a restart,
a broken one is rolled back and reported, a forged one is rejected; edge status shows it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from truth_match import lost_polls, match_readings, requests_on_bus, scenario_toml

from edge.agent import Agent
from edge.cli import main
from edge.settings import settings_from_dict
from edge.testing import Mosquitto
from hw_sim.scenario import Building
from hw_sim.truth import read_jsonl
from protocols import codec, messages, quantities
from protocols.profiles import load_profile
from protocols.quantities import channel_id
from protocols.sign import make_envelope

GW = "gw-test"
KEY_HEX = "00112233445566778899aabbccddeeff"
QUANTITIES = ["voltage_l1", "power_total", "energy_import"]


def config(version: int, port: str, units: list[int], **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "version": version,
        "gateway": GW,
        "buses": [
            {
                "type": "rtu",
                "id": "b1",
                "port": port,
                "baud": 19200,
                "parity": "N",
                "timeout_ms": 100,
                "retries": 0,
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
            for u in units
        ],
        "uplink": {"batch_interval_s": 1},
        "rollback": {"contact_timeout_s": 60, "all_polls_failing_s": 60},
    }
    d.update(extra)
    return d


def _quantise(channel: int, value: float) -> Any:
    """The value as the uplink carries it (the quantity's resolution)."""
    m, e = codec.parse_resolution(quantities.resolution_of(quantities.name_of(channel & 0xFF)))
    return codec.dequantise(codec.quantise(value, m, e), m, e)


class Reported:
    """Collects config/reported messages of the gateway."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    async def run(self, port: int) -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier="test-reported") as c:
            await c.subscribe(messages.topic(GW, "config/reported"), qos=1)
            async for msg in c.messages:
                self.items.append(messages.decode_reported(bytes(msg.payload)))  # type: ignore[arg-type]

    async def wait(self, pred: Any, timeout_s: float) -> dict[str, Any]:
        for _ in range(int(timeout_s * 10)):
            for r in self.items:
                if pred(r):
                    return r
            await asyncio.sleep(0.1)
        raise AssertionError(f"no such report within {timeout_s} s; got {self.items}")


async def publish_desired(port: int, payload: bytes) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="test-fleet-config") as c:
        await c.publish(messages.topic(GW, "config/desired"), payload, qos=1, retain=True)


def signed(doc: dict[str, Any], key_hex: str = KEY_HEX) -> bytes:
    return make_envelope(json.dumps(doc), bytes.fromhex(key_hex)).encode()


@pytest.mark.timeout(120)
def test_agent_end_to_end_with_remote_config_and_rollback(
    tmp_path: Path,
    mosquitto: Mosquitto,
    fleet_receiver: Any,
    sim_process: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The meters run in their own process, as real ones are their own devices: their wire
    # timing then never waits for this process's interpreter, busy with the agent.
    (tmp_path / "building.toml").write_text(scenario_toml(tmp_path / "bus0", 19200, (1, 2)))
    sim = sim_process("building.toml", "--truth", "truth.jsonl")
    port = str(tmp_path / "bus0")
    (tmp_path / "config.json").write_text(json.dumps(config(1, port, [1])))
    settings = settings_from_dict(
        {
            "gateway": {"id": GW, "data_dir": "data", "initial_config": "config.json"},
            "mqtt": {"host": "127.0.0.1", "port": mosquitto.port, "tls": False},
            "signing": {"key": KEY_HEX},
            "status": {"interval_s": 2},
        },
        tmp_path / "gateway.toml",
    )
    agent = Agent(settings, rollback_time_scale=0.05)  # rollback windows of 3 s

    async def scenario() -> list[tuple[int, int, Any]]:
        reported = Reported()
        rep_task = asyncio.create_task(reported.run(mosquitto.port))
        async with fleet_receiver(mosquitto) as rx:
            task = asyncio.create_task(agent.run())
            try:
                # 1. the initial configuration polls meter 1
                assert await rx.wait_for(lambda: len(rx.readings(GW)) >= 9, 20)
                # 2. signed v2 adds meter 2: applied without a restart
                await publish_desired(mosquitto.port, signed(config(2, port, [1, 2])))
                r = await reported.wait(lambda r: r["version"] == 2, 10)
                assert r["status"] == "applied"
                dev2 = channel_id(2, "power_total")
                assert await rx.wait_for(
                    lambda: any(c == dev2 for c, _t, _v in rx.readings(GW)), 10
                )
                assert len([s for s in rx.states if s["online"]]) == 1  # one birth: no restart
                assert await _until(lambda: agent.remote is not None and not agent.remote.trial, 10)
                # 3. v3 moves the meters to a port that does not exist: every poll fails,
                #    the agent returns to v2 and says why
                await publish_desired(mosquitto.port, signed(config(3, "/dev/ttyNOPE9", [1, 2])))
                r = await reported.wait(
                    lambda r: r["desired_version"] == 3 and r["status"] == "rolled_back", 15
                )
                assert r["version"] == 2 and "every poll failed" in r["reason"]
                assert agent.config is not None and agent.config["version"] == 2
                n = len(rx.readings(GW))
                assert await rx.wait_for(lambda: len(rx.readings(GW)) > n + 6, 10)
                # 4. a document signed with another key is rejected; v2 keeps running
                await publish_desired(mosquitto.port, signed(config(4, port, [1]), "ff" * 16))
                r = await reported.wait(lambda r: r["status"] == "rejected", 10)
                assert r["version"] == 2 and "signature" in r["reason"]
                assert await rx.wait_for(lambda: agent.store.depth == 0, 10)
            finally:
                agent.stop()
                await asyncio.wait_for(task, 20)
                rep_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await rep_task
            return rx.readings(GW)

    readings = asyncio.run(scenario())
    assert sim["stop"]() == 0
    # every reading the fleet got is a value the meter served for it, each exactly once
    # (truth_match); served values are missing only from a meter poll cut short where the
    # poller was replaced (configurations 2 and 3) or stopped
    assert len({(ch, ts) for ch, ts, _v in readings}) == len(readings)
    requests = requests_on_bus(read_jsonl(tmp_path / "truth.jsonl"), load_profile("sdm630"), 0)
    match_readings(requests, readings, lambda device: device, _quantise)
    assert len(lost_polls(requests, QUANTITIES)) <= 3

    assert main(["status", "--data-dir", str(tmp_path / "data"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["buffer_depth"] == 0 and report["last_ack_seq"] is not None
    assert report["config"]["version"] == 2 and report["config"]["rollbacks"] == 1
    assert {m["id"] for m in report["meters"]} == {1, 2}
    assert report["agent_running"] is False
    assert main(["status", "--data-dir", str(tmp_path / "data")]) == 0
    text = capsys.readouterr().out
    assert "version 2" in text and "1 rollbacks" in text and "m2" in text


async def _until(pred: Any, timeout_s: float) -> bool:
    for _ in range(int(timeout_s * 10)):
        if pred():
            return True
        await asyncio.sleep(0.1)
    return False


def test_lora_sensors_through_a_rak3172_in_lorawan_factory_mode() -> None:
    from edge.lora import LoraReceiver

    sensors = [
        {"name": "s1", "kind": "room_climate", "format": "cayenne_lpp", "address": "A1B2C3D4",
         "interval_s": 0.5, "faults": [{"kind": "duplicated", "rate": 0.3}, {"kind": "lost", "rate": 0.2}]},
        {"name": "s2", "kind": "gas_meter", "format": "elsys", "address": "0000BEEF", "interval_s": 0.5},
        {"name": "s3", "kind": "room_climate", "format": "elsys", "address": "DEAD0001", "interval_s": 0.5},
    ]  # fmt: skip
    radio = {"name": "r1", "network_mode": 1, "frequency_hz": 868100000, "spreading_factor": 9,
             "sensor": sensors}  # fmt: skip
    config = {"port": "", "frequency_hz": 868100000, "spreading_factor": 9, "bandwidth_khz": 125,
              "coding_rate": 5, "preamble": 8, "tx_power_dbm": 14}  # fmt: skip
    configured = [  # s3 is a neighbour's sensor: not ours
        {"id": 40, "name": "room", "address": "a1b2c3d4", "format": "cayenne_lpp",
         "quantities": ["temperature", "humidity", "co2", "rssi"]},
        {"id": 41, "name": "gas", "address": "BEEF", "format": "elsys"},
    ]  # fmt: skip
    with Building({"radio": [radio]}) as b:
        config["port"] = b.radio().path
        got: list[tuple[int, int, Any]] = []

        class Sink:
            def append(self, readings: Any) -> None:
                got.extend(readings)

        rx = LoraReceiver(config, configured, Sink())

        async def go() -> None:
            task = asyncio.create_task(rx.run())
            await asyncio.sleep(6)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        asyncio.run(go())
        assert rx.module_error is None
        truth = b.truth.values()
        heard = [r["counter"] for r in truth if r["source"] == "s1"]
        # faults while the module was still in LoRaWAN mode went unheard anyway
        dups = len([f for f in b.truth.faults("s1", fault="duplicated") if f["counter"] in heard])
        lost = len(
            [f for f in b.truth.faults("s1", fault="lost") if heard[0] < f["counter"] < heard[-1]]
        )

    room = rx.stats[40]
    assert room.frames >= 5 and room.duplicates == dups > 0
    assert room.lost == lost
    assert rx.unknown_senders.get("DEAD0001", 0) > 0
    by_channel: dict[int, list[Any]] = {}
    for ch, _ts, v in got:
        by_channel.setdefault(ch, []).append(v)
    assert set(by_channel) == {
        channel_id(40, q) for q in ("temperature", "humidity", "co2", "rssi")
    } | {channel_id(41, q) for q in ("pulse_count", "battery")}
    for dev, src in ((40, "s1"), (41, "s2")):
        for q in ("temperature", "pulse_count"):
            served = [r["value"] for r in truth if r["source"] == src and r["quantity"] == q]
            if served:
                # every delivered frame once, in order (served values are what the payload carries)
                assert (
                    by_channel[channel_id(dev, q)] == served[-len(by_channel[channel_id(dev, q)]) :]
                )


# -- a tick in progress when the configuration changes or the agent stops -----------------------

UNITS = (1, 2, 3)


class _MidTick:
    """Wraps the agent's sink: once the first meter's readings of a tick are stored, `reached`
    is set and `tick_ms` names that tick. The poller then goes on to the other meters of the
    tick, so whatever the test does when `reached` is set happens in the middle of a tick."""

    def __init__(self, agent: Agent) -> None:
        self._inner = agent._sink.append
        agent._sink.append = self._append  # type: ignore[method-assign]
        self.reached = asyncio.Event()
        self.tick_ms: int | None = None
        self.last_ms = 0

    def _append(self, readings: Any) -> None:
        self._inner(readings)
        self.last_ms = max([self.last_ms, *(ts for _ch, ts, _v in readings)])
        if self.tick_ms is None and readings:
            self.tick_ms = readings[0][1]
            self.reached.set()


def _stored(buffer: Path) -> list[tuple[int, int, Any]]:
    """Every reading in the agent's buffer (nothing is acknowledged: there is no fleet)."""
    with contextlib.closing(sqlite3.connect(buffer)) as db:
        rows = db.execute("SELECT channel, ts_ms, value FROM reading ORDER BY id").fetchall()
    return [(ch, ts, v) for ch, ts, v in rows]


def _channels_missing_at(readings: list[tuple[int, int, Any]], tick_ms: int) -> set[int]:
    """The channels of the meters (all quantities) with no reading of tick tick_ms."""
    want = {channel_id(u, q) for u in UNITS for q in QUANTITIES}
    return want - {ch for ch, ts, _v in readings if ts == tick_ms}


def _agent_mid_tick(
    tmp_path: Path, mosquitto: Mosquitto, sim_bus: Callable[..., Building]
) -> tuple[Agent, _MidTick, Building, dict[str, Any]]:
    """An agent (not yet running) polling three simulated meters, its sink wrapped in
    _MidTick; and the meters' bus and the configuration it starts with."""
    b = sim_bus(*(f"sdm630@{u}" for u in UNITS), baud=19200, parity="N")
    doc = config(1, b.bus().path, list(UNITS))
    # generous: the meters answer from threads of this busy process
    doc["buses"][0].update(timeout_ms=300, retries=1)
    (tmp_path / "config.json").write_text(json.dumps(doc))
    settings = settings_from_dict(
        {
            "gateway": {"id": GW, "data_dir": "data", "initial_config": "config.json"},
            "mqtt": {"host": "127.0.0.1", "port": mosquitto.port, "tls": False},
            "signing": {"key": KEY_HEX},
        },
        tmp_path / "gateway.toml",
    )
    agent = Agent(settings)
    return agent, _MidTick(agent), b, doc


def _assert_nothing_served_was_lost(b: Building, readings: list[tuple[int, int, Any]]) -> None:
    requests = requests_on_bus(b.truth.records(), load_profile("sdm630"), 1)
    match_readings(requests, readings, lambda device: device, lambda _ch, v: v)
    assert lost_polls(requests, QUANTITIES) == []


@pytest.mark.timeout(30)
def test_a_new_configuration_keeps_the_readings_of_the_tick_in_progress(
    tmp_path: Path, mosquitto: Mosquitto, sim_bus: Callable[..., Building]
) -> None:
    agent, mid, b, doc = _agent_mid_tick(tmp_path, mosquitto, sim_bus)
    changed = json.loads(json.dumps(doc))
    changed["version"] = 2
    changed["buses"][0]["timeout_ms"] = 400  # the bus changed: its poller is replaced

    async def scenario() -> int:
        task = asyncio.create_task(agent.run())
        try:
            await asyncio.wait_for(mid.reached.wait(), 10)
            assert mid.tick_ms is not None
            # meter 1 of this tick is stored, meters 2 and 3 are still being read; the signed
            # document takes the path of one from the fleet (verified, validated, applied)
            assert agent.remote is not None
            assert await agent.remote.handle(signed(changed)) == messages.REPORT_APPLIED
            missing = _channels_missing_at(_stored(agent.settings.buffer_path), mid.tick_ms)
            assert missing == set(), "readings of the tick in progress were dropped"
            # the new poller polls the next tick
            assert await _until(lambda: mid.last_ms > mid.tick_ms, 5)  # type: ignore[operator]
        finally:
            agent.stop()
            await asyncio.wait_for(task, 20)
        return mid.tick_ms

    tick_ms = asyncio.run(scenario())
    readings = _stored(agent.settings.buffer_path)
    assert _channels_missing_at(readings, tick_ms) == set()
    assert _channels_missing_at(readings, tick_ms + 1000) == set()
    _assert_nothing_served_was_lost(b, readings)


@pytest.mark.timeout(30)
def test_sigterm_waits_for_the_tick_in_progress(
    tmp_path: Path, mosquitto: Mosquitto, sim_bus: Callable[..., Building]
) -> None:
    agent, mid, b, _doc = _agent_mid_tick(tmp_path, mosquitto, sim_bus)

    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, agent.stop)  # as run_agent (`edge run`) does
        try:
            task = asyncio.create_task(agent.run())
            try:
                await asyncio.wait_for(mid.reached.wait(), 10)
                os.kill(os.getpid(), signal.SIGTERM)  # meters 2 and 3 are still being read
                await asyncio.wait_for(task, 20)
            finally:
                agent.stop()
                await asyncio.wait_for(task, 20)
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
        assert mid.tick_ms is not None
        return mid.tick_ms

    tick_ms = asyncio.run(scenario())
    readings = _stored(agent.settings.buffer_path)
    assert _channels_missing_at(readings, tick_ms) == set(), "the tick in progress was cut short"
    assert mid.last_ms == tick_ms  # and no tick began after SIGTERM
    _assert_nothing_served_was_lost(b, readings)
