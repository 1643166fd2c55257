"""What the esp32 and rp2 boards share: machine.UART with an RS-485 direction pin, the
hardware watchdog, Wi-Fi, the RTC and reset causes. Board modules subclass McuBoard.

Thin shims over machine/network only: no Modbus, LoRa or buffer logic here."""

import gc
import os
import time

import machine

from firmware.boards import bits_per_char, describe

# time.time() counts from 2000 on older ports: correct to the 1970 epoch of the wire.
_EPOCH_OFFSET_MS = 946684800000 if time.gmtime(0)[0] == 2000 else 0
_SYNCED_AFTER_S = 1704067200  # 2024-01-01: an RTC before that was never set


class Uart:
    """machine.UART (timeout 0: reads return at once) with an optional DE/RE pin: high
    while sending, dropped once the last stop bit left (flush() waits for it)."""

    def __init__(self, uart_id, baud, parity, stopbits, tx, rx, de_pin):
        self.baud = baud
        self.bits_per_char = bits_per_char(parity, stopbits)
        self.description = describe("UART%d" % uart_id, baud, parity, stopbits)
        p = None if parity == "N" else (0 if parity == "E" else 1)
        kw = {"baudrate": baud, "bits": 8, "parity": p, "stop": stopbits, "timeout": 0}
        if tx is not None:
            kw["tx"] = machine.Pin(tx)
            kw["rx"] = machine.Pin(rx)
        self._u = machine.UART(uart_id, **kw)
        self._de = None
        if de_pin is not None:
            self._de = machine.Pin(de_pin, machine.Pin.OUT, value=0)

    def write(self, data):
        de = self._de
        if de is not None:
            de.value(1)
        self._u.write(data)
        self._u.flush()  # returns when the shift register is empty: then release the line
        if de is not None:
            de.value(0)

    def readinto(self, buf):
        return self._u.readinto(buf) or 0

    def close(self):
        self._u.deinit()


class McuBoard:
    """settings: "uarts": {"1": {"tx": 17, "rx": 16, "de": 2}} (pins per UART id, board
    defaults otherwise; "de": the RS-485 direction pin, none for transceivers with automatic
    direction control), "wifi": {"ssid", "password"}, "data_dir" ("/data")."""

    name = "mcu"
    UART_PINS = {}  # type: dict  # uart id -> (tx, rx) defaults of the board
    clock_scale = 1  # real time (only the unix board simulates faster clocks)

    def __init__(self, settings):
        self.settings = settings
        self.time_synced = time.time() + _EPOCH_OFFSET_MS // 1000 > _SYNCED_AFTER_S
        self._wlan = None
        self._nic = None

    def uart(self, port, baud=9600, parity="N", stopbits=1, de_pin=None):
        uart_id = port if isinstance(port, int) else int(str(port).lower().lstrip("uart"))
        pins = self.settings.get("uarts", {}).get(str(uart_id)) or {}
        if "tx" in pins:
            tx, rx = pins["tx"], pins["rx"]
        else:
            tx, rx = self.UART_PINS.get(uart_id, (None, None))
        if de_pin is None:  # the bus's de_pin in the configuration wins over the board's
            de_pin = pins.get("de")
        return Uart(uart_id, baud, parity, stopbits, tx, rx, de_pin)

    def mount_flash(self):
        # The port mounts its littlefs partition at / at boot; the data lives in a folder.
        path = self.settings.get("data_dir", "/data")
        try:
            os.mkdir(path)
        except OSError:
            pass
        return path

    def utc_ms(self):
        return time.time_ns() // 1000000 + _EPOCH_OFFSET_MS

    def set_utc_ms(self, ts_ms):
        t = time.gmtime((ts_ms - _EPOCH_OFFSET_MS) // 1000)
        machine.RTC().datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], (ts_ms % 1000) * 1000))
        self.time_synced = True

    def watchdog(self, timeout_ms):
        return machine.WDT(timeout=timeout_ms)

    def reset_cause(self):
        c = machine.reset_cause()
        for name, label in (
            ("PWRON_RESET", "power_on"),
            ("WDT_RESET", "watchdog"),
            ("SOFT_RESET", "soft"),
            ("DEEPSLEEP_RESET", "deep_sleep"),
            ("HARD_RESET", "hard"),
        ):
            if getattr(machine, name, None) == c:
                return label
        return "unknown"

    def free_heap(self):
        return gc.mem_free()

    def _connect(self):
        """Start the network interface; returns it (isconnected() tells when it is up)."""
        import network

        wifi = self.settings.get("wifi")
        if not wifi:
            raise OSError("no network configured: set board.wifi {ssid, password}")
        if self._wlan is None:
            self._wlan = network.WLAN(network.STA_IF)
            self._wlan.active(True)
        if not self._wlan.isconnected():
            self._wlan.connect(wifi["ssid"], wifi.get("password", ""))
        return self._wlan

    async def network_up(self, timeout_s):
        import asyncio

        nic = self._nic
        if nic is None or not nic.isconnected():
            nic = self._nic = self._connect()
        start = time.ticks_ms()
        while not nic.isconnected():
            if time.ticks_diff(time.ticks_ms(), start) > timeout_s * 1000:
                return False
            await asyncio.sleep_ms(200)
        return True

    def rssi_dbm(self):
        if self._wlan is None or not self._wlan.isconnected():
            return None
        try:
            return self._wlan.status("rssi")
        except (OSError, ValueError):
            return None
