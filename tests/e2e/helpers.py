"""The moving parts of the end-to-end suite, each a real process the test can kill and start
again: Mosquitto with the fleet's password and ACL files, `fleet serve` pointed at it, a TCP
proxy standing for the gateway's network (dropped or paused), and the two gateway kinds (the
Linux agent `edge run`, the MicroPython firmware on the unix port). Waits are on conditions
with deadlines; nothing here decides whether the system behaved, the tests do."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from edge.agent import StatusError, read_status
from edge.testing import Mosquitto, free_port
from fleet.mqtt import acl, mosquitto_conf
from fleet.mqtt.store import Accounts

REPO = Path(__file__).resolve().parents[2]
FLEET_PASSWORD = "e2e-fleet-bridge-password"
TIME_SCALE = 0.1  # of the gateways' configuration trial windows: 60 s -> 6 s


def wait_until(
    pred: Callable[[], Any], timeout_s: float, what: str, log: Callable[[], str] = str
) -> Any:
    """pred()'s first truthy value, polled every 0.1 s; AssertionError after timeout_s (with
    log(), e.g. the tail of a process's output)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s\n{log()}")
        time.sleep(0.1)


def now_ms() -> int:
    return int(time.time() * 1000)


def tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else f"({path} is empty)"


def terminate(proc: subprocess.Popen[bytes] | None) -> None:
    """A clean shutdown: SIGTERM, up to 20 s to finish, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# --- the broker ------------------------------------------------------------------------------


class Broker:
    """A Mosquitto as a municipality runs it beside the fleet: no anonymous clients, the
    password and ACL files the fleet keeps in `folder` (--mosquitto-dir), and a pid file the
    fleet signals (SIGHUP) when accounts change. kill() + start() is a broker crash: no
    persistence, so sessions and retained messages are gone."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.pid_file = folder / "mosquitto.pid"
        # Before the fleet's first refresh: only the fleet's own account.
        mosquitto_conf.write_auth_files(
            folder, Accounts([], []), mosquitto_conf.service_account(FLEET_PASSWORD)
        )
        auth = (
            "allow_anonymous false\n"
            f"password_file {folder / mosquitto_conf.PASSWORD_FILE}\n"
            f"acl_file {folder / mosquitto_conf.ACL_FILE}\n"
        )
        self.mosquitto = Mosquitto(folder / "run", extra_config=auth)
        self.port = self.mosquitto.port

    def start(self) -> None:
        self.mosquitto.start()
        assert self.mosquitto.proc is not None
        # Mosquitto writes pid_file only when daemonised; the fleet just needs the pid.
        self.pid_file.write_text(f"{self.mosquitto.proc.pid}\n")

    def kill(self) -> None:
        self.mosquitto.stop(kill=True)

    def stop(self) -> None:
        self.mosquitto.stop()

    def url(self) -> str:
        return f"mqtt://{acl.FLEET_USER}:{FLEET_PASSWORD}@127.0.0.1:{self.port}"


# --- the fleet -------------------------------------------------------------------------------


class Fleet:
    """`fleet serve` (SQLite in workdir) as a subprocess on a fixed HTTP port, pointed at the
    external broker. kill() is a crash (SIGKILL), stop() a clean shutdown."""

    def __init__(self, workdir: Path, broker: Broker) -> None:
        self.workdir = workdir
        self.broker = broker
        self.data_dir = workdir / "fleet-data"
        self.log = workdir / "fleet.log"
        self.http_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def database(self) -> Path:
        return self.data_dir / "fleet.db"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/api/v1"

    def start(self, timeout_s: float = 60.0) -> None:
        ready_before = self._ready_lines()
        cmd = [
            sys.executable, "-m", "fleet.cli", "serve", "--json",
            "--data-dir", str(self.data_dir), "--host", "127.0.0.1", "--port", str(self.http_port),
            "--mqtt", self.broker.url(), "--mosquitto-dir", str(self.broker.folder),
            "--mosquitto-pid-file", str(self.broker.pid_file),
        ]  # fmt: skip
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(b"--- start %d\n" % self.starts)
            out.flush()
            self.proc = subprocess.Popen(
                cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONPATH=str(REPO)),
            )  # fmt: skip
        proc = self.proc

        def ready() -> bool:
            assert proc.poll() is None, f"fleet serve exited ({proc.returncode}):\n{tail(self.log)}"
            return self._ready_lines() > ready_before

        wait_until(ready, timeout_s, "fleet serve ready", lambda: tail(self.log))

    def _ready_lines(self) -> int:
        if not self.log.exists():
            return 0
        return self.log.read_text(errors="replace").count('{"ready"')

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None


