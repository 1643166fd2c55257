"""What the two PC boards share, the unix port (HIL tests) and the WebAssembly port (32-bit
heap measurements): the host's clock, optionally scaled for benchmarks, no watchdog, no radio
signal, and the soft reset's forgetting of the app. Never on a real board."""

import sys
import time


class _NoWatchdog:
    def feed(self):
        pass


class HostBoard:
    """Base of firmware.boards.unix.Board and firmware.boards.wasm.Board.

    clock_scale (benchmarks only, default 1): the gateway's UTC clock runs that many times
    faster than the host's from the start, and the app shortens its production intervals
    (poll ticks, batches, status, flushes) by the same factor, so a simulated day passes in
    24 h / clock_scale. Network timeouts (MQTT keepalive, acks) stay in real time."""

    def __init__(self, settings):
        self.settings = settings
        self.time_synced = True  # the host keeps its clock
        self.clock_scale = int(settings.get("clock_scale", 1))
        if self.clock_scale < 1:
            raise ValueError("board.clock_scale must be an integer >= 1")
        self._start_ms = time.time_ns() // 1000000
        self._offset_ms = 0
        self._mounted = None

    def _host_ms(self):
        now = time.time_ns() // 1000000
        if self.clock_scale == 1:
            return now
        return self._start_ms + (now - self._start_ms) * self.clock_scale

    def utc_ms(self):
        return self._host_ms() + self._offset_ms

    def set_utc_ms(self, ts_ms):
        self._offset_ms = ts_ms - self._host_ms()
        self.time_synced = True

    def watchdog(self, timeout_ms):
        return _NoWatchdog()

    def reset_cause(self):
        return "power_on"

    async def network_up(self, timeout_s):
        return True

    def rssi_dbm(self):
        return None


def forget_app():
    """What a board's soft reset does: forget the loaded app modules (not the board)."""
    for name in list(sys.modules):
        if name.startswith("protocols") or (
            name.startswith("firmware.") and not name.startswith("firmware.boards")
        ):
            del sys.modules[name]
    import firmware
    import protocols

    for pkg in (firmware, protocols):
        for k in list(pkg.__dict__):
            if not k.startswith("_") and k != "boards":
                delattr(pkg, k)
