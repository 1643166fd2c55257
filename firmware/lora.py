"""LoRa sensors through a RAK3172 module (RUI3 AT firmware, P2P mode) on a board UART: set the
module up, receive continuously, drop duplicates, turn packets of configured sensors into
readings. The AT parser, P2P frame and payload decoders are protocols/; no buffer or MQTT here.

Same behaviour as edge/lora.py (the Linux agent), on MicroPython."""

import asyncio
import time

from protocols import lora as payloads
from protocols import lora_p2p, quantities, rak3172

UART_BAUD = 115200  # RAK3172 factory setting, 8N1
_COMMAND_TIMEOUT_MS = 2000
_RESTART_WAIT_MS = 2000  # AT+NWM restarts the module
_RX_WATCHDOG_MS = 900000  # no packet for this long: check the module still listens, re-arm
_POLL_MS = 5


class LoraModuleError(Exception):
    """The module does not answer or refuses a command; the message says what to check."""


class SensorStats:
    """Counters of one sensor, for the status message (same fields as edge)."""

    def __init__(self, device_id, name):
        self.device_id = device_id
        self.name = name
        self.frames = 0
        self.duplicates = 0
        self.lost = 0
        self.restarts = 0
        self.bad_payloads = 0
        self.last_rx_ms = None
        self.rssi_dbm = None
        self.snr_db = None
        self.last_error = None

    def as_status(self):
        return {
            "device_id": self.device_id,
            "name": self.name,
            "frames": self.frames,
            "duplicates": self.duplicates,
            "lost": self.lost,
            "restarts": self.restarts,
            "bad_payloads": self.bad_payloads,
            "last_rx_ms": self.last_rx_ms,
            "rssi_dbm": self.rssi_dbm,
            "snr_db": self.snr_db,
            "last_error": self.last_error,
        }


def p2p_command(cfg):
    """AT+P2P=... from the config's lora section (coding rate 4/5..4/8 -> 0..3)."""
    return rak3172.set_p2p_params(
        cfg["frequency_hz"],
        cfg.get("spreading_factor", 7),
        cfg.get("bandwidth_khz", 125),
        cfg.get("coding_rate", 5) - 5,
        max(5, cfg.get("preamble", 8)),
        min(22, max(5, cfg.get("tx_power_dbm", 14))),
    )


