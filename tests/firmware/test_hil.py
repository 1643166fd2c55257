"""Hardware in the loop: the whole firmware (compiled with mpy-cross, unchanged apart from the
unix board, -X heapsize=96K) on the real MicroPython interpreter, against hw_sim meters on a
PTY, a real Mosquitto and an acknowledging receiver that plays the fleet: readings arrive and
are acknowledged, a broker outage is buffered and drained in order, SIGKILL at random moments
loses no acknowledged reading and sends no duplicate, a config change is applied and a broken
one rolled back."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from mpy_build import shared_tree, tool

from edge.testing import AckReceiver, Mosquitto
from protocols import codec, messages
from protocols.quantities import QUANTITIES as QUANTITY_TABLE
from protocols.quantities import channel_id
from protocols.sign import make_envelope

# The firmware's code is loaded into the heap as .mpy files here (64-bit objects): ~140 KB
# after imports, against ~81 KB when the app runs from a ROMFS image as on a board
# (firmware/romrun.py, tests/firmware/test_memory.py); either way more than the 96 KB of an
# ESP32 without PSRAM. FW_HEAP overrides; bench/firmware.py reports the measured figures.
HIL_HEAP = os.environ.get("FW_HEAP", "192K")
HIL_HEAP_LORA = os.environ.get("FW_HEAP", "256K")  # the LoRa stack adds ~35 KB of code
GW = "gw-hil"
KEY = "hil-test-key"
QUANTITIES = ["power_total", "energy_import", "voltage_l1"]


def _sync(fn):  # type: ignore[no-untyped-def]
    @functools.wraps(fn)
    def run(*args, **kwargs):  # type: ignore[no-untyped-def]
        return asyncio.run(fn(*args, **kwargs))

    return run


@pytest.fixture(scope="module")
def tree() -> Path:
    return shared_tree()


def config_doc(port: str, version: int = 1, **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "version": version,
        "gateway": GW,
        "buses": [
            {
                "type": "rtu",
                "id": "b1",
                "port": port,
                "baud": 19200,
                "parity": "N",
                "timeout_ms": 150,
                "retries": 0,
            }
        ],  # fmt: skip
        "meters": [
            {
                "id": 10 + u,
                "name": f"m{u}",
                "bus": "b1",
                "unit": u,
                "profile": "sdm630",
                "interval_s": 1,
                "quantities": QUANTITIES,
            }
            for u in (1, 2)
        ],  # fmt: skip
        "uplink": {"batch_interval_s": 1, "max_batch_readings": 100},
        "rollback": {"contact_timeout_s": 120, "all_polls_failing_s": 60},
    }
    doc.update(changes)
    return doc


class Gateway:
    """The firmware as a process: start, SIGKILL, restart on the same data directory."""

    def __init__(
        self, tree: Path, workdir: Path, settings: dict[str, Any], heap: str = HIL_HEAP
    ) -> None:
        self.tree = tree
        self.heap = heap
        self.data = workdir / "flash"
        self.data.mkdir(parents=True, exist_ok=True)
        self.settings_path = workdir / "settings.json"
        self.settings_path.write_text(json.dumps(settings))
        self.log = workdir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        env = dict(os.environ, MICROPYPATH=f"{self.tree}:.frozen")
        self.starts += 1
        with self.log.open("ab") as log:
            log.write(b"--- start %d\n" % self.starts)
            self.proc = subprocess.Popen(
                [
                    tool("micropython"),
                    "-X",
                    f"heapsize={self.heap}",
                    "-m",
                    "firmware.run_unix",
                    str(self.data),
                    str(self.settings_path),
                ],  # fmt: skip
                cwd=str(self.tree),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def settings_for(broker: Mosquitto, doc: dict[str, Any], **extra: Any) -> dict[str, Any]:
    s = {
        "gateway": GW,
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "keepalive_s": 5, "timeout_s": 3},
        "keys": [KEY],
        "config": doc,
        "status_interval_s": 1,
        "ack_timeout_s": 5,
        "watchdog_ms": 8000,
        "flush_interval_s": 1,
    }
    s.update(extra)
    return s


class Observer:
    """Collects the gateway's status and config/reported messages (as the fleet would)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.status: list[dict[str, Any]] = []
        self.reported: list[dict[str, Any]] = []
        self.ready = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier="observer") as c:
                    await c.subscribe(f"gw/{GW}/status", qos=0)
                    await c.subscribe(f"gw/{GW}/config/reported", qos=1)
                    self.ready.set()
                    async for msg in c.messages:
                        doc = json.loads(bytes(msg.payload))  # type: ignore[arg-type]
                        if msg.topic.value.endswith("status"):
                            self.status.append(doc)
                        else:
                            self.reported.append(doc)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)


