"""The gateway agent (`edge run`): one asyncio task per concern — a poller per bus, the LoRa
receiver, the MQTT uplink, the configuration watchdog, status — wired to one SQLite buffer.

It builds and replaces those tasks when the configuration changes (no restart) and writes
<data_dir>/status.json for `edge status`. Protocol logic lives in protocols/, buffering in
edge/store.py, MQTT in edge/uplink.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.lora import LoraReceiver, SensorStats
from edge.poller import BusPoller, MeterSpec, MeterStats, Reading, available_profiles
from edge.remote_config import ApplyError, Health, RemoteConfig, read_json, version_of
from edge.settings import Settings
from edge.store import Store, StoreError
from edge.uplink import Uplink, UplinkSettings
from protocols import lora as lora_formats
from protocols.config import ConfigError
from protocols.planner import PlanError
from protocols.profiles import ProfileError
from protocols.quantities import QUANTITIES, channel_id

log = logging.getLogger("edge.agent")

FW_VERSION = "edge-0.1.0"
STATUS_FILE_INTERVAL_S = 5.0
EXIT_CONFIG = 2  # bad bootstrap file or initial configuration: restarting will not help


class _Sink:
    """Readings to the store (one transaction per call), then wake the uplink."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def append(self, readings: Sequence[Reading]) -> None:
        self.agent.store.append(readings)
        self.agent.readings_taken += len(readings)
        if self.agent.uplink is not None:
            self.agent.uplink.notify()


def _canonical(x: Any) -> str:
    return json.dumps(x, sort_keys=True)


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about readiness, watchdog and stopping; no-op elsewhere."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(path)
            s.sendall(message.encode())
    except OSError as exc:
        log.debug("sd_notify failed: %s", exc)


