"""The whole chain, as a municipality would run it: `fleet serve` (SQLite, the Mosquitto it
starts), an organisation and an admin token made with fleet.admin, a claim token made over the
API and exchanged over the API for a gateway identity, a desired configuration put over the API,
then the real edge agent with that identity reading two simulated SDM630 meters (hw_sim) on an
RS-485 PTY. The agent receives the signed configuration over MQTT, applies and reports it; its
readings reach the fleet's API exactly as the meters served them; the gateway shows online with
its boot counter and nothing raised an alert."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
import httpx
import pytest

from edge.agent import Agent
from edge.settings import settings_from_dict
from fleet import admin
from fleet.mqtt.broker import find_mosquitto
from fleet.serve import Running, ServeOptions, serve
from hw_sim.scenario import Building
from protocols import codec
from protocols.quantities import channel_id

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]

GW = "school-7"
QUANTITIES = {"voltage_l1": 0.1, "power_total": 1, "energy_import": 1}  # and their resolutions
UNITS = (1, 2)


def desired_config(port: str) -> dict[str, Any]:
    """Two SDM630 on one bus at 19200 8N1, polled every second, batches every second."""
    return {
        "buses": [{"type": "rtu", "id": "b1", "port": port, "baud": 19200, "parity": "N",
                   "timeout_ms": 500, "retries": 1}],
        "meters": [{"id": u, "name": f"m{u}", "bus": "b1", "unit": u, "profile": "sdm630",
                    "interval_s": 1, "quantities": list(QUANTITIES)} for u in UNITS],
        "uplink": {"batch_interval_s": 1},
        "rollback": {"contact_timeout_s": 60, "all_polls_failing_s": 60},
    }  # fmt: skip


def served(b: Building) -> dict[int, list[float]]:
    """channel -> the values the simulated meters served, in order, at their resolutions."""
    out: dict[int, list[float]] = {}
    for u in UNITS:
        for r in b.truth.values(f"m{u}"):
            if r["quantity"] in QUANTITIES:
                m, e = codec.parse_resolution(QUANTITIES[r["quantity"]])
                value = codec.dequantise(codec.quantise(r["value"], m, e), m, e)
                out.setdefault(channel_id(u, r["quantity"]), []).append(value)
    return out


async def until(pred: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = pred()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(0.1)


async def broker_knows(host: str, port: int, user: str, password: str) -> bool:
    """The gateway's account reached the broker's password file (refreshed every second)."""
    try:
        async with aiomqtt.Client(host, port, identifier=user, username=user, password=password):
            return True
    except aiomqtt.MqttError:
        return False


def test_provisioned_edge_agent_gets_its_config_and_its_readings_reach_the_api(
    tmp_path: Path, sim_bus: Callable[..., Building]
) -> None:
    bus = sim_bus(
        *({"name": f"m{u}", "profile": "sdm630", "unit": u} for u in UNITS),
        baud=19200, parity="N",
    )  # fmt: skip
    opts = ServeOptions(
        data_dir=tmp_path / "fleet-data", broker="mosquitto", mqtt_port=0,
        mqtt_bind="127.0.0.1", http_host="127.0.0.1", http_port=0,
    )  # fmt: skip

    async def scenario(running: Running) -> None:
        # an organisation and its first admin, as `fleet create-org/-user/-token` make them
        admin.create_org(running.engine, "musterstadt", "Stadt Musterstadt")
        admin.create_user(running.engine, "it@musterstadt.example", "long-password",
                          "musterstadt", "admin")  # fmt: skip
        api_token = admin.create_token(
            running.engine, "it@musterstadt.example", "musterstadt", "e2e"
        )
        base = f"http://127.0.0.1:{running.http_port}/api/v1"
        h = {"Authorization": f"Bearer {api_token}"}
        async with httpx.AsyncClient(base_url=base, timeout=10) as api:
            r = await api.post("/claim-tokens", json={"count": 1, "label": "e2e"}, headers=h)
            assert r.status_code == 201, r.text
            claim_token = r.json()[0]["token"]
            # the gateway's side of provisioning: no API token, only the claim token
            r = await api.post(
                "/provision/claim",
                json={"token": claim_token, "gateway_id": GW, "fw_version": "edge-0.1.0"},
            )
            assert r.status_code == 201, r.text
            ident = r.json()
            assert ident["gateway_id"] == GW and ident["status"] == "accepted"
            assert ident["next_seq"] == 1
            r = await api.put(
                f"/gateways/{GW}/config", json=desired_config(bus.bus().path), headers=h
            )
            assert r.status_code == 201, r.text
            version = r.json()["version"]
            assert version == 1

            url = urlsplit(ident["broker_url"])
            assert url.scheme == "mqtt" and url.port == running.mqtt_port
            user, password = ident["mqtt_username"], ident["mqtt_password"]
            host = str(url.hostname)
            await until(
                lambda: broker_knows(host, running.mqtt_port, user, password), 10, "broker account"
            )
            settings = settings_from_dict(
                {
                    "gateway": {"id": GW, "data_dir": "gw-data"},
                    "mqtt": {"host": host, "port": running.mqtt_port, "tls": False,
                             "username": user, "password": password},
                    "signing": {"key": ident["signing_key"]},
                    "status": {"interval_s": 2},
                },
                tmp_path / "gateway.toml",
            )  # fmt: skip
            agent = Agent(settings)
            task = asyncio.create_task(agent.run())
            try:
                # the signed desired configuration arrives over MQTT, is applied and reported
                async def reported() -> bool:
                    r = await api.get(f"/gateways/{GW}/config/reported", headers=h)
                    return r.json()["reported_version"] == version and r.json()["in_sync"]

                await until(reported, 15, "config reported as applied")
                assert agent.config is not None and agent.config["version"] == version
                assert {m["id"] for m in agent.config["meters"]} == set(UNITS)

                # readings of both meters arrive; let a few more polls through
                async def latest_channels() -> set[int]:
                    r = await api.get(f"/gateways/{GW}/latest", headers=h)
                    return {x["channel"] for x in r.json()}

                want = {channel_id(u, q) for u in UNITS for q in QUANTITIES}
                await until(lambda: _superset(latest_channels(), want), 15, "readings")
                # online, with the boot counter of its birth message (its first start)
                r = await api.get(f"/gateways/{GW}", headers=h)
                gw = r.json()
                assert gw["status"] == "accepted" and gw["online"] is True
                assert gw["boot"] == 1 and gw["session"] == 1
                assert gw["fw_version"] == "edge-0.1.0"
                assert gw["reported_config_version"] == version
                await asyncio.sleep(2)  # a few more polls
            finally:
                agent.stop()
                await asyncio.wait_for(task, 20)
            # everything it read was acknowledged by the fleet, but for the last poll, which
            # may have been taken after the last batch went out (at most one per channel)
            assert agent.store.depth <= len(want), agent.store.depth
            # it said goodbye: offline, same boot
            r = await api.get(f"/gateways/{GW}", headers=h)
            assert (r.json()["online"], r.json()["boot"]) == (False, 1)

            now = int(time.time() * 1000)
            r = await api.get(
                f"/gateways/{GW}/telemetry",
                params={"channel": sorted(want), "start_ts_ms": now - 600_000,
                        "end_ts_ms": now + 60_000},
                headers=h,
            )  # fmt: skip
            assert r.status_code == 200, r.text
            raw = {int(ch): [p["value"] for p in pts] for ch, pts in r.json()["raw"].items()}
            truth = served(bus)
            assert set(raw) == want
            for ch, values in raw.items():
                assert len(values) >= 3, (ch, values)
                assert values == truth[ch][: len(values)], ch  # each served value, once, in order
                assert len(truth[ch]) - len(values) <= 1  # at most the poll in flight at stop
            r = await api.get(f"/gateways/{GW}/latest", headers=h)
            assert {x["channel"]: x["value"] for x in r.json()} == {
                ch: values[-1] for ch, values in raw.items()
            }
            r = await api.get("/alerts", headers=h)
            assert r.json()["total"] == 0, r.json()

    async def main() -> None:
        ready: asyncio.Queue[Running] = asyncio.Queue()
        stop = asyncio.Event()
        server = asyncio.create_task(serve(opts, stop, on_ready=ready.put_nowait))
        try:
            running = await asyncio.wait_for(ready.get(), 30)
            await scenario(running)
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(server, 20)

    asyncio.run(main())


async def _superset(got: Any, want: set[int]) -> bool:
    return set(await got) >= want
