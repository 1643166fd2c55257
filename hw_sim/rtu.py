"""Modbus RTU bus: several simulated meters sharing one line, on a PTY pair (virtual serial
port) or on a real serial port. Frames requests by wire timing and answers with paced bytes.

A custom server loop, not pymodbus's: RTU emulation needs byte-level control of timing and
faults. Framing and CRC come from protocols.modbus; values and faults from hw_sim.meter.
"""

from __future__ import annotations

import os
import select
import termios
import threading
import time
import tty
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hw_sim.clock import SimClock
from hw_sim.truth import GroundTruth
from protocols import modbus

if TYPE_CHECKING:
    from hw_sim.meter import Reply, SimMeter

PARITIES = ("N", "E", "O")
_PACE_CHUNK_S = 0.001  # write about 1 ms of line time per chunk
_SPIN_S = 0.0003  # busy-wait the last 0.3 ms before a deadline: sleep() overshoots ~0.1 ms
_IDLE_POLL_S = 0.05
_LATE_S = 0.002  # a response end later than this (and 2 char times) is logged
_NICE = -10  # bus threads ask for this niceness; refused without root/CAP_SYS_NICE


class PortLost(OSError):
    """The serial port stopped working (USB adapter unplugged, port closed by the peer)."""


class BusConfigError(ValueError):
    """A bus setting the simulator cannot emulate (baud without termios constant, etc.)."""


@dataclass(frozen=True)
class LineSettings:
    """Baud and character framing of an RS-485 line, e.g. 9600 8E1."""

    baud: int = 9600
    parity: str = "E"
    stopbits: int = 1

    def __post_init__(self) -> None:
        if self.parity not in PARITIES:
            raise BusConfigError(f"parity {self.parity!r} must be one of N, E, O")
        if self.stopbits not in (1, 2):
            raise BusConfigError(f"stopbits {self.stopbits!r} must be 1 or 2")
        if not hasattr(termios, f"B{self.baud}"):
            raise BusConfigError(
                f"baud {self.baud} is not a standard rate a serial port can be set to "
                "(use 1200, 2400, 4800, 9600, 19200, 38400, 57600 or 115200)"
            )

    @property
    def bits_per_char(self) -> int:
        """Start bit, 8 data bits, parity bit if any, stop bits."""
        return 1 + 8 + (0 if self.parity == "N" else 1) + self.stopbits

    @property
    def char_s(self) -> float:
        return modbus.char_time_s(self.baud, self.bits_per_char)

    @property
    def t1_5_s(self) -> float:
        return modbus.t15_s(self.baud, self.bits_per_char)

    @property
    def t3_5_s(self) -> float:
        return modbus.silence_s(self.baud, self.bits_per_char)

    def __str__(self) -> str:
        return f"{self.baud} 8{self.parity}{self.stopbits}"


def sleep_until(deadline: float) -> None:
    """Sleep until time.perf_counter() reaches deadline, to within a few tens of µs.

    Absolute deadlines keep errors from adding up over a paced frame; the last 0.3 ms are
    spent polling because a plain sleep() wakes ~0.1 ms late (timer slack + scheduling).
    """
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return
        if remaining > _SPIN_S:
            time.sleep(remaining - _SPIN_S)
        else:
            time.sleep(0)  # yield the GIL, then check again


