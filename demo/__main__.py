"""The live demo (`make demo`): the fleet server with its embedded defaults, three simulated
municipalities with several buildings each (hw_sim), and in each building a gateway of either
kind (the Linux agent, or the MicroPython firmware on the real interpreter), provisioned through
claim tokens as a technician would. Prints what the fleet's API shows until Ctrl-C; a control
port (`python -m demo ctl ...`) cuts networks, fails meters and breaks configurations.

Must not be used for anything but showing the system: it throws its data away at each start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shutil
import socket
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from demo import history, layout
from demo.control import COMMANDS, ControlError, ControlServer, ctl_main, write_control_file
from demo.gateways import (
    GatewayProcess,
    broken_patch,
    build_firmware,
    edge_process,
    firmware_process,
    gateway_config,
    write_edge_toml,
    write_firmware_provisioning,
    write_firmware_settings,
)
from demo.proxy import NetworkLink
from fleet import admin
from fleet.db.engine import transaction
from fleet.db.tables import gateways as gateways_table
from fleet.serve import Running, ServeOptions, serve
from hw_sim.scenario import Building, resolve
from protocols import quantities

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORKDIR = ROOT / "var" / "demo"
SHOWN = ("power_total", "temperature")
STOP_TIMEOUT_S = 10.0  # SIGTERM, then SIGKILL after this long

log = logging.getLogger("demo")


def say(*parts: object, file: Any = None) -> None:
    """print, flushed, that survives a closed terminal or pipe: the demo must still stop its
    gateways when nobody reads its output any more."""
    with contextlib.suppress(OSError):
        print(*parts, file=file or sys.stdout, flush=True)


def http_port(wanted: int) -> int:
    """wanted if it is free, else 0 (a free one): a busy 8080 must not stop the demo."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", wanted))
        except OSError:
            return 0
    return wanted


def load_building(site: layout.Site, speed: float, sensor_interval_s: float) -> Building:
    """The site's hw_sim scenario under the site's name and seed. LoRa sensors send at most
    every sensor_interval_s (real ones: every 10-15 minutes), so the demo shows them soon."""
    path = resolve(site.scenario)
    with path.open("rb") as f:
        config = tomllib.load(f)
    config.setdefault("building", {})["name"] = site.name
    sim = config.setdefault("sim", {})
    sim.update(seed=site.seed, speed=speed)
    for key in ("ground_truth", "state_file", "start"):
        sim.pop(key, None)
    for radio in config.get("radio", []):
        for sensor in radio.get("sensor", []):
            sensor["interval_s"] = min(float(sensor.get("interval_s", 600)), sensor_interval_s)
    # a long-running demo keeps a bounded ground truth in memory
    return Building(config, source=str(path), keep_records=5000)


async def claim_token(api: httpx.AsyncClient, h: dict[str, str], label: str) -> str:
    """A single-use claim token of the operator's organisation (POST /claim-tokens)."""
    r = await api.post("/claim-tokens", json={"count": 1, "label": label}, headers=h)
    r.raise_for_status()
    return str(r.json()[0]["token"])


async def provision_by_claim(
    api: httpx.AsyncClient, h: dict[str, str], gateway: str, fw_version: str
) -> dict[str, Any]:
    """What `gatewayctl provision` and the gateway do: a claim token, exchanged for an
    identity (credentials, signing key) over the fleet's HTTPS API."""
    token = await claim_token(api, h, gateway)
    r = await api.post("/provision/claim", json={"token": token, "gateway_id": gateway,
                                                 "fw_version": fw_version})  # fmt: skip
    r.raise_for_status()
    return dict(r.json())


# firmware/provision.py: the firmware exchanges a claim token from provision.json over MQTT on
# its first boot. Without it (an older tree), the demo makes the exchange for the firmware.
FIRMWARE_SELF_PROVISIONS = (ROOT / "firmware" / "provision.py").exists()


