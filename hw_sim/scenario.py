"""Scenarios: a TOML file describing a building (RS-485 buses and Modbus TCP endpoints with
meters, LoRa radios with sensors, faults, load shape, time speed, seed) and the Building
that runs it. docs/hw_sim.md is the file reference; this module validates and wires.
"""

from __future__ import annotations

import json
import os
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any

from hw_sim.clock import SimClock
from hw_sim.faults import LORA_FAULTS, MODBUS_FAULTS, FaultConfigError, FaultEngine, FaultRule
from hw_sim.loadshape import SHAPES, zone
from hw_sim.lora import KINDS, PULSE_KINDS, RadioSettings, Rak3172Radio, SensorModel, SimSensor
from hw_sim.meter import SimMeter
from hw_sim.physics import ElectricalModel, LoadParams, derive_seed
from hw_sim.rtu import LineSettings, RtuBus
from hw_sim.tcp import TcpMeters
from hw_sim.truth import GroundTruth
from protocols import lora as lora_formats
from protocols import profiles

SCENARIO_DIR = Path(__file__).parent / "scenarios"

_TOP = {"building", "sim", "bus", "tcp", "radio"}
_BUILDING = {"name", "load", "timezone"}
_SIM = {"seed", "speed", "start", "ground_truth", "state_file"}
_BUS = {"name", "baud", "parity", "stopbits", "link", "port", "meter"}
_TCP = {"name", "host", "port", "meter"}
_METER = {
    "name",
    "profile",
    "unit",
    "load",
    "peak_power_w",
    "base_power_w",
    "cos_phi",
    "phase_shares",
    "voltage_v",
    "frequency_hz",
    "noise",
    "turnaround_ms",
    "faults",
    "energy_import_wh",
}
_RADIO = {"name", "link", "network_mode", "sensor", *RadioSettings.FIELDS}
_SENSOR = {
    "name",
    "kind",
    "format",
    "address",
    "interval_s",
    "load",
    "rssi_dbm",
    "snr_db",
    "per_pulse",
    "base_flow",
    "peak_flow",
    "faults",
}


class ScenarioError(ValueError):
    """A scenario file is invalid; the message names the file, the entry and the fix."""