class LoraReceiver:
    """Owns the module's UART: configures it, then receives until cancelled (run()).

    cfg: the config's "lora" dict; sensors: its "sensors" list; sink: has append(readings);
    board: firmware.boards Board (uart, utc_ms). Readings carry the receive time."""

    def __init__(self, cfg, sensors, sink, board):
        self.cfg = cfg
        self.sink = sink
        self.board = board
        self.by_address = {}  # type: dict  # address (int) -> [sensor dict] (several with "index")
        self.stats = {}
        for s in sensors:
            addr = int(s["address"], 16)
            self.by_address.setdefault(addr, []).append(s)
            self.stats[s["id"]] = SensorStats(s["id"], s["name"])
        self.uart = None
        self.parser = rak3172.AtParser()
        self.filter = lora_p2p.DuplicateFilter(max(64, len(sensors) * 2))
        self.unknown_senders = {}
        self.bad_frames = 0
        self.module_error = None
        self._events = []
        self._rx = bytearray(128)
        self._last_rx = time.ticks_ms()

    # -- the UART conversation -----------------------------------------------------------

    def _pump(self):
        """Parse what the UART has now; packets are handled at once. True if bytes came."""
        n = self.uart.readinto(self._rx)
        if not n:
            return False
        for ev in self.parser.feed(bytes(memoryview(self._rx)[:n])):
            if isinstance(ev, rak3172.RxP2P):
                self.handle_packet(ev)
            else:
                self._events.append(ev)
        return True

    async def _pump_for(self, ms):
        end = time.ticks_add(time.ticks_ms(), ms)
        while time.ticks_diff(end, time.ticks_ms()) > 0:
            if not self._pump():
                await asyncio.sleep_ms(_POLL_MS)

    async def command(self, cmd, timeout_ms=_COMMAND_TIMEOUT_MS):
        """Send one AT command; the events before its OK. LoraModuleError on an error
        status or silence. Packets received meanwhile are handled as usual."""
        self._events = []
        self.uart.write(cmd)
        start = time.ticks_ms()
        while True:
            events = self._events
            for i in range(len(events)):
                ev = events[i]
                if ev == rak3172.OK:
                    self._events = events[i + 1 :]
                    return events[:i]
                if isinstance(ev, rak3172.AtError):
                    self._events = []
                    raise LoraModuleError(
                        "LoRa module on %s answered %s with %s: %s"
                        % (self.cfg["port"], cmd.decode().strip(), ev.code, ev.meaning)
                    )
            if time.ticks_diff(time.ticks_ms(), start) >= timeout_ms:
                raise LoraModuleError(
                    "LoRa module on %s did not answer %s within %d ms: check the wiring (TX/RX "
                    "crossed), power and that the module runs RUI3 AT firmware at 115200 baud"
                    % (self.cfg["port"], cmd.decode().strip(), timeout_ms)
                )
            if not self._pump():
                await asyncio.sleep_ms(_POLL_MS)

    async def configure(self):
        """P2P mode, the configured radio parameters, continuous receive."""
        await self.command(rak3172.ATTENTION)
        mode = None
        for ev in await self.command(rak3172.QUERY_NETWORK_MODE):
            if isinstance(ev, rak3172.AtValue) and ev.name == "AT+NWM":
                mode = ev.value.strip()
        if mode != str(rak3172.MODE_P2P_LORA):
            await self.command(rak3172.set_network_mode(rak3172.MODE_P2P_LORA))
            await self._pump_for(_RESTART_WAIT_MS)
            await self.command(rak3172.ATTENTION)
        try:
            await self.command(rak3172.STOP_RECEIVE)
        except LoraModuleError:
            pass  # not receiving: nothing to stop
        await self.command(p2p_command(self.cfg))
        await self.command(rak3172.RECEIVE_CONTINUOUS)
        self._last_rx = time.ticks_ms()

    async def run(self):
        """Configure and receive forever; a lost or silent module is set up again."""
        backoff_ms = 1000
        try:
            while True:
                try:
                    if self.uart is None:
                        self.uart = self.board.uart(self.cfg["port"], UART_BAUD, "N", 1)
                    await self.configure()
                    self.module_error = None
                    backoff_ms = 1000
                    while time.ticks_diff(time.ticks_ms(), self._last_rx) < _RX_WATCHDOG_MS:
                        await self._pump_for(1000)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # one bad event must never end reception for good
                    self.module_error = str(exc)
                    if isinstance(exc, OSError) and self.uart is not None:
                        self.uart.close()
                        self.uart = None
                    await asyncio.sleep_ms(backoff_ms)
                    backoff_ms = min(backoff_ms * 2, 60000)
        finally:
            if self.uart is not None:
                self.uart.close()
                self.uart = None

    # -- packets -------------------------------------------------------------------------

    def handle_packet(self, rx):
        """The readings of one received packet (also appended to the sink); [] if dropped."""
        self._last_rx = time.ticks_ms()
        try:
            frame = lora_p2p.parse_p2p_frame(rx.payload)
        except payloads.LoraPayloadError:
            self.bad_frames += 1
            return []
        sensors = self.by_address.get(int(frame.address_hex, 16))
        if sensors is None:
            key = frame.address_hex
            self.unknown_senders[key] = self.unknown_senders.get(key, 0) + 1
            if len(self.unknown_senders) > 32:  # bounded: a neighbour's sensors
                self.unknown_senders.pop(next(iter(self.unknown_senders)))
            return []
        status = self.filter.check(frame.address_hex, frame.counter)
        ts_ms = self.board.utc_ms()
        out = []
        decoded = None
        for sensor in sensors:
            st = self.stats[sensor["id"]]
            if status.duplicate:
                st.duplicates += 1
                continue
            st.frames += 1
            st.lost += status.lost
            st.restarts += 1 if status.restarted else 0
            st.last_rx_ms, st.rssi_dbm, st.snr_db = ts_ms, rx.rssi_dbm, rx.snr_db
            if frame.format_name != sensor["format"]:
                st.bad_payloads += 1
                st.last_error = (
                    "sensor %s sends %s, the configuration says %s: correct the sensor's format"
                    % (sensor["name"], frame.format_name, sensor["format"])
                )
                continue
            if decoded is None:
                try:
                    decoded = payloads.decode(frame.format_name, frame.payload)
                except payloads.LoraPayloadError as exc:
                    st.bad_payloads += 1
                    st.last_error = str(exc)
                    continue
            out.extend(self._readings(sensor, decoded, rx, ts_ms))
        if out:
            self.sink.append(out)
        return out

    def _readings(self, sensor, decoded, rx, ts_ms):
        index = sensor.get("index")
        values = {}
        for r in sorted(decoded, key=lambda r: r.index):
            if index is None or r.index == index:
                if r.quantity not in values:  # one channel per quantity: the first input
                    values[r.quantity] = r.value
        values["rssi"] = rx.rssi_dbm
        values["snr"] = rx.snr_db
        wanted = sensor.get("quantities")
        dev = sensor["id"]
        out = []
        for q, v in values.items():
            if (q in wanted) if wanted else (q != "rssi" and q != "snr"):
                out.append((quantities.channel_id(dev, q), ts_ms, v))
        return out

    def status(self):
        """The radio's fields of the status message."""
        sensors = {}
        for dev, st in self.stats.items():
            sensors[str(dev)] = st.as_status()
        return {
            "sensors": sensors,
            "bad_frames": self.bad_frames,
            "unknown_senders": dict(self.unknown_senders),
            "module_error": self.module_error,
        }
