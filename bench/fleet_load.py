"""Load for the fleet benchmark (bench/fleet.py): gateways provisioned in a fleet database with
their own credentials, `fleet serve` as a child process, simulated gateways on the minimal MQTT
client (telemetry with acks, config reports), a bare counting subscriber for the broker's raw
rate (`python -m bench.fleet_load count ...`, a process of its own like the fleet's bridge), and
the readings of the fleet's processes (CPU, open-file limit). Measures; never edits the fleet.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.fleet_mqtt import MiniClient, MqttError, Will, keep_alive

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("FLEET_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


# --- processes -----------------------------------------------------------------------------


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (children, Mosquitto too, inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def proc_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a process (Linux /proc); 0.0 if it is gone."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_fd_limit(pid: int) -> int | None:
    """The soft open-files limit of a running process."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
    except (OSError, ValueError, IndexError):
        pass
    return None


def child_pids(parent: int, name: str) -> list[int]:
    """Children of parent whose command is name (the Mosquitto a `fleet serve` started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and comm == name:
            found.append(int(entry.name))
    return found


class FleetServer:
    """`fleet serve` in a child process on free ports (HTTP and its own Mosquitto), SQLite or
    PostgreSQL; stderr (the fleet's log) goes to data_dir/fleet.log."""

    def __init__(self, data_dir: Path, database: str) -> None:
        self.data_dir = Path(data_dir)
        self.database = database
        self.proc: subprocess.Popen[str] | None = None
        self.ready: dict[str, Any] = {}
        self.log_path = self.data_dir / "fleet.log"

    def start(self, timeout_s: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable, "-m", "fleet.cli", "serve", "--json",
            "--data-dir", str(self.data_dir), "--database", self.database,
            "--host", "127.0.0.1", "--port", "0",
            "--broker", "mosquitto", "--mqtt-bind", "127.0.0.1", "--mqtt-port", "0",
        ]  # fmt: skip
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=ROOT
            )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                msg = json.loads(line)
                if isinstance(msg, dict) and "ready" in msg:
                    self.ready = msg["ready"]
                    return
            if time.monotonic() > deadline:
                break
        self.stop()
        raise RuntimeError(f"fleet serve did not become ready; see {self.log_path}:\n{self.log()}")

    def log(self, tail: int = 3000) -> str:
        return self.log_path.read_text()[-tail:] if self.log_path.exists() else ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def mqtt_port(self) -> int:
        return int(self.ready["mqtt_port"])

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ready['http_port']}"

    def broker_pid(self) -> int | None:
        pids = child_pids(self.pid, "mosquitto") if self.pid else []
        return pids[0] if pids else None

    def fleet_password(self) -> str:
        return (self.data_dir / "broker" / "fleet-mqtt-password").read_text().strip()

    def pause(self) -> None:
        """SIGSTOP the fleet (its Mosquitto, a separate process, keeps running)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGCONT)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


@contextlib.contextmanager
def postgres_database(prefix: str = "fleet_bench_") -> Any:
    """A fresh PostgreSQL database (dropped afterwards); yields its URL, or None with the reason
    when the server at PG_ADMIN_URL is unreachable."""
    import uuid

    import psycopg

    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except Exception as e:  # any failure to connect
        yield None, f"PostgreSQL at {PG_ADMIN_URL} unreachable: {e}"
        return
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rpartition("/")[0]
    try:
        yield f"{base}/{name}", None
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- gateways in the database ----------------------------------------------------------------


@dataclass(frozen=True)
class Gateway:
    id: str
    password: str
    key: bytes


def create_gateways(
    engine: Any, n: int, *, prefix: str, org_slug: str = "bench", channels: bool = True
) -> list[Gateway]:
    """An organisation (made once) with n accepted gateways, each with its own MQTT secret
    (Mosquitto's PBKDF2 hash) and signing key, as provisioning would leave them; channels: also
    the devices and channels of fleet.telemetry.synthetic's configuration (two SDM630)."""
    from fleet import auth
    from fleet.db import registry
    from fleet.db.engine import transaction
    from fleet.telemetry.synthetic import synthetic_config

    gws = [
        Gateway(
            f"{prefix}-{i:05d}", auth.new_gateway_secret(), bytes.fromhex(auth.new_signing_key())
        )
        for i in range(1, n + 1)
    ]
    hashes = [auth.hash_gateway_secret(g.password) for g in gws]
    with transaction(engine) as conn:
        org = registry.get_org_by_slug(conn, org_slug)
        org_id = org["id"] if org else registry.create_org(conn, org_slug, "Benchmark")
        for g, h in zip(gws, hashes, strict=True):
            registry.create_gateway(conn, g.id, org_id, credential_hash=h, signing_key=g.key)
            if channels:
                registry.sync_devices_from_config(conn, g.id, synthetic_config(g.id))
    return gws


# --- telemetry load ------------------------------------------------------------------------


@dataclass
class AckStats:
    """What the gateways saw in one phase."""

    expected: int = 0  # batches to be acked in this phase
    acked: int = 0
    readings: int = 0
    errors: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    stray: int = 0  # acks of no batch in flight (duplicates)
    first_send: float = 0.0
    last_ack: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)