class Agent:
    """One gateway. `await agent.run()` until cancelled or stop() is called.

    rollback_time_scale shortens the configuration's rollback windows (tests only)."""

    def __init__(self, settings: Settings, *, rollback_time_scale: float = 1.0) -> None:
        self.settings = settings
        self.rollback_time_scale = rollback_time_scale
        self.store: Store = None  # type: ignore[assignment]  # opened in run()
        self.uplink: Uplink | None = None
        self.remote: RemoteConfig | None = None
        self.meter_stats: dict[int, MeterStats] = {}
        self.sensor_stats: dict[int, SensorStats] = {}
        self.pollers: dict[str, tuple[str, BusPoller, asyncio.Task[None]]] = {}
        self.lora: tuple[str, LoraReceiver, asyncio.Task[None]] | None = None
        self.config: dict[str, Any] | None = None
        self.readings_taken = 0
        self.started_mono = time.monotonic()
        self._contact_ms: int | None = None
        self._stop = asyncio.Event()
        self._sink = _Sink(self)
        self._profiles: dict[str, list[str]] | None = None

    # -- configuration -------------------------------------------------------------------

    def known_profiles(self) -> dict[str, list[str]]:
        if self._profiles is None:
            found = available_profiles(self.settings.profile_dirs)
            self._profiles = {p.model: list(p.quantities) for p in found}
        return self._profiles

    async def apply(self, doc: dict[str, Any] | None) -> None:
        """Make doc the configuration in force: buses and the LoRa receiver whose settings
        changed are replaced, the others keep running. All-or-nothing: everything is built
        before anything is stopped, so an ApplyError leaves the old configuration running."""
        doc = doc or {}
        by_bus: dict[str, list[dict[str, Any]]] = {}
        for m in doc.get("meters", []):
            by_bus.setdefault(m["bus"], []).append(m)
        wanted: dict[str, tuple[str, dict[str, Any], list[dict[str, Any]]]] = {}
        for bus in doc.get("buses", []):
            meters = by_bus.get(bus["id"], [])
            if meters:
                wanted[bus["id"]] = (_canonical([bus, meters]), bus, meters)
        built: dict[str, BusPoller] = {}
        resolution: dict[int, Any] = {}
        try:
            for bus_id, (key, bus, meters) in wanted.items():
                specs = [MeterSpec.from_config(m, self.settings.profile_dirs) for m in meters]
                for spec in specs:
                    for name in spec.quantities:
                        q = spec.profile.quantities[name]
                        if q.resolution and name in QUANTITIES:
                            resolution[channel_id(spec.device_id, name)] = q.resolution
                old = self.pollers.get(bus_id)
                if old is None or old[0] != key:
                    built[bus_id] = BusPoller(bus, specs, self._sink, self.meter_stats)
        except (ProfileError, PlanError, KeyError, ValueError) as exc:
            raise ApplyError(str(exc)) from exc
        # Replace what changed.
        for bus_id in list(self.pollers):
            if bus_id not in wanted or bus_id in built:
                _key, old_poller, old_task = self.pollers.pop(bus_id)
                await old_poller.stop_between_ticks(old_task)
        for bus_id, poller in built.items():
            task = asyncio.create_task(poller.run(), name=f"poll-{bus_id}")
            self.pollers[bus_id] = (wanted[bus_id][0], poller, task)
        lora_key = (
            _canonical([doc.get("lora"), doc.get("sensors", [])]) if doc.get("lora") else None
        )
        if self.lora is not None and self.lora[0] != lora_key:
            await self._stop_task(self.lora[2])
            self.lora = None
        if lora_key is not None and self.lora is None:
            rx = LoraReceiver(doc["lora"], doc.get("sensors", []), self._sink, self.sensor_stats)
            self.lora = (lora_key, rx, asyncio.create_task(rx.run(), name="lora"))
        keep = {m["id"] for m in doc.get("meters", [])}
        for dev in list(self.meter_stats):
            if dev not in keep:
                del self.meter_stats[dev]
        keep = {s["id"] for s in doc.get("sensors", [])}
        for dev in list(self.sensor_stats):
            if dev not in keep:
                del self.sensor_stats[dev]
        up = doc.get("uplink", {})
        buf = doc.get("buffer", {})
        if self.uplink is not None:
            base = self.uplink.settings
            self.uplink.settings = UplinkSettings(
                batch_max_readings=up.get("max_batch_readings", base.batch_max_readings),
                history_batch_max_readings=base.history_batch_max_readings,
                send_interval_s=up.get("batch_interval_s", base.send_interval_s),
                window_batches=base.window_batches,
                history_readings_per_s=up.get(
                    "backlog_readings_per_s", base.history_readings_per_s
                ),
                ack_timeout_s=base.ack_timeout_s,
                reconnect_min_s=base.reconnect_min_s,
                reconnect_max_s=base.reconnect_max_s,
                timeout_s=base.timeout_s,
            )
            self.uplink.resolution = resolution or None
        if buf.get("max_readings"):
            self.store.max_readings = int(buf["max_readings"])
        if buf.get("max_age_days"):
            self.store.max_age_ms = int(buf["max_age_days"] * 86_400_000)
        self.config = doc or None
        log.info(
            "configuration %d in force: %d bus(es), %d meter(s), %d sensor(s)",
            version_of(self.config), len(self.pollers), len(doc.get("meters", [])),
            len(doc.get("sensors", [])),
        )  # fmt: skip

    @staticmethod
    async def _stop_task(task: asyncio.Task[None]) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 10)

    # -- health and status ---------------------------------------------------------------

    def fleet_contact_ms(self) -> int | None:
        ack = self.uplink.last_ack_ms if self.uplink is not None else None
        return max(ack or 0, self._contact_ms or 0) or None

    def last_poll_ok_ms(self) -> int | None:
        oks = [s.last_ok_ts_ms for s in self.meter_stats.values() if s.last_ok_ts_ms]
        return max(oks) if oks else None

    def has_meters(self) -> bool:
        return bool(self.config and self.config.get("meters"))

    def status(self) -> dict[str, Any]:
        """The status message (protocols.messages) plus what `edge status` shows."""
        st = self.store.status()
        now_ms = int(time.time() * 1000)
        doc: dict[str, Any] = {
            "gateway": self.settings.gateway_id,
            "boot": st.boot,
            "ts_ms": now_ms,
            "uptime_s": int(time.monotonic() - self.started_mono),
            "fw_version": FW_VERSION,
            "config_version": version_of(self.config),
            "free_heap_bytes": _available_memory_bytes(),
            "buffer_depth": st.depth,
            "oldest_unsent_ts_ms": st.oldest_unsent_ts_ms,
            "dropped_readings": st.dropped_readings,
            "rssi_dbm": None,
            "reset_cause": None,
            "meters": [s.as_status() for s in self.meter_stats.values()],
            "sensors": [s.as_status() for s in self.sensor_stats.values()],
            "buses": {
                bus_id: {
                    "error": p.bus_error,
                    "ticks_missed": p.ticks_missed,
                    "cycles": p.cycles,
                    "last_cycle_s": round(p.last_cycle_s, 3),
                    "noise_bytes": getattr(p.master, "noise_bytes", 0),
                }
                for bus_id, (_k, p, _t) in self.pollers.items()
            },
            "readings_taken": self.readings_taken,
            "last_ack_ms": st.last_ack_ms,
            "last_ack_seq": st.last_ack_seq,
            "backlog": st.backlog,
            "unacked_batches": st.unacked_batches,
            "mqtt_connected": bool(self.uplink and self.uplink.connected),
            "pid": os.getpid(),
            "running": not self._stop.is_set(),
        }
        if self.uplink is not None:
            doc["uplink"] = dict(self.uplink.counters.__dict__)
        if self.remote is not None:
            doc["config"] = self.remote.summary()
        if self.lora is not None:
            rx = self.lora[1]
            doc["lora"] = {
                "error": rx.module_error,
                "bad_frames": rx.bad_frames,
                "unknown_senders": dict(rx.unknown_senders),
            }
        return doc

    def write_status_file(self) -> None:
        path = self.settings.status_path
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.status(), indent=1))
        os.replace(tmp, path)  # no fsync: a status file lost in a power cut is rewritten

    async def _status_loop(self) -> None:
        next_publish = 0.0
        watchdog_usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        while True:
            if self.uplink is not None and self.uplink.connected and self.store.depth == 0:
                self._contact_ms = int(time.time() * 1000)  # connected, nothing waits for an ack
            try:
                self.write_status_file()
            except OSError as exc:
                log.warning("cannot write %s: %s", self.settings.status_path, exc)
            now = time.monotonic()
            if self.uplink is not None and now >= next_publish:
                next_publish = now + self.settings.status_interval_s
                try:
                    await asyncio.wait_for(self.uplink.publish_status(self.status()), 10)
                except Exception as exc:  # a status message is periodic: the next one will do
                    log.debug("status not published: %s", exc)
            if watchdog_usec:
                sd_notify("WATCHDOG=1")
            await asyncio.sleep(
                min(
                    STATUS_FILE_INTERVAL_S,
                    self.settings.status_interval_s,
                    1.0 if watchdog_usec else 60,
                )
            )

    # -- life cycle ----------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(
            s.buffer_path, synchronous=s.store_synchronous, live_window_s=s.live_window_s
        )
        boot = self.store.increment_boot()
        tasks: list[asyncio.Task[None]] = []
        try:
            self.remote = RemoteConfig(
                s.config_dir,
                s.gateway_id,
                s.signing_keys,
                self.apply,
                self._report,
                Health(self.fleet_contact_ms, self.last_poll_ok_ms, self.has_meters),
                self.known_profiles(),
                tuple(lora_formats.FORMATS),
                time_scale=self.rollback_time_scale,
            )
            initial = None
            if s.initial_config is not None and not (s.config_dir / "running.json").exists():
                initial = read_json(s.initial_config)
                if initial is None:
                    raise ConfigError([f"{s.initial_config}: missing or not valid JSON"])
            doc = self.remote.boot(initial)
            self.uplink = Uplink(
                self.store,
                s.gateway_id,
                s.mqtt,
                boot=boot,
                fw_version=FW_VERSION,
                config_version=version_of(doc),
                on_config=self.remote.on_desired,
            )
            await self.apply(doc)
            log.info(
                "gateway %s started (boot %d, configuration %d)",
                s.gateway_id,
                boot,
                version_of(doc),
            )
            tasks = [
                asyncio.create_task(self.uplink.run(), name="uplink"),
                asyncio.create_task(self.remote.run(), name="config"),
                asyncio.create_task(self._status_loop(), name="status"),
            ]
            sd_notify("READY=1")
            stop = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stop:
                    t.result()  # a concern died: raise its error (systemd restarts us)
        finally:
            sd_notify("STOPPING=1")
            self._stop.set()
            for t in tasks:
                t.cancel()
            for bus_id in list(self.pollers):  # each after its tick in progress
                _key, poller, task = self.pollers.pop(bus_id)
                await poller.stop_between_ticks(task)
            if self.lora is not None:
                await self._stop_task(self.lora[2])
                self.lora = None
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(t, 5)
            with contextlib.suppress(OSError):
                self.write_status_file()
            self.store.close()

    async def _report(self, version: int, desired: int, status: str, reason: str | None) -> Any:
        if self.uplink is None:
            return False
        return await self.uplink.report_config(version, desired, status, reason)


