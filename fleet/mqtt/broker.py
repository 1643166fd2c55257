"""The broker of a one-machine fleet: a Mosquitto the fleet starts itself with generated
password and ACL files (the default when mosquitto is installed), or amqtt in this process with
the fleet's login and ACL plugins; and the loop that keeps a Mosquitto's files in step with the
database (regenerate + SIGHUP). Starts and stops brokers; never handles messages.

Why Mosquitto is the default: amqtt 0.12 drops the subscriptions of a connected client as soon
as anyone connects with its client id, even with a wrong password (it cleans the session before
it checks the login), so any client on the network can cut a gateway off its acks; it also
has no shared subscriptions and is much slower. amqtt remains the fallback without Mosquitto."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from sqlalchemy import Engine

from fleet.db.engine import read
from fleet.mqtt import amqtt_plugin, mosquitto_conf, store

log = logging.getLogger("fleet.mqtt.broker")

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
FLEET_PASSWORD_FILE = "fleet-mqtt-password"


class BrokerError(RuntimeError):
    """The embedded broker cannot start; the message says what to do."""


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in MOSQUITTO_PATHS if os.access(p, os.X_OK)), None)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def fleet_password(folder: Path) -> str:
    """The fleet bridge's broker password, made once and kept in folder (mode 0600)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FLEET_PASSWORD_FILE
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return password


def _wait_listening(port: int, timeout_s: float, alive: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def check_port_free(bind: str, port: int) -> None:
    """Refuse to start a broker on a port something else already listens on.

    Without this check a broker that is already there (Debian's mosquitto service listens on
    127.0.0.1:1883 once the package is installed) would answer the start-up probe, and the
    fleet would talk to a broker the gateways never reach."""
    if port == 0:
        return
    for host in {bind, "127.0.0.1"}:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as e:
                raise BrokerError(
                    f"port {port} on {host} is already in use ({e.strerror}), probably by another "
                    "MQTT broker such as the system's mosquitto service. Stop it "
                    "(sudo systemctl disable --now mosquitto), choose another port with "
                    "--mqtt-port N (0: a free one), or use that broker with --mqtt mqtt://..."
                ) from e


class EmbeddedBroker(Protocol):
    kind: str
    port: int
    fleet_password: str
    supports_shared_subscriptions: bool

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def refresh(self, engine: Engine) -> bool: ...


class ManagedMosquitto:
    """A Mosquitto child process with configuration generated into folder."""

    kind = "mosquitto"
    supports_shared_subscriptions = True

    def __init__(self, folder: Path, port: int, bind: str = "0.0.0.0", binary: str | None = None):
        binary = binary or find_mosquitto()
        if binary is None:
            raise BrokerError(
                "mosquitto is not installed: apt-get install mosquitto, or --broker amqtt"
            )
        self.binary = binary
        self.folder = Path(folder)
        self.port = port
        self.bind = bind
        self.fleet_password = fleet_password(self.folder)
        self._service = mosquitto_conf.service_account(self.fleet_password)
        self._fingerprint: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def write_files(self, accounts: store.Accounts) -> None:
        mosquitto_conf.write_auth_files(self.folder, accounts, self._service)
        self._fingerprint = accounts.fingerprint()

    async def start(self) -> None:
        """Start Mosquitto (with the accounts of the last refresh(), or none but the fleet's)."""
        if self.proc is not None and self.proc.poll() is None:
            return
        if self._fingerprint is None:
            self.write_files(store.Accounts([], []))
        conf = mosquitto_conf.broker_conf_text(
            self.folder, self.port, self.bind, run_as_root=os.geteuid() == 0
        )
        (self.folder / mosquitto_conf.CONF_FILE).write_text(conf)
        check_port_free(self.bind, self.port)
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.folder / mosquitto_conf.CONF_FILE)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        proc = self.proc
        ok = await asyncio.to_thread(_wait_listening, self.port, 10.0, lambda: proc.poll() is None)
        if not ok:
            err = b""
            if proc.poll() is not None and proc.stderr is not None:
                err = proc.stderr.read()
            await self.stop()
            logfile = self.folder / "mosquitto.log"
            tail = logfile.read_text()[-2000:] if logfile.exists() else ""
            raise BrokerError(
                f"mosquitto did not start on port {self.port}: {err.decode(errors='replace')}"
                f"{tail} (is the port in use? try --mqtt-port 0 for a free one)"
            )
        log.info("Mosquitto (pid %d) listening on %s:%d", proc.pid, self.bind, self.port)

    async def stop(self, kill: bool = False) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill() if kill else proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait, 5)
        if proc.stderr is not None:
            proc.stderr.close()

    async def refresh(self, engine: Engine) -> bool:
        """Rewrite the password file and reload the broker if the accounts changed."""
        accounts = await asyncio.to_thread(_accounts, engine)
        if accounts.fingerprint() == self._fingerprint:
            return False
        await asyncio.to_thread(self.write_files, accounts)
        if self.proc is not None and self.proc.poll() is None:
            mosquitto_conf.reload(self.proc.pid)
        log.info(
            "broker accounts updated: %d gateways, %d open claims",
            len(accounts.gateways),
            len(accounts.claims),
        )
        return True