class IngestGateway(MiniClient):
    """A gateway sending its pre-encoded batches on gw/<id>/tele (QoS 1) and waiting for the
    fleet's application ack of each (contract 1): closed loop with `window` batches in flight
    (edge's default is 8), or paced by the caller (window 0)."""

    def __init__(self, gw: Gateway, batches: Sequence[tuple[int, bytes, int]]) -> None:
        super().__init__(gw.id, gw.id, gw.password, keepalive_s=60)
        self.gw = gw
        self.tele = f"gw/{gw.id}/tele".encode()
        self.ack_topic = f"gw/{gw.id}/ack"
        self.batches = batches  # (seq, payload, readings)
        self.next = 0
        self.limit = 0
        self.window = 0
        self.sent_at: dict[int, float] = {}
        self.readings_of: dict[int, int] = {}
        self.stats = AckStats()

    def send_next(self) -> bool:
        if self.next >= self.limit:
            return False
        seq, payload, n = self.batches[self.next]
        self.next += 1
        now = time.monotonic()
        if not self.stats.first_send:
            self.stats.first_send = now
        self.sent_at[seq] = now
        self.readings_of[seq] = n
        self.publish(self.tele, payload, 1)
        return True

    def on_message(self, topic: str, payload: bytes, retain: bool) -> None:
        if topic != self.ack_topic:
            return
        ack = json.loads(payload)
        seq = ack.get("seq")
        sent = self.sent_at.pop(seq, None)
        st = self.stats
        if sent is None:
            st.stray += 1
            return
        now = time.monotonic()
        if "error" in ack:
            st.errors.append(f"{self.gw.id} seq {seq}: {ack['error']}")
        else:
            st.readings += self.readings_of.pop(seq)
        st.acked += 1
        st.latencies_s.append(now - sent)
        st.last_ack = now
        if self.window:
            self.send_next()
        if st.acked >= st.expected:
            st.done.set()


async def connect_all(
    clients: Sequence[MiniClient],
    host: str,
    port: int,
    after: Callable[[MiniClient], Any] | None = None,
    concurrency: int = 200,
    timeout_s: float = 60.0,
) -> None:
    """Connect every client (at most `concurrency` handshakes at a time); after(client): an
    awaitable run once connected (subscribe, birth)."""
    sem = asyncio.Semaphore(concurrency)

    async def one(c: MiniClient) -> None:
        async with sem:
            for attempt in range(5):
                try:
                    await c.connect(host, port, timeout_s)
                    break
                except (OSError, TimeoutError) as e:  # listen backlog full under a connect storm
                    if attempt == 4:
                        raise MqttError(f"{c.client_id}: cannot connect: {e}") from e
                    await asyncio.sleep(0.2 * (attempt + 1))
            if after is not None:
                await after(c)

    await asyncio.gather(*(one(c) for c in clients))


def shared_stats(gws: Sequence[IngestGateway], expected: int) -> AckStats:
    stats = AckStats(expected=expected)
    for g in gws:
        g.stats = stats
    return stats


async def closed_loop(
    gws: Sequence[IngestGateway], per_gateway: int, window: int, timeout_s: float
) -> AckStats:
    """Every gateway sends its next per_gateway batches, `window` in flight; until all acked."""
    stats = shared_stats(gws, per_gateway * len(gws))
    for g in gws:
        g.limit = min(len(g.batches), g.next + per_gateway)
        g.window = window
    for g in gws:
        for _ in range(window):
            g.send_next()
    await _wait(stats, gws, timeout_s)
    return stats


