"""The live demo (`make demo`): the fleet server with its embedded defaults, simulated
buildings (hw_sim) and a Linux gateway agent per building, provisioned through claim tokens as
a technician would, with a live table of what the fleet's API shows. Ctrl-C stops everything.

Must not be used for anything but showing the system: it throws its data away at each start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from fleet import admin
from fleet.serve import Running, ServeOptions, serve
from hw_sim.scenario import Building, load
from protocols import quantities

ROOT = Path(__file__).resolve().parent.parent
BUILDINGS = ("school", "town_hall")
SHOWN = ("power_total", "energy_import", "voltage_l1", "temperature", "co2")
ORG = ("musterstadt", "Stadt Musterstadt")
USER = ("demo@musterstadt.example", "demo-password-123")


def gateway_config(building: Building, interval_s: int) -> dict[str, Any]:
    """The configuration document an operator gives the gateway of this building."""
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
    doc: dict[str, Any] = {"buses": buses, "meters": meters, "sensors": sensors,
                           "uplink": {"batch_interval_s": interval_s}}  # fmt: skip
    if lora:
        doc["lora"] = lora
    return doc


def write_gateway_toml(gw_dir: Path, ident: dict[str, Any]) -> Path:
    """The bootstrap file a technician leaves on the gateway after provisioning."""
    gw_dir.mkdir(parents=True, exist_ok=True)
    url = urlsplit(ident["broker_url"])
    toml = gw_dir / "gateway.toml"
    toml.write_text(
        f'[gateway]\nid = "{ident["gateway_id"]}"\ndata_dir = "data"\n\n'
        f'[mqtt]\nhost = "{url.hostname}"\nport = {url.port}\ntls = false\n'
        f'username = "{ident["mqtt_username"]}"\npassword = "{ident["mqtt_password"]}"\n\n'
        f'[signing]\nkey = "{ident["signing_key"]}"\n\n[status]\ninterval_s = 10\n'
    )
    return toml


def http_port(wanted: int) -> int:
    """wanted if it is free, else 0 (a free one): a busy 8080 must not stop the demo."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", wanted))
        except OSError:
            return 0
    return wanted


async def provision(api: httpx.AsyncClient, h: dict[str, str], gateway: str) -> dict[str, Any]:
    """What `gatewayctl provision` and the gateway do: a claim token, exchanged for an identity."""
    r = await api.post("/claim-tokens", json={"count": 1, "label": gateway}, headers=h)
    r.raise_for_status()
    token = r.json()[0]["token"]
    r = await api.post("/provision/claim", json={"token": token, "gateway_id": gateway,
                                                 "fw_version": "edge-demo"})  # fmt: skip
    r.raise_for_status()
    return dict(r.json())


