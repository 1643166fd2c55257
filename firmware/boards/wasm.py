"""Board support for MicroPython's WebAssembly port under Node.js: a 32-bit interpreter on a PC,
so the gateway's heap can be measured with the object sizes of an ESP32 or Pico W. I/O goes
through the `wasmhost` JS module firmware/run_wasm.mjs registers: serial ports are hw_sim PTYs
opened by Node, TCP is Node's net (installed as asyncio.open_connection), the flash is a folder
of Emscripten's in-memory filesystem, the clock is the host's.

It must stay a thin shim: no Modbus, LoRa or buffer logic here. Host measurements only."""

import asyncio
import os

import wasmhost
from uctypes import addressof

from firmware.boards import bits_per_char, describe
from firmware.boards.host import HostBoard


class SerialOpenError(OSError):
    """The serial port cannot be opened; the message says what to check."""


class Uart:
    """A PTY (or tty) opened non-blocking by Node; hw_sim set its line raw. Node reads and
    writes straight from the Python buffers (their addresses in the wasm memory), so no
    staging copy shows up in the heap."""

    def __init__(self, port, baud=9600, parity="N", stopbits=1):
        self.port = port
        self.baud = baud
        self.bits_per_char = bits_per_char(parity, stopbits)
        self.description = describe(port, baud, parity, stopbits)
        fd = wasmhost.uart_open(port)
        if isinstance(fd, str):
            raise SerialOpenError(
                "cannot open serial port %s (%s): check the path and that no other program "
                "holds it" % (port, fd)
            )
        self._fd = fd

    def write(self, data):
        n = wasmhost.uart_write(self._fd, addressof(data), len(data))
        if n < 0:
            raise OSError("serial port %s: write failed" % self.port)

    def readinto(self, buf):
        n = wasmhost.uart_read(self._fd, addressof(buf), len(buf))
        if n < 0:
            raise OSError("serial port %s: read failed (port gone?)" % self.port)
        return n

    def close(self):
        if self._fd is not None:
            wasmhost.uart_close(self._fd)
            self._fd = None


class Stream:
    """One TCP connection through Node's net, with the reader and writer methods of
    MicroPython's asyncio streams that firmware/mqtt.py uses. Node wakes the waiting task
    (received data, sent data, close) through wake(); reads land in the result directly."""

    def __init__(self, host, port):
        self.where = "%s:%d" % (host, port)
        self._rx = asyncio.Event()  # data, connect, close or error
        self._tx = asyncio.Event()  # Node's send buffer emptied, close or error
        self._id = wasmhost.tcp_open(host, port, self._wake)

    def _wake(self, what):
        (self._tx if what else self._rx).set()

    async def connected(self):
        while True:
            state = wasmhost.tcp_state(self._id)
            if state == 1:
                return
            if state == 2:
                raise OSError(wasmhost.tcp_error(self._id) or "connection closed")
            self._rx.clear()
            await self._rx.wait()

    async def readexactly(self, n):
        # A bytearray: Node writes into it in place; the client only indexes and slices it.
        out = bytearray(n)
        got = 0
        while got < n:
            k = wasmhost.tcp_read(self._id, addressof(out) + got, n - got)
            if k < 0:
                raise EOFError
            if k == 0:
                self._rx.clear()
                await self._rx.wait()
            got += k
        return out

    def write(self, data):
        if not wasmhost.tcp_write(self._id, addressof(data), len(data)):
            raise OSError("connection to %s closed" % self.where)

    async def drain(self):
        while wasmhost.tcp_buffered(self._id) > 0:
            if wasmhost.tcp_state(self._id) == 2:
                raise OSError(wasmhost.tcp_error(self._id) or "connection closed")
            self._tx.clear()
            await self._tx.wait()

    def close(self):
        wasmhost.tcp_close(self._id)

    async def wait_closed(self):
        pass


async def open_connection(host, port, ssl=None):
    """asyncio.open_connection for this port (it has no socket module): (reader, writer)."""
    if ssl:
        raise OSError("TLS is not available on the WebAssembly port: use a plain broker")
    s = Stream(host, port)
    try:
        await s.connected()
    except BaseException:  # cancelled by the caller's timeout too: drop Node's socket
        s.close()
        raise
    return s, s


class Board(HostBoard):
    """The WebAssembly port as a gateway board. settings: flash_dir ("/flash", a folder of the
    in-memory filesystem, empty at every start), heap_bytes (the heap size free_heap counts
    down from: this port grows its heap on demand, so only the bytes in use are real), and
    clock_scale as on the unix board (benchmarks)."""

    name = "wasm"

    def __init__(self, settings):
        HostBoard.__init__(self, settings)
        self.heap_bytes = int(settings.get("heap_bytes", 512 * 1024))
        asyncio.open_connection = open_connection

    def uart(self, port, baud=9600, parity="N", stopbits=1, de_pin=None):
        return Uart(port, baud, parity, stopbits)

    def mount_flash(self):
        if self._mounted is None:
            path = self.settings.get("flash_dir", "/flash")
            try:
                os.mkdir(path)
            except OSError:
                pass
            self._mounted = path
        return self._mounted

    def free_heap(self):
        # This port grows its heap on demand (gc.mem_free() is the host's memory) and collects
        # only between Python calls from JS, so gc.mem_alloc() here would count garbage: the
        # launcher measures the live heap after each such collection (at most 100 ms ago).
        return self.heap_bytes - wasmhost.live_heap()