async def provision_firmware(
    api: httpx.AsyncClient, h: dict[str, str], site: layout.Site, gw_dir: Path, port: int,
    running: Running,
) -> None:  # fmt: skip
    """Prepare a firmware gateway's flash as a technician does: with firmware/provision.py, a
    provisioning file holding a claim token (the firmware claims its identity over MQTT through
    its own link at first boot); otherwise the demo exchanges the token over the API and writes
    settings.json itself (swap-in for older trees)."""
    token = await claim_token(api, h, site.gateway)
    if FIRMWARE_SELF_PROVISIONS:
        write_firmware_provisioning(gw_dir, token, site.gateway, site.name, port)
        return
    r = await api.post("/provision/claim", json={"token": token, "gateway_id": site.gateway,
                                                 "fw_version": "fw-demo"})  # fmt: skip
    r.raise_for_status()
    ident = dict(r.json())
    # firmware/app.py then takes signing keys as text (their UTF-8 bytes), while the fleet
    # issues hex of random bytes: the fleet keeps this gateway's key as the hex text's bytes.
    with transaction(running.engine) as conn:
        conn.execute(
            sa.update(gateways_table)
            .where(gateways_table.c.id == site.gateway)
            .values(signing_key=ident["signing_key"].encode())
        )
    write_firmware_settings(gw_dir, ident, port, ident["signing_key"])


async def wait_for_gateway(
    api: httpx.AsyncClient, h: dict[str, str], gateway: str, timeout_s: float
) -> None:
    """Until the fleet knows the gateway (a firmware gateway claims its identity itself)."""
    deadline = time.monotonic() + timeout_s
    while (await api.get(f"/gateways/{gateway}", headers=h)).status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"gateway {gateway} did not claim its identity within {timeout_s:.0f} s; "
                "see its gateway.log"
            )
        await asyncio.sleep(0.5)


