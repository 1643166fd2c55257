"""`gatewayctl build`: the littlefs image has the board's partition size and is mounted by the
real MicroPython interpreter (VfsLfs2 on a file block device) with the compiled app, main.py
and the provisioning file the firmware reads; the files of the manifest match the image."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from conftest import cli_json, micropython_env, run_cli

from gatewayctl import board as boards

pytestmark = pytest.mark.timeout(60)

TOKEN = "claim_" + "k" * 40

LIST_IMAGE = """
import sys, vfs, os, json
from firmware.boards.unix_flash import FileBlockDevice
vfs.mount(vfs.VfsLfs2(FileBlockDevice(sys.argv[1], 4096, int(sys.argv[2]))), "/img")
def walk(d):
    out = []
    for name, kind, *_ in os.ilistdir(d):
        p = d + "/" + name
        out += walk(p) if kind == 0x4000 else [p[5:]]
    return out
print(json.dumps({"files": sorted(walk("/img")), "provision": json.load(open("/img/provision.json")),
                  "statvfs": os.statvfs("/img")[:3]}))
"""


def mount_in_micropython(binary: str, image: Path, blocks: int, tmp: Path) -> dict:
    script = tmp / "list_image.py"
    script.write_text(LIST_IMAGE)
    out = subprocess.run(
        [binary, str(script), str(image), str(blocks)],
        env=micropython_env(), capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return dict(json.loads(out.stdout))


def test_esp32_poe_image_is_the_vfs_partition_and_micropython_mounts_it(
    tmp_path: Path, micropython_bin: str
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    m = cli_json(
        "build", "--board", "esp32-poe", "--out", str(tmp_path / "b"), "--offline",
        "--fleet-mqtt", "mqtts://fleet.example.org", "--ca", str(ca), "--claim-token", TOKEN,
        "--gateway-id", "gs-sued-1", "--site", "Grundschule Süd", "--setting", "ntp_host=ptb.de",
    )  # fmt: skip
    image = tmp_path / "b" / "fs.img"
    # MicroPython's generic 4 MB partition table: vfs at 0x200000, 0x200000 long
    assert (m["fs_offset"], m["fs_size"]) == (0x200000, 0x200000)
    assert image.stat().st_size == 0x200000
    assert m["image_sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    got = mount_in_micropython(micropython_bin, image, 512, tmp_path)
    assert got["statvfs"] == [4096, 4096, 512]
    assert {"main.py", "provision.json", "ca.pem", "firmware/main.mpy", "firmware/provision.mpy",
            "firmware/boards/esp32.mpy", "protocols/profiles/sdm630.json"} <= set(got["files"])  # fmt: skip
    assert "firmware/run_unix.mpy" not in got["files"]  # host-only files stay out
    assert set(got["files"]) == set(m["files"])
    prov = got["provision"]
    assert prov["fleet"] == {"host": "fleet.example.org", "port": 8883, "tls": True,
                             "ca_file": "/ca.pem"}  # fmt: skip
    assert prov["board"] == {"name": "esp32", "model": "olimex_esp32_poe", "ethernet": True}
    assert prov["claim_token"] == TOKEN and prov["gateway_id"] == "gs-sued-1"
    assert prov["settings"] == {"ntp_host": "ptb.de"}


def test_pico_w_image_fills_its_848_kb_filesystem_and_needs_wifi(
    tmp_path: Path, micropython_bin: str
) -> None:
    args = ["build", "--board", "pico-w", "--out", str(tmp_path / "p"), "--offline",
            "--fleet-mqtt", "mqtt://10.0.0.5", "--claim-token", TOKEN]  # fmt: skip
    code, _out, err = run_cli(*args)
    assert code == 1 and "connects by Wi-Fi: give --wifi-ssid and --wifi-password" in err
    m = cli_json(*args, "--wifi-ssid", "Rathaus-IoT", "--wifi-password", "geheim123")
    board = boards.load("pico-w")
    assert m["fs_size"] == 848 * 1024 == board.fs_block_count * 4096
    assert m["fs_offset"] == 2 * 1024 * 1024 - 848 * 1024  # the end of the 2 MB flash
    got = mount_in_micropython(
        micropython_bin, tmp_path / "p" / "fs.img", board.fs_block_count, tmp_path
    )
    assert got["provision"]["board"] == {"name": "rp2",
                                         "wifi": {"ssid": "Rathaus-IoT", "password": "geheim123"}}  # fmt: skip
    assert got["provision"]["fleet"] == {"host": "10.0.0.5", "port": 1883, "tls": False}
    assert (
        "firmware/boards/rp2.mpy" in got["files"]
        and "firmware/boards/esp32.mpy" not in got["files"]
    )


def test_bad_build_arguments_say_what_to_give(tmp_path: Path) -> None:
    out = str(tmp_path / "x")
    code, _o, err = run_cli("build", "--board", "esp32", "--out", out, "--claim-token", TOKEN)
    assert code == 1 and "give --fleet-mqtt" in err
    code, _o, err = run_cli("build", "--board", "esp32", "--out", out, "--fleet-mqtt",
                            "http://fleet", "--claim-token", TOKEN, "--offline")  # fmt: skip
    assert code == 1 and "write mqtts://broker.example.org:8883" in err
    code, _o, err = run_cli("build", "--board", "unix", "--out", out, "--fleet-mqtt", "mqtt://h",
                            "--offline")  # fmt: skip
    assert code == 1 and "give --claim-token" in err