class ExternalMosquittoFiles:
    """An external Mosquitto whose password_file and acl_file this fleet instance maintains
    (--mosquitto-dir, optional --mosquitto-pid-file to SIGHUP it). Run it in one instance only."""

    kind = "external-mosquitto-files"

    def __init__(self, folder: Path, fleet_password: str, pid_file: Path | None = None) -> None:
        self.folder = Path(folder)
        self.pid_file = pid_file
        self._service = mosquitto_conf.service_account(fleet_password)
        self._fingerprint: str | None = None

    async def refresh(self, engine: Engine) -> bool:
        accounts = await asyncio.to_thread(_accounts, engine)
        if accounts.fingerprint() == self._fingerprint:
            return False
        await asyncio.to_thread(
            mosquitto_conf.write_auth_files, self.folder, accounts, self._service
        )
        self._fingerprint = accounts.fingerprint()
        if self.pid_file is not None:
            mosquitto_conf.reload(mosquitto_conf.read_pid_file(self.pid_file))
        return True


def _accounts(engine: Engine) -> store.Accounts:
    with read(engine) as conn:
        return store.broker_accounts(conn, store.now_ms())


class AmqttBroker:
    """amqtt in this process and event loop, with the fleet's login and ACL plugins."""

    kind = "amqtt"
    supports_shared_subscriptions = False

    def __init__(self, engine: Engine, folder: Path, port: int, bind: str = "0.0.0.0") -> None:
        self.engine = engine
        self.port = port
        self.bind = bind
        self.fleet_password = fleet_password(Path(folder))
        self._name = f"broker-{id(self)}"
        self._broker: object = None
        self._accepted: set[str] | None = None

    def _check(self, username: str | None, password: str | None, client_id: str | None) -> bool:
        with read(self.engine) as conn:
            return store.check_login(conn, username, password, client_id)

    async def start(self) -> None:
        from amqtt.broker import Broker

        check_port_free(self.bind, self.port)
        amqtt_plugin.register(self._name, self.fleet_password, self._check)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.bind}:{self.port}"}},
            "plugins": {
                "fleet.mqtt.amqtt_plugin.FleetAuthPlugin": {"backend": self._name},
                "fleet.mqtt.amqtt_plugin.FleetTopicPlugin": {"backend": self._name},
            },
        }
        broker = Broker(config)
        try:
            await broker.start()
        except Exception as e:
            amqtt_plugin.unregister(self._name)
            raise BrokerError(f"amqtt could not listen on {self.bind}:{self.port}: {e}") from e
        self._broker = broker
        log.info("amqtt broker listening on %s:%d", self.bind, self.port)

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()  # type: ignore[attr-defined]
        amqtt_plugin.unregister(self._name)

    async def refresh(self, engine: Engine) -> bool:
        """Disconnect gateways that are no longer accepted (revoked, rotated away); logins are
        checked against the database anyway."""
        accounts = await asyncio.to_thread(_accounts, engine)
        accepted = {name for name, _ in accounts.gateways}
        before, self._accepted = self._accepted, accepted
        if before is None or self._broker is None:
            return False
        gone = before - accepted
        sessions = getattr(self._broker, "_sessions", {})
        for client_id in gone:
            entry = sessions.get(client_id)
            if entry is not None:
                log.info("disconnecting %s: its credentials were revoked", client_id)
                await entry[1].stop()
        return bool(gone)


async def keep_accounts_in_step(
    broker: ManagedMosquitto | ExternalMosquittoFiles | AmqttBroker,
    engine: Engine,
    interval_s: float = 1.0,
) -> None:
    """Until cancelled: refresh the broker's accounts from the database every interval_s (a
    claim, an approval, a revocation or a rotation made by any fleet instance)."""
    while True:
        try:
            await broker.refresh(engine)
        except Exception:  # a database hiccup must not stop the loop
            log.exception("could not refresh the broker's accounts; retrying")
        await asyncio.sleep(interval_s)
