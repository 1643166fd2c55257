"""Benchmark of the MicroPython firmware on the unix port: the whole gateway (compiled .mpy)
against 4 simulated meters on one RS-485 PTY, a simulated LoRa radio, a real Mosquitto and an
acknowledging fleet stand-in.

    python -m bench.firmware [--quick] [--json] [--heap 192K] [--seconds N]

Reports peak_heap_bytes (heap size minus the lowest free heap the gateway's status reported,
measured after a collection: the live data peak over the run), mpy_bytes (the esp32 image),
readings_per_s (stored and acknowledged by the fleet stand-in, sustained after start-up),
heap_growth_bytes (live heap at the end minus after the first fifth of the run) and
simulated_hours_without_memoryerror: poll cycles completed x 10 s (the default meter interval)
/ 3600. Meters are polled every second here, so one real second stands for ten; the firmware
clock itself is not scaled."""

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt

from bench import _common
from edge.testing import AckReceiver, Mosquitto
from firmware.build import compile_board, tool
from hw_sim.scenario import Building

GW = "gw-bench"
PRODUCTION_INTERVAL_S = 10


def _heap_bytes(text):
    text = text.upper()
    if text.endswith("K"):
        return int(text[:-1]) * 1024
    if text.endswith("M"):
        return int(text[:-1]) * 1024 * 1024
    return int(text)


async def _run(tree, work, heap, seconds):
    building = Building(
        {
            "building": {"name": "bench"},
            "sim": {"seed": 1},
            "bus": [
                {
                    "name": "bus",
                    "baud": 19200,
                    "parity": "N",
                    "meter": [
                        {"name": f"m{u}", "profile": "sdm630", "unit": u} for u in (1, 2, 3, 4)
                    ],
                }
            ],
            "radio": [
                {
                    "name": "radio",
                    "sensor": [
                        {
                            "name": "room",
                            "kind": "room_climate",
                            "format": "cayenne_lpp",
                            "address": "5E000001",
                        }
                    ],
                }
            ],
        },
        source="<bench>",
    ).start()
    broker = Mosquitto(work / "broker")
    broker.start()
    proc = None
    try:
        doc = {
            "version": 1,
            "gateway": GW,
            "buses": [
                {
                    "type": "rtu",
                    "id": "b1",
                    "port": building.bus().path,
                    "baud": 19200,
                    "parity": "N",
                    "timeout_ms": 150,
                    "retries": 0,
                }  # fmt: skip
            ],
            "meters": [
                {
                    "id": u,
                    "name": f"m{u}",
                    "bus": "b1",
                    "unit": u,
                    "profile": "sdm630",
                    "interval_s": 1,
                }  # fmt: skip
                for u in (1, 2, 3, 4)
            ],
            "lora": {"port": building.radio().path, "frequency_hz": 868100000},
            "sensors": [
                {"id": 100, "name": "room", "address": "5E000001", "format": "cayenne_lpp"}
            ],
            "uplink": {"batch_interval_s": 2, "max_batch_readings": 100},
        }
        settings = {
            "gateway": GW,
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "keepalive_s": 10},
            "keys": ["bench"],
            "config": doc,
            "status_interval_s": 1,
            "flush_interval_s": 5,
        }
        (work / "settings.json").write_text(json.dumps(settings))
        (work / "flash").mkdir(exist_ok=True)
        rx = AckReceiver("127.0.0.1", broker.port)
        statuses = []

        async def observe():
            while True:
                try:
                    async with aiomqtt.Client("127.0.0.1", broker.port) as c:
                        await c.subscribe(f"gw/{GW}/status")
                        async for msg in c.messages:
                            statuses.append((time.monotonic(), json.loads(bytes(msg.payload))))
                except aiomqtt.MqttError:
                    await asyncio.sleep(0.2)

        tasks = [asyncio.create_task(rx.run()), asyncio.create_task(observe())]
        await asyncio.sleep(0.5)
        log = (work / "gateway.log").open("wb")
        proc = subprocess.Popen(
            [
                tool("micropython"),
                "-X",
                f"heapsize={heap}",
                "-m",
                "firmware.run_unix",
                str(work / "flash"),
                str(work / "settings.json"),
            ],  # fmt: skip
            cwd=str(tree),
            env=dict(os.environ, MICROPYPATH=f"{tree}:.frozen"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        start = time.monotonic()
        warm_at = None
        warm_readings = 0
        while time.monotonic() - start < seconds and proc.poll() is None:
            await asyncio.sleep(0.5)
            if warm_at is None and time.monotonic() - start >= min(10, seconds / 4):
                warm_at, warm_readings = time.monotonic(), rx.stored_readings
        end = time.monotonic()
        crashed = proc.poll() is not None
        end_readings = rx.stored_readings
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        broker.stop()
        building.stop()
    output = (work / "gateway.log").read_text(errors="replace")
    return {
        "statuses": statuses,
        "crashed": crashed,
        "memory_error": "MemoryError" in output,
        "output_tail": output[-2000:],
        "elapsed_s": end - start,
        "readings_per_s": (end_readings - warm_readings) / max(end - (warm_at or end), 1e-9),
        "stored_readings": end_readings,
        "conflicts": rx.conflicts,
    }


def main(argv=None):
    p_args = sys.argv[1:] if argv is None else argv
    heap = "512K"
    seconds = None
    rest = []
    it = iter(p_args)
    for a in it:
        if a == "--heap":
            heap = next(it)
        elif a == "--seconds":
            seconds = float(next(it))
        else:
            rest.append(a)
    args = _common.parse_args(__doc__.split("\n\n")[0], rest)
    seconds = seconds or (35.0 if args.quick else 600.0)
    out = _common.table_stream(args)
    with tempfile.TemporaryDirectory(prefix="bench-fw-") as tmp:
        work = Path(tmp)
        esp32 = compile_board("esp32", work / "esp32")
        mpy_bytes = sum(v for k, v in esp32.items() if k.endswith(".mpy"))
        compile_board("unix", work / "unix")
        r = asyncio.run(_run(work / "unix", work, heap, seconds))
    heap_total = _heap_bytes(heap)
    frees = [s["free_heap_bytes"] for _, s in r["statuses"] if s.get("free_heap_bytes")]
    peak = heap_total - min(frees) if frees else None
    cycles = 0
    for _, s in r["statuses"]:
        for m in s.get("meters", ()):
            if m["id"] == 1:
                cycles = max(cycles, m["polls_ok"])
    growth = None
    if len(frees) >= 10:
        fifth = len(frees) // 5
        early = sum(frees[fifth : 2 * fifth]) / fifth
        late = sum(frees[-fifth:]) / fifth
        growth = round(early - late)
    sim_hours = cycles * PRODUCTION_INTERVAL_S / 3600
    result = {
        "heapsize_bytes": heap_total,
        "peak_heap_bytes": peak,
        "mpy_bytes": mpy_bytes,
        "readings_per_s": round(r["readings_per_s"], 1),
        "stored_readings": r["stored_readings"],
        "poll_cycles": cycles,
        "heap_growth_bytes": growth,
        "memory_error": r["memory_error"],
        "crashed": r["crashed"],
        "duplicates_with_other_content": r["conflicts"],
        "simulated_hours_without_memoryerror": round(sim_hours, 3),
        "run_s": round(r["elapsed_s"], 1),
    }
    rows = [(k, v) for k, v in result.items()]
    _common.print_table(["metric", "value"], rows, out)
    if r["crashed"]:
        print("gateway output (tail):\n" + r["output_tail"], file=out)
    _common.emit(args, "firmware", result)


if __name__ == "__main__":
    main()
