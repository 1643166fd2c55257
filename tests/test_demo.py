"""The README's run command works: `python -m demo` starts the fleet, three municipalities of
simulated buildings and gateways of both kinds (Linux agents and MicroPython firmware on the
real interpreter), each provisioned by claim token; all come online in the fleet's API. A demo
control (cut a gateway's network, then restore it) makes the gateways buffer and backfill,
which the API shows, as it shows the day of simulated history the demo stores first; SIGINT
(Ctrl-C) stops everything and leaves no process behind."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from demo import history, layout
from demo.control import ControlError, ControlServer
from demo.gateways import broken_patch
from demo.proxy import NetworkLink
from protocols.quantities import channel_id

ROOT = Path(__file__).resolve().parent.parent
CUT = ("ms-grundschule", "bh-grundschule")  # an edge agent and a firmware gateway


def _until(what: str, cond: Callable[[], Any], timeout_s: float, out: Path) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{out.read_text()[-4000:]}")
        time.sleep(0.5)


def _ctl(workdir: Path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "demo", "ctl", "--workdir", str(workdir), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_demo_runs_three_towns_with_both_gateway_kinds_and_survives_a_network_cut(
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "demo"
    out = tmp_path / "demo.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "demo", "--workdir", str(workdir), "--port", "0",
             "--interval", "2", "--refresh", "5"],
            cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        started = time.monotonic()
        _until("the control port", lambda: (workdir / "control.json").exists()
               or proc.poll() is not None, 90, out)  # fmt: skip
        assert proc.poll() is None, out.read_text()
        text = out.read_text()
        base = re.search(r"API docs:\s+(http://\S+)/api/docs", text)
        assert base and f"{base.group(1)}/ui/" in text, text
        assert "python -m demo ctl cut-network <gateway>" in text
        api = httpx.Client(base_url=base.group(1) + "/api/v1", timeout=15)
        email, password = layout.USER
        headers: dict[str, dict[str, str]] = {}
        for org in layout.MUNICIPALITIES:  # the printed demo sign-in works in every town
            r = api.post("/auth/login", json={"email": email, "password": password,
                                              "organisation": org.slug})  # fmt: skip
            assert r.status_code == 200, r.text
            headers[org.slug] = {"Authorization": f"Bearer {r.json()['token']}"}

        def gateways() -> dict[str, dict[str, Any]]:
            seen = {}
            for org in layout.MUNICIPALITIES:
                r = api.get("/gateways", headers=headers[org.slug])
                seen.update({g["id"]: {**g, "org": org.slug} for g in r.json()["items"]})
            return seen

        def all_online() -> dict[str, dict[str, Any]] | None:
            seen = gateways()
            # the configuration a gateway runs, from its own status message: the fleet's
            # reported_config_version can be set back by a birth handled after the report
            ok = len(seen) == len(layout.all_sites()) and all(
                g["online"]
                and g["desired_config_version"] == 1
                and (g["last_status"] or {}).get("config_version") == 1
                for g in seen.values()
            )
            return seen if ok else None

        seen = _until("every gateway online, running configuration v1", all_online, 60, out)
        online_after_s = time.monotonic() - started
        assert online_after_s < 90
        for org, site in layout.all_sites():
            g = seen[site.gateway]
            assert g["org"] == org.slug and g["name"] == site.name and g["site_id"]
            # the firmware reports its own version; the agents the one they were claimed with
            assert g["fw_version"].startswith("fw-") == (site.kind == layout.FIRMWARE), g
        # the charts start full: a day of simulated history per meter, before the live part
        now = int(time.time() * 1000)
        main_energy = channel_id(1, "energy_import")
        for gw in CUT:
            r = api.get(f"/gateways/{gw}/telemetry", headers=headers[seen[gw]["org"]], params={
                "channel": main_energy, "start_ts_ms": now - 25 * 3600_000, "end_ts_ms": now})  # fmt: skip
            rows = r.json()["raw"][str(main_energy)]
            assert rows[0]["ts_ms"] < now - 23 * 3600_000 and len(rows) > 280
            energy = [x["value"] for x in rows]
            assert energy == sorted(energy)  # the live counter goes on from the history's
        kinds = {site.kind for _, site in layout.all_sites()}
        assert kinds == {layout.EDGE, layout.FIRMWARE}

        # cut the network of one gateway of each kind: offline, buffering ...
        status = json.loads(_ctl(workdir, "--json", "status"))
        assert {g["gateway"] for g in status["gateways"]} == set(seen)
        cut_start = int(time.time() * 1000)
        for gw in CUT:
            assert "network cut" in _ctl(workdir, "cut-network", gw)
        _until("the cut gateways offline",
               lambda: not any(gateways()[gw]["online"] for gw in CUT), 30, out)  # fmt: skip
        time.sleep(max(0.0, cut_start / 1000 + 10 - time.time()))
        for gw in CUT:
            assert "restored" in _ctl(workdir, "restore-network", gw)
        cut_end = int(time.time() * 1000)

        # ... then back online, and the readings of the cut arrive afterwards (backfill)
        main_power = channel_id(1, "power_total")  # the main meter is device 1 of each school

        def backfilled(gw: str) -> bool:
            org = seen[gw]["org"]
            if not api.get(f"/gateways/{gw}", headers=headers[org]).json()["online"]:
                return False
            r = api.get(f"/gateways/{gw}/telemetry", headers=headers[org], params={
                "channel": main_power, "start_ts_ms": cut_start + 2000,
                "end_ts_ms": cut_end - 2000})  # fmt: skip
            return len(r.json()["raw"].get(str(main_power), [])) >= 2

        for gw in CUT:
            _until(f"{gw} online again with the readings of the cut",
                   lambda gw=gw: backfilled(gw), 60, out)  # fmt: skip
        assert "[network cut]" in out.read_text()  # the live table showed the cut
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            code = proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    text = out.read_text()
    assert code == 0, text[-4000:]
    assert "demo stopped" in text
    # nothing the demo started is left running: agents, firmware, broker
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in ps, ps


# --- the demo's parts, fast ------------------------------------------------------------------


def test_a_cut_link_drops_connections_and_refuses_new_ones_until_restored() -> None:
    async def scenario() -> None:
        async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while data := await r.read(100):
                w.write(data)
            w.close()

        broker = await asyncio.start_server(echo, "127.0.0.1", 0)
        link = NetworkLink("gw", "127.0.0.1", broker.sockets[0].getsockname()[1])
        port = await link.start()
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"hello")
            assert await asyncio.wait_for(r.read(5), 2) == b"hello"
            assert link.cut_network() == 2  # the gateway's side and the broker's side
            assert await asyncio.wait_for(r.read(5), 2) == b""  # dropped, like a pulled cable
            r2, _ = await asyncio.open_connection("127.0.0.1", port)
            assert await asyncio.wait_for(r2.read(5), 2) == b""  # refused while cut
            link.restore_network()
            r3, w3 = await asyncio.open_connection("127.0.0.1", port)
            w3.write(b"again")
            assert await asyncio.wait_for(r3.read(5), 2) == b"again"
            w3.close()
        finally:
            await link.stop()
            broker.close()

    asyncio.run(scenario())


def test_fail_meter_silences_the_meter_for_the_simulated_seconds_asked(sim_bus) -> None:  # type: ignore[no-untyped-def]
    b = sim_bus("sdm630@1", seed=2)
    meter = b.meter("sdm630@1")
    read = bytes([3, 0, 0, 0, 2])  # function 03, two registers at 0
    assert b.bus().respond(1, read).frame is not None
    until = meter.fail(60)
    assert b.bus().respond(1, read).frame is None  # vanished: no answer at all
    event = b.truth.events("sdm630@1", event="operator_fault")[0]
    assert event["detail"] == {"fault": "vanish", "until_ms": until}
    b.clock.advance(61_000)
    assert b.bus().respond(1, read).frame is not None  # back after the time asked


def test_broken_patch_moves_every_meter_to_a_unit_nobody_answers() -> None:
    doc = {"meters": [{"id": 1, "unit": 1, "bus": "b"}, {"id": 2, "unit": 7, "bus": "b"}]}
    patch = broken_patch(doc)
    assert [m["unit"] for m in patch["meters"]] == [101, 107]
    assert patch["rollback"] == {"contact_timeout_s": 60, "all_polls_failing_s": 60}
    assert doc["meters"][0]["unit"] == 1  # the document itself is not changed


def test_history_ends_where_the_live_meter_goes_on(sim_bus) -> None:  # type: ignore[no-untyped-def]
    b = sim_bus({"name": "main", "profile": "sdm630", "unit": 1, "energy_import_wh": 1000})
    now = int(time.time() * 1000)
    energy, power = channel_id(1, "energy_import"), channel_id(1, "power_total")
    rows = history.simulate(b, {"main": 1}, {energy, power}, 2.0, now)
    energy_rows = [v for ch, _, v in rows if ch == energy]
    assert len(energy_rows) in (24, 25) and energy_rows[0] == 1000  # every 5 min for 2 h
    assert energy_rows == sorted(energy_rows)
    assert all(now - 2 * 3600_000 - 300_000 < t < now for _, t, _ in rows)
    # the meter counted during those hours: live readings continue above the history
    assert b.meter("main").model.counters["energy_import"] > energy_rows[-1]


def test_the_control_port_answers_json_and_says_what_is_wrong() -> None:
    async def scenario() -> None:
        async def status(args: dict[str, Any]) -> dict[str, Any]:
            return {"message": "fine"}

        async def cut(args: dict[str, Any]) -> dict[str, Any]:
            raise ControlError(f"no gateway {args.get('gateway')!r}", 404)

        server = ControlServer({"status": status, "cut-network": cut})
        port = await server.start()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
                assert (await c.get("/status")).json() == {"message": "fine"}
                r = await c.post("/cut-network", json={"gateway": "nope"})
                assert r.status_code == 404 and r.json() == {"error": "no gateway 'nope'"}
                r = await c.post("/explode", json={})
                assert r.status_code == 404 and "cut-network" in r.json()["commands"]
                r = await c.post("/cut-network", content=b"[1, 2]")
                assert r.status_code == 400 and "JSON object" in r.json()["error"]
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_ctl_without_a_running_demo_says_how_to_start_one(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "demo", "ctl", "--workdir", str(tmp_path), "status"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2 and "start it with `python -m demo`" in proc.stderr
