"""The live demo (`make demo`): simulated buildings, Linux gateway agents reading them, and a
broker, with a live table of what arrives. Stops everything cleanly on Ctrl-C.

Until the fleet server exists (issue 5), a small acknowledging receiver plays its part: it
stores each batch once and acknowledges it, exactly as the fleet will (docs/protocol.md).
Must not be used for anything but showing the system: it keeps everything in memory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edge.testing import AckReceiver, Mosquitto
from hw_sim.scenario import Building, load
from protocols import quantities

ROOT = Path(__file__).resolve().parent.parent
BUILDINGS = ("school", "town_hall")
SHOWN = ("power_total", "energy_import", "voltage_l1", "temperature", "co2")
KEY_HEX = "de30" * 8  # the demo's config-signing key; a real gateway gets its own


def gateway_config(gateway: str, building: Building, interval_s: int) -> dict[str, Any]:
    """The configuration document a technician would give the gateway for this building."""
    buses: list[dict[str, Any]] = []
    meters: list[dict[str, Any]] = []
    sensors: list[dict[str, Any]] = []
    lora: dict[str, Any] | None = None
    next_id = 1
    for ep in building.endpoints():
        if ep["kind"] == "rtu":
            bus_id = ep["name"]
            # A PTY carries no parity; hw_sim documents that gateways use N on a PTY.
            buses.append(
                {"type": "rtu", "id": bus_id, "port": ep["path"] or ep["pty"], "baud": ep["baud"],
                 "parity": "N", "timeout_ms": 300, "retries": 1}
            )  # fmt: skip
        elif ep["kind"] == "tcp":
            bus_id = ep["name"]
            buses.append({"type": "tcp", "id": bus_id, "host": ep["host"], "port": ep["port"]})
        else:
            radio = building.radio(ep["name"])
            freq, sf, bw, cr, preamble, power = radio.air.values
            lora = {"port": ep["path"] or ep["pty"], "frequency_hz": freq, "spreading_factor": sf,
                    "bandwidth_khz": bw, "coding_rate": cr + 5, "preamble": preamble,
                    "tx_power_dbm": power}  # fmt: skip
            for s in ep["sensors"]:
                sensors.append(
                    {
                        "id": next_id,
                        "name": s["name"],
                        "address": s["address"],
                        "format": s["format"],
                    }
                )
                next_id += 1
            continue
        for m in ep["meters"]:
            meters.append(
                {"id": next_id, "name": m["name"], "bus": bus_id, "unit": m["unit"],
                 "profile": m["profile"], "interval_s": interval_s}
            )  # fmt: skip
            next_id += 1
    doc: dict[str, Any] = {"version": 1, "gateway": gateway, "buses": buses, "meters": meters,
                           "sensors": sensors, "uplink": {"batch_interval_s": interval_s}}  # fmt: skip
    if lora:
        doc["lora"] = lora
    return doc


def write_gateway(workdir: Path, gateway: str, doc: dict[str, Any], mqtt_port: int) -> Path:
    gw_dir = workdir / gateway
    gw_dir.mkdir(parents=True, exist_ok=True)
    (gw_dir / "config.json").write_text(json.dumps(doc, indent=1))
    toml = gw_dir / "gateway.toml"
    toml.write_text(
        f'[gateway]\nid = "{gateway}"\ndata_dir = "data"\ninitial_config = "config.json"\n\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\ntls = false\n\n'
        f'[signing]\nkey = "{KEY_HEX}"\n\n[status]\ninterval_s = 10\n'
    )
    return toml


def names_of(doc: dict[str, Any]) -> dict[int, str]:
    return {d["id"]: d["name"] for d in doc["meters"] + doc["sensors"]}


def render(receiver: AckReceiver, docs: dict[str, dict[str, Any]], started: float) -> str:
    lines = [
        f"\n=== demo running {time.monotonic() - started:5.0f} s: "
        f"{receiver.stored_readings} readings stored in {len(receiver.batches)} batches, "
        f"{receiver.duplicates} resent batches ignored (stored once) ==="
    ]
    for gateway, doc in docs.items():
        names = names_of(doc)
        latest: dict[tuple[int, str], tuple[int, float]] = {}
        for channel, ts_ms, value in receiver.readings(gateway):
            device, quantity = quantities.split_channel(channel)
            if quantity in SHOWN:
                key = (device, quantity)
                if key not in latest or ts_ms >= latest[key][0]:
                    latest[key] = (ts_ms, value)
        online = [s for s in receiver.states if s.get("gateway") == gateway]
        state = "online" if online and online[-1].get("online") else "offline"
        lines.append(f"{gateway} ({state})")
        for (device, quantity), (ts_ms, value) in sorted(latest.items()):
            unit = quantities.unit_of(quantity)
            when = time.strftime("%H:%M:%S", time.localtime(ts_ms / 1000))
            lines.append(
                f"  {names.get(device, device)!s:<16} {quantity:<14} {value:>14,.1f} {unit:<4} at {when}"
            )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir).resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(Mosquitto(workdir / "broker"))
        receiver = AckReceiver("127.0.0.1", broker.port, client_id="demo-fleet")
        receiver_task = asyncio.create_task(receiver.run())
        docs: dict[str, dict[str, Any]] = {}
        agents: list[subprocess.Popen[bytes]] = []
        for name in BUILDINGS:
            building = stack.enter_context(load(name))
            gateway = f"demo-{name.replace('_', '-')}"
            doc = gateway_config(gateway, building, args.interval)
            docs[gateway] = doc
            toml = write_gateway(workdir, gateway, doc, broker.port)
            log = open(workdir / gateway / "agent.log", "wb")  # noqa: SIM115 - closed with the process
            stack.callback(log.close)
            agents.append(
                subprocess.Popen(
                    [sys.executable, "-m", "edge.cli", "run", "--config", str(toml)],
                    stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                )
            )  # fmt: skip
            print(f"building {building.name!r}: gateway {gateway}, {len(doc['meters'])} meters, "
                  f"{len(doc['sensors'])} LoRa sensors (log: {workdir / gateway / 'agent.log'})")  # fmt: skip
        print(
            f"broker on 127.0.0.1:{broker.port}; the fleet server and its web UI come with issue 5/7."
        )
        print("Ctrl-C stops everything.")
        started = time.monotonic()
        deadline = started + args.duration if args.duration else None
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), args.refresh)
                print(render(receiver, docs, started), flush=True)
                for agent in agents:
                    if agent.poll() is not None:
                        print(f"an agent stopped with exit status {agent.returncode}; see its log",
                              file=sys.stderr)  # fmt: skip
                        stop.set()
                if deadline and time.monotonic() >= deadline:
                    break
        finally:
            for agent in agents:
                if agent.poll() is None:
                    agent.send_signal(signal.SIGTERM)
            for agent in agents:
                try:
                    agent.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    agent.kill()
                    agent.wait()
            receiver_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver_task
        print("demo stopped: agents, simulated buildings and broker are down.")
        return 0 if receiver.stored_readings > 0 or not args.duration else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description="Live demo: simulated buildings (hw_sim), Linux gateway agents (edge) and "
        "a broker; prints what arrives until Ctrl-C.",
    )
    parser.add_argument("--interval", type=int, default=5, help="poll interval in seconds (5)")
    parser.add_argument("--refresh", type=float, default=5.0, help="seconds between tables (5)")
    parser.add_argument(
        "--duration", type=float, default=0, help="stop after S seconds (0: run until Ctrl-C)"
    )
    parser.add_argument(
        "--workdir", default=str(ROOT / "var" / "demo"), help="where the demo keeps its files"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
