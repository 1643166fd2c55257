"""LoRa sensors through a RAK3172 module (RUI3 AT firmware) on a serial port: put it in P2P
receive mode, turn its +EVT:RXP2P events into readings of the configured sensors.

The AT parser, the P2P envelope and the payload decoders are protocols/ (rak3172, lora_p2p,
lora); this module does the UART conversation, matches senders to sensors and counts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from edge.poller import Reading, ReadingSink
from edge.serial_port import SerialPort, SerialPortError
from protocols import lora as payloads
from protocols import lora_p2p, quantities, rak3172

log = logging.getLogger("edge.lora")

UART_BAUD = 115200  # RAK3172 factory setting, 8N1
COMMAND_TIMEOUT_S = 2.0
RESTART_WAIT_S = 2.0  # AT+NWM restarts the module
RX_WATCHDOG_S = 900.0  # no packet for this long: check the module still receives, re-arm


class LoraModuleError(Exception):
    """The module does not answer or refuses a command; the message says what to check."""


@dataclass
class SensorStats:
    device_id: int
    name: str
    frames: int = 0
    duplicates: int = 0
    lost: int = 0  # frames missing by the counter
    restarts: int = 0  # the counter went backwards
    bad_payloads: int = 0
    last_rx_ms: int | None = None
    rssi_dbm: int | None = None
    snr_db: int | None = None
    last_error: str | None = None

    def as_status(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SensorSpec:
    device_id: int
    name: str
    address: int
    format: str
    quantities: tuple[str, ...] | None

    @classmethod
    def from_config(cls, s: dict[str, Any]) -> SensorSpec:
        q = s.get("quantities")
        return cls(s["id"], s["name"], int(s["address"], 16), s["format"], tuple(q) if q else None)


def p2p_command(lora: dict[str, Any]) -> bytes:
    """AT+P2P=... from the configuration's lora section (coding rate 4/5..4/8 -> 0..3; the
    transmit power only matters for sending, clamped to the module's 5..22 dBm)."""
    return rak3172.set_p2p_params(
        lora["frequency_hz"],
        lora["spreading_factor"],
        lora["bandwidth_khz"],
        lora["coding_rate"] - 5,
        max(5, lora["preamble"]),
        min(22, max(5, lora["tx_power_dbm"])),
    )