async def render(api: httpx.AsyncClient, h: dict[str, str], names: dict[str, dict[int, str]],
                 started: float) -> str:  # fmt: skip
    r = await api.get("/gateways", headers=h)
    gateways = r.json()["items"] if r.status_code == 200 else []
    lines = [
        f"\n=== {time.strftime('%H:%M:%S')}, demo running {time.monotonic() - started:.0f} s ==="
    ]
    for gw in gateways:
        state = "online" if gw["online"] else "offline"
        lines.append(
            f"{gw['id']} ({state}, boot {gw['boot']}, config v{gw['reported_config_version']} "
            f"of v{gw['desired_config_version']})"
        )
        latest = (await api.get(f"/gateways/{gw['id']}/latest", headers=h)).json()
        for x in sorted(latest, key=lambda x: x["channel"]):
            device, quantity = quantities.split_channel(x["channel"])
            if quantity not in SHOWN:
                continue
            name = names.get(gw["id"], {}).get(device, str(device))
            when = time.strftime("%H:%M:%S", time.gmtime(x["ts_ms"] / 1000))
            lines.append(
                f"  {name:<16} {quantity:<14} {x['value']:>14,.1f} "
                f"{quantities.unit_of(quantity):<4} at {when} UTC"
            )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir).resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    stop = asyncio.Event()
    opts = ServeOptions(
        data_dir=workdir / "fleet", mqtt_port=0, mqtt_bind="127.0.0.1",
        http_host="127.0.0.1", http_port=http_port(args.port),
    )  # fmt: skip
    ready: asyncio.Queue[Running] = asyncio.Queue()
    server = asyncio.create_task(serve(opts, stop, on_ready=ready.put_nowait))
    got = await asyncio.wait({server, asyncio.create_task(ready.get())}, timeout=60,
                             return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
    if server in got[0] or not got[0]:
        print("the fleet server did not start; see the messages above", file=sys.stderr)
        return 1
    running: Running = next(iter(got[0])).result()
    admin.create_org(running.engine, *ORG)
    admin.create_user(running.engine, USER[0], USER[1], ORG[0], "admin")
    api_token = admin.create_token(running.engine, USER[0], ORG[0], "demo")
    base = f"http://127.0.0.1:{running.http_port}"
    h = {"Authorization": f"Bearer {api_token}"}
    agents: list[subprocess.Popen[bytes]] = []
    names: dict[str, dict[int, str]] = {}
    code = 0
    with contextlib.ExitStack() as stack:
        async with httpx.AsyncClient(base_url=base + "/api/v1", timeout=10) as api:
            try:
                for name in BUILDINGS:
                    building = stack.enter_context(load(name))
                    gateway = f"demo-{name.replace('_', '-')}"
                    ident = await provision(api, h, gateway)
                    doc = gateway_config(building, args.interval)
                    r = await api.put(f"/gateways/{gateway}/config", json=doc, headers=h)
                    r.raise_for_status()
                    names[gateway] = {d["id"]: d["name"] for d in doc["meters"] + doc["sensors"]}
                    toml = write_gateway_toml(workdir / gateway, ident)
                    log = stack.enter_context(open(workdir / gateway / "agent.log", "wb"))
                    agents.append(
                        subprocess.Popen(
                            [sys.executable, "-m", "edge.cli", "run", "--config", str(toml)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                        )
                    )  # fmt: skip
                    print(f"building {building.name!r}: gateway {gateway} provisioned by claim "
                          f"token, {len(doc['meters'])} meters, {len(doc['sensors'])} LoRa sensors")  # fmt: skip
                print(f"\nfleet API: {base}/api/docs  (Bearer token for 'Authorize': {api_token})")
                print(
                    f"sign-in: {USER[0]} / {USER[1]}   MQTT broker: 127.0.0.1:{running.mqtt_port}"
                )
                print(f"files and agent logs: {workdir}\nCtrl-C stops everything.", flush=True)
                started = time.monotonic()
                deadline = started + args.duration if args.duration else None
                while not stop.is_set() and not server.done():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), args.refresh)
                    print(await render(api, h, names, started), flush=True)
                    for agent in agents:
                        if agent.poll() is not None:
                            print(f"an agent stopped with exit status {agent.returncode}; "
                                  f"see its log in {workdir}", file=sys.stderr)  # fmt: skip
                            code = 1
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
                stop.set()
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(server, 30)
    print("demo stopped: agents, simulated buildings, broker and fleet are down.")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description="Live demo: the fleet server, simulated buildings (hw_sim) and a Linux "
        "gateway agent per building, provisioned by claim token; prints what the fleet shows.",
    )
    parser.add_argument("--interval", type=int, default=5, help="poll interval in seconds (5)")
    parser.add_argument("--refresh", type=float, default=5.0, help="seconds between tables (5)")
    parser.add_argument(
        "--port", type=int, default=8080, help="HTTP port of the fleet (8080; a free one if taken)"
    )
    parser.add_argument(
        "--duration", type=float, default=0, help="stop after S seconds (0: run until Ctrl-C)"
    )
    parser.add_argument(
        "--workdir", default=str(ROOT / "var" / "demo"), help="where the demo keeps its files"
    )
    args = parser.parse_args(argv)
    # the table is the demo's output; the services' own progress stays in their logs
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