class Gateway:
    """A site of the demo as it runs: its building, link, process and fleet identity."""

    def __init__(self, org: layout.Municipality, site: layout.Site, building: Building) -> None:
        self.org = org
        self.site = site
        self.building = building
        self.link: NetworkLink | None = None
        self.process: GatewayProcess | None = None
        self.names: dict[int, str] = {}
        self.reported_exit = False

    @property
    def id(self) -> str:
        return self.site.gateway


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(args.workdir).resolve()
        self.stop = asyncio.Event()
        self.gateways: dict[str, Gateway] = {}
        self.headers: dict[str, dict[str, str]] = {}  # org slug -> API auth header
        self.tokens: dict[str, str] = {}
        self.running: Running | None = None
        self.api: httpx.AsyncClient | None = None
        self.control = ControlServer(
            {
                "status": self.cmd_status,
                "cut-network": self.cmd_cut,
                "restore-network": self.cmd_restore,
                "fail-meter": self.cmd_fail_meter,
                "break-config": self.cmd_break_config,
            }
        )

    # -- start ------------------------------------------------------------------------------
    async def start_fleet(self) -> asyncio.Task[None] | None:
        opts = ServeOptions(
            data_dir=self.workdir / "fleet", mqtt_port=0, mqtt_bind="127.0.0.1",
            http_host=self.args.host, http_port=http_port(self.args.port),
        )  # fmt: skip
        ready: asyncio.Queue[Running] = asyncio.Queue()
        server = asyncio.create_task(serve(opts, self.stop, on_ready=ready.put_nowait))
        got, _ = await asyncio.wait({server, asyncio.create_task(ready.get())}, timeout=60,
                                    return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        if server in got or not got:
            say("the fleet server did not start; see the messages above", file=sys.stderr)
            return None
        self.running = next(iter(got)).result()
        return server

    def create_orgs(self) -> None:
        assert self.running is not None
        engine = self.running.engine
        email, password = layout.USER
        for i, org in enumerate(layout.MUNICIPALITIES):
            admin.create_org(engine, org.slug, org.name)
            if i == 0:
                admin.create_user(engine, email, password, org.slug, "admin", name="Demo")
            else:
                admin.add_member(engine, email, org.slug, "admin")
            token = admin.create_token(engine, email, org.slug, "demo")
            self.tokens[org.slug] = token
            self.headers[org.slug] = {"Authorization": f"Bearer {token}"}

    async def add_site(self, org: layout.Municipality, site: layout.Site, tree: Path) -> None:
        """Start the building, provision the gateway, configure it in the fleet, fill its
        history, and start it (a self-provisioning firmware gateway starts first: it claims
        its identity itself)."""
        assert self.api is not None and self.running is not None
        api, h = self.api, self.headers[org.slug]
        building = load_building(site, self.args.speed, self.args.sensor_interval)
        building.start()
        gw = Gateway(org, site, building)
        self.gateways[site.gateway] = gw
        gw.link = NetworkLink(site.gateway, "127.0.0.1", self.running.mqtt_port)
        port = await gw.link.start()
        gw_dir = self.workdir / "gateways" / site.gateway
        firmware = site.kind == layout.FIRMWARE
        if firmware:
            await provision_firmware(api, h, site, gw_dir, port, self.running)
            gw.process = firmware_process(
                site.gateway, tree, gw_dir / "settings.json", self.args.fw_heap
            )
            gw.process.start()
            await wait_for_gateway(api, h, site.gateway, 60)
        else:
            ident = await provision_by_claim(api, h, site.gateway, "edge-demo")
            gw.process = edge_process(site.gateway, write_edge_toml(gw_dir, ident, port))
        r = await api.post("/sites", json={"name": site.name, "building_type": site.building_type},
                           headers=h)  # fmt: skip
        r.raise_for_status()
        r = await api.patch(f"/gateways/{site.gateway}", json={"name": site.name,
                            "site_id": r.json()["id"]}, headers=h)  # fmt: skip
        r.raise_for_status()
        doc = gateway_config(building, self.args.interval, rtu_only=firmware)
        r = await api.put(f"/gateways/{site.gateway}/config", json=doc, headers=h)
        r.raise_for_status()
        gw.names = {d["id"]: d["name"] for d in doc["meters"] + doc["sensors"]}
        past = ""
        if self.args.history:
            channels = (await api.get(f"/gateways/{site.gateway}/channels", headers=h)).json()
            meter_ids = {m["name"]: m["id"] for m in doc["meters"]}
            n = await asyncio.to_thread(
                history.backfill, self.running.engine, site.gateway, building, meter_ids,
                channels, self.args.history, int(time.time() * 1000),
            )  # fmt: skip
            past = f", {n:,} past readings"
        if not firmware:
            gw.process.start()
        how = "claimed over MQTT by the firmware" if firmware and FIRMWARE_SELF_PROVISIONS else (
            "claimed over the API")  # fmt: skip
        say(f"  {org.name:<24} {site.name:<27} {site.kind:<8} {site.gateway:<15} "
            f"{len(doc['meters'])} meters, {len(doc['sensors'])} LoRa sensors{past}; {how}")  # fmt: skip

    # -- controls ---------------------------------------------------------------------------
    def _gateway(self, args: dict[str, Any]) -> Gateway:
        name = args.get("gateway")
        gw = self.gateways.get(str(name))
        if gw is None:
            raise ControlError(
                f"no gateway {name!r}; the demo's gateways: {', '.join(self.gateways)}", 404
            )
        return gw

    async def cmd_status(self, args: dict[str, Any]) -> dict[str, Any]:
        out = []
        for gw in self.gateways.values():
            meters = [
                {"unit": m.unit, "name": m.name, "bus": m.bus, "profile": m.profile.model}
                for m in gw.building.meters.values()
            ]
            out.append(
                {"gateway": gw.id, "kind": gw.site.kind, "municipality": gw.org.name,
                 "building": gw.site.name, "network": "cut" if gw.link and gw.link.cut else "up",
                 "running": gw.process is not None and gw.process.exited() is None,
                 "log": str(gw.process.log_path) if gw.process else None, "meters": meters}
            )  # fmt: skip
        lines = []
        for g in out:
            meters = ", ".join(f"unit {m['unit']} {m['name']}" for m in g["meters"])
            lines.append(
                f"{g['gateway']:<16} {g['kind']:<9} network {g['network']:<4} {g['building']} "
                f"(meters: {meters})"
            )
        return {"gateways": out, "message": "\n".join(lines)}

    async def cmd_cut(self, args: dict[str, Any]) -> dict[str, Any]:
        gw = self._gateway(args)
        assert gw.link is not None
        dropped = gw.link.cut_network()
        return {"gateway": gw.id, "network": "cut", "dropped_connections": dropped,
                "message": f"{gw.id}: network cut ({dropped} connections dropped). It buffers "
                "its readings; the fleet shows it offline. `restore-network` gives it back."}  # fmt: skip

    async def cmd_restore(self, args: dict[str, Any]) -> dict[str, Any]:
        gw = self._gateway(args)
        assert gw.link is not None
        gw.link.restore_network()
        return {"gateway": gw.id, "network": "up",
                "message": f"{gw.id}: network restored. It reconnects (backoff: up to a few "
                "seconds) and sends what it buffered, marked as historical."}  # fmt: skip

    async def cmd_fail_meter(self, args: dict[str, Any]) -> dict[str, Any]:
        gw = self._gateway(args)
        which = str(args.get("meter", args.get("unit", "")))
        try:
            seconds = float(args.get("seconds", 120.0))
        except (TypeError, ValueError):
            raise ControlError("seconds must be a number") from None
        if not 0 < seconds <= 86400:
            raise ControlError("seconds must be between 0 and 86400")
        known = list(gw.building.meters.values())
        meters = [m for m in known if m.name == which or str(m.unit) == which]
        listing = ", ".join(f"{m.name} (unit {m.unit} on {m.bus})" for m in known)
        if not meters:
            raise ControlError(f"{gw.id} has no meter {which!r}; its meters: {listing}", 404)
        if len(meters) > 1:
            raise ControlError(
                f"{gw.id}: unit {which} is on several lines; name the meter: {listing}"
            )
        meter = meters[0]
        until = meter.fail(seconds)
        return {"gateway": gw.id, "meter": meter.name, "unit": meter.unit, "until_ms": until,
                "message": f"{gw.id}: meter {meter.name} (unit {meter.unit} on {meter.bus}) stops "
                f"answering for {seconds:g} simulated seconds; the gateway counts timeouts (its "
                "status) and the fleet gets no new readings of it meanwhile."}  # fmt: skip

    async def cmd_break_config(self, args: dict[str, Any]) -> dict[str, Any]:
        gw = self._gateway(args)
        assert self.api is not None
        h = self.headers[gw.org.slug]
        r = await self.api.get(f"/gateways/{gw.id}/config", headers=h)
        r.raise_for_status()
        patch = broken_patch(r.json()["document"])
        r = await self.api.post(
            "/rollouts",
            json={"name": f"demo: break {gw.id}", "patch": patch, "gateway_ids": [gw.id],
                  "batch_size": 1, "report_timeout_s": 600},
            headers=h,
        )  # fmt: skip
        if r.status_code != 201:
            raise ControlError(f"the fleet refused the rollout: {r.text}")
        rollout = r.json()
        return {"gateway": gw.id, "rollout": rollout["id"],
                "message": f"{gw.id}: rollout {rollout['id']} puts every meter on a unit id "
                "nobody answers. Every poll fails; after a minute the gateway goes back to its "
                "last good configuration and reports `rolled_back`: "
                f"GET /api/v1/rollouts/{rollout['id']}/targets."}  # fmt: skip

    # -- the live table ---------------------------------------------------------------------
    async def render(self, started: float) -> str:
        assert self.api is not None
        lines = [f"\n=== {time.strftime('%H:%M:%S')}, demo running "
                 f"{time.monotonic() - started:.0f} s ==="]  # fmt: skip
        for org in layout.MUNICIPALITIES:
            h = self.headers[org.slug]
            r = await self.api.get("/gateways", headers=h)
            items = {g["id"]: g for g in r.json()["items"]} if r.status_code == 200 else {}
            lines.append(org.name)
            for site in org.sites:
                g = items.get(site.gateway)
                gw = self.gateways.get(site.gateway)
                if g is None or gw is None:
                    continue
                state = "online " if g["online"] else "OFFLINE"
                cut = " [network cut]" if gw.link and gw.link.cut else ""
                st = g.get("last_status") or {}
                buffered = st.get("buffer_depth", "-")
                head = (f"  {g['id']:<15} {site.kind:<8} {state} boot {g['boot'] or '-'} "
                        f"config v{g['reported_config_version'] or 0}/v"
                        f"{g['desired_config_version'] or 0} buffer {buffered}{cut}")  # fmt: skip
                values = []
                latest = (await self.api.get(f"/gateways/{g['id']}/latest", headers=h)).json()
                for x in sorted(latest, key=lambda x: x["channel"]):
                    device, quantity = quantities.split_channel(x["channel"])
                    if quantity in SHOWN:
                        name = gw.names.get(device, str(device))
                        unit = quantities.unit_of(quantity)
                        values.append(f"{name} {x['value']:,.1f} {unit}")
                lines.append(head)
                if values:
                    lines.append("      " + ", ".join(values))
        return "\n".join(lines)

    def check_processes(self) -> None:
        for gw in self.gateways.values():
            code = gw.process.exited() if gw.process else None
            if code is not None and not gw.reported_exit:
                gw.reported_exit = True
                log_path = gw.process.log_path if gw.process else "?"
                say(f"gateway {gw.id} stopped with exit status {code}; its log: {log_path}",
                      file=sys.stderr)  # fmt: skip

    # -- stop -------------------------------------------------------------------------------
    async def shutdown(self) -> None:
        procs = [gw.process for gw in self.gateways.values() if gw.process is not None]
        for p in procs:
            p.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        await asyncio.gather(*(asyncio.to_thread(p.wait_or_kill, deadline) for p in procs))
        for gw in self.gateways.values():
            if gw.link is not None:
                await gw.link.stop()
            gw.building.stop()
        await self.control.stop()
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / "control.json").unlink()