async def paced(
    gws: Sequence[IngestGateway], batches_per_s: float, duration_s: float, timeout_s: float
) -> AckStats:
    """Open loop: the gateways together send batches_per_s (evenly spread, each gateway at its
    own phase) for duration_s, whatever the acks do; then wait for the outstanding acks."""
    loop = asyncio.get_running_loop()
    per_gw = batches_per_s / len(gws)
    counts = [min(len(g.batches) - g.next, max(1, int(per_gw * duration_s))) for g in gws]
    stats = shared_stats(gws, sum(counts))
    period = 1.0 / per_gw
    t0 = loop.time() + 0.05

    async def run(i: int, g: IngestGateway) -> None:
        g.window = 0
        g.limit = g.next + counts[i]
        at = t0 + period * i / len(gws)
        while g.next < g.limit:
            await asyncio.sleep(max(0.0, at - loop.time()))
            g.send_next()
            at += period

    await asyncio.gather(*(run(i, g) for i, g in enumerate(gws)))
    await _wait(stats, gws, timeout_s)
    return stats


async def _wait(stats: AckStats, gws: Sequence[IngestGateway], timeout_s: float) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            await stats.done.wait()
    except TimeoutError:
        missing = sum(len(g.sent_at) for g in gws)
        raise RuntimeError(
            f"{missing} batches were not acknowledged within {timeout_s:.0f} s "
            f"({stats.acked} of {stats.expected} were)"
        ) from None


# --- the broker's raw rate -------------------------------------------------------------------


class RawPublisher(MiniClient):
    """Publishes the same batches on the same topic at QoS 1, `window` PUBACKs outstanding; no
    application ack (what the broker alone can move)."""

    def __init__(self, gw: Gateway, payloads: Sequence[bytes], window: int) -> None:
        super().__init__(gw.id, gw.id, gw.password, keepalive_s=60)
        self.tele = f"gw/{gw.id}/tele".encode()
        self.payloads = payloads
        self.window = window
        self.next = 0
        self.inflight = 0
        self.first_send = 0.0

    def pump(self) -> None:
        if not self.first_send:
            self.first_send = time.monotonic()
        while self.inflight < self.window and self.next < len(self.payloads):
            self.publish(self.tele, self.payloads[self.next], 1)
            self.next += 1
            self.inflight += 1

    def on_puback(self, pid: int) -> None:
        self.inflight -= 1
        self.pump()