def raise_thread_priority() -> bool:
    """Ask the scheduler to favour the calling thread (nice -10), best effort.

    On a saturated machine a woken thread can wait milliseconds for a CPU, and every such
    wait lands on the wire timing. Where the OS allows it (root, CAP_SYS_NICE) the bus
    threads get ahead of ordinary work; elsewhere this silently does nothing.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _NICE)
        return True
    except OSError:
        return False


class PtyLink:
    """The simulator's end of a PTY pair; a client opens ``path`` like /dev/ttyUSB0.

    A PTY moves bytes instantly and ignores baud and parity, so this link paces what it
    writes to the wire rate and reads the client's termios settings to refuse requests sent
    at the wrong baud, stop bits or parity (Linux limits: see ``parity_visible``).
    """

    paced = True

    def __init__(self, settings: LineSettings, symlink: str | None = None) -> None:
        self.settings = settings
        self.master, self.slave = os.openpty()
        # Keep our own slave fd open: the line settings the client makes live on the tty
        # and stay readable here, and the master never sees EOF when the client closes.
        tty.setraw(self.slave)
        self._set_termios(self.slave, settings)
        self.path = os.ttyname(self.slave)
        self.symlink = symlink
        if symlink:
            if os.path.islink(symlink):
                os.unlink(symlink)
            os.symlink(self.path, symlink)
        # Linux's pty driver clears PARENB and forces CS8 on every tcsetattr
        # (drivers/tty/pty.c, pty_set_termios), so even parity and none look the same;
        # odd parity stays visible through PARODD. Probe once instead of assuming.
        attrs = termios.tcgetattr(self.slave)
        probe = list(attrs)
        probe[2] |= termios.PARENB
        try:
            termios.tcsetattr(self.slave, termios.TCSANOW, probe)
        except termios.error:
            pass  # glibc reports the dropped PARENB as EINVAL; the read-back tells
        self.parity_visible = bool(termios.tcgetattr(self.slave)[2] & termios.PARENB)
        self.mark()
        os.set_blocking(self.master, False)

    def mark(self) -> None:
        """Set CRTSCTS (meaningless on a PTY) so the client's next tcsetattr changes c_cflag.

        Because the kernel drops PARENB, glibc's tcsetattr fails with EINVAL when a call
        asking for parity leaves c_cflag as it was; pyserial then cannot open the port with
        parity E or O a second time. Keeping this mark on the idle line avoids that for
        clients that configure once per open. Clients that reconfigure right after opening
        (pymodbus's connect, pyserial's timeout setter) still fail with E or O: on a PTY,
        configure them with parity N (docs/hw_sim.md, "Limits").
        """
        try:
            attrs = termios.tcgetattr(self.master)
            if not attrs[2] & termios.CRTSCTS:
                attrs[2] |= termios.CRTSCTS
                termios.tcsetattr(self.master, termios.TCSANOW, attrs)
        except termios.error:
            pass

    @staticmethod
    def _set_termios(fd: int, s: LineSettings) -> None:
        attrs = termios.tcgetattr(fd)
        speed = getattr(termios, f"B{s.baud}")
        attrs[4] = attrs[5] = speed
        cflag = attrs[2] & ~(termios.PARENB | termios.PARODD | termios.CSTOPB)
        if s.parity != "N":
            cflag |= termios.PARENB
        if s.parity == "O":
            cflag |= termios.PARODD
        if s.stopbits == 2:
            cflag |= termios.CSTOPB
        attrs[2] = cflag
        termios.tcsetattr(fd, termios.TCSANOW, attrs)

    def client_settings(self) -> str | None:
        """None if the client's port settings match the bus; else what they are."""
        try:
            attrs = termios.tcgetattr(self.slave)
        except termios.error:
            return None
        s = self.settings
        cflag = attrs[2]
        want_speed = getattr(termios, f"B{s.baud}")
        odd = bool(cflag & termios.PARODD)
        two = bool(cflag & termios.CSTOPB)
        enabled = bool(cflag & termios.PARENB)
        ok = attrs[5] == want_speed and attrs[4] in (want_speed, 0)
        ok = ok and two == (s.stopbits == 2) and odd == (s.parity == "O")
        if self.parity_visible:
            ok = ok and enabled == (s.parity != "N")
        if ok:
            return None
        baud = _SPEEDS.get(attrs[5], f"speed code {attrs[5]}")
        parity = (
            ("O" if odd else "E")
            if (enabled or not self.parity_visible and odd)
            else ("N" if self.parity_visible else "E/N")
        )
        return f"{baud} 8{parity}{2 if two else 1}"

    def read(self, timeout_s: float) -> bytes:
        r, _, _ = select.select([self.master], [], [], max(0.0, timeout_s))
        if not r:
            return b""
        try:
            return os.read(self.master, 4096)
        except BlockingIOError:
            return b""
        except OSError as exc:
            raise PortLost(f"{self.path}: {exc}") from exc

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.master, view)
            except BlockingIOError:
                # Nobody is reading the slave side and its buffer is full: drop, as a
                # real line would carry the bytes to nobody.
                return
            view = view[n:]

    def reopen(self) -> None:
        raise PortLost(f"{self.path}: the PTY was closed")

    def close(self) -> None:
        if self.symlink and os.path.islink(self.symlink):
            os.unlink(self.symlink)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


class SerialLink:
    """A real serial port (e.g. a USB-RS485 adapter) opened with pyserial.

    The UART enforces baud and parity and sends at wire speed, so nothing is paced and
    any request that arrives was sent with matching settings.
    """

    paced = False
    parity_visible = True

    def __init__(self, port: str, settings: LineSettings) -> None:
        import serial  # pyserial, only needed for real ports

        self.settings = settings
        self.path = port
        self.symlink = None
        try:
            self.port = serial.Serial(
                port,
                settings.baud,
                parity=settings.parity,
                stopbits=settings.stopbits,
                bytesize=8,
                timeout=0,
            )
        except serial.SerialException as exc:
            raise BusConfigError(
                f"cannot open serial port {port}: {exc}; check the path, that no other "
                "program uses it and that you may access it (group dialout)"
            ) from exc

    def client_settings(self) -> str | None:
        return None

    def mark(self) -> None:
        pass

    def read(self, timeout_s: float) -> bytes:
        import serial

        try:
            r, _, _ = select.select([self.port.fileno()], [], [], max(0.0, timeout_s))
            return self.port.read(4096) if r else b""
        except (serial.SerialException, OSError, ValueError) as exc:
            raise PortLost(f"{self.path}: {exc}") from exc

    def reopen(self) -> None:
        """After the adapter went away (unplugged): try to open it again."""
        try:
            self.port.close()
            self.port.open()
        except Exception as exc:  # noqa: BLE001 - pyserial raises several kinds
            raise PortLost(f"{self.path}: {exc}") from exc

    def write(self, data: bytes) -> None:
        self.port.write(data)

    def close(self) -> None:
        self.port.close()


