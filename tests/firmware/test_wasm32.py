"""The firmware on a 32-bit MicroPython: the WebAssembly port under Node.js (firmware/wasmrun.py,
board firmware/boards/wasm.py), with the object layout of an ESP32 or Pico W. The whole gateway,
compiled and run from a ROMFS image, polls hw_sim meters on a PTY and a simulated LoRa radio and
its readings reach a real Mosquitto and are acknowledged; and the app's code takes less heap
there than on the 64-bit unix port. Needs node and the npm package (scripts/bootstrap.sh):
skipped without them on a user's machine, a failure in CI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from edge.testing import AckReceiver, Mosquitto
from firmware import romrun, wasmrun
from firmware.build import compile_board, ram_report
from protocols.quantities import QUANTITIES as QUANTITY_TABLE
from protocols.quantities import channel_id

GW = "gw-wasm"
QUANTITIES = ["power_total", "energy_import", "voltage_l1"]
UNITS = (1, 2, 3, 4)
P2P = {"frequency_hz": 868100000, "spreading_factor": 9, "bandwidth_khz": 125}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The unix build (what bench/firmware.py measures), which carries the wasm board too."""
    why = wasmrun.missing()
    if why:
        pytest.skip(reason=f"no 32-bit interpreter: {why} (skipped on a user's machine only)")
    out = tmp_path_factory.mktemp("wasm32") / "unix"
    compile_board("unix", out)
    return out


def test_the_app_takes_less_heap_on_32_bit_than_on_the_64_bit_unix_port(tree: Path) -> None:
    wide = ram_report(tree, rom=True)
    narrow = wasmrun.ram_report(tree)
    assert [s[0] for s in narrow["steps"]] == [s[0] for s in wide["steps"]]
    assert [s[2] for s in narrow["steps"]] == [None] * len(narrow["steps"])  # all imported
    narrow_bytes, wide_bytes = narrow["steps"][-1][1], wide["steps"][-1][1]
    assert 0 < narrow_bytes < wide_bytes, (narrow_bytes, wide_bytes)


def _settings(broker: Mosquitto, bus_port: str, radio_port: str) -> dict[str, Any]:
    doc = {
        "version": 1,
        "gateway": GW,
        "buses": [{"type": "rtu", "id": "b1", "port": bus_port, "baud": 19200, "parity": "N",
                   "timeout_ms": 150, "retries": 0}],
        "meters": [{"id": 10 + u, "name": f"m{u}", "bus": "b1", "unit": u, "profile": "sdm630",
                    "interval_s": 1, "quantities": QUANTITIES} for u in UNITS],
        "lora": {"port": radio_port, **P2P},
        "sensors": [{"id": 21, "name": "room", "address": "5E000001", "format": "cayenne_lpp"}],
        "uplink": {"batch_interval_s": 1, "max_batch_readings": 100},
    }  # fmt: skip
    return {
        "gateway": GW,
        "board": {"name": "wasm"},
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "keepalive_s": 5, "timeout_s": 3},
        "keys": ["wasm-test-key"],
        "config": doc,
        "status_interval_s": 1,
        "flush_interval_s": 1,
    }


async def _statuses(port: int, into: list[dict[str, Any]], ready: asyncio.Event) -> None:
    while True:
        try:
            async with aiomqtt.Client("127.0.0.1", port, identifier="observer") as c:
                await c.subscribe(f"gw/{GW}/status", qos=0)
                ready.set()
                async for msg in c.messages:
                    into.append(json.loads(bytes(msg.payload)))  # type: ignore[arg-type]
        except aiomqtt.MqttError:
            await asyncio.sleep(0.2)


def test_readings_of_four_meters_and_a_radio_reach_the_broker_and_are_acknowledged(
    tree: Path, broker: Mosquitto, sim_bus, sim_radio, tmp_path: Path
) -> None:
    bus = sim_bus(*(f"sdm630@{u}" for u in UNITS), baud=19200, parity="N")
    air = sim_radio(
        {"name": "room", "kind": "room_climate", "format": "cayenne_lpp", "address": "5E000001"},
        **P2P,
    )
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps(_settings(broker, bus.bus().path, air.radio().path)))
    image = tmp_path / "app.romfs"
    image.write_bytes(romrun.build_image(tree))
    log = tmp_path / "gateway.log"
    cmd = wasmrun.command(image, "firmware.run_wasm", "/settings.json",
                          puts=[(settings, "/settings.json")])  # fmt: skip
    rx = AckReceiver("127.0.0.1", broker.port)
    statuses: list[dict[str, Any]] = []

    async def scenario() -> None:
        ready = asyncio.Event()
        tasks = [asyncio.create_task(rx.run()),
                 asyncio.create_task(_statuses(broker.port, statuses, ready))]  # fmt: skip
        async with asyncio.timeout(10):
            await rx.connected.wait()
            await ready.wait()
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:

            async def until(cond: Any, timeout_s: float, what: str) -> None:
                deadline = time.monotonic() + timeout_s
                while not cond():
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(f"no {what}\n{log.read_text()[-3000:]}")
                    await asyncio.sleep(0.1)

            await until(lambda: air.radio().listening, 20, "radio listening")
            await asyncio.sleep(0.2)
            air.radio().send_now("room")
            devices = {10 + u for u in UNITS} | {21}
            await until(lambda: {ch >> 8 for ch, _, _ in rx.readings(GW)} >= devices, 20,
                        "readings of every meter and the sensor")  # fmt: skip
            await until(lambda: any(s["uplink"]["acked_batches"] >= 3 for s in statuses), 10,
                        "acks counted in a status message")  # fmt: skip
        finally:
            proc.kill()
            proc.wait(timeout=5)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(scenario())
    assert rx.conflicts == 0
    seqs = sorted(s for g, s in rx.batches if g == GW)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap, no duplicate
    truth: dict[int, set[float]] = {}
    resolution: dict[int, float] = {}
    for r in bus.truth.values():
        if r["quantity"] in QUANTITIES:
            ch = channel_id(10 + int(r["source"].rsplit("@", 1)[1]), r["quantity"])
            truth.setdefault(ch, set()).add(r["value"])
            resolution[ch] = QUANTITY_TABLE[r["quantity"]][2]
    meters = [(ch, v) for ch, _, v in rx.readings(GW) if ch >> 8 != 21]
    assert {ch for ch, _ in meters} == {channel_id(10 + u, q) for u in UNITS for q in QUANTITIES}
    for ch, v in meters:  # what the simulated meters served, at the codec's resolution
        assert any(abs(v - t) <= resolution[ch] / 2 + 1e-9 for t in truth[ch]), (ch, v)
    sent = {channel_id(21, x["quantity"]) for x in air.truth.values("room")}
    assert {ch for ch, _, _ in rx.readings(GW) if ch >> 8 == 21} <= sent
    st = statuses[-1]
    assert st["gateway"] == GW and 0 < st["free_heap_bytes"] < 512 * 1024
    assert {m["id"] for m in st["meters"]} == {10 + u for u in UNITS}
