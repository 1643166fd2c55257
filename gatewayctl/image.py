"""`gatewayctl build`: compile the firmware for a board (firmware/build.py, mpy-cross) and put it
with the provisioning file into a littlefs image of the board's filesystem partition
(littlefs-python), plus the same files as a folder for mpremote. No device I/O here.

Output folder:
  fs.img          the filesystem partition, written at the board's offset by `gatewayctl flash`
  files/          the same files (for `mpremote cp` on a Pico W and for updates)
  manifest.json   board, offsets, sizes and SHA-256 of every file (flash verifies against it)"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import littlefs

from firmware import build as fw_build
from gatewayctl.board import Board
from gatewayctl.errors import GatewayctlError

PROVISION_FILE = "provision.json"
CA_FILE = "ca.pem"
# littlefs I/O sizes: MicroPython's VfsLfs2 defaults (readsize, progsize, lookahead = 32);
# only block size and count are stored in the superblock, so these need not match exactly.
_LFS_IO = {"read_size": 32, "prog_size": 32, "lookahead_size": 32}


def parse_mqtt_url(url: str) -> dict[str, Any]:
    """{"host", "port", "tls"} of mqtt://host[:port], mqtts://host[:port] or host[:port]."""
    if "://" not in url:
        url = "mqtt://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise GatewayctlError(
            f"fleet MQTT address {url!r}: write mqtts://broker.example.org:8883 "
            "(or mqtt://host:1883 on a trusted network)"
        )
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as e:
        raise GatewayctlError(f"fleet MQTT address {url!r}: {e}") from None
    return {"host": parts.hostname, "port": port, "tls": tls}


def provision_doc(
    board: Board,
    mqtt_url: str,
    claim_token: str,
    *,
    gateway_id: str | None = None,
    name: str | None = None,
    site: str | None = None,
    wifi: tuple[str, str] | None = None,
    ca_file: Path | None = None,
    settings: dict[str, Any] | None = None,
    retry_s: tuple[float, float] | None = None,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The provisioning file (firmware/provision.py) and the extra files it refers to."""
    fleet = parse_mqtt_url(mqtt_url)
    files: dict[str, bytes] = {}
    if ca_file is not None:
        try:
            data = ca_file.read_bytes()
        except OSError as e:
            raise GatewayctlError(f"CA certificate {ca_file}: {e.strerror}") from None
        if b"-----BEGIN CERTIFICATE-----" not in data and not data.startswith(b"\x30"):
            raise GatewayctlError(f"{ca_file} is not a PEM or DER certificate")
        files[CA_FILE] = data
        fleet["ca_file"] = board.root + CA_FILE
    elif fleet["tls"]:
        print(
            "gatewayctl: warning: TLS without --ca: the gateway will not verify the broker",
            file=sys.stderr,
        )
    table = dict(board.settings_board)
    if board.link == "wifi":
        if wifi is None:
            raise GatewayctlError(
                f"board {board.name} connects by Wi-Fi: give --wifi-ssid and --wifi-password"
            )
        table["wifi"] = {"ssid": wifi[0], "password": wifi[1]}
    doc: dict[str, Any] = {"fleet": fleet, "claim_token": claim_token, "board": table}
    for key, value in (("gateway_id", gateway_id), ("name", name), ("site", site)):
        if value:
            doc[key] = value
    if settings:
        doc["settings"] = settings
    if retry_s:
        doc["retry_min_s"], doc["retry_max_s"] = retry_s
    return doc, files


def cache_dir() -> Path:
    """Where compiled firmware trees are kept (GATEWAYCTL_CACHE, else ~/.cache/gatewayctl)."""
    env = os.environ.get("GATEWAYCTL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "gatewayctl"


def compiled(build_board: str) -> Path:
    """The firmware compiled by mpy-cross for a firmware.build board, from the cache when its
    sources are unchanged: preparing ten gateways compiles once."""
    h = hashlib.sha256(build_board.encode())
    for rel, path in fw_build.sources(build_board):
        h.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    target = cache_dir() / f"{build_board}-{h.hexdigest()[:20]}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        fw_build.compile_board(build_board, tmp / "tree")
        os.rename(tmp / "tree", target)  # atomic: a cached tree is always complete
    except SystemExit as e:  # firmware.build reports a missing mpy-cross this way
        raise GatewayctlError(str(e)) from None
    except OSError:
        if not target.is_dir():  # another build put it there first: fine
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build(
    board: Board,
    out: Path,
    provision: dict[str, Any] | None,
    extra_files: dict[str, bytes] | None = None,
) -> dict[str, Any]:
    """Build into out (files/, fs.img, manifest.json); returns the manifest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tree = out / "files"
    if tree.exists():
        shutil.rmtree(tree)
    shutil.copytree(compiled(board.build), tree)
    for rel, data in (extra_files or {}).items():
        (tree / rel).write_bytes(data)
    if provision is not None:
        (tree / PROVISION_FILE).write_text(json.dumps(provision, indent=1) + "\n")
    files = {
        p.relative_to(tree).as_posix(): p.read_bytes()
        for p in sorted(tree.rglob("*"))
        if p.is_file()
    }
    fs = littlefs.LittleFS(
        block_size=board.fs_block_size, block_count=board.fs_block_count, **_LFS_IO
    )
    try:
        for rel, data in files.items():
            parent = rel.rpartition("/")[0]
            if parent:
                fs.makedirs(parent, exist_ok=True)
            with fs.open(rel, "wb") as f:
                f.write(data)
    except littlefs.LittleFSError as e:
        raise GatewayctlError(
            f"the files do not fit the {board.fs_size // 1024} KB filesystem of {board.name} ({e})"
        ) from None
    image = bytes(fs.context.buffer)
    (out / "fs.img").write_bytes(image)
    manifest = {
        "board": board.name,
        "fs_offset": board.fs_offset,
        "fs_size": board.fs_size,
        "fs_block_size": board.fs_block_size,
        "image_sha256": _sha256(image),
        "files": {rel: _sha256(data) for rel, data in files.items()},
        "app_bytes": sum(len(d) for r, d in files.items() if r.endswith((".mpy", ".py"))),
        "gateway_id": (provision or {}).get("gateway_id"),
        "site": (provision or {}).get("site"),
        "provisioned": provision is not None,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_manifest(out: Path) -> dict[str, Any]:
    path = Path(out) / "manifest.json"
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise GatewayctlError(
            f"{path} not found: run `gatewayctl build --out {out} ...` first"
        ) from None
