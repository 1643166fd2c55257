"""Stand-ins for testing and benchmarking the agent: a Mosquitto broker on a free port that
can be killed and restarted, and an acknowledging receiver that plays the fleet's ingest
(persist, then ack). Never used by the agent in production.

The receiver can run in-process (``AckReceiver.run()`` as a task) or as a process:
``python -m edge.testing receive --port N`` (prints a JSON line with its counts every 0.2 s)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiomqtt

from protocols import codec, messages

MOSQUITTO_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    for path in MOSQUITTO_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """A private Mosquitto on 127.0.0.1:port (a free one unless given), config and log in
    workdir. extra_config: more lines for mosquitto.conf (a TLS listener, a password file)."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        extra_config: str = "allow_anonymous true\n",
        listener_options: str = "",
    ) -> None:
        binary = find_mosquitto()
        if binary is None:
            raise RuntimeError("mosquitto not found: apt-get install mosquitto")
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = self.workdir / "mosquitto.conf"
        self.log = self.workdir / "mosquitto.log"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n{listener_options}"
            "persistence false\n"
            f"log_dest file {self.log}\n"
            "log_type error\nlog_type warning\n"
            "max_queued_messages 100000\n"
            "max_inflight_messages 100\n"
            # Started as root (CI), Mosquitto would switch to user mosquitto, who cannot read
            # a test's private temp directory; the option is ignored for other users.
            "user root\n"
            f"{extra_config}"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                log = self.log.read_text() if self.log.exists() else ""
                raise RuntimeError(f"mosquitto exited at start: {err}{log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {timeout_s} s")

    def stop(self, kill: bool = False) -> None:
        """Stop the broker: SIGKILL (an outage, clients see a dropped connection) or SIGTERM."""
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc.stderr is not None:
            proc.stderr.close()

    def restart(self, kill: bool = True) -> None:
        self.stop(kill=kill)
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_s(self) -> float | None:
        """CPU seconds the broker used so far (Linux /proc), None if unknown."""
        if self.proc is None:
            return None
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Arrival:
    """One telemetry message as the receiver saw it (duplicates included)."""

    gateway: str
    seq: int
    historical: bool
    readings: int
    stored: bool  # False: a duplicate of a stored batch, or dropped while paused


class AckReceiver:
    """Plays the fleet's ingest: subscribes gw/+/tele, decodes each batch, stores it once per
    (gateway, seq) and then publishes the ack. While paused it drops telemetry unseen (a fleet
    that is down). It also records every state message (birth and will)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        tls_context: object = None,
        client_id: str = "fleet-stub",
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.tls_context = tls_context
        self.client_id = client_id
        self.batches: dict[tuple[str, int], codec.Batch] = {}
        self.arrivals: list[Arrival] = []
        self.states: list[dict[str, object]] = []
        self.duplicates = 0
        self.conflicts = 0
        self.stored_readings = 0
        self.paused = False
        self.connected = asyncio.Event()
        self.changed = asyncio.Event()

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def readings(self, gateway: str) -> list[tuple[int, int, float]]:
        """Every stored reading of a gateway, batches in seq order."""
        out: list[tuple[int, int, float]] = []
        for key in sorted(k for k in self.batches if k[0] == gateway):
            out.extend(self.batches[key].readings)
        return out

    async def wait_for(self, condition: object, timeout_s: float) -> bool:
        """Wait until condition() is true (checked on every message), at most timeout_s."""
        deadline = time.monotonic() + timeout_s
        while not condition():  # type: ignore[operator]
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 0.2)):
                    await self.changed.wait()
        return True

    async def run(self) -> None:
        """Serve until cancelled, reconnecting every 0.2 s while the broker is away."""
        while True:
            _raise_if_cancelled()
            try:
                async with aiomqtt.Client(
                    self.host,
                    self.port,
                    username=self.username,
                    password=self.password,
                    identifier=self.client_id,
                    tls_context=self.tls_context,  # type: ignore[arg-type]
                    clean_session=True,
                    keepalive=5,
                    timeout=5,
                    max_inflight_messages=100,
                ) as client:
                    await client.subscribe("gw/+/tele", qos=1)
                    await client.subscribe("gw/+/state", qos=1)
                    self.connected.set()
                    async for msg in client.messages:
                        await self._handle(client, msg)
                        _raise_if_cancelled()
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.2)

    async def _handle(self, client: aiomqtt.Client, msg: aiomqtt.Message) -> None:
        payload = bytes(msg.payload) if isinstance(msg.payload, bytes | bytearray) else b""
        try:
            gateway, kind = messages.parse_topic(msg.topic.value)
            if kind == "state":
                self.states.append(messages.decode_state(payload))
                self.changed.set()
                return
            batch = codec.decode_batch(payload)
        except codec.CodecError as e:
            print(f"fleet stub: ignoring a message on {msg.topic.value}: {e}", file=sys.stderr)
            return
        if self.paused:
            self.arrivals.append(Arrival(gateway, batch.seq, batch.historical, 0, False))
            self.changed.set()
            return
        key = (gateway, batch.seq)
        stored = key not in self.batches
        if stored:
            self.batches[key] = batch
            self.stored_readings += len(batch.readings)
        else:
            self.duplicates += 1
            if self.batches[key] != batch:
                self.conflicts += 1  # same seq, other content: contract 1 broken
        n = len(batch.readings)
        self.arrivals.append(Arrival(gateway, batch.seq, batch.historical, n, stored))
        await client.publish(messages.topic(gateway, "ack"), messages.encode_ack(batch.seq), qos=1)
        self.changed.set()


def _raise_if_cancelled() -> None:
    """A cancellation that asyncio.wait_for (inside aiomqtt's publish) swallowed on 3.11."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="an acknowledging receiver playing the fleet")
    p.add_argument("command", choices=["receive"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)

    async def main() -> None:
        rx = AckReceiver(args.host, args.port, client_id=f"fleet-stub-{os.getpid()}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(rx.run())
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await stop.wait()
            line = {
                "connected": rx.connected.is_set(),
                "stored_readings": rx.stored_readings,
                "batches": len(rx.batches),
                "duplicates": rx.duplicates,
                "cpu_s": time.process_time(),
            }
            print(json.dumps(line), flush=True)  # the last line comes after SIGTERM
            if task.done():
                task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())


if __name__ == "__main__":
    _main()
