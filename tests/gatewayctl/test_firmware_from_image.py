"""The whole way of a gateway, with the real pieces: `gatewayctl provision` makes a claim token
at a running fleet (fleet.serve, its Mosquitto, SQLite), `gatewayctl build` puts the compiled
firmware and the provisioning file into a littlefs image, the real MicroPython interpreter
mounts that image (VfsLfs2 on a file block device) and runs the firmware from it; the firmware
provisions itself over MQTT with the claim token, writes its identity into the image, gets its
meter configuration from the fleet and sends readings of hw_sim meters, which `gatewayctl
commission` sees at the API and reports. Also: provisioning alone fits a 96 KB heap; a used
claim token is refused with a clear message and retried, the gateway does not crash."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import littlefs
import pytest
from conftest import HERE, Fleet, cli_json, micropython_env, run_cli

from firmware.version import FW_VERSION
from hw_sim.scenario import Building
from protocols import codec
from protocols.quantities import channel_id

pytestmark = pytest.mark.timeout(90)

# The whole gateway needs more than 96 KB on the 64-bit unix port (see docs/firmware.md,
# Memory); provisioning alone must fit the 96 KB of an ESP32 without PSRAM.
GATEWAY_HEAP = os.environ.get("FW_HEAP", "192K")
PROVISION_HEAP = os.environ.get("PROVISION_HEAP", "96K")
QUANTITIES = {"voltage_l1": 0.1, "power_total": 1, "energy_import": 1}
BLOCKS = 512  # the unix board's image: 2 MB in 4 KB blocks (gatewayctl/boards/unix.json)


class Firmware:
    """MicroPython running the firmware from a built image, logging to a file."""

    def __init__(self, binary: str, image: Path, log: Path, heap: str, *extra: str) -> None:
        self.log = log
        with log.open("ab") as f:
            self.proc = subprocess.Popen(
                [binary, "-X", f"heapsize={heap}", str(HERE / "mpy_boot.py"),
                 str(image), str(BLOCKS), *extra],
                cwd=str(image.parent), env=micropython_env(), stdout=f, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def firmware(micropython_bin: str) -> Iterator[Callable[..., Firmware]]:
    started: list[Firmware] = []

    def start(image: Path, log: Path, heap: str = GATEWAY_HEAP, *extra: str) -> Firmware:
        fw = Firmware(micropython_bin, image, log, heap, *extra)
        started.append(fw)
        return fw

    yield start
    for fw in started:
        fw.stop()


def mount_image(path: Path) -> littlefs.LittleFS:
    fs = littlefs.LittleFS(block_size=4096, block_count=BLOCKS, mount=False)
    fs.context.buffer = bytearray(path.read_bytes())
    fs.mount()
    return fs


def read_image(path: Path, name: str) -> Any:
    fs = mount_image(path)  # held while its file is open: the file does not keep it alive
    with fs.open(name, "r") as f:
        return json.loads(f.read())


def new_site(fleet: Fleet, name: str) -> int:
    r = httpx.post(f"{fleet.url}/api/v1/sites", json={"name": name},
                   headers={"Authorization": f"Bearer {fleet.api_token}"})  # fmt: skip
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def build_image(fleet: Fleet, out: Path, token: str, gateway_id: str, *extra: str) -> Path:
    cli_json(
        "build", "--board", "unix", "--out", str(out), "--fleet-mqtt", fleet.mqtt_url,
        "--claim-token", token, "--gateway-id", gateway_id, "--site", "Grundschule Süd",
        "--retry-min-s", "0.5", "--retry-max-s", "1",
        "--setting", "status_interval_s=2", "--setting", "flush_interval_s=1",
        "--setting", "ack_timeout_s=5", "--setting", "watchdog_ms=8000", *extra,
    )  # fmt: skip
    return out / "fs.img"


def claimed_image(fleet: Fleet, tmp_path: Path, gateway_id: str) -> tuple[str, Path]:
    """A claim token made by `gatewayctl provision` (no site) and an image built with it."""
    prov = cli_json("provision", "--fleet", fleet.url, "--api-token", fleet.tech_token,
                    "--out", str(tmp_path / "label"), "--no-pdf")  # fmt: skip
    return prov["token"], build_image(fleet, tmp_path / "build", prov["token"], gateway_id)


def meters_config(port: str) -> dict[str, Any]:
    return {
        "buses": [{"type": "rtu", "id": "b1", "port": port, "baud": 19200, "parity": "N",
                   "timeout_ms": 300, "retries": 1}],
        "meters": [{"id": u, "name": f"Zähler {u}", "bus": "b1", "unit": u, "profile": "sdm630",
                    "interval_s": 1, "quantities": list(QUANTITIES)} for u in (1, 2)],
        "uplink": {"batch_interval_s": 1},
        "rollback": {"contact_timeout_s": 120, "all_polls_failing_s": 120},
    }  # fmt: skip


def served(b: Building) -> dict[int, set[float]]:
    out: dict[int, set[float]] = {}
    for u in (1, 2):
        for r in b.truth.values(f"m{u}"):
            if r["quantity"] in QUANTITIES:
                m, e = codec.parse_resolution(QUANTITIES[r["quantity"]])
                value = codec.dequantise(codec.quantise(r["value"], m, e), m, e)
                out.setdefault(channel_id(u, r["quantity"]), set()).add(value)
    return out


def test_gateway_built_by_gatewayctl_provisions_itself_and_its_readings_reach_the_fleet(
    fleet: Fleet, tmp_path: Path, sim_bus: Callable[..., Building],
    firmware: Callable[..., Firmware],
) -> None:  # fmt: skip
    bus = sim_bus(*({"name": f"m{u}", "profile": "sdm630", "unit": u} for u in (1, 2)),
                  baud=19200, parity="N")  # fmt: skip
    site_id = new_site(fleet, "Grundschule Süd")
    prov = cli_json(
        "provision", "--fleet", fleet.url, "--api-token", fleet.tech_token,
        "--site", "Grundschule Süd", "--gateway-id", "gs-sued-1", "--out", str(tmp_path / "label"),
    )  # fmt: skip
    assert prov["site_id"] == site_id and prov["token"].startswith("claim_")
    image = build_image(fleet, tmp_path / "build", prov["token"], "gs-sued-1")
    assert read_image(image, "provision.json")["claim_token"] == prov["token"]

    fw = firmware(image, tmp_path / "gateway.log")
    config = tmp_path / "meters.json"
    config.write_text(json.dumps(meters_config(bus.bus().path)))
    code, out, err = run_cli(
        "commission", "--fleet", fleet.url, "--api-token", fleet.api_token,
        "--claim-id", str(prov["claim_token_id"]), "--config", str(config),
        "--site", "Grundschule Süd", "--technician", "E. Lektriker", "--timeout", "30",
        "--readings-timeout", "40", "--poll-s", "0.3", "--out", str(tmp_path / "report"),
        "--json",
    )  # fmt: skip
    assert code == 0, f"{err}\n--- gateway log:\n{fw.output()[-3000:]}"
    report = json.loads(out)
    assert report["gateway_id"] == "gs-sued-1" and report["complete"], report
    assert report["fw_version"] == FW_VERSION
    truth = served(bus)
    got = {(r["device"], r["quantity"]) for r in report["readings"]}
    assert got >= {(u, q) for u in (1, 2) for q in QUANTITIES}
    for r in report["readings"]:
        if r["quantity"] in QUANTITIES:  # each value is one the simulated meter served
            assert r["value"] in truth[channel_id(r["device"], r["quantity"])], r
    assert "provision: this gateway is gs-sued-1 (accepted)" in fw.output()
    for kind in ("text", "html", "pdf"):
        assert Path(report["report_files"][kind]).stat().st_size > 200
    text = Path(report["report_files"]["text"]).read_text()
    assert "Commissioned: all 2 meter(s) sent readings." in text and "Zähler 2" in text

    # the gateway is online at the API, bound to the site of its claim token
    h = {"Authorization": f"Bearer {fleet.api_token}"}
    gw = httpx.get(f"{fleet.url}/api/v1/gateways/gs-sued-1", headers=h).json()
    assert gw["online"] and gw["site_id"] == site_id and gw["boot"] >= 1
    fw.stop()
    # its identity is in the image, written by the firmware itself; the token stays beside it
    settings = read_image(image, "settings.json")
    assert settings["gateway"] == "gs-sued-1" and settings["mqtt"]["user"] == "gs-sued-1"
    assert len(settings["keys_hex"][0]) == 64 and "claim_token" not in settings
    assert settings["provisioned"]["site"] == "Grundschule Süd"


def test_provisioning_fits_96k_and_writes_the_identity_atomically(
    fleet: Fleet, tmp_path: Path, firmware: Callable[..., Firmware]
) -> None:
    _token, image = claimed_image(fleet, tmp_path, "rathaus-keller")
    fw = firmware(image, tmp_path / "fw.log", PROVISION_HEAP, "provision-only")
    assert fw.proc.wait(30) == 0, fw.output()
    assert "boot: provisioned" in fw.output(), fw.output()
    settings = read_image(image, "settings.json")
    assert settings["gateway"] == "rathaus-keller"
    assert "settings.json.tmp" not in mount_image(image).listdir("/")
    # a second boot has an identity: nothing to do, the token is not used again
    fw = firmware(image, tmp_path / "fw2.log", PROVISION_HEAP, "provision-only")
    assert fw.proc.wait(30) == 0 and "boot: nothing to do" in fw.output(), fw.output()


def test_used_claim_token_is_refused_clearly_and_retried_without_a_crash(
    fleet: Fleet, tmp_path: Path, firmware: Callable[..., Firmware]
) -> None:
    token, image = claimed_image(fleet, tmp_path, "depot-1")
    # someone else used the token first (over HTTPS, as the edge agent does)
    r = httpx.post(f"{fleet.url}/api/v1/provision/claim", json={"token": token})
    assert r.status_code == 201, r.text
    fw = firmware(image, tmp_path / "fw.log", PROVISION_HEAP)
    # The fleet answers "already used" until its broker drops the token's login (within a
    # second); from then on the broker refuses it. Either way: a clear message, a retry.
    refused = "does not accept this claim token: it is used, expired, revoked"
    deadline = time.monotonic() + 20
    while refused not in fw.output() or fw.output().count("failed; next in") < 3:
        assert fw.proc.poll() is None, fw.output()
        assert time.monotonic() < deadline, fw.output()
        time.sleep(0.2)
    log = fw.output()
    assert "Traceback" not in log and "provision: this gateway is" not in log
    for line in log.splitlines():
        assert line.startswith("provision: "), line
    fs = littlefs.LittleFS(block_size=4096, block_count=BLOCKS, mount=False)
    fs.context.buffer = bytearray(image.read_bytes())
    fs.mount()
    assert "settings.json" not in fs.listdir("/")


def test_a_broken_provisioning_file_is_reported_and_retried_until_it_is_fixed(
    tmp_path: Path, firmware: Callable[..., Firmware]
) -> None:
    cli_json("build", "--board", "unix", "--out", str(tmp_path / "b"), "--offline",
             "--fleet-mqtt", "mqtt://127.0.0.1:1", "--claim-token", "claim_" + "x" * 40,
             "--retry-min-s", "0.3", "--retry-max-s", "0.5")  # fmt: skip
    image = tmp_path / "b" / "fs.img"
    fs = littlefs.LittleFS(block_size=4096, block_count=BLOCKS, mount=False)
    fs.context.buffer = bytearray(image.read_bytes())
    fs.mount()
    with fs.open("provision.json", "w") as f:
        f.write('{"fleet": {"host": "127.0.0.1", "port": 1}, "claim_tok')  # torn by hand
    image.write_bytes(bytes(fs.context.buffer))
    fw = firmware(image, tmp_path / "fw.log", PROVISION_HEAP)
    deadline = time.monotonic() + 20
    while fw.output().count("failed; next in") < 2:
        assert fw.proc.poll() is None, fw.output()
        assert time.monotonic() < deadline, fw.output()
        time.sleep(0.2)
    log = fw.output()
    assert "provision: /flash/provision.json is not valid JSON" in log and "write it again" in log
    assert "Traceback" not in log