def bundled_scenarios() -> list[str]:
    """Names of the example scenarios shipped with hw_sim (school, town_hall, ...)."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def resolve(name_or_path: str) -> Path:
    """A scenario file by path, or by the name of a bundled example."""
    path = Path(name_or_path)
    if path.exists():
        return path
    bundled = SCENARIO_DIR / f"{name_or_path.removesuffix('.toml')}.toml"
    if bundled.exists():
        return bundled
    raise ScenarioError(
        f"{name_or_path}: no such file, and no bundled scenario of that name "
        f"(bundled: {', '.join(bundled_scenarios())})"
    )


def load(name_or_path: str, keep_records: int | None = None, **overrides: Any) -> Building:
    """Read and validate a scenario file; overrides replace [sim] settings (seed, speed,
    start, ground_truth, state_file). keep_records bounds the in-memory ground truth
    (None: keep all, as tests want; the file, if any, always gets everything)."""
    path = resolve(name_or_path)
    try:
        with path.open("rb") as f:
            config = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from exc
    sim = dict(config.get("sim", {}))
    sim.update({k: v for k, v in overrides.items() if v is not None})
    config["sim"] = sim
    return Building(config, source=str(path), keep_records=keep_records)


def _keys(d: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ScenarioError(f"{where}: must be a table")
    unknown = set(d) - allowed
    if unknown:
        raise ScenarioError(
            f"{where}: unknown setting {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    return d


def _start_ms(value: Any, where: str) -> int | None:
    if value is None or value == "now":
        return None
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = datetime.fromisoformat(str(value))
        except ValueError as exc:
            raise ScenarioError(
                f"{where}: start {value!r} is not an ISO date-time such as "
                "2025-03-10T07:30:00+01:00, nor 'now'"
            ) from exc
    if dt.tzinfo is None:
        raise ScenarioError(f"{where}: start {value!r} needs a UTC offset, e.g. +01:00")
    return int(dt.timestamp() * 1000)


class Building:
    """Everything a scenario describes, wired and ready to start. Use as a context manager
    or call start()/stop(); stop() always releases every PTY, socket and thread."""

    def __init__(
        self, config: dict[str, Any], source: str = "<scenario>", keep_records: int | None = None
    ) -> None:
        self.source = source
        _keys(config, _TOP, source)
        b = _keys(config.get("building", {}), _BUILDING, f"{source} [building]")
        sim = _keys(config.get("sim", {}), _SIM, f"{source} [sim]")
        self.name = str(b.get("name", Path(source).stem))
        self.default_load = str(b.get("load", "office"))
        if self.default_load not in SHAPES:
            raise ScenarioError(
                f"{source} [building]: load {self.default_load!r} must be one "
                f"of {', '.join(SHAPES)}"
            )
        try:
            self.tz = zone(str(b.get("timezone", "Europe/Berlin")))
        except ValueError as exc:
            raise ScenarioError(f"{source} [building]: {exc}") from exc
        self.seed = int(sim.get("seed", 0))
        speed = float(sim.get("speed", 1.0))
        if speed <= 0:
            raise ScenarioError(f"{source} [sim]: speed must be > 0 (1 = real time)")
        self.state_file = Path(sim["state_file"]) if sim.get("state_file") else None
        state = self._read_state()
        start = _start_ms(sim.get("start"), f"{source} [sim]")
        saved_ms = state.get("clock_ms")
        if saved_ms is not None:
            # Resume: simulated time never runs backwards across restarts.
            if start is not None:
                start = max(start, saved_ms)
            elif saved_ms > SimClock().now_ms():
                start = saved_ms
        self.clock = SimClock(speed, start)
        truth_path = sim.get("ground_truth")
        self.truth = GroundTruth(truth_path, keep_records)
        self.buses: list[RtuBus] = []
        self.tcps: list[TcpMeters] = []
        self.radios: list[Rak3172Radio] = []
        self.meters: dict[str, SimMeter] = {}
        self.sensors: dict[str, SimSensor] = {}
        for i, raw in enumerate(config.get("bus", [])):
            self._add_bus(raw, f"{source} [[bus]] #{i + 1}")
        for i, raw in enumerate(config.get("tcp", [])):
            self._add_tcp(raw, f"{source} [[tcp]] #{i + 1}")
        for i, raw in enumerate(config.get("radio", [])):
            self._add_radio(raw, f"{source} [[radio]] #{i + 1}")
        if not (self.buses or self.tcps or self.radios):
            raise ScenarioError(f"{source}: describes no [[bus]], [[tcp]] or [[radio]]")
        for name, st in state.get("meters", {}).items():
            if name in self.meters:
                self.meters[name].restore(st)
        for name, st in state.get("sensors", {}).items():
            if name in self.sensors:
                self.sensors[name].model.restore(st)
                self.sensors[name].counter = int(st.get("counter", 0)) & 0xFFFF
        self.started = False

    # -- wiring -----------------------------------------------------------------------------
    def _unique(self, name: Any, where: str) -> str:
        if not isinstance(name, str) or not name:
            raise ScenarioError(f"{where}: needs a name (a short text, unique in the building)")
        if name in self.meters or name in self.sensors:
            raise ScenarioError(
                f"{where}: name {name!r} is used twice; meter and sensor names "
                "must be unique (they identify values in the ground truth)"
            )
        return name

    def _faults(
        self, raw: Any, catalogue: dict, where: str, name: str, transport: str
    ) -> FaultEngine:
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            raise ScenarioError(
                f"{where}: faults must be a list of tables "
                'like { kind = "crc_error", rate = 0.01 }'
            )
        try:
            rules = [FaultRule.from_dict(r, catalogue, where) for r in raw]
            for r in rules:
                if transport not in catalogue[r.kind][0]:
                    raise FaultConfigError(
                        f"{where}: fault {r.kind} does not apply to {transport} "
                        f"(it applies to {catalogue[r.kind][0]}); Modbus TCP has no CRC: "
                        "use bit_flip"
                    )
            return FaultEngine(rules, derive_seed(self.seed, "faults", name), where)
        except FaultConfigError as exc:
            raise ScenarioError(str(exc)) from exc

    def _meter(self, raw: Any, where: str, bus: str, transport: str) -> SimMeter:
        m = _keys(raw, _METER, where)
        name = self._unique(m.get("name"), where)
        where = f"{where} meter {name!r}"
        if "profile" not in m or "unit" not in m:
            raise ScenarioError(f'{where}: needs profile (e.g. "sdm630") and unit (1..247)')
        try:
            profile = profiles.load_profile(str(m["profile"]))
        except profiles.ProfileError as exc:
            raise ScenarioError(f"{where}: {exc}") from exc
        try:
            params = LoadParams(
                shape=str(m.get("load", self.default_load)),
                peak_power_w=float(m.get("peak_power_w", 20_000.0)),
                base_power_w=float(m.get("base_power_w", 2_000.0)),
                cos_phi=float(m.get("cos_phi", 0.95)),
                phase_shares=tuple(m.get("phase_shares", (0.36, 0.33, 0.31))),
                voltage_v=float(m.get("voltage_v", 230.0)),
                frequency_hz=float(m.get("frequency_hz", 50.0)),
                noise=float(m.get("noise", 0.02)),
            )
        except ValueError as exc:
            raise ScenarioError(f"{where}: {exc}") from exc
        model = ElectricalModel(
            params, self.tz, profile.phases, derive_seed(self.seed, "meter", name)
        )
        if "energy_import_wh" in m:
            model.counters["energy_import"] = float(m["energy_import_wh"])
        meter = SimMeter(
            name,
            profile,
            int(m["unit"]),
            model,
            self.clock,
            self.truth,
            self._faults(m.get("faults"), MODBUS_FAULTS, where, name, transport),
            m.get("turnaround_ms"),
            bus,
        )
        self.meters[name] = meter
        return meter

    def _add_bus(self, raw: Any, where: str) -> None:
        b = _keys(raw, _BUS, where)
        name = str(b.get("name", f"bus{len(self.buses) + 1}"))
        try:
            settings = LineSettings(
                int(b.get("baud", 9600)), str(b.get("parity", "E")), int(b.get("stopbits", 1))
            )
        except ValueError as exc:
            raise ScenarioError(f"{where}: {exc}") from exc
        bus = RtuBus(
            name, settings, self.clock, self.truth, port=b.get("port"), symlink=b.get("link")
        )
        for raw_meter in b.get("meter", []):
            try:
                bus.add_meter(self._meter(raw_meter, where, name, "rtu"))
            except ValueError as exc:
                raise ScenarioError(f"{where}: {exc}") from exc
        self.buses.append(bus)

    def _add_tcp(self, raw: Any, where: str) -> None:
        t = _keys(raw, _TCP, where)
        name = str(t.get("name", f"tcp{len(self.tcps) + 1}"))
        tcp = TcpMeters(name, str(t.get("host", "127.0.0.1")), int(t.get("port", 0)))
        for raw_meter in t.get("meter", []):
            try:
                tcp.add_meter(self._meter(raw_meter, where, name, "tcp"))
            except ValueError as exc:
                raise ScenarioError(f"{where}: {exc}") from exc
        self.tcps.append(tcp)

    def _add_radio(self, raw: Any, where: str) -> None:
        r = _keys(raw, _RADIO, where)
        name = str(r.get("name", f"radio{len(self.radios) + 1}"))
        try:
            air = RadioSettings(**{k: int(r[k]) for k in RadioSettings.FIELDS if k in r})
        except ValueError as exc:
            raise ScenarioError(f"{where}: {exc}") from exc
        sensors = []
        for i, raw_sensor in enumerate(r.get("sensor", [])):
            sensors.append(self._sensor(raw_sensor, f"{where} sensor #{i + 1}", i))
        mode = int(r.get("network_mode", 1))
        if mode not in (0, 1, 2):
            raise ScenarioError(
                f"{where}: network_mode must be 0 (P2P), 1 (LoRaWAN, the "
                "factory setting) or 2 (FSK)"
            )
        radio = Rak3172Radio(
            name,
            self.clock,
            self.truth,
            sensors,
            air,
            mode,
            r.get("link"),
            derive_seed(self.seed, "radio", name),
        )
        self.radios.append(radio)

    def _sensor(self, raw: Any, where: str, index: int) -> SimSensor:
        s = _keys(raw, _SENSOR, where)
        name = self._unique(s.get("name"), where)
        where = f"{where} {name!r}"
        kind = s.get("kind")
        if kind not in KINDS:
            raise ScenarioError(f"{where}: kind must be one of {', '.join(KINDS)}")
        fmt = s.get("format", "cayenne_lpp")
        if fmt not in lora_formats.FORMATS:
            raise ScenarioError(f"{where}: format must be one of {', '.join(lora_formats.FORMATS)}")
        extra = {k: float(s[k]) for k in ("per_pulse", "base_flow", "peak_flow") if k in s}
        if extra and kind not in PULSE_KINDS:
            raise ScenarioError(f"{where}: {', '.join(extra)} apply to pulse counters only")
        try:
            model = SensorModel(
                kind,
                str(s.get("load", self.default_load)),
                self.tz,
                derive_seed(self.seed, "sensor", name),
                **extra,
            )
            address = str(s.get("address", f"{derive_seed(self.seed, 'addr', name):016X}"[:8]))
            sensor = SimSensor(
                name,
                model,
                fmt,
                address,
                float(s.get("interval_s", 600)),
                self._faults(s.get("faults"), LORA_FAULTS, where, name, "lora"),
                int(s.get("rssi_dbm", -85 - 3 * index)),
                int(s.get("snr_db", 8)),
            )
            sensor.check()  # fail now, not in the radio thread, if the format cannot carry it
        except (ValueError, lora_formats.LoraEncodeError) as exc:
            raise ScenarioError(f"{where}: {exc}") from exc
        self.sensors[name] = sensor
        return sensor

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> Building:
        now = self.clock.now_ms()
        for m in self.meters.values():  # counting starts now (or continues from the state)
            if m.model.last_ts_ms is None:
                m.model.last_ts_ms = now
        for s in self.sensors.values():
            if s.model.last_ts_ms is None:
                s.model.last_ts_ms = now
        try:
            for bus in self.buses:
                bus.start()
            for tcp in self.tcps:
                tcp.start()
            for radio in self.radios:
                radio.start()
        except BaseException:
            self.stop()
            raise
        self.started = True
        self.truth.event(self.clock.now_ms(), self.name, "started", endpoints=self.endpoints())
        return self

    def stop(self) -> None:
        for radio in self.radios:
            radio.stop()
        for tcp in self.tcps:
            tcp.stop()
        for bus in self.buses:
            bus.stop()
        if self.started:
            self.truth.event(self.clock.now_ms(), self.name, "stopped")
        self.started = False
        self.save_state()
        self.truth.close()

    def __enter__(self) -> Building:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- lookups ----------------------------------------------------------------------------
    def bus(self, name: str | None = None) -> RtuBus:
        return _pick(self.buses, name, "bus")

    def tcp(self, name: str | None = None) -> TcpMeters:
        return _pick(self.tcps, name, "tcp endpoint")

    def radio(self, name: str | None = None) -> Rak3172Radio:
        return _pick(self.radios, name, "radio")

    def meter(self, name: str) -> SimMeter:
        try:
            return self.meters[name]
        except KeyError:
            raise KeyError(f"no meter {name!r}; meters: {', '.join(self.meters)}") from None

    def endpoints(self) -> list[dict[str, Any]]:
        """What to connect to: one entry per bus, TCP endpoint and radio."""
        out: list[dict[str, Any]] = []
        for bus in self.buses:
            s = bus.settings
            out.append(
                {
                    "kind": "rtu",
                    "name": bus.name,
                    "path": bus.path if bus.link else None,
                    "pty": bus.link.path if bus.link else None,
                    "baud": s.baud,
                    "parity": s.parity,
                    "stopbits": s.stopbits,
                    "framing": str(s),
                    "real_port": bool(bus.port),
                    "meters": [_meter_info(m) for m in bus.meters.values()],
                }
            )
        for tcp in self.tcps:
            out.append(
                {
                    "kind": "tcp",
                    "name": tcp.name,
                    "host": tcp.host,
                    "port": tcp.port,
                    "meters": [_meter_info(m) for m in tcp.meters.values()],
                }
            )
        for radio in self.radios:
            out.append(
                {
                    "kind": "lora",
                    "name": radio.name,
                    "path": (radio.symlink or radio.path) or None,
                    "pty": radio.path or None,
                    "uart": "115200 8N1",
                    "module": "RAK3172 (RUI3 AT, P2P)",
                    "p2p": radio.air.text(),
                    "sensors": [
                        {
                            "name": s.name,
                            "kind": s.model.kind,
                            "format": s.format,
                            "address": s.address,
                            "interval_s": s.interval_s,
                            **(
                                {
                                    "per_pulse": s.model.per_pulse,
                                    "measures": PULSE_KINDS[s.model.kind][0],
                                }
                                if s.model.kind in PULSE_KINDS
                                else {}
                            ),
                        }
                        for s in radio.sensors
                    ],
                }
            )
        return out

    # -- persistence ------------------------------------------------------------------------
    def _read_state(self) -> dict[str, Any]:
        if not self.state_file or not self.state_file.exists():
            return {}
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError) as exc:
            raise ScenarioError(
                f"state file {self.state_file} is unreadable ({exc}); move it "
                "away to start with fresh counters"
            ) from exc

    def save_state(self) -> None:
        """Write energy counters, pulse totals and frame counters to the state file."""
        if not self.state_file:
            return
        state = {
            "clock_ms": self.clock.now_ms(),
            "meters": {n: m.state() for n, m in self.meters.items()},
            "sensors": {
                n: {**s.model.state(), "counter": s.counter} for n, s in self.sensors.items()
            },
        }
        tmp = self.state_file.with_suffix(self.state_file.suffix + ".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.state_file)


def _pick(items: list[Any], name: str | None, what: str) -> Any:
    if name is None:
        if len(items) == 1:
            return items[0]
        raise KeyError(f"the building has {len(items)} of {what}: name one")
    for item in items:
        if item.name == name:
            return item
    raise KeyError(f"no {what} {name!r}; there are: {', '.join(i.name for i in items)}")


def _meter_info(m: SimMeter) -> dict[str, Any]:
    return {
        "name": m.name,
        "unit": m.unit,
        "profile": m.profile.model,
        "turnaround_ms": round(m.turnaround_s * 1000, 3),
    }