def _available_memory_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (the status message's free_heap_bytes on Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def setup_logging(level: str) -> None:
    """Plain lines to stderr; under systemd (journald) without our own timestamps."""
    journald = bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))
    fmt = (
        "%(levelname)s %(name)s: %(message)s"
        if journald
        else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO), format=fmt, stream=sys.stderr
    )


def run_agent(settings: Settings, log_level: str = "INFO") -> int:
    """Run until SIGTERM/SIGINT; the process exit status."""
    setup_logging(log_level)

    async def main() -> int:
        agent = Agent(settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agent.stop)
        try:
            await agent.run()
        except ConfigError as exc:
            log.error("the initial configuration is invalid: %s", exc)
            return EXIT_CONFIG
        except StoreError as exc:
            log.error("%s", exc)
            return 1
        return 0

    return asyncio.run(main())


# ---------------------------------------------------------------------------------------------
# edge status


class StatusError(Exception):
    """Nothing to show: no agent ever ran with that data directory."""


def read_status(data_dir: str | Path) -> dict[str, Any]:
    """The agent's status file, with the buffer figures read fresh from the store."""
    d = Path(data_dir)
    report: dict[str, Any] = read_json(d / "status.json") or {}
    buffer = d / "buffer.sqlite"
    if not report and not buffer.exists():
        raise StatusError(
            f"{d} holds no agent data (no status.json, no buffer.sqlite): is this the data_dir "
            "of gateway.toml? (edge status --config /etc/edge/gateway.toml)"
        )
    if buffer.exists():
        try:
            with Store(buffer, readonly=True) as store:
                st = store.status()
        except StoreError as exc:
            raise StatusError(str(exc)) from exc
        report.update(
            buffer_depth=st.depth,
            backlog=st.backlog,
            unacked_batches=st.unacked_batches,
            oldest_unsent_ts_ms=st.oldest_unsent_ts_ms,
            last_ack_ms=st.last_ack_ms,
            last_ack_seq=st.last_ack_seq,
            dropped_readings=st.dropped_readings,
            boot=st.boot,
            buffer_bytes=st.file_bytes,
        )
    now_ms = int(time.time() * 1000)
    oldest = report.get("oldest_unsent_ts_ms")
    report["status_age_s"] = (
        round((now_ms - report["ts_ms"]) / 1000, 1) if report.get("ts_ms") else None
    )
    pid = report.get("pid")
    alive = bool(pid) and report.get("running", False) and Path(f"/proc/{pid}").exists()
    report["agent_running"] = alive and (report["status_age_s"] or 0) < 60
    report["healthy"] = not (oldest and now_ms - oldest > 3_600_000)
    return report


