"""Simulated LoRa battery sensors (room climate; pulse counters on gas, water and heat meters)
and the RAK3172 module a gateway talks to over a UART, emulated on a PTY in LoRa P2P mode.

Sensors only encode (payload encoders and the P2P envelope from protocols/); the gateway
decodes. The module answers the RUI3 AT commands a gateway uses and reports each received
packet as +EVT:RXP2P:<rssi>:<snr>:<hex>. Radio physics (airtime, collisions) is not modelled.
"""

from __future__ import annotations

import math
import os
import random
import select
import termios
import threading
import time
import tty
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from hw_sim.clock import SimClock
from hw_sim.faults import FaultEngine, flip_bit
from hw_sim.loadshape import check_shape, load_share
from hw_sim.truth import GroundTruth
from protocols import lora as payloads
from protocols import lora_p2p, rak3172, rak3172_sim

FIRMWARE_VERSION = "4.0.6"  # what AT+VER=? reports (a RUI3 release)
BANNER = ("RAKwireless RAK3172 (hw_sim emulation)", "Current Work Mode: LoRa P2P.")
UART_BAUD = 115200  # the module's factory UART setting (8N1)
_MAX_CATCH_UP = 3  # uplinks sent at once when simulated time jumps ahead

KINDS = ("room_climate", "gas_meter", "water_meter", "heat_meter")
# kind: (quantity the pulses measure, default per_pulse, default base/peak flow per hour)
PULSE_KINDS = {
    "gas_meter": ("gas_volume", 0.01, 0.3, 6.0),  # m³ per pulse, m³/h
    "water_meter": ("water_volume", 0.001, 0.02, 1.5),  # m³ per pulse (1 L), m³/h
    "heat_meter": ("heat_energy", 1000.0, 2000.0, 40000.0),  # Wh per pulse, W
}
# The quantities each kind reports in each format: (quantity, index/channel).
LAYOUTS: dict[tuple[str, str], tuple[tuple[str, int], ...]] = {}
for _fmt in ("cayenne_lpp",):
    LAYOUTS[("room_climate", _fmt)] = (
        ("temperature", 1),
        ("humidity", 2),
        ("co2", 3),
        ("battery", 4),
    )
    for _k in PULSE_KINDS:
        LAYOUTS[(_k, _fmt)] = (("pulse_count", 1), ("battery", 2))
LAYOUTS[("room_climate", "elsys")] = (
    ("temperature", 0),
    ("humidity", 0),
    ("co2", 0),
    ("battery", 0),
)
for _k in PULSE_KINDS:
    LAYOUTS[(_k, "elsys")] = (("pulse_count", 1), ("battery", 0))
    LAYOUTS[(_k, "milesight_em300_di")] = (("battery_level", 0), ("pulse_count", 0))
for _fmt in ("milesight_am103", "milesight_am307"):
    LAYOUTS[("room_climate", _fmt)] = (
        ("battery_level", 0),
        ("temperature", 0),
        ("humidity", 0),
        ("co2", 0),
    )


class LoraConfigError(ValueError):
    """A sensor or radio setting in a scenario is invalid."""


