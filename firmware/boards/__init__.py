"""Board support: the small interface the firmware uses to reach hardware, one module per board.

Every board module defines ``Board`` with the members below; nothing else in firmware/ may
import machine, network or termios directly. ``load(name)`` picks one ("unix", "esp32", "rp2").

Board(settings: dict)              settings: the "board" table of the local (unsigned) config
  .name                            "unix", "esp32", "rp2"
  .uart(port, baud, parity="N", stopbits=1, de_pin=None) -> Uart
                                   port: a device path on unix, a UART id (int) on boards;
                                   de_pin None: the board settings' uarts[id]["de"], if any
  .mount_flash() -> str            mounts the data filesystem (littlefs) and returns its path
  .utc_ms() -> int                 UTC ms since 1970 (0-based epoch on every port)
  .clock_scale                     1 on boards; unix benchmarks: utc_ms runs this much faster
                                   and the app divides its production intervals by it
  .set_utc_ms(ts_ms)               after NTP (boards: sets the RTC; unix: records an offset)
  .time_synced -> bool             False until NTP (or the host clock on unix) set the time
  .watchdog(timeout_ms) -> obj     has feed(); a no-op object on unix
  .reset_cause() -> str            "power_on", "watchdog", "soft", "deep_sleep", "hard", "unknown"
  .free_heap() -> int
  async .network_up(timeout_s) -> bool   Wi-Fi / Ethernet up (unix: always True)
  .rssi_dbm() -> int | None

Uart (one RS-485 or module UART; non-blocking, every call returns at once):
  .description                     "/dev/pts/3 at 9600 baud 8N1", for error messages
  .baud, .bits_per_char
  .write(data)                     sends data; returns when the last byte has left the UART
                                   (RS-485: DE is raised before and dropped after)
  .readinto(buf) -> int            bytes available now (0 when none); never waits
  .close()
"""


def load(name, settings=None):
    """The Board of board module `name` ("unix", "esp32", "rp2")."""
    settings = settings or {}
    if name == "unix":
        from firmware.boards import unix

        return unix.Board(settings)
    if name == "esp32":
        from firmware.boards import esp32

        return esp32.Board(settings)
    if name == "rp2":
        from firmware.boards import rp2

        return rp2.Board(settings)
    raise ValueError("board %r unknown: use unix, esp32 or rp2" % (name,))


def bits_per_char(parity, stopbits):
    """Start bit, 8 data bits, parity bit if any, stop bits."""
    return 1 + 8 + (0 if parity == "N" else 1) + stopbits


def describe(port, baud, parity, stopbits):
    return "%s at %d baud 8%s%d" % (port, baud, parity, stopbits)
