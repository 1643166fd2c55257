"""`fleet serve` as a user runs it: one process with the API, a Mosquitto it starts itself and
the bridge; a gateway provisioned over MQTT with a claim token made by `fleet claim-tokens`
sends a batch and gets its ack; SIGTERM stops everything (the broker child too)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mqtt_helpers import client, collect, wait_until

from fleet.mqtt import store
from fleet.mqtt.broker import find_mosquitto
from protocols import codec, messages

pytestmark = pytest.mark.timeout(90)


def fleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
def test_fleet_serve_provisions_acks_and_stops_cleanly(tmp_path: Path) -> None:
    data = str(tmp_path / "fleet-data")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleet.cli", "serve", "--data-dir", data, "--json",
         "--port", "0", "--mqtt-port", "0", "--host", "127.0.0.1", "--mqtt-bind", "127.0.0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())["ready"]
        assert ready["broker"] == "mosquitto"
        with urllib.request.urlopen(
            f"http://127.0.0.1:{ready['http_port']}/api/openapi.json", timeout=10
        ) as r:
            assert r.status == 200
        fleet("create-org", "town", "--data-dir", data)
        token = json.loads(
            fleet("claim-tokens", "--org", "town", "--data-dir", data, "--json").stdout
        )["claim_tokens"][0]["token"]
        login = store.claim_login(token)
        port = ready["mqtt_port"]

        async def scenario() -> None:
            # the claim login reaches the broker's password file within a second or so
            async def claim_once() -> dict[str, object] | None:
                try:
                    async with client(port, login.username, login.username, login.password) as c:
                        got: list[tuple[str, bytes]] = []
                        await c.subscribe(f"prov/{login.username}/response", qos=1)
                        rx = asyncio.create_task(collect(c, got))
                        body = json.dumps({"token": token, "gateway_id": "school-9"}).encode()
                        await c.publish(f"prov/{login.username}/request", body, qos=1)
                        await wait_until(lambda: bool(got))
                        rx.cancel()
                        return json.loads(got[0][1]) if got else None
                except Exception:
                    return None

            answer = None
            deadline = time.monotonic() + 15
            while answer is None and time.monotonic() < deadline:
                answer = await claim_once()
                if answer is None:
                    await asyncio.sleep(0.3)
            assert answer is not None and answer["ok"] is True, answer
            user, password = str(answer["mqtt_username"]), str(answer["mqtt_password"])
            acks: list[tuple[str, bytes]] = []
            for _ in range(50):  # until the broker has reloaded the new gateway's password
                try:
                    async with client(port, user, user, password) as gw:
                        await gw.subscribe(f"gw/{user}/ack", qos=1)
                        rx = asyncio.create_task(collect(gw, acks))
                        # no configuration yet, so no channels: refused for good, with a reason
                        payload = codec.encode_batch(1, [(0x11C, int(time.time() * 1000), 5)])
                        await gw.publish(f"gw/{user}/tele", payload, qos=1)
                        await wait_until(lambda: bool(acks))
                        rx.cancel()
                        break
                except Exception:
                    await asyncio.sleep(0.3)
            ack = messages.decode_ack(acks[0][1])
            assert ack.seq == 1 and ack.error

        asyncio.run(scenario())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        with pytest.raises(OSError):  # the broker it started is gone too
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_fleet_help_lists_the_commands() -> None:
    out = fleet("--help").stdout
    for command in ("serve", "migrate", "status", "create-org", "claim-tokens", "export"):
        assert command in out