async def run(args: argparse.Namespace) -> int:
    demo = Demo(args)
    shutil.rmtree(demo.workdir, ignore_errors=True)
    demo.workdir.mkdir(parents=True)
    say(f"demo: building the firmware for the unix port and starting the fleet in {demo.workdir}")  # fmt: skip
    build = asyncio.create_task(asyncio.to_thread(build_firmware, demo.workdir / "firmware-build"))
    server = await demo.start_fleet()
    if server is None:
        await asyncio.gather(build, return_exceptions=True)
        return 1
    assert demo.running is not None
    code = 0
    base = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '') else args.host}:" + str(
        demo.running.http_port
    )
    try:
        async with httpx.AsyncClient(base_url=base + "/api/v1", timeout=15) as api:
            demo.api = api
            tree = await build
            demo.create_orgs()
            say("sites and gateways, each provisioned by claim token:")
            # one after the other keeps the output in order; each takes about a second
            for org, site in layout.all_sites():
                if demo.stop.is_set():
                    break
                await demo.add_site(org, site, tree)
            port = await demo.control.start(args.control_port)
            write_control_file(demo.workdir, port)
            _print_banner(demo, base, port)
            started = time.monotonic()
            deadline = started + args.duration if args.duration else None
            while not demo.stop.is_set() and not server.done():
                wait = args.refresh
                if deadline:
                    wait = max(0.0, min(wait, deadline - time.monotonic()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(demo.stop.wait(), wait)
                if demo.stop.is_set():
                    break
                demo.check_processes()
                try:
                    say(await demo.render(started))
                except httpx.HTTPError as exc:
                    say(f"(the fleet's API did not answer: {exc})", file=sys.stderr)
                if deadline and time.monotonic() >= deadline:
                    break
    except Exception:
        log.exception("the demo failed; stopping everything")
        code = 1
    finally:
        say("stopping: gateways, links, simulated buildings, broker and fleet ...")
        await demo.shutdown()
        demo.stop.set()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(server, 30)
        if not build.done():
            build.cancel()
    say("demo stopped: gateways, simulated buildings, broker and fleet are down.")
    return code


def _print_banner(demo: Demo, base: str, control_port: int) -> None:
    email, password = layout.USER
    first = layout.MUNICIPALITIES[0].slug
    kinds = {k: sum(1 for g in demo.gateways.values() if g.site.kind == k)
             for k in (layout.EDGE, layout.FIRMWARE)}  # fmt: skip
    assert demo.running is not None
    say(f"""
web UI:     {base}/ui/
API docs:   {base}/api/docs
sign-in:    {email} / {password}  (admin in {", ".join(m.name for m in layout.MUNICIPALITIES)})
API token:  {demo.tokens[first]}  ({first}; for 'Authorize' in the API docs)
gateways:   {kinds[layout.EDGE]} Linux agents, {kinds[layout.FIRMWARE]} MicroPython firmware; \
broker 127.0.0.1:{demo.running.mqtt_port}; hw_sim time x{demo.args.speed:g}
files:      {demo.workdir} (gateway logs in gateways/<id>/gateway.log)
controls (control port 127.0.0.1:{control_port}), in another terminal:""")
    for name, what in COMMANDS.items():
        arg = {"status": "", "fail-meter": " <gateway> <unit|meter>"}.get(name, " <gateway>")
        say(f"  {'python -m demo ctl ' + name + arg:<50} {what}")
    say("Ctrl-C stops everything.")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ctl"]:
        return ctl_main(argv[1:], DEFAULT_WORKDIR)
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description="Live demo: the fleet server, three simulated municipalities (hw_sim "
        "buildings) and a gateway per building (Linux agent or MicroPython firmware), "
        "provisioned by claim token; prints what the fleet shows. `python -m demo ctl --help` "
        "lists the controls (cut a network, fail a meter, break a configuration).",
    )
    parser.add_argument("--interval", type=int, default=10, help="poll interval in seconds (10)")
    parser.add_argument("--refresh", type=float, default=10.0, help="seconds between tables (10)")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="hw_sim time runs this many times faster (1): load curves and "
                        "counters move faster; the gateways stamp readings with the real clock "
                        "(docs/demo.md)")  # fmt: skip
    parser.add_argument("--history", type=float, default=24.0,
                        help="hours of simulated past readings per meter, stored before the "
                        "gateways start, so charts are full at once (24; 0: none; at most "
                        f"{history.MAX_HOURS})")  # fmt: skip
    parser.add_argument("--sensor-interval", type=float, default=60.0,
                        help="LoRa sensors send at most every S simulated seconds (60)")  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1",
                        help="address of the fleet's HTTP server (127.0.0.1; 0.0.0.0 for others)")  # fmt: skip
    parser.add_argument(
        "--port", type=int, default=8080, help="HTTP port of the fleet (8080; a free one if taken)"
    )
    parser.add_argument("--control-port", type=int, default=0,
                        help="port of the control interface on 127.0.0.1 (0: a free one)")  # fmt: skip
    parser.add_argument("--fw-heap", default="256K",
                        help="MicroPython heap of a firmware gateway (256K; see docs/demo.md)")  # fmt: skip
    parser.add_argument(
        "--duration", type=float, default=0, help="stop after S seconds (0: run until Ctrl-C)"
    )
    parser.add_argument("--workdir", default=str(DEFAULT_WORKDIR),
                        help=f"where the demo keeps its files ({DEFAULT_WORKDIR})")  # fmt: skip
    args = parser.parse_args(argv)
    if args.speed <= 0:
        parser.error("--speed must be > 0 (1 = real time)")
    if not 0 <= args.history <= history.MAX_HOURS:
        parser.error(f"--history must be between 0 and {history.MAX_HOURS} hours")
    if args.interval < 1:
        parser.error("--interval must be at least 1 second")
    # the table is the demo's output; the services' own progress stays in their logs
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