_SPEEDS = {
    getattr(termios, f"B{b}"): b
    for b in (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
    if hasattr(termios, f"B{b}")
}


@dataclass
class Outcome:
    """A meter's answer to one request: the frame it sends (None: silence), line noise
    after it, extra delay beyond the turnaround, and the Reply it came from."""

    frame: bytes | None
    garbage: bytes
    delay_s: float
    meter: SimMeter
    reply: Reply


class RtuBus:
    """One RS-485 line with meters at their unit ids, served by a background thread.

    Timing model (see docs/hw_sim.md): a request's bytes are on the wire for
    len * char_time from their first arrival; the addressed meter answers ``turnaround``
    after the request's last byte, and each response byte reaches the client when it would
    have at the line's baud. Requests whose bytes were separated by more than t1.5 are
    discarded; a frame starts after t3.5 of silence.
    """

    def __init__(
        self,
        name: str,
        settings: LineSettings,
        clock: SimClock,
        truth: GroundTruth,
        port: str | None = None,
        symlink: str | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.clock = clock
        self.truth = truth
        self.port = port
        self.symlink = symlink
        self.meters: dict[int, SimMeter] = {}
        self.link: PtyLink | SerialLink | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.requests_seen = 0

    def add_meter(self, meter: SimMeter) -> None:
        if meter.unit in self.meters:
            raise BusConfigError(
                f"bus {self.name}: unit {meter.unit} is used by both "
                f"{self.meters[meter.unit].name} and {meter.name}; unit ids on one bus must differ"
            )
        if not 1 <= meter.unit <= modbus.MAX_RTU_UNIT:
            raise BusConfigError(
                f"bus {self.name}: unit {meter.unit} of {meter.name} must be 1..247"
            )
        self.meters[meter.unit] = meter

    @property
    def path(self) -> str:
        if self.link is None:
            raise RuntimeError(f"bus {self.name} is not started")
        return self.symlink or self.link.path

    def start(self) -> None:
        if self.port:
            self.link = SerialLink(self.port, self.settings)
        else:
            self.link = PtyLink(self.settings, self.symlink)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._serve, name=f"hw_sim-rtu-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.link is not None:
            self.link.close()
            self.link = None

    # -- the server loop -------------------------------------------------------------
    def _serve(self) -> None:
        raise_thread_priority()
        link = self.link
        assert link is not None
        s = self.settings
        parser = modbus.RtuRequestParser()
        in_frame = False
        broken = False
        first_t = last_t = 0.0
        # A USB adapter delivers bytes in bursts (1-16 ms latency): only the silence
        # rule survives that, with a generous threshold.
        t3_5 = s.t3_5_s if link.paced else max(s.t3_5_s, 0.02)
        t1_5 = s.t1_5_s if link.paced else None
        while not self._stop.is_set():
            timeout = max(0.0, last_t + t3_5 - time.perf_counter()) if in_frame else _IDLE_POLL_S
            try:
                chunk = link.read(timeout)
            except PortLost as exc:
                if not self._port_lost(link, exc):
                    return
                parser = modbus.RtuRequestParser()
                in_frame = broken = False
                continue
            now = time.perf_counter()
            if not chunk:
                if not in_frame:
                    link.mark()
                    continue
                if in_frame and now - last_t >= t3_5:
                    if not broken:
                        parser.end_of_frame()
                        self._drain(parser, first_t, last_t)
                    in_frame = broken = False
                continue
            if in_frame and now - last_t >= t3_5:
                if not broken:
                    parser.end_of_frame()
                    self._drain(parser, first_t, last_t)
                in_frame = broken = False
            elif in_frame and not broken and t1_5 is not None and now - last_t > t1_5:
                broken = True
                self.truth.event(
                    self.clock.now_ms(),
                    self.name,
                    "broken_frame",
                    bus=self.name,
                    gap_ms=round((now - last_t) * 1000, 3),
                    t1_5_ms=round(t1_5 * 1000, 3),
                    detail="bytes of one frame separated by more than t1.5: "
                    "frame discarded, as a real device would",
                )
                parser.end_of_frame()
                self._drain(parser, first_t, last_t, quiet=True)
            if not in_frame:
                in_frame = True
                first_t = now
            last_t = now
            if broken:
                continue
            parser.feed(chunk)
            if self._drain(parser, first_t, last_t):
                # Answered: the line was busy with our response since; start afresh.
                parser.end_of_frame()
                self._drain(parser, first_t, last_t, quiet=True)
                in_frame = broken = False

    def _port_lost(self, link: PtyLink | SerialLink, exc: PortLost) -> bool:
        """Log the loss, then retry opening the port every second until it works again or
        the bus stops. False when stopping."""
        self.truth.event(
            self.clock.now_ms(),
            self.name,
            "port_lost",
            bus=self.name,
            detail=f"{exc}; retrying every second",
        )
        while not self._stop.wait(1.0):
            try:
                link.reopen()
            except PortLost:
                continue
            self.truth.event(self.clock.now_ms(), self.name, "port_back", bus=self.name)
            return True
        return False

    def _drain(
        self,
        parser: modbus.RtuRequestParser,
        first_t: float,
        last_t: float,
        quiet: bool = False,
    ) -> bool:
        """Answer every request the parser framed (log its errors unless quiet); True if a
        request was answered."""
        handled = False
        while True:
            try:
                item = parser.next_frame()
            except modbus.ModbusError as exc:
                if not quiet:
                    self.truth.event(
                        self.clock.now_ms(),
                        self.name,
                        "bad_request",
                        bus=self.name,
                        detail=str(exc),
                    )
                continue
            if item is None:
                return handled
            if quiet:
                continue
            unit, pdu = item
            handled = True
            self._answer(unit, pdu, first_t, last_t)

    def _answer(self, unit: int, pdu: bytes, first_t: float, last_t: float) -> None:
        link = self.link
        assert link is not None
        s = self.settings
        self.requests_seen += 1
        wrong = link.client_settings()
        link.mark()
        if wrong is not None:
            self.truth.event(
                self.clock.now_ms(),
                self.name,
                "wrong_line_settings",
                bus=self.name,
                unit=unit,
                client=wrong,
                bus_settings=str(s),
                detail=f"request sent at {wrong} on a {s} bus: no answer, as "
                "a real meter would not decode it",
            )
            return
        out = self.respond(unit, pdu)
        if out is None or out.frame is None:
            return
        # The request occupied the line for its length in characters from its first byte;
        # the answer starts a turnaround (at least t3.5) after its last byte.
        frame_end = max(last_t, first_t + (len(pdu) + 3) * s.char_s)
        start = frame_end + max(out.meter.turnaround_s, s.t3_5_s) + out.delay_s
        # A late answer: wait interruptibly, then pace as usual.
        if out.delay_s > 0.05 and self._stop.wait(max(0.0, start - time.perf_counter() - 0.01)):
            return
        self._send_paced(out.frame, start)
        if out.garbage:
            self._send_paced(out.garbage, time.perf_counter() + s.t3_5_s)

    def respond(self, unit: int, pdu: bytes) -> Outcome | None:
        """What the meter at ``unit`` puts on the line for one request PDU, faults applied
        and logged, without wire timing. None if nobody answers at that address. The bus
        thread uses it; tests may call it directly for fast bulk requests."""
        meter = self.meters.get(unit)
        if meter is None or unit == 0:
            return None  # nobody at that address (or a broadcast to read-only meters)
        reply = meter.serve(pdu, "rtu")
        frame = None
        if reply.pdu is not None:
            frame = reply.mangle_rtu(modbus.rtu_frame(unit, reply.pdu))
        meter.commit(reply)
        return Outcome(frame, reply.garbage, reply.extra_delay_s, meter, reply)

    def _send_paced(self, data: bytes, start: float) -> None:
        """Write data so each byte arrives when it would at the line's baud."""
        link = self.link
        assert link is not None
        if not link.paced:
            sleep_until(start)
            link.write(data)
            return
        char_s = self.settings.char_s
        per_chunk = max(1, int(_PACE_CHUNK_S / char_s))
        i = 0
        n = len(data)
        while i < n:
            j = min(n, i + per_chunk)
            sleep_until(start + j * char_s)  # bytes i..j-1 have fully arrived by now
            link.write(data[i:j])
            i = j
        late_s = time.perf_counter() - (start + n * char_s)
        if late_s > max(_LATE_S, 2 * char_s):
            # The host did not schedule us in time: say so rather than pretend.
            self.truth.event(
                self.clock.now_ms(),
                self.name,
                "late_on_wire",
                bus=self.name,
                late_ms=round(late_s * 1000, 3),
                detail="the host was too busy to keep wire timing",
            )