def _ago(ts_ms: int | None, now_ms: int) -> str:
    if not ts_ms:
        return "never"
    s = max(0, (now_ms - ts_ms) // 1000)
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts_ms / 1000))
    if s < 120:
        return f"{when} ({s} s ago)"
    if s < 7200:
        return f"{when} ({s // 60} min ago)"
    return f"{when} ({s // 3600} h ago)"


def print_report(report: dict[str, Any], out: Any = None) -> None:
    out = out or sys.stdout
    now_ms = int(time.time() * 1000)
    age = report.get("status_age_s")
    state = "running" if report.get("agent_running") else "not running"
    if age is not None:
        state += f" (status written {age:.0f} s ago)"
    print(
        f"gateway        {report.get('gateway', '?')}  (boot {report.get('boot', '?')})", file=out
    )
    print(f"agent          {state}", file=out)
    cfg = report.get("config") or {}
    if cfg:
        trial = ", on trial" if cfg.get("trial") else ""
        print(
            f"configuration  version {cfg.get('version')} (last good {cfg.get('last_good_version')}{trial}; {cfg.get('rollbacks', 0)} rollbacks)",
            file=out,
        )
    print(
        f"buffer         {report.get('buffer_depth', 0)} readings ({report.get('backlog', 0)} backlog, {report.get('unacked_batches', 0)} batches awaiting ack)",
        file=out,
    )
    print(f"oldest unsent  {_ago(report.get('oldest_unsent_ts_ms'), now_ms)}", file=out)
    print(
        f"last ack       {_ago(report.get('last_ack_ms'), now_ms)} (seq {report.get('last_ack_seq')})",
        file=out,
    )
    print(f"dropped        {report.get('dropped_readings', 0)} readings (buffer bounds)", file=out)
    print(
        f"fleet          {'connected' if report.get('mqtt_connected') else 'not connected'}",
        file=out,
    )
    for bus_id, b in (report.get("buses") or {}).items():
        if b.get("error"):
            print(f"bus {bus_id}: {b['error']}", file=out)
    meters = report.get("meters") or []
    if meters:
        print(file=out)
        header = (
            "id",
            "meter",
            "ok",
            "failed",
            "timeouts",
            "crc",
            "exceptions",
            "last ok",
            "last error",
        )
        rows = []
        for m in meters:
            rows.append((
                str(m["id"]), str(m.get("name", "")), str(m["polls_ok"]), str(m.get("polls_failed", 0)),
                str(m["timeouts"]), str(m["crc_errors"]), str(m["exceptions"]),
                _ago(m.get("last_ok_ts_ms"), now_ms), (m.get("last_error") or "")[:60],
            ))  # fmt: skip
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(), file=out)
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), file=out)
    sensors = report.get("sensors") or []
    if sensors:
        print(file=out)
        for s in sensors:
            print(
                f"sensor {s['device_id']} {s['name']}: {s['frames']} frames, {s['lost']} lost, "
                f"{s['duplicates']} duplicates, last {_ago(s.get('last_rx_ms'), now_ms)}, "
                f"RSSI {s.get('rssi_dbm')} dBm"
                + (f" — {s['last_error']}" if s.get("last_error") else ""),
                file=out,
            )