class Harness:
    def __init__(self, broker: Mosquitto) -> None:
        self.rx = AckReceiver("127.0.0.1", broker.port)
        self.obs = Observer(broker.port)
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Harness:
        self.tasks = [asyncio.create_task(self.rx.run()), asyncio.create_task(self.obs.run())]
        async with asyncio.timeout(10):
            await self.rx.connected.wait()
            await self.obs.ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def until(self, cond: Any, timeout_s: float, gw: Gateway, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{gw.output()[-3000:]}")
            if gw.proc is not None and gw.proc.poll() is not None:
                raise AssertionError(
                    f"gateway exited ({gw.proc.returncode})\n{gw.output()[-3000:]}"
                )
            await asyncio.sleep(0.1)


def _check_stream(rx: AckReceiver) -> dict[int, list[tuple[int, float]]]:
    """Contract 1 on what the fleet stored: seqs 1..N without gaps, no seq with two contents,
    no reading (channel, ts) stored twice, timestamps per channel increasing in seq order."""
    seqs = sorted(s for g, s in rx.batches if g == GW)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    assert rx.conflicts == 0
    per: dict[int, list[tuple[int, float]]] = {}
    for ch, ts, v in rx.readings(GW):
        per.setdefault(ch, []).append((ts, v))
    for ch, rows in per.items():
        ts = [t for t, _ in rows]
        assert len(ts) == len(set(ts)), f"channel {ch:#x}: a reading stored twice"
    return per


P2P = {"frequency_hz": 868100000, "spreading_factor": 9, "bandwidth_khz": 125}


@_sync
async def test_readings_arrive_and_are_acknowledged(
    tree, broker, sim_bus, sim_radio, tmp_path
) -> None:
    b = sim_bus("sdm630@1", "sdm630@2", baud=19200, parity="N")
    air = sim_radio(
        {"name": "room", "kind": "room_climate", "format": "cayenne_lpp", "address": "5E000001"},
        **P2P,
    )
    doc = config_doc(b.bus().path)
    doc["lora"] = {"port": air.radio().path, **P2P}
    doc["sensors"] = [{"id": 21, "name": "room", "address": "5E000001", "format": "cayenne_lpp"}]
    gw = Gateway(tree, tmp_path, settings_for(broker, doc), heap=HIL_HEAP_LORA)
    async with Harness(broker) as h:
        gw.start()
        try:
            await h.until(lambda: air.radio().listening, 20, gw, "the radio listening")
            await asyncio.sleep(0.2)
            air.radio().send_now("room")
            await h.until(lambda: len(h.rx.batches) >= 4, 20, gw, "4 batches")
            await h.until(
                lambda: any(ch >> 8 == 21 for ch, _, _ in h.rx.readings(GW)),
                10,
                gw,
                "the LoRa sensor's readings",
            )
            await h.until(
                lambda: any(s["uplink"]["acked_batches"] >= 3 for s in h.obs.status),
                10,
                gw,
                "acks counted in the status",
            )
        finally:
            gw.kill()
    per = _check_stream(h.rx)
    truth: dict[int, set[float]] = {}
    resolution: dict[int, float] = {}
    for r in b.truth.values():
        if r["quantity"] in QUANTITIES:
            ch = channel_id(11 if r["source"].endswith("@1") else 12, r["quantity"])
            truth.setdefault(ch, set()).add(r["value"])
            resolution[ch] = QUANTITY_TABLE[r["quantity"]][2]
    lora = {ch for ch in per if ch >> 8 == 21}
    sent = {channel_id(21, x["quantity"]) for x in air.truth.values("room")}
    assert lora and lora <= sent
    for ch in lora:
        del per[ch]
    assert set(per) == {channel_id(d, q) for d in (11, 12) for q in QUANTITIES}
    for ch, rows in per.items():
        # what the meter simulator served, at the codec's resolution of the quantity
        for _, v in rows:
            assert any(abs(v - t) <= resolution[ch] / 2 + 1e-9 for t in truth[ch]), (ch, v)
    st = h.obs.status[-1]
    assert st["gateway"] == GW and st["fw_version"] and st["config_version"] == 1
    assert st["free_heap_bytes"] > 0 and st["buffer_depth"] >= 0
    assert {m["id"] for m in st["meters"]} == {11, 12}
    bus = st["buses"]["b1"]  # the poller's counters, as edge reports them
    assert bus["cycles"] >= 1 and bus["memory_errors"] == 0 and bus["dropped_readings"] == 0
    messages.decode_status(json.dumps(st).encode())  # the fleet's schema accepts it
    births = [s for s in h.rx.states if s["online"]]
    assert births and births[0]["gateway"] == GW


async def broker_outage(
    h: Harness,
    gw: Gateway,
    broker: Mosquitto,
    first_s: float,
    drain_s: float,
    after_ms: int,
    what: str,
) -> tuple[int, int]:
    """Start gw; after its first batches stop the broker for 5 s; once it is back, wait up to
    drain_s for a reading after_ms past the outage. gw is killed at the end. Returns the
    outage's (start, end), UTC ms."""
    gw.start()
    try:
        await h.until(lambda: len(h.rx.batches) >= 2, first_s, gw, "first batches")
        broker.stop(kill=True)
        outage_start = int(time.time() * 1000)
        await asyncio.sleep(5)
        outage_end = int(time.time() * 1000)
        broker.start()
        await h.until(
            lambda: any(ts >= outage_end + after_ms for _, ts, _ in h.rx.readings(GW)),
            drain_s,
            gw,
            what,
        )
    finally:
        gw.kill()
    return outage_start, outage_end


def assert_outage_drained_in_order(rx: AckReceiver, outage: tuple[int, int]) -> None:
    """Contract 1 on what the fleet stored, and every channel has readings of the outage (from
    the flash backlog) and timestamps that never go back in seq order."""
    outage_start, outage_end = outage
    per = _check_stream(rx)
    for ch, rows in per.items():
        during = [t for t, _ in rows if outage_start + 1000 <= t <= outage_end - 1000]
        assert len(during) >= 2, f"channel {ch:#x}: readings of the outage missing"
        ts = [t for t, _ in rows]
        assert ts == sorted(ts), f"channel {ch:#x}: out of order"


@_sync
async def test_broker_outage_is_buffered_and_drained_in_order(
    tree, broker, sim_bus, tmp_path
) -> None:
    b = sim_bus("sdm630@1", "sdm630@2", baud=19200, parity="N")
    gw = Gateway(tree, tmp_path, settings_for(broker, config_doc(b.bus().path)))
    async with Harness(broker) as h:
        outage = await broker_outage(h, gw, broker, 20, 30, 2000, "readings after the outage")
    assert_outage_drained_in_order(h.rx, outage)


@_sync
async def test_sigkill_at_random_moments_loses_nothing_acked_and_sends_no_duplicate(
    tree, broker, sim_bus, tmp_path
) -> None:
    b = sim_bus("sdm630@1", "sdm630@2", baud=19200, parity="N")
    gw = Gateway(tree, tmp_path, settings_for(broker, config_doc(b.bus().path)))
    rnd = random.Random(6)
    async with Harness(broker) as h:
        try:
            for _ in range(5):
                gw.start()
                await asyncio.sleep(rnd.uniform(1.0, 3.5))
                gw.kill()
            gw.start()
            n = len(h.rx.batches)
            await h.until(lambda: len(h.rx.batches) >= n + 3, 20, gw, "batches after restarts")
            await asyncio.sleep(2)
        finally:
            gw.kill()
    _check_stream(h.rx)  # no gap, no conflicting resend, no reading twice
    assert h.rx.duplicates >= 0
    boots = sorted({s["boot"] for s in h.rx.states})
    assert len(boots) >= 4, boots  # the boot counter survives SIGKILL


def _reported(h: Harness, desired: int) -> list[dict[str, Any]]:
    return [r for r in h.obs.reported if r["desired_version"] == desired]


@_sync
async def test_config_change_applied_and_broken_one_rolled_back(
    tree, broker, sim_bus, tmp_path
) -> None:
    b = sim_bus("sdm630@1", "sdm630@2", baud=19200, parity="N")
    port = b.bus().path
    gw = Gateway(tree, tmp_path, settings_for(broker, config_doc(port), time_scale=0.05))
    async with (
        Harness(broker) as h,
        aiomqtt.Client("127.0.0.1", broker.port, identifier="fleet-config") as fleet,
    ):

        async def desire(doc: dict[str, Any]) -> None:
            env = make_envelope(json.dumps(doc), KEY.encode())
            await fleet.publish(f"gw/{GW}/config/desired", env.encode(), qos=1, retain=True)

        gw.start()
        try:
            await h.until(lambda: len(h.rx.batches) >= 1, 20, gw, "first batch")
            # v2: meter 2 reads one more quantity
            v2 = config_doc(port, 2)
            v2["meters"][1]["quantities"] = QUANTITIES + ["frequency"]
            await desire(v2)
            await h.until(lambda: _reported(h, 2), 10, gw, "report of v2")
            assert _reported(h, 2)[0]["status"] == "applied"
            freq = channel_id(12, "frequency")
            await h.until(
                lambda: any(ch == freq for ch, _, _ in h.rx.readings(GW)), 10, gw, "v2 readings"
            )
            # v2 ran healthy for the (scaled) rollback window: it becomes the last good one
            await h.until(
                lambda: any(s["config"]["last_good_version"] == 2 for s in h.obs.status),
                15,
                gw,
                "v2 promoted to last good",
            )
            # v3: every meter on units nobody answers: all polls fail -> rolled back to v2
            v3 = config_doc(port, 3)
            for m in v3["meters"]:
                m["unit"] += 100
            await desire(v3)
            await h.until(
                lambda: any(r["status"] == "rolled_back" for r in _reported(h, 3)),
                20,
                gw,
                "rollback of v3",
            )
            rb = [r for r in _reported(h, 3) if r["status"] == "rolled_back"][0]
            assert rb["version"] == 2 and "poll" in rb["reason"]
            # a bad signature is rejected, the running version stays
            env = make_envelope(json.dumps(config_doc(port, 4)), b"other key")
            await fleet.publish(f"gw/{GW}/config/desired", env.encode(), qos=1, retain=True)
            await h.until(lambda: _reported(h, 0) or _reported(h, 4), 10, gw, "rejection")
            rej = (_reported(h, 0) or _reported(h, 4))[0]
            assert rej["status"] == "rejected" and "signature" in rej["reason"]
            assert rej["version"] == 2
            # after the rollback, v2 polls again
            n = len(h.rx.readings(GW))
            await h.until(lambda: len(h.rx.readings(GW)) > n + 10, 10, gw, "polling after rollback")
        finally:
            gw.kill()


@_sync
async def test_ack_with_error_sets_the_batch_aside_and_counts_it(
    tree, broker, sim_bus, tmp_path
) -> None:
    b = sim_bus("sdm630@1", baud=19200, parity="N")
    gw = Gateway(tree, tmp_path, settings_for(broker, config_doc(b.bus().path)))
    async with (
        Harness(broker) as h,
        aiomqtt.Client("127.0.0.1", broker.port, identifier="fleet-refuser") as fleet,
    ):
        await fleet.subscribe(f"gw/{GW}/tele", qos=1)
        h.rx.pause()  # the fleet stand-in ignores telemetry: only we answer
        gw.start()
        try:
            async with asyncio.timeout(20):
                async for msg in fleet.messages:
                    refused = codec.decode_batch(bytes(msg.payload))  # type: ignore[arg-type]
                    break
            await fleet.publish(
                f"gw/{GW}/ack",
                messages.encode_ack(refused.seq, "batch refused by the test"),
                qos=1,
            )
            await h.until(
                lambda: any(s["uplink"]["refused_batches"] >= 1 for s in h.obs.status),
                10,
                gw,
                "the refusal counted",
            )
            st = [s for s in h.obs.status if s["uplink"]["refused_batches"] >= 1][-1]
            assert st["dropped_readings"] >= len(refused.readings)
            h.rx.resume()
            n = len(h.rx.batches)
            await h.until(lambda: len(h.rx.batches) >= n + 3, 20, gw, "batches after it")
        finally:
            gw.kill()
    assert (GW, refused.seq) not in h.rx.batches  # never sent again


@_sync
async def test_a_late_will_of_an_earlier_session_is_answered_with_a_new_birth(
    tree, broker, sim_bus, tmp_path
) -> None:
    b = sim_bus("sdm630@1", baud=19200, parity="N")
    gw = Gateway(tree, tmp_path, settings_for(broker, config_doc(b.bus().path)))
    async with (
        Harness(broker) as h,
        aiomqtt.Client("127.0.0.1", broker.port, identifier="late-will") as other,
    ):
        gw.start()
        try:
            await h.until(lambda: any(s["online"] for s in h.rx.states), 20, gw, "birth")
            birth = [s for s in h.rx.states if s["online"]][-1]
            # the broker delivers the will of a session the gateway left long ago
            late = messages.encode_will(GW, birth["boot"] - 1, 7, "fw-old", 0, 1)
            await other.publish(f"gw/{GW}/state", late, qos=1, retain=True)
            await h.until(
                lambda: (
                    [s["online"] for s in h.rx.states][-1] is True
                    and len([s for s in h.rx.states if s["online"]]) >= 2
                ),
                10,
                gw,
                "a second birth after the late will",
            )
        finally:
            gw.kill()
    again = [s for s in h.rx.states if s["online"]][-1]
    assert (again["boot"], again["session"]) == (birth["boot"], birth["session"])
    assert messages.state_supersedes(again, messages.decode_state(late))