@dataclass
class SensorModel:
    """What a sensor measures. Room climate follows occupancy (the building's load shape)
    and heating; pulse counters integrate a flow that follows the shape and never go back."""

    kind: str
    shape: str = "office"
    tz: tzinfo | None = None
    seed: int = 0
    per_pulse: float = 0.0
    base_flow: float = 0.0  # per hour, in the pulse quantity's unit (W for heat)
    peak_flow: float = 0.0
    total: float = 0.0  # meter reading in the pulse quantity's unit since counter 0
    last_ts_ms: int | None = None
    uplinks: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise LoraConfigError(f"sensor kind {self.kind!r} must be one of {', '.join(KINDS)}")
        check_shape(self.shape)
        self._rng = random.Random(self.seed)
        self._offset_c = self._rng.uniform(-0.8, 0.8)  # each room is a bit different
        if self.kind in PULSE_KINDS:
            _, per_pulse, base, peak = PULSE_KINDS[self.kind]
            self.per_pulse = self.per_pulse or per_pulse
            self.base_flow = self.base_flow or base
            self.peak_flow = self.peak_flow or peak
            if self.per_pulse <= 0 or self.peak_flow < self.base_flow:
                raise LoraConfigError(f"{self.kind}: need per_pulse > 0 and peak_flow >= base_flow")

    def _share(self, ts_ms: int) -> float:
        assert self.tz is not None
        return load_share(self.shape, ts_ms, self.tz)

    def _advance(self, ts_ms: int) -> None:
        if self.last_ts_ms is None or ts_ms <= self.last_ts_ms:
            self.last_ts_ms = self.last_ts_ms if self.last_ts_ms is not None else ts_ms
            return
        span = ts_ms - self.last_ts_ms
        steps = max(1, min(2000, math.ceil(span / 60_000)))
        step = span / steps
        acc = 0.0
        for i in range(steps):
            mid = int(self.last_ts_ms + (i + 0.5) * step)
            flow = self.base_flow + (self.peak_flow - self.base_flow) * self._share(mid)
            acc += flow * step / 3_600_000.0
        self.total += acc
        self.last_ts_ms = ts_ms

    def measure(self, ts_ms: int) -> dict[str, float]:
        """The sensor's readings at ts_ms, before the payload format rounds them."""
        rng = self._rng
        self.uplinks += 1
        battery_v = max(2.5, 3.6 - 2e-6 * self.uplinks + rng.gauss(0.0, 0.003))
        out = {
            "battery": battery_v,
            "battery_level": float(max(0, min(100, round((battery_v - 2.5) / 1.1 * 100)))),
        }
        if self.kind == "room_climate":
            occ = self._share(ts_ms)
            heating = self._share(ts_ms + 3_600_000)  # heating runs an hour ahead of people
            temp = 17.5 + 3.5 * min(1.0, heating * 1.5) + 0.6 * occ + self._offset_c
            out["temperature"] = temp + rng.gauss(0.0, 0.1)
            out["humidity"] = min(95.0, max(15.0, 42.0 + 12.0 * occ + rng.gauss(0.0, 1.0)))
            out["co2"] = max(400.0, 420.0 + 950.0 * occ + rng.gauss(0.0, 25.0))
        else:
            self._advance(ts_ms)
            out["pulse_count"] = float(int(self.total / self.per_pulse) % (1 << 32))
        return out

    def state(self) -> dict[str, Any]:
        return {"total": self.total, "last_ts_ms": self.last_ts_ms, "uplinks": self.uplinks}

    def restore(self, state: dict[str, Any]) -> None:
        self.total = float(state.get("total", self.total))
        self.last_ts_ms = state.get("last_ts_ms", self.last_ts_ms)
        self.uplinks = int(state.get("uplinks", self.uplinks))


