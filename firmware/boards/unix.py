"""Board support for the MicroPython unix port (HIL tests): serial ports through termios
(PTYs of hw_sim or USB adapters), "flash" as littlefs on a file-backed block device, host clock.

It must stay a thin shim: no Modbus, LoRa or buffer logic here."""

import gc
import os
import termios

from firmware.boards import bits_per_char, describe
from firmware.boards.host import HostBoard

# Linux termios constants (asm-generic/termbits.h); the unix port only exports a few.
_BAUD = {
    1200: 0o11,
    2400: 0o13,
    4800: 0o14,
    9600: 0o15,
    19200: 0o16,
    38400: 0o17,
    57600: 0o10001,
    115200: 0o10002,
}
_CSTOPB = 0o100
_PARENB = 0o400
_PARODD = 0o1000
_VTIME = 5
_VMIN = 6


class SerialOpenError(OSError):
    """The serial port cannot be opened; the message says what to check."""


class Uart:
    """A serial port opened raw and non-blocking (VMIN=0, VTIME=0: a read returns at once)."""

    def __init__(self, port, baud=9600, parity="N", stopbits=1):
        self.port = port
        self.baud = baud
        self.bits_per_char = bits_per_char(parity, stopbits)
        self.description = describe(port, baud, parity, stopbits)
        try:
            self._f = open(port, "r+b", buffering=0)
        except OSError as exc:
            raise SerialOpenError(
                "cannot open serial port %s (%s): check the path and that no other program "
                "holds it" % (port, exc)
            )
        fd = self._f.fileno()
        termios.setraw(fd)
        a = termios.tcgetattr(fd)
        cflag = a[2] & ~(_PARENB | _PARODD | _CSTOPB)
        if parity == "E":
            cflag |= _PARENB
        elif parity == "O":
            cflag |= _PARENB | _PARODD
        if stopbits == 2:
            cflag |= _CSTOPB
        a[2] = cflag
        speed = _BAUD.get(baud)
        if speed is not None:
            a[4] = a[5] = speed
        a[6][_VMIN] = 0
        a[6][_VTIME] = 0
        termios.tcsetattr(fd, termios.TCSANOW, a)

    def write(self, data):
        mv = memoryview(data)
        while mv:
            n = self._f.write(mv)
            mv = mv[n or 0 :]

    def readinto(self, buf):
        n = self._f.readinto(buf)
        return n or 0

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None


class Board(HostBoard):
    """The unix port as a gateway board. settings: flash_image (path), flash_blocks,
    flash_mount ("/flash"); with flash_image absent the data directory is a host folder
    (flash_dir, default "./fw_data"), which torn-write tests can edit from outside.
    clock_scale: see HostBoard."""

    name = "unix"

    def uart(self, port, baud=9600, parity="N", stopbits=1, de_pin=None):
        return Uart(port, baud, parity, stopbits)

    def mount_flash(self):
        if self._mounted is not None:
            return self._mounted
        s = self.settings
        image = s.get("flash_image")
        if not image:
            path = s.get("flash_dir", "fw_data")
            try:
                os.mkdir(path)
            except OSError:
                pass
            self._mounted = path
            return path
        import vfs

        from firmware.boards.unix_flash import FileBlockDevice

        bdev = FileBlockDevice(image, s.get("flash_block_size", 4096), s.get("flash_blocks", 256))
        mount = s.get("flash_mount", "/flash")
        try:
            vfs.mount(vfs.VfsLfs2(bdev), mount)
        except OSError:
            vfs.VfsLfs2.mkfs(bdev)
            vfs.mount(vfs.VfsLfs2(bdev), mount)
        self._mounted = mount
        return mount

    def free_heap(self):
        return gc.mem_free()
