"""The demo's gateways: the configuration an operator gives each building's gateway, the
bootstrap files a technician leaves on it, and the gateway processes (the Linux agent, or the
MicroPython firmware on the real interpreter), each in its own process group so the demo can
stop them, and everything they started, without leaving orphans."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from hw_sim.scenario import Building

ROOT = Path(__file__).resolve().parent.parent

# New configurations go back to the last good one after a minute of trouble (the schema's
# shortest window), so the demo's break-config shows its rollback within about a minute.
FIRMWARE_MAX_BATCH_READINGS = 100
ROLLBACK = {"contact_timeout_s": 60, "all_polls_failing_s": 60}


def gateway_config(building: Building, interval_s: int, rtu_only: bool = False) -> dict[str, Any]:
    """The configuration document an operator gives the gateway of this building. rtu_only
    leaves out Modbus TCP endpoints (the firmware has none)."""
    buses: list[dict[str, Any]] = []
    meters: list[dict[str, Any]] = []
    sensors: list[dict[str, Any]] = []
    lora: dict[str, Any] | None = None
    next_id = 1
    for ep in building.endpoints():
        if ep["kind"] == "rtu":
            bus_id = ep["name"]
            # A PTY carries no parity; hw_sim documents that gateways use N on a PTY. Stop bits
            # it does check, as a real meter's UART would.
            buses.append(
                {"type": "rtu", "id": bus_id, "port": ep["path"] or ep["pty"], "baud": ep["baud"],
                 "parity": "N", "stopbits": ep["stopbits"], "timeout_ms": 300, "retries": 1}
            )  # fmt: skip
        elif ep["kind"] == "tcp":
            if rtu_only:
                continue
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
                    {"id": next_id, "name": s["name"], "address": s["address"],
                     "format": s["format"]}
                )  # fmt: skip
                next_id += 1
            continue
        for m in ep["meters"]:
            meters.append(
                {"id": next_id, "name": m["name"], "bus": bus_id, "unit": m["unit"],
                 "profile": m["profile"], "interval_s": interval_s}
            )  # fmt: skip
            next_id += 1
    uplink: dict[str, Any] = {"batch_interval_s": interval_s}
    if rtu_only:  # the firmware: smaller batches leave heap for the backlog after an outage
        uplink["max_batch_readings"] = FIRMWARE_MAX_BATCH_READINGS
    doc: dict[str, Any] = {"buses": buses, "meters": meters, "sensors": sensors,
                           "uplink": uplink,
                           "rollback": dict(ROLLBACK)}  # fmt: skip
    if lora:
        doc["lora"] = lora
    return doc


def broken_patch(doc: dict[str, Any]) -> dict[str, Any]:
    """A merge patch that breaks a gateway as a typo would: every meter on a unit id nobody
    answers. Every poll then fails, and after rollback.all_polls_failing_s the gateway goes
    back to its last good configuration and reports it."""
    meters = [dict(m, unit=m["unit"] + 100) for m in doc.get("meters", [])]
    return {"meters": meters, "rollback": dict(ROLLBACK)}


def write_edge_toml(gw_dir: Path, ident: dict[str, Any], port: int) -> Path:
    """The bootstrap file a technician leaves on a Linux gateway after provisioning; MQTT goes
    to port (the demo's cuttable link to the broker)."""
    gw_dir.mkdir(parents=True, exist_ok=True)
    toml = gw_dir / "gateway.toml"
    toml.write_text(
        f'[gateway]\nid = "{ident["gateway_id"]}"\ndata_dir = "data"\n\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\ntls = false\nkeepalive_s = 10\n'
        f'username = "{ident["mqtt_username"]}"\npassword = "{ident["mqtt_password"]}"\n\n'
        f'[signing]\nkey = "{ident["signing_key"]}"\n\n[status]\ninterval_s = 10\n'
    )
    return toml


FIRMWARE_SETTINGS = {"status_interval_s": 10, "flush_interval_s": 5, "ack_timeout_s": 10,
                     "watchdog_ms": 30000}  # fmt: skip


def write_firmware_provisioning(
    gw_dir: Path, token: str, gateway: str, name: str, port: int
) -> Path:
    """provision.json beside settings.json (firmware/provision.py): at first boot the firmware
    exchanges the claim token over MQTT, through port (its link), and writes settings.json."""
    gw_dir.mkdir(parents=True, exist_ok=True)
    (gw_dir / "flash").mkdir(exist_ok=True)
    prov = {
        "fleet": {"host": "127.0.0.1", "port": port, "keepalive_s": 10, "timeout_s": 5},
        "claim_token": token, "gateway_id": gateway, "name": name, "site": name,
        "board": {"name": "unix"}, "settings": dict(FIRMWARE_SETTINGS),
        "retry_min_s": 1, "retry_max_s": 5,
    }  # fmt: skip
    path = gw_dir / "provision.json"
    path.write_text(json.dumps(prov, indent=1))
    return path


def write_firmware_settings(gw_dir: Path, ident: dict[str, Any], port: int, key: str) -> Path:
    """settings.json of a firmware gateway (docs/firmware.md), no initial configuration: the
    fleet's first one arrives signed. key: the signing key as the firmware takes it (text)."""
    gw_dir.mkdir(parents=True, exist_ok=True)
    (gw_dir / "flash").mkdir(exist_ok=True)
    settings = {
        "gateway": ident["gateway_id"],
        "mqtt": {"host": "127.0.0.1", "port": port, "user": ident["mqtt_username"],
                 "password": ident["mqtt_password"], "keepalive_s": 10, "timeout_s": 5},
        "keys": [key],
        **FIRMWARE_SETTINGS,
    }  # fmt: skip
    path = gw_dir / "settings.json"
    path.write_text(json.dumps(settings, indent=1))
    return path


class GatewayProcess:
    """One gateway as a child process in its own process group, its output in a log file."""

    def __init__(self, name: str, argv: list[str], cwd: Path, log_path: Path,
                 env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.name = name
        self.argv = argv
        self.cwd = cwd
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv, cwd=self.cwd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_PREEXEC,
        )  # fmt: skip

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def terminate(self) -> None:
        """SIGTERM to the whole process group (the gateway and anything it started)."""
        if self.proc is not None and self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)

    def wait_or_kill(self, deadline: float) -> None:
        """Wait until deadline (time.monotonic()) for the group to end, then SIGKILL it."""
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        # the leader may be gone while a child of it lives on: the group gets the kill anyway
        _signal_group(self.proc.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def _parent_death_signal() -> Any:
    """A preexec_fn that has Linux send the child SIGTERM when the demo dies, even by SIGKILL
    (prctl PR_SET_PDEATHSIG): no gateway outlives a demo that could not clean up. Resolved
    here, so the child only makes one C call between fork and exec."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig, sigterm = 1, int(signal.SIGTERM)
    return lambda: prctl(pr_set_pdeathsig, sigterm, 0, 0, 0)


_PREEXEC = _parent_death_signal()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def edge_process(name: str, toml: Path) -> GatewayProcess:
    return GatewayProcess(
        name, [sys.executable, "-m", "edge.cli", "run", "--config", str(toml)], ROOT,
        toml.parent / "gateway.log",
    )  # fmt: skip


def firmware_process(name: str, tree: Path, settings: Path, heap: str) -> GatewayProcess:
    """`micropython -X heapsize=... -m firmware.run_unix <flash dir> settings.json` on the
    compiled tree (firmware/build.py --board unix), as the HIL tests run it."""
    from firmware.build import tool

    env = dict(os.environ, MICROPYPATH=f"{tree}:.frozen")
    argv = [tool("micropython"), "-X", f"heapsize={heap}", "-m", "firmware.run_unix",
            str(settings.parent / "flash"), str(settings)]  # fmt: skip
    return GatewayProcess(name, argv, tree, settings.parent / "gateway.log", env)


def build_firmware(out: Path) -> Path:
    """Compile protocols/ and firmware/ for the unix port into out (mpy-cross)."""
    from firmware.build import compile_board

    compile_board("unix", out)
    return out