class CounterProcess:
    """`python -m bench.fleet_load count`: a subscriber in its own process that only counts."""

    def __init__(self, port: int, username: str, password: str, topic: str, expect: int) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "bench.fleet_load", "count", "--port", str(port),
                # "--x=value": a generated password may start with "-", which argparse
                # would take for an option
                "--username=" + username, "--password=" + password, "--topic", topic,
                "--expect", str(expect),
            ],
            stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line or not json.loads(line).get("ready"):
            self.proc.kill()
            raise RuntimeError("the counting subscriber did not subscribe")

    def kill(self) -> None:
        """Stop the subscriber if it is still running (a failed run)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def result(self, timeout_s: float) -> dict[str, Any]:
        try:
            out, _ = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise RuntimeError("the counting subscriber did not get every message") from None
        return json.loads(out.strip().splitlines()[-1])


async def _count(args: argparse.Namespace) -> dict[str, Any]:
    done = asyncio.Event()
    state = {"count": 0, "first_t": 0.0, "last_t": 0.0}

    def on_message(topic: str, payload: bytes, retain: bool) -> None:
        now = time.monotonic()
        if not state["count"]:
            state["first_t"] = now
        state["count"] += 1
        state["last_t"] = now
        if state["count"] >= args.expect:
            done.set()

    c = MiniClient("bench-counter", args.username, args.password, on_message=on_message)
    await c.connect("127.0.0.1", args.port)
    await c.subscribe([args.topic])
    print(json.dumps({"ready": True}), flush=True)
    cpu0 = time.process_time()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(args.timeout_s):
            await done.wait()
    state["cpu_s"] = time.process_time() - cpu0
    c.disconnect()
    return state


# --- configuration rollout -----------------------------------------------------------------


@dataclass
class ReportTracker:
    """Gateways that applied each configuration version, and when the last one did."""

    total: int
    applied: dict[int, int] = field(default_factory=dict)
    last_t: dict[int, float] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    events: dict[int, asyncio.Event] = field(default_factory=dict)

    def event(self, version: int) -> asyncio.Event:
        return self.events.setdefault(version, asyncio.Event())

    def record(self, version: int) -> None:
        n = self.applied.get(version, 0) + 1
        self.applied[version] = n
        self.last_t[version] = time.monotonic()
        if n >= self.total:
            self.event(version).set()


class ConfigGateway(MiniClient):
    """A gateway as edge connects one: last will and retained birth on gw/<id>/state, subscribed
    to its ack, config/desired and state; it verifies each desired envelope with its key, checks
    gateway and version, and reports "applied" (retained, QoS 1). It does not run the schema
    validation a real gateway runs on its own CPU (10,000 of them would load this process)."""

    def __init__(self, gw: Gateway, tracker: ReportTracker, boot: int = 1) -> None:
        from protocols import messages

        self.gw = gw
        self.tracker = tracker
        self.boot = boot
        self.version = 0
        self.topics = {
            k: messages.topic(gw.id, k)
            for k in ("ack", "config/desired", "state", "config/reported")
        }
        ts = int(time.time() * 1000)
        will = Will(self.topics["state"], messages.encode_will(gw.id, boot, 1, "bench", 0, ts))
        super().__init__(gw.id, gw.id, gw.password, keepalive_s=60, will=will)

    async def hello(self) -> None:
        from protocols import messages

        await self.subscribe([self.topics[k] for k in ("ack", "config/desired", "state")])
        ts = int(time.time() * 1000)
        birth = messages.encode_birth(self.gw.id, self.boot, 1, "bench", self.version, ts)
        self.publish(self.topics["state"], birth, 1, retain=True)

    def on_message(self, topic: str, payload: bytes, retain: bool) -> None:
        if topic != self.topics["config/desired"] or not payload:
            return
        from protocols import messages, sign

        try:
            doc = json.loads(sign.open_envelope(payload, self.gw.key))
        except (sign.SignatureError, ValueError) as e:
            self.tracker.refused.append(f"{self.gw.id}: {e}")
            return
        version = doc.get("version")
        if doc.get("gateway") != self.gw.id or not isinstance(version, int):
            self.tracker.refused.append(f"{self.gw.id}: a document for {doc.get('gateway')!r}")
            return
        if version <= self.version:
            return  # already running it (a retained copy after a reconnect)
        self.version = version
        report = messages.encode_reported(
            self.gw.id, version, version, messages.REPORT_APPLIED, None, int(time.time() * 1000)
        )
        self.publish(self.topics["config/reported"], report, 1, retain=True)
        self.tracker.record(version)


class WindowedPublisher(MiniClient):
    """Publishes a list of (topic, payload) at QoS 1 with `window` PUBACKs outstanding."""

    def __init__(self, client_id: str, username: str, password: str, window: int = 200) -> None:
        super().__init__(client_id, username, password, keepalive_s=60)
        self.window = window
        self.items: list[tuple[str, bytes]] = []
        self.next = 0
        self.inflight = 0
        self.retain = False

    def send(self, items: list[tuple[str, bytes]], retain: bool) -> None:
        self.items, self.next, self.retain = items, 0, retain
        self.pump()

    def pump(self) -> None:
        while self.inflight < self.window and self.next < len(self.items):
            topic, payload = self.items[self.next]
            self.publish(topic, payload, 1, self.retain)
            self.next += 1
            self.inflight += 1

    def on_puback(self, pid: int) -> None:
        self.inflight -= 1
        self.pump()


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank) of values; 0.0 for none."""
    if not values:
        return 0.0
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


def start_keepalive(clients: Iterable[MiniClient]) -> asyncio.Task[None]:
    return asyncio.create_task(keep_alive(list(clients)))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="helpers of bench/fleet.py")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("count", help="subscribe and count messages until --expect")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--username")
    c.add_argument("--password")
    c.add_argument("--topic", required=True)
    c.add_argument("--expect", type=int, required=True)
    c.add_argument("--timeout-s", type=float, default=300.0)
    args = p.parse_args(argv)
    print(json.dumps(asyncio.run(_count(args))), flush=True)


if __name__ == "__main__":
    main()