class LoraReceiver:
    """Owns the module's serial port: configures it, then receives until cancelled."""

    def __init__(
        self,
        lora: dict[str, Any],
        sensors: Sequence[dict[str, Any]],
        sink: ReadingSink,
        stats: dict[int, SensorStats] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lora = lora
        self.sensors = {
            SensorSpec.from_config(s).address: SensorSpec.from_config(s) for s in sensors
        }
        self.sink = sink
        self.stats = stats if stats is not None else {}
        for s in self.sensors.values():
            self.stats.setdefault(s.device_id, SensorStats(s.device_id, s.name))
        self.clock = clock
        self.port: SerialPort | None = None
        self.parser = rak3172.AtParser()
        self.filter = lora_p2p.DuplicateFilter(max(64, len(self.sensors) * 2))
        self.unknown_senders: dict[str, int] = {}
        self.bad_frames = 0
        self.module_error: str | None = None
        self._events: list[Any] = []
        self._last_rx = time.monotonic()

    # -- the UART conversation -----------------------------------------------------------

    async def _read_events(self, timeout_s: float) -> None:
        assert self.port is not None
        data = await self.port.read(timeout_s)
        if data:
            for ev in self.parser.feed(data):
                if isinstance(ev, rak3172.RxP2P):
                    self.handle_packet(ev)
                else:
                    self._events.append(ev)

    async def command(self, cmd: bytes, timeout_s: float = COMMAND_TIMEOUT_S) -> list[Any]:
        """Send one AT command; the events up to its OK. LoraModuleError on an error status
        or silence. Packets received meanwhile are handled as usual."""
        assert self.port is not None
        self._events.clear()
        await self.port.write(cmd)
        deadline = time.monotonic() + timeout_s
        while True:
            for i, ev in enumerate(self._events):
                if ev == rak3172.OK:
                    out = self._events[:i]
                    del self._events[: i + 1]
                    return out
                if isinstance(ev, rak3172.AtError):
                    self._events.clear()
                    raise LoraModuleError(
                        f"LoRa module on {self.lora['port']} answered {cmd.decode().strip()} with "
                        f"{ev.code}: {ev.meaning}"
                    )
            left = deadline - time.monotonic()
            if left <= 0:
                raise LoraModuleError(
                    f"LoRa module on {self.lora['port']} did not answer {cmd.decode().strip()} "
                    f"within {timeout_s:.0f} s: check the wiring (TX/RX crossed), power and that "
                    "the module runs RUI3 AT firmware at 115200 baud"
                )
            await self._read_events(left)

    async def configure(self) -> None:
        """P2P mode, the configured radio parameters, continuous receive."""
        await self.command(rak3172.ATTENTION)
        mode = None
        for ev in await self.command(rak3172.QUERY_NETWORK_MODE):
            if isinstance(ev, rak3172.AtValue) and ev.name == "AT+NWM":
                mode = ev.value.strip()
        if mode != str(rak3172.MODE_P2P_LORA):
            log.info("LoRa module in network mode %s: switching to P2P (it restarts)", mode)
            await self.command(rak3172.set_network_mode(rak3172.MODE_P2P_LORA))
            end = time.monotonic() + RESTART_WAIT_S
            while time.monotonic() < end:
                await self._read_events(end - time.monotonic())
            await self.command(rak3172.ATTENTION)
        try:
            await self.command(rak3172.STOP_RECEIVE)
        except LoraModuleError:
            pass  # not receiving: nothing to stop
        await self.command(p2p_command(self.lora))
        await self.command(rak3172.RECEIVE_CONTINUOUS)
        self._last_rx = time.monotonic()
        log.info(
            "LoRa module on %s receiving (%s)",
            self.lora["port"],
            p2p_command(self.lora).decode().strip(),
        )

    async def run(self) -> None:
        """Configure and receive forever; a lost or silent module is set up again."""
        backoff = 1.0
        try:
            while True:
                try:
                    if self.port is None:
                        self.port = SerialPort(self.lora["port"], UART_BAUD, "N", 1)
                    await self.configure()
                    self.module_error = None
                    backoff = 1.0
                    while time.monotonic() - self._last_rx < RX_WATCHDOG_S:
                        await self._read_events(5.0)
                    # Long silence: make sure the module still listens (it may have reset).
                    log.info("no LoRa packet for %.0f s: re-arming the module", RX_WATCHDOG_S)
                except Exception as exc:  # never let one bad event end reception for good
                    if not isinstance(exc, (SerialPortError, LoraModuleError)):
                        log.exception("LoRa receiver failed; restarting it")
                    if self.module_error != str(exc):
                        log.error("%s", exc)
                    self.module_error = str(exc)
                    if isinstance(exc, SerialPortError) and self.port is not None:
                        self.port.close()
                        self.port = None
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 60.0)
        finally:
            if self.port is not None:
                self.port.close()
                self.port = None

    # -- packets -------------------------------------------------------------------------

    def handle_packet(self, rx: rak3172.RxP2P) -> list[Reading]:
        """The readings of one received packet (also appended to the sink); [] if dropped."""
        self._last_rx = time.monotonic()
        try:
            frame = lora_p2p.parse_p2p_frame(rx.payload)
        except payloads.LoraPayloadError as exc:
            self.bad_frames += 1
            log.debug("LoRa frame dropped: %s", exc)
            return []
        sensor = self.sensors.get(int(frame.address_hex, 16))
        if sensor is None:
            n = self.unknown_senders.get(frame.address_hex, 0)
            self.unknown_senders[frame.address_hex] = n + 1
            if n == 0:
                log.info("LoRa frame from unconfigured sensor %s ignored", frame.address_hex)
            return []
        st = self.stats[sensor.device_id]
        status = self.filter.check(frame.address_hex, frame.counter)
        if status.duplicate:
            st.duplicates += 1
            return []
        st.frames += 1
        st.lost += status.lost
        st.restarts += 1 if status.restarted else 0
        ts_ms = int(self.clock() * 1000)
        st.last_rx_ms, st.rssi_dbm, st.snr_db = ts_ms, rx.rssi_dbm, rx.snr_db
        if frame.format_name != sensor.format:
            st.bad_payloads += 1
            st.last_error = (
                f"sensor {sensor.name} sends {frame.format_name}, the configuration says "
                f"{sensor.format}: correct the sensor's format"
            )
            return []
        try:
            decoded = payloads.decode(frame.format_name, frame.payload)
        except payloads.LoraPayloadError as exc:
            st.bad_payloads += 1
            st.last_error = str(exc)
            return []
        values: dict[str, float | int] = {}
        for r in sorted(decoded, key=lambda r: r.index):
            values.setdefault(r.quantity, r.value)  # one channel per quantity: the first input
        values["rssi"] = rx.rssi_dbm
        values["snr"] = rx.snr_db
        wanted = sensor.quantities
        readings = [
            (quantities.channel_id(sensor.device_id, q), ts_ms, v)
            for q, v in values.items()
            if (q in wanted if wanted else q not in ("rssi", "snr"))
        ]
        if readings:
            self.sink.append(readings)
        return readings