@dataclass
class SimSensor:
    """One battery sensor: what it measures, how it encodes it, when it sends."""

    name: str
    model: SensorModel
    format: str
    address: str
    interval_s: float
    faults: FaultEngine
    rssi_dbm: int = -85
    snr_db: int = 8
    counter: int = 0
    next_ms: int = 0
    channel: tuple[int, int, int] | None = None  # (frequency_hz, sf, bw_khz); None = radio's
    layout: tuple[tuple[str, int], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.format not in payloads.FORMATS:
            raise LoraConfigError(
                f"sensor {self.name}: format {self.format!r} must be one of "
                f"{', '.join(payloads.FORMATS)}"
            )
        layout = LAYOUTS.get((self.model.kind, self.format))
        if layout is None:
            fits = sorted(f for (k, f) in LAYOUTS if k == self.model.kind)
            raise LoraConfigError(
                f"sensor {self.name}: a {self.model.kind} does not send "
                f"{self.format}; use one of {', '.join(fits)}"
            )
        self.layout = layout
        self.address = self.address.upper()
        if len(self.address) != 8 or any(c not in "0123456789ABCDEF" for c in self.address):
            raise LoraConfigError(
                f"sensor {self.name}: address {self.address!r} must be 8 "
                "hex digits, e.g. 'A1B2C3D4'"
            )
        if self.interval_s <= 0:
            raise LoraConfigError(f"sensor {self.name}: interval_s must be > 0")

    def check(self) -> None:
        """Raise LoraEncodeError now if the format cannot carry this sensor's readings."""
        sample = {
            "temperature": 21.5,
            "humidity": 45.0,
            "co2": 800.0,
            "battery": 3.6,
            "battery_level": 100.0,
            "pulse_count": 123456.0,
        }
        payloads.encode(self.format, [(q, sample[q], idx) for q, idx in self.layout])

    def uplink(self, ts_ms: int) -> tuple[bytes, list[tuple[str, float, int]]]:
        """One radio frame and the values it carries exactly as encoded (what the gateway
        decodes). Advances the frame counter."""
        measured = self.model.measure(ts_ms)
        readings = [(q, measured[q], idx) for q, idx in self.layout]
        payload = payloads.encode(self.format, readings)
        frame = lora_p2p.build_p2p_frame(self.address, self.counter, self.format, payload)
        self.counter = (self.counter + 1) & 0xFFFF
        served = [(r.quantity, r.value, r.index) for r in payloads.decode(self.format, payload)]
        return frame, served


class RadioSettings:
    """The module's P2P parameters (AT+P2P): frequency, SF, bandwidth, CR, preamble, power."""

    FIELDS = (
        "frequency_hz",
        "spreading_factor",
        "bandwidth_khz",
        "coding_rate",
        "preamble",
        "tx_power_dbm",
    )

    def __init__(
        self,
        frequency_hz: int = 868_000_000,
        spreading_factor: int = 7,
        bandwidth_khz: int = 125,
        coding_rate: int = 0,
        preamble: int = 8,
        tx_power_dbm: int = 14,
    ) -> None:
        self.values = [
            frequency_hz,
            spreading_factor,
            bandwidth_khz,
            coding_rate,
            preamble,
            tx_power_dbm,
        ]
        for i, v in enumerate(self.values):
            try:
                rak3172.check_p2p_value(i, v)
            except rak3172.AtCommandError as exc:
                raise LoraConfigError(f"radio: {exc}") from exc

    @property
    def channel(self) -> tuple[int, int, int]:
        """What must match for a packet to be received: frequency, SF, bandwidth."""
        return (self.values[0], self.values[1], self.values[2])

    def text(self) -> str:
        return ":".join(str(v) for v in self.values)


class Rak3172Radio:
    """A RAK3172 on a PTY (the gateway opens ``path`` at 115200 8N1) hearing the sensors.

    Packets are delivered only while the module is in P2P mode (AT+NWM=0), receiving
    (AT+PRECV) and tuned to the sensors' frequency, spreading factor and bandwidth, as on
    air. Each sensor sends every interval_s simulated seconds.
    """

    def __init__(
        self,
        name: str,
        clock: SimClock,
        truth: GroundTruth,
        sensors: list[SimSensor],
        sensor_channel: RadioSettings | None = None,
        network_mode: int = rak3172.MODE_LORAWAN,
        symlink: str | None = None,
        seed: int = 0,
    ) -> None:
        self.name = name
        self.clock = clock
        self.truth = truth
        self.sensors = list(sensors)
        self.air = sensor_channel or RadioSettings()  # what the sensors transmit on
        self.symlink = symlink
        self.factory_mode = network_mode
        self.mode = network_mode
        self.settings = RadioSettings()  # what the module is tuned to (AT+P2P)
        self.rx_window = rak3172.RX_STOP
        self._rx_deadline: float | None = None
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._now_requests: list[str] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._buf = b""
        self.master = self.slave = -1
        self.path = ""
        names = [s.name for s in self.sensors]
        if len(set(names)) != len(names):
            raise LoraConfigError(f"radio {name}: sensor names must be unique")

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        attrs = termios.tcgetattr(self.slave)
        attrs[4] = attrs[5] = termios.B115200
        termios.tcsetattr(self.slave, termios.TCSANOW, attrs)
        self.path = os.ttyname(self.slave)
        if self.symlink:
            if os.path.islink(self.symlink):
                os.unlink(self.symlink)
            os.symlink(self.path, self.symlink)
        os.set_blocking(self.master, False)
        now = self.clock.now_ms()
        for s in self.sensors:
            if not s.next_ms:
                # Sensors were switched on at random moments: spread the first uplinks.
                s.next_ms = now + int(self._rng.uniform(0.05, 1.0) * s.interval_s * 1000)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._serve, name=f"hw_sim-lora-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.symlink and os.path.islink(self.symlink):
            os.unlink(self.symlink)
        for fd in (self.master, self.slave):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.master = self.slave = -1

    def send_now(self, sensor: str) -> None:
        """Make a sensor send at once (tests: no need to wait for its schedule)."""
        if sensor not in {s.name for s in self.sensors}:
            raise KeyError(f"radio {self.name} has no sensor {sensor!r}")
        with self._lock:
            self._now_requests.append(sensor)

    @property
    def listening(self) -> bool:
        return self.mode == rak3172.MODE_P2P_LORA and self.rx_window != rak3172.RX_STOP

    # -- loop -----------------------------------------------------------------------------
    def _serve(self) -> None:
        while not self._stop.is_set():
            now_ms = self.clock.now_ms()
            due = min((s.next_ms for s in self.sensors), default=now_ms + 60_000)
            wait_s = max(0.0, self.clock.real_s((due - now_ms) / 1000.0))
            if self._rx_deadline is not None:
                wait_s = min(wait_s, max(0.0, self._rx_deadline - time.monotonic()))
            r, _, _ = select.select([self.master], [], [], min(wait_s, 0.05))
            if r:
                try:
                    data = os.read(self.master, 4096)
                except (BlockingIOError, OSError):
                    data = b""
                if data:
                    self._on_uart(data)
            if self._rx_deadline is not None and time.monotonic() >= self._rx_deadline:
                self._rx_deadline = None
                self.rx_window = rak3172.RX_STOP
                self._write(rak3172_sim.format_line("+EVT:RXP2P RECEIVE TIMEOUT"))
            with self._lock:
                now_requests, self._now_requests = self._now_requests, []
            now_ms = self.clock.now_ms()
            for s in self.sensors:
                if s.name in now_requests:
                    self._transmit(s, now_ms)
                step_ms = int(s.interval_s * 1000)
                if now_ms - s.next_ms > _MAX_CATCH_UP * step_ms:
                    # The clock jumped (clock.advance): skip the uplinks in between; the
                    # pulse counters still integrate the whole time.
                    s.next_ms = now_ms - _MAX_CATCH_UP * step_ms
                while s.next_ms <= now_ms:
                    self._transmit(s, s.next_ms)
                    s.next_ms += step_ms

    def _write(self, data: bytes) -> None:
        if self.master < 0:
            return
        try:
            os.write(self.master, data)
        except (BlockingIOError, OSError):
            pass  # nobody reads the UART: the bytes are lost, as on a real line

    # -- the air --------------------------------------------------------------------------
    def _transmit(self, sensor: SimSensor, ts_ms: int) -> None:
        frame, served = sensor.uplink(ts_ms)
        counter = (sensor.counter - 1) & 0xFFFF
        common = {"via": "lora", "radio": self.name, "address": sensor.address, "counter": counter}
        fault = sensor.faults.draw(ts_ms)
        copies = 1
        if fault is not None:
            detail: dict[str, Any] = {}
            if fault.kind == "lost":
                copies = 0
            elif fault.kind == "duplicated":
                copies = 2
            elif fault.kind == "corrupted":
                frame = flip_bit(frame, fault, lora_p2p.HEADER_BYTES, len(frame) - 2)
                copies = 0  # the gateway gets bytes, but not the values
            detail = {k: v for k, v in fault.detail.items() if k != "aux"}
            self.truth.fault(ts_ms, sensor.name, fault.kind, detail=detail, **common)
        why_not = self._why_not_received(sensor)
        if why_not:
            self.truth.event(ts_ms, sensor.name, "not_received", detail=why_not, **common)
            return
        if fault is not None and fault.kind == "corrupted":
            self._deliver(sensor, frame)
            return
        if copies:
            for quantity, value, index in served:
                self.truth.value(ts_ms, sensor.name, quantity, value, index=index, **common)
        for _ in range(copies):
            self._deliver(sensor, frame)

    def _why_not_received(self, sensor: SimSensor) -> str:
        if self.mode != rak3172.MODE_P2P_LORA:
            return (
                "the module is in LoRaWAN mode: the gateway must send AT+NWM=0 to "
                "receive P2P packets"
            )
        if self.rx_window == rak3172.RX_STOP:
            return "the module is not receiving: the gateway must send AT+PRECV=65534"
        channel = sensor.channel or self.air.channel
        if channel != self.settings.channel:
            return (
                f"the module listens on {self.settings.channel} (Hz, SF, kHz) but the "
                f"sensor sends on {channel}: set AT+P2P to match"
            )
        return ""

    def _deliver(self, sensor: SimSensor, frame: bytes) -> None:
        rssi = sensor.rssi_dbm + int(round(self._rng.gauss(0.0, 2.0)))
        snr = sensor.snr_db + int(round(self._rng.gauss(0.0, 1.0)))
        self._write(rak3172_sim.format_rx_p2p(rssi, snr, frame))
        if self.rx_window == rak3172.RX_UNTIL_FIRST:
            self.rx_window = rak3172.RX_STOP
        elif self._rx_deadline is not None:
            self._rx_deadline = None
            self.rx_window = rak3172.RX_STOP

    # -- the UART: AT commands --------------------------------------------------------------
    def _on_uart(self, data: bytes) -> None:
        try:
            speed = termios.tcgetattr(self.master)[5]
        except termios.error:
            speed = termios.B115200
        if speed != termios.B115200:
            self.truth.event(
                self.clock.now_ms(),
                self.name,
                "wrong_line_settings",
                detail="the gateway's UART is not at 115200 baud: the module "
                "does not understand it",
            )
            return
        self._buf += data
        while True:
            cut = min(
                (i for i in (self._buf.find(b"\r"), self._buf.find(b"\n")) if i >= 0), default=-1
            )
            if cut < 0:
                if len(self._buf) > rak3172.MAX_LINE_BYTES:
                    self._buf = b""
                    self._write(rak3172_sim.format_line("AT_ERROR"))
                return
            line, self._buf = self._buf[:cut], self._buf[cut + 1 :]
            if line.strip():
                for out in self._command(line):
                    self._write(rak3172_sim.format_line(out))

    def _command(self, line: bytes) -> list[str]:
        try:
            cmd = rak3172_sim.parse_command(line)
        except rak3172.AtCommandError:
            return ["AT_ERROR"]
        name, form, args = cmd.name, cmd.form, cmd.args
        if name == "AT":
            return ["OK"]
        if name == "ATZ":
            self._reset()
            return list(BANNER)
        if name == "ATR":
            self.settings = RadioSettings()
            self.rx_window = rak3172.RX_STOP
            return ["OK"]
        if form == "help":
            return [f"{name}: see the RUI3 AT command manual", "OK"]
        if name == "AT+VER" and form == "query":
            return [f"AT+VER={FIRMWARE_VERSION}", "OK"]
        if name == "AT+BAUD" and form == "query":
            return [f"AT+BAUD={UART_BAUD}", "OK"]
        if name == "AT+NWM":
            return self._nwm(form, args)
        if name == "AT+PRECV":
            return self._precv(form, args)
        if name == "AT+PSEND":
            return self._psend(form, args)
        if name == "AT+P2P" or name in (f[0] for f in rak3172.P2P_FIELDS):
            return self._p2p(name, form, args)
        return ["AT_COMMAND_NOT_FOUND"]

    def _reset(self) -> None:
        self.rx_window = rak3172.RX_STOP
        self._rx_deadline = None

    def _nwm(self, form: str, args: tuple[str, ...]) -> list[str]:
        if form == "query":
            return [f"AT+NWM={self.mode}", "OK"]
        if form != "set" or len(args) != 1 or args[0] not in ("0", "1", "2"):
            return ["AT_PARAM_ERROR"]
        mode = int(args[0])
        if mode == self.mode:
            return ["OK"]
        self.mode = mode
        self._reset()  # changing the work mode restarts the module
        return [
            "OK",
            *BANNER[:1],
            "Current Work Mode: "
            + ("LoRa P2P." if mode == 0 else "LoRaWAN." if mode == 1 else "FSK P2P."),
        ]

    def _precv(self, form: str, args: tuple[str, ...]) -> list[str]:
        if form == "query":
            return [f"AT+PRECV={self.rx_window}", "OK"]
        if self.mode != rak3172.MODE_P2P_LORA:
            return ["AT_MODE_NO_SUPPORT"]
        if form != "set" or len(args) != 1 or not args[0].strip().isdigit():
            return ["AT_PARAM_ERROR"]
        window = int(args[0])
        if window > 65535:
            return ["AT_PARAM_ERROR"]
        self.rx_window = window
        self._rx_deadline = None
        if 0 < window < rak3172.RX_CONTINUOUS:
            self._rx_deadline = time.monotonic() + window / 1000.0
        return ["OK"]

    def _psend(self, form: str, args: tuple[str, ...]) -> list[str]:
        if self.mode != rak3172.MODE_P2P_LORA:
            return ["AT_MODE_NO_SUPPORT"]
        if self.rx_window != rak3172.RX_STOP:
            return ["AT_BUSY_ERROR"]
        text = args[0] if form == "set" and len(args) == 1 else ""
        try:
            data = bytes.fromhex(text)
        except ValueError:
            data = b""
        if not 1 <= len(data) <= rak3172.MAX_PAYLOAD_BYTES or len(text) % 2:
            return ["AT_PARAM_ERROR"]
        self.truth.event(self.clock.now_ms(), self.name, "gateway_sent", payload_hex=text.upper())
        return ["OK", "+EVT:TXP2P DONE"]

    def _p2p(self, name: str, form: str, args: tuple[str, ...]) -> list[str]:
        if self.mode != rak3172.MODE_P2P_LORA:
            return ["AT_MODE_NO_SUPPORT"]
        fields = [f[0] for f in rak3172.P2P_FIELDS]
        if form == "query":
            if name == "AT+P2P":
                return [f"AT+P2P={self.settings.text()}", "OK"]
            return [f"{name}={self.settings.values[fields.index(name)]}", "OK"]
        if form != "set":
            return ["AT_PARAM_ERROR"]
        if self.rx_window != rak3172.RX_STOP:
            return ["AT_BUSY_ERROR"]
        try:
            if name == "AT+P2P":
                values = list(rak3172_sim.parse_p2p_args(args))
            else:
                if len(args) != 1 or not args[0].strip().isdigit():
                    return ["AT_PARAM_ERROR"]
                i = fields.index(name)
                values = list(self.settings.values)
                values[i] = rak3172.check_p2p_value(i, int(args[0]))
        except rak3172.AtCommandError:
            return ["AT_PARAM_ERROR"]
        self.settings.values = values
        return ["OK"]
