"""A serial port for asyncio: pyserial opens and configures it, the event loop waits on its
file descriptor (loop.add_reader), so a bus task never blocks the loop or needs a thread.

Why add_reader and not a thread per bus: the descriptor is non-blocking, so a read never
stalls the loop, cancelling a wait is immediate, and it behaves the same on PTYs (hw_sim)
and USB-RS485 adapters. Nothing Modbus- or LoRa-specific lives here.
"""

from __future__ import annotations

import asyncio
import errno
import os

import serial

PARITIES = ("N", "E", "O")


class SerialPortError(OSError):
    """The port cannot be opened or stopped working; the message says what to check."""


def describe_open_error(port: str, exc: BaseException) -> str:
    """A technician's explanation of why `port` could not be opened."""
    code = getattr(exc, "errno", None)
    if code == errno.ENOENT or (code is None and not os.path.exists(port)):
        return (
            f"serial port {port} does not exist: check the adapter is plugged in and the "
            "name (ls /dev/ttyUSB* /dev/ttyAMA* /dev/serial/by-id/)"
        )
    if code in (errno.EACCES, errno.EPERM):
        return (
            f"permission denied on {port}: add the user to the dialout group "
            "(sudo usermod -aG dialout $USER, then log in again) or run as the edge service user"
        )
    if code == errno.EBUSY or "lock" in str(exc).lower():
        return (
            f"{port} is in use by another program (is the edge service running? "
            "sudo systemctl stop edge), or another tool holds it open"
        )
    return f"cannot open serial port {port}: {exc}"


class SerialPort:
    """One open serial port; reads and writes are awaitable and bounded by timeouts."""

    def __init__(self, path: str, baud: int = 9600, parity: str = "E", stopbits: int = 1) -> None:
        if parity not in PARITIES:
            raise ValueError(f"parity {parity!r} must be one of N, E, O")
        self.path = path
        self.baud = baud
        self.parity = parity
        self.stopbits = stopbits
        try:
            # timeout=0 in the constructor: configured once at open. Reconfiguring right
            # after opening fails with parity E/O on Linux PTYs (docs/hw_sim.md, "Limits").
            self._serial = serial.Serial(
                path,
                baud,
                bytesize=8,
                parity=parity,
                stopbits=stopbits,
                timeout=0,
                write_timeout=0,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise SerialPortError(describe_open_error(path, exc)) from exc
        self._fd = self._serial.fileno()
        os.set_blocking(self._fd, False)
        self._closed = False

    @property
    def bits_per_char(self) -> int:
        """Start bit, 8 data bits, parity bit if any, stop bits."""
        return 1 + 8 + (0 if self.parity == "N" else 1) + self.stopbits

    @property
    def settings(self) -> str:
        return f"{self.baud} baud 8{self.parity}{self.stopbits}"

    def read_nowait(self) -> bytes:
        """Whatever has arrived, without waiting (b"" if nothing)."""
        try:
            return os.read(self._fd, 4096)
        except BlockingIOError:
            return b""
        except OSError as exc:
            raise SerialPortError(
                f"{self.path} stopped working ({exc}): was the adapter unplugged?"
            ) from exc

    async def read(self, timeout_s: float) -> bytes:
        """The next bytes to arrive within timeout_s, or b"" if none came."""
        data = self.read_nowait()
        if data or timeout_s <= 0:
            return data
        loop = asyncio.get_running_loop()
        ready = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(self._fd, wake)
        try:
            await asyncio.wait_for(ready, timeout_s)
        except TimeoutError:
            return b""
        finally:
            loop.remove_reader(self._fd)
        data = self.read_nowait()
        if not data:
            # Readable but empty: the tty was hung up (USB adapter gone, PTY closed).
            await asyncio.sleep(min(timeout_s, 0.01))
        return data

    async def write(self, data: bytes, timeout_s: float = 1.0) -> None:
        """Queue all of data for sending; SerialPortError if the port refuses it in time."""
        view = memoryview(data)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while view:
            try:
                n = os.write(self._fd, view)
                view = view[n:]
                continue
            except BlockingIOError:
                pass
            except OSError as exc:
                raise SerialPortError(
                    f"writing to {self.path} failed ({exc}): was the adapter unplugged?"
                ) from exc
            if loop.time() > deadline:
                raise SerialPortError(
                    f"{self.path} accepted no data for {timeout_s:.1f} s: the port is stuck"
                )
            await asyncio.sleep(0.001)

    def discard_input(self) -> int:
        """Drop everything received so far; returns the number of bytes dropped."""
        n = 0
        while True:
            data = self.read_nowait()
            if not data:
                return n
            n += len(data)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._serial.close()
            except (serial.SerialException, OSError):
                pass

    def __enter__(self) -> SerialPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