class Api:
    """The fleet's HTTP API with an operator's token; every call retries while the fleet is
    restarting (connection refused), for up to retry_s."""

    def __init__(self, fleet: Fleet, token: str, retry_s: float = 30.0) -> None:
        self.client = httpx.Client(
            base_url=fleet.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=15
        )
        self.retry_s = retry_s

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        deadline = time.monotonic() + self.retry_s
        while True:
            try:
                return self.client.request(method, path, **kwargs)
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        r = self.call(method, path, **kwargs)
        assert r.status_code == status, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()

    def close(self) -> None:
        self.client.close()


def broker_accepts(port: int, user: str, password: str) -> bool:
    """The broker lets this account in (the fleet wrote it to the password file)."""
    import aiomqtt

    async def attempt() -> bool:
        try:
            async with aiomqtt.Client(
                "127.0.0.1", port, identifier=user, username=user, password=password, timeout=3
            ):
                return True
        except aiomqtt.MqttError:
            return False

    return asyncio.run(attempt())


# --- the network between gateway and broker --------------------------------------------------


class TcpProxy:
    """127.0.0.1:port -> 127.0.0.1:target, in a thread of its own (its timing never waits for
    the test). drop(): every open connection is closed and new ones are refused, as when a
    router reboots. pause(): connections stay open but no byte moves either way, as when a
    cable is pulled (only keepalives notice). restore() ends either."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self._dropped = False
        self._flowing: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, name="e2e-proxy", daemon=True)
        self._started = threading.Event()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = self.loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port)
        )
        self._started.set()
        self.loop.run_forever()

    def start(self) -> int:
        self._thread.start()
        assert self._started.wait(10), "proxy did not start"
        return self.port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._dropped:
            writer.close()
            return
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_w}
        await asyncio.gather(self._pump(reader, up_w), self._pump(up_r, writer))
        self._writers -= {writer, up_w}

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(65536)
                if not data:
                    break
                await self._flowing.wait()  # bytes read just before a pause wait for its end
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def _call(self, fn: Callable[[], None]) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()

        self.loop.call_soon_threadsafe(run)
        assert done.wait(10)

    def drop(self) -> None:
        def go() -> None:
            self._dropped = True
            for w in list(self._writers):
                w.transport.abort()

        self._call(go)

    def pause(self) -> None:
        self._call(lambda: self._flowing.clear())  # type: ignore[union-attr]

    def restore(self) -> None:
        def go() -> None:
            self._dropped = False
            self._flowing.set()  # type: ignore[union-attr]

        self._call(go)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        def go() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                w.transport.abort()

        self._call(go)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


# --- the gateways ----------------------------------------------------------------------------


class GatewayProcess:
    """A gateway as a process on a data directory that survives it: start, SIGKILL, start."""

    kind = ""

    def __init__(self, workdir: Path, ident: dict[str, Any], mqtt_port: int) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ident = ident
        self.gateway_id: str = ident["gateway_id"]
        self.mqtt_port = mqtt_port
        self.log = workdir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts_ms: list[int] = []  # wall clock before each start
        self.kills_ms: list[int] = []

    def command(self) -> tuple[list[str], Path, dict[str, str]]:
        raise NotImplementedError

    def start(self) -> None:
        cmd, cwd, env = self.command()
        self.starts_ms.append(now_ms())
        with self.log.open("ab") as out:
            out.write(b"--- start %d\n" % len(self.starts_ms))
            out.flush()
            self.proc = subprocess.Popen(
                cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        assert self.alive(), f"{self.kind} gateway exited:\n{tail(self.log)}"

    def kill(self) -> None:
        """SIGKILL: a power cut."""
        if self.alive():
            assert self.proc is not None
            self.kills_ms.append(now_ms())
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        self.kill()

    def wait_running(self, timeout_s: float = 60.0) -> None:
        """Until this start polls and sends (so a kill lands in that work, not in start-up)."""
        raise NotImplementedError

    def output(self) -> str:
        return tail(self.log)


class EdgeGateway(GatewayProcess):
    """The Linux agent: `edge run --config gateway.toml` (through edge_run.py, which scales the
    trial window as the firmware's time_scale does: 60 s -> 6 s), with the bootstrap file a
    technician leaves after provisioning (credentials and signing key from the claim)."""

    kind = "edge"

    def __init__(self, workdir: Path, ident: dict[str, Any], mqtt_port: int) -> None:
        super().__init__(workdir, ident, mqtt_port)
        self.data = workdir / "data"
        self.toml = workdir / "gateway.toml"
        self.toml.write_text(
            f'[gateway]\nid = "{ident["gateway_id"]}"\ndata_dir = "data"\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\ntls = false\nkeepalive_s = 4\n'
            f'username = "{ident["mqtt_username"]}"\npassword = "{ident["mqtt_password"]}"\n'
            f'[signing]\nkey = "{ident["signing_key"]}"\n'
            "[status]\ninterval_s = 1\n"
        )

    def command(self) -> tuple[list[str], Path, dict[str, str]]:
        cmd = [sys.executable, str(Path(__file__).with_name("edge_run.py")), str(TIME_SCALE),
               "run", "--config", str(self.toml)]  # fmt: skip
        return cmd, self.workdir, dict(os.environ, PYTHONPATH=str(REPO))

    def stop(self) -> None:
        """SIGTERM: the agent says goodbye and closes its buffer."""
        terminate(self.proc)
        self.proc = None

    def wait_running(self, timeout_s: float = 60.0) -> None:
        assert self.proc is not None
        pid = self.proc.pid

        def running() -> bool:
            self.check_alive()
            try:
                st = read_status(self.data)
            except StatusError:
                return False
            return bool(st.get("pid") == pid and st.get("running"))

        wait_until(running, timeout_s, "edge agent running", self.output)


class FirmwareGateway(GatewayProcess):
    """The MicroPython firmware (compiled .mpy tree) on the unix port:
    `micropython -X heapsize=H -m firmware.run_unix <flash dir> <settings.json>`, with the
    settings.json a provisioned board holds (keys_hex: the signing key as the fleet issues it).
    time_scale shortens the configuration's trial window (60 s -> 6 s) so a compressed
    scenario can show a trial end; the rollback logic itself is unchanged."""

    kind = "firmware"

    def __init__(
        self,
        workdir: Path,
        ident: dict[str, Any],
        mqtt_port: int,
        tree: Path,
        micropython: str,
        heap: str,
    ) -> None:
        super().__init__(workdir, ident, mqtt_port)
        self.tree = tree
        self.micropython = micropython
        self.heap = heap
        self.flash = workdir / "flash"
        self.flash.mkdir(exist_ok=True)
        self.settings = workdir / "settings.json"
        settings = {
            "gateway": ident["gateway_id"],
            "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "keepalive_s": 4, "timeout_s": 3,
                     "user": ident["mqtt_username"], "password": ident["mqtt_password"]},
            "keys_hex": [ident["signing_key"]],
            "status_interval_s": 1,
            "ack_timeout_s": 5,
            "watchdog_ms": 8000,
            "flush_interval_s": 1,
            "time_scale": TIME_SCALE,
        }  # fmt: skip
        self.settings.write_text(json.dumps(settings))

    def command(self) -> tuple[list[str], Path, dict[str, str]]:
        cmd = [self.micropython, "-X", f"heapsize={self.heap}", "-m", "firmware.run_unix",
               str(self.flash), str(self.settings)]  # fmt: skip
        return cmd, self.tree, dict(os.environ, MICROPYPATH=f"{self.tree}:.frozen")

    RUNNING_MARK = "app: gateway "  # printed once the app's tasks (polling, uplink) run

    def wait_running(self, timeout_s: float = 60.0) -> None:
        start_mark = f"--- start {len(self.starts_ms)}\n"

        def running() -> bool:
            self.check_alive()
            out = self.log.read_text(errors="replace")
            return self.RUNNING_MARK in out.split(start_mark)[-1]

        wait_until(running, timeout_s, "firmware running", self.output)
