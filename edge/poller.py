"""Polling: Modbus RTU and TCP masters on asyncio and the per-bus scheduler that executes the
poll planner's plan at wall-clock-aligned ticks and hands readings to the store.

Framing, CRC, response parsing and value decoding are protocols/ (the same code the
MicroPython firmware runs); this module only moves bytes, keeps time and counts faults.
It never writes SQL and never talks MQTT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from edge.serial_port import SerialPort, SerialPortError
from protocols import modbus, values
from protocols.modbus import (
    CrcError,
    FrameError,
    ModbusError,
    ModbusExceptionResponse,
)
from protocols.planner import Bus, Device, Planner, Request, device_for_profile, items_for_profile
from protocols.profiles import Profile, ProfileError, bundled_profiles, load_profile
from protocols.quantities import channel_id

log = logging.getLogger("edge.poller")

Reading = tuple[int, int, float | int]  # (channel, ts_ms, value)

MAX_BACKOFF_S = 300.0  # a meter that stopped answering is still tried at least every 5 min
_RTU_GAP_S = 0.05  # silence that ends an incomplete RTU answer (USB adapters deliver in bursts)
_QUIET_MARGIN_S = 0.002  # beyond t3.5, for scheduling jitter, before a new request
_QUIET_MAX_S = 1.0  # longest wait for a noisy line to fall silent before sending anyway
_RECOVERY_MAX_S = 0.5  # after a failed request, silence required before the next one (cap)
_TCP_TURNAROUND_S = 0.02  # planner cost of one TCP round trip: favour fewer, larger requests
# Exception codes worth a retry: the device is busy or failed on this one request. Codes 1-3
# mean the profile asks for something the meter does not have: retrying cannot help.
_RETRY_EXCEPTIONS = (4, 5, 6, 10, 11)


class NoAnswerError(ModbusError):
    """The device did not answer in time (or the TCP connection could not be made)."""


class ReadingSink(Protocol):
    """Where readings go: the store commits one call in one transaction."""

    def append(self, readings: Sequence[Reading]) -> Any: ...


# ---------------------------------------------------------------------------------------------
# Masters


class ModbusMaster(Protocol):
    """One request at a time on one bus; returns the register bytes of a read."""

    description: str

    async def open(self) -> None: ...

    async def transact(self, unit: int, pdu: bytes, timeout_s: float) -> bytes: ...

    def close(self) -> None: ...


class RtuMaster:
    """Modbus RTU over a serial port: t3.5 silence before each request, the answer read with
    protocols' streaming parser, its length taken from its own header."""

    def __init__(
        self, path: str, baud: int = 9600, parity: str = "E", stopbits: int = 1,
        recover_after_error: bool = True,
    ) -> None:  # fmt: skip
        self.path = path
        self.recover_after_error = recover_after_error
        self.baud = baud
        self.parity = parity
        self.stopbits = stopbits
        bits = 1 + 8 + (0 if parity == "N" else 1) + stopbits
        self.bits_per_char = bits
        self.char_s = modbus.char_time_s(baud, bits)
        self.t35_s = modbus.silence_s(baud, bits)
        self.description = f"{path} at {baud} baud 8{parity}{stopbits}"
        self.port: SerialPort | None = None
        self.noise_bytes = 0  # bytes outside any answer: line noise or another talker
        self._parser: Any = None
        self._last_activity = 0.0
        self._recovery_s = 0.0  # extra silence owed after a failed request
        # A request that timed out (unit, pdu) and when: its answer may still come, late.
        self._unanswered: tuple[tuple[int, bytes], float] | None = None

    async def open(self) -> None:
        if self.port is None:
            self.port = SerialPort(self.path, self.baud, self.parity, self.stopbits)
            self._last_activity = time.monotonic()

    def close(self) -> None:
        if self.port is not None:
            self.port.close()
            self.port = None

    async def _quiet(self) -> None:
        """Wait until the line has been silent for t3.5 (bounded), dropping stray bytes."""
        port = self.port
        assert port is not None
        give_up = time.monotonic() + _QUIET_MAX_S
        silence = max(self.t35_s + _QUIET_MARGIN_S, self._recovery_s)
        self._recovery_s = 0.0
        while True:
            now = time.monotonic()
            wait = self._last_activity + silence - now
            if wait <= 0:
                data = port.read_nowait()
            elif now >= give_up:
                return
            else:
                data = await port.read(min(wait, give_up - now))
            if data:
                self.noise_bytes += len(data)
                self._last_activity = time.monotonic()
            elif wait <= 0:
                return

    def _answered(self, unit: int, pdu: bytes) -> None:
        """A valid answer came. To a retry of a request that timed out it may be the late
        answer to the earlier attempt, the retry's own answer still to come: then the next
        other request still waits for silence, counted from now."""
        if self._unanswered is not None and self._unanswered[0] == (unit, pdu):
            self._unanswered = ((unit, pdu), time.monotonic())
        else:
            self._recovery_s = 0.0

    async def transact(self, unit: int, pdu: bytes, timeout_s: float) -> bytes:
        """The answer's register bytes (raw); ModbusError subclasses for anything else.

        timeout_s runs from the end of the request on the wire to the first byte of the
        answer, plus the answer's own wire time."""
        await self.open()
        port = self.port
        assert port is not None
        if self._unanswered is not None and self._unanswered[0] != (unit, pdu):
            # A late answer to the request that timed out would pass for the answer to this
            # other one: the owed silence counts from the timeout, not from that request.
            # (A retry of that same request goes out at once: either answer is one to it.)
            self._last_activity = max(self._last_activity, self._unanswered[1])
            self._unanswered = None
        await self._quiet()
        if self._parser is None:
            self._parser = modbus.RtuResponseParser(unit, pdu, True)
        else:
            self._parser.start(unit, pdu, True)
        parser = self._parser
        frame = modbus.rtu_frame(unit, pdu)
        await port.write(frame)
        start = time.monotonic()
        deadline = (
            start
            + len(frame) * self.char_s
            + timeout_s
            + modbus.rtu_response_len(pdu) * self.char_s
        )
        gap_s = max(self.t35_s, _RTU_GAP_S)
        got = 0
        last_rx = start
        # RTU answers carry no transaction id: a late answer to a timed-out request would pass
        # for the answer to the next request of the same shape. After a failure the line must
        # stay silent for the timeout before anything else is sent.
        if self.recover_after_error:
            self._recovery_s = min(timeout_s, _RECOVERY_MAX_S)
        try:
            while True:
                now = time.monotonic()
                wait = deadline - now
                if got:
                    wait = min(wait, last_rx + gap_s - now)
                data = await port.read(max(wait, 0.0)) if wait > 0 else port.read_nowait()
                if data:
                    got += len(data)
                    last_rx = time.monotonic()
                    try:
                        result = parser.feed(data)
                    except ModbusExceptionResponse:
                        self._answered(unit, pdu)  # a valid answer all the same
                        raise
                    if result is not None:
                        self._answered(unit, pdu)
                        return bytes(result)
                    continue
                now = time.monotonic()
                if got and (now - last_rx >= gap_s or now >= deadline):
                    result = parser.end_of_frame()  # raises for a truncated answer
                    if result is not None:
                        self._answered(unit, pdu)
                        return bytes(result)
                if now >= deadline:
                    if self.recover_after_error:
                        self._unanswered = ((unit, pdu), now)
                    raise NoAnswerError(
                        f"unit {unit} on {self.path} did not answer within "
                        f"{timeout_s * 1000:.0f} ms at {self.baud} baud 8{self.parity}"
                        f"{self.stopbits}: check wiring, unit id, baud rate and parity"
                    )
        finally:
            self._last_activity = max(last_rx, start + len(frame) * self.char_s)
            # Bytes after a complete answer are noise; the next _quiet() drops and counts them.
            if parser.surplus_len:
                self.noise_bytes += parser.surplus_len


class TcpMaster:
    """Modbus TCP (MBAP framing) over one asyncio stream, reconnected on failure."""

    def __init__(self, host: str, port: int = 502, connect_timeout_s: float = 3.0) -> None:
        self.host = host
        self.tcp_port = port
        self.connect_timeout_s = connect_timeout_s
        self.description = f"{host}:{port}"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._parser = modbus.TcpParser()
        self._tid = 0

    async def open(self) -> None:
        if self._writer is not None:
            return
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.tcp_port), self.connect_timeout_s
            )
        except (OSError, TimeoutError) as exc:
            raise NoAnswerError(
                f"cannot connect to Modbus TCP device {self.host}:{self.tcp_port} ({exc}): "
                "check the address, port, network cable and that the device is powered"
            ) from exc
        self._parser.reset()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def transact(self, unit: int, pdu: bytes, timeout_s: float) -> bytes:
        await self.open()
        assert self._reader is not None and self._writer is not None
        self._tid = (self._tid + 1) & 0xFFFF
        tid = self._tid
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            self._writer.write(modbus.tcp_frame(tid, unit, pdu))
            await asyncio.wait_for(self._writer.drain(), timeout_s)
            while True:
                frame = self._parser.next_frame()
                if frame is None:
                    wait = deadline - loop.time()
                    if wait <= 0:
                        raise TimeoutError
                    data = await asyncio.wait_for(self._reader.read(4096), wait)
                    if not data:
                        raise ConnectionResetError("connection closed by the device")
                    self._parser.feed(data)
                    continue
                got_tid, _unit, resp = frame
                if got_tid != tid:
                    continue  # a late answer to an earlier, timed-out request
                return bytes(modbus.parse_response_pdu(pdu, resp, True))
        except TimeoutError:
            raise NoAnswerError(
                f"unit {unit} at {self.host}:{self.tcp_port} did not answer within "
                f"{timeout_s * 1000:.0f} ms: check the unit id and the device"
            ) from None
        except (OSError, FrameError) as exc:
            self.close()
            if isinstance(exc, FrameError):
                raise
            raise NoAnswerError(
                f"connection to {self.host}:{self.tcp_port} failed ({exc}): will reconnect"
            ) from exc


# ---------------------------------------------------------------------------------------------
# Meters and their counters


@dataclass
class MeterStats:
    """Counters of one meter, kept for edge status and the fleet's status message."""

    device_id: int
    name: str = ""
    polls_ok: int = 0
    polls_failed: int = 0
    timeouts: int = 0
    crc_errors: int = 0
    exceptions: int = 0
    frame_errors: int = 0
    missing_values: int = 0  # values that decoded to "not available" (not readings)
    skipped_backoff: int = 0
    consecutive_failures: int = 0
    backoff_until_s: float = 0.0
    last_ok_ts_ms: int | None = None
    last_error: str | None = None

    def as_status(self) -> dict[str, Any]:
        """The meter's entry in the status message (protocols.messages, "meters")."""
        return {
            "id": self.device_id,
            "name": self.name,
            "polls_ok": self.polls_ok,
            "polls_failed": self.polls_failed,
            "timeouts": self.timeouts,
            "crc_errors": self.crc_errors,
            "exceptions": self.exceptions,
            "frame_errors": self.frame_errors,
            "missing_values": self.missing_values,
            "last_ok_ts_ms": self.last_ok_ts_ms,
            "last_error": self.last_error,
        }


@dataclass
class MeterSpec:
    """One configured meter, its profile loaded."""

    device_id: int
    name: str
    unit: int
    profile: Profile
    interval_s: int
    quantities: tuple[str, ...]

    @classmethod
    def from_config(cls, meter: dict[str, Any], profile_dirs: Sequence[str] = ()) -> MeterSpec:
        profile = load_profile(meter["profile"], list(profile_dirs) or None)
        names = tuple(meter.get("quantities") or profile.quantities)
        return cls(meter["id"], meter["name"], meter["unit"], profile, meter["interval_s"], names)


def available_profiles(dirs: Sequence[str] = ()) -> list[Profile]:
    """Every loadable profile of dirs and the bundled ones (user files override bundled ones);
    an invalid file is logged and skipped, so one bad profile never stops the gateway."""
    models: list[str] = []
    for folder in dirs:
        try:
            names = sorted(os.listdir(folder))
        except OSError as exc:
            log.error("profile folder %s unreadable: %s", folder, exc)
            continue
        models.extend(n[:-5] for n in names if n.endswith(".json") and n[:-5] not in models)
    models.extend(m for m in bundled_profiles() if m not in models)
    out = []
    for model in sorted(models):
        try:
            out.append(load_profile(model, list(dirs) or None))
        except ProfileError as exc:
            log.error("meter profile %s skipped: %s", model, str(exc).splitlines()[0])
    return out


def decode_request(
    meter: MeterSpec, request: Request, data: bytes, stats: MeterStats | None = None
) -> dict[str, float | int]:
    """The values of a request's items from its answer; "not available" ones are left out."""
    out: dict[str, float | int] = {}
    for part in request.items:
        name = part.key[1]
        spec = meter.profile.quantities[name]
        v = values.decode(
            data, part.offset, spec.type, spec.word_order, spec.byte_order, spec.scale,
            spec.offset, spec.na,
        )  # fmt: skip
        if v is None:
            if stats is not None:
                stats.missing_values += 1
            continue
        out[name] = v
    return out


def plan_meter(meter: MeterSpec, bus: Bus | None = None, tcp: bool = False) -> list[Request]:
    """The requests that read all of one meter's quantities (for edge read)."""
    planner = Planner(
        [(it, 1) for it in items_for_profile(meter.profile, meter.unit, meter.quantities)],
        {meter.unit: _device(meter.profile, tcp)},
        bus,
    )
    return planner.plan_for(0)


def _device(profile: Profile, tcp: bool) -> Device:
    d = device_for_profile(profile)
    if tcp:
        d.turnaround_s = max(d.turnaround_s, _TCP_TURNAROUND_S)
    return d


async def read_with_retries(
    master: ModbusMaster, unit: int, pdu: bytes, timeout_s: float, retries: int,
    stats: MeterStats | None = None,
) -> bytes:  # fmt: skip
    """One request, retried up to `retries` times after a timeout, a bad frame or a busy
    device; every failure is counted in stats. The last error is raised."""
    attempt = 0
    while True:
        try:
            return await master.transact(unit, pdu, timeout_s)
        except ModbusError as exc:
            if stats is not None:
                _count(stats, exc)
            retry = not isinstance(exc, ModbusExceptionResponse) or exc.code in _RETRY_EXCEPTIONS
            if not retry or attempt >= retries:
                raise
            attempt += 1


def _count(stats: MeterStats, exc: ModbusError) -> None:
    if isinstance(exc, NoAnswerError):
        stats.timeouts += 1
    elif isinstance(exc, CrcError):
        stats.crc_errors += 1
    elif isinstance(exc, ModbusExceptionResponse):
        stats.exceptions += 1
    else:
        stats.frame_errors += 1
    stats.last_error = str(exc)


# ---------------------------------------------------------------------------------------------
# The scheduler of one bus


class WallClock:
    """UTC seconds and sleeping; tests may pass another clock."""

    def time(self) -> float:
        return time.time()

    async def sleep_until(self, t_s: float) -> None:
        while True:
            wait = t_s - time.time()
            if wait <= 0:
                return
            await asyncio.sleep(min(wait, 1.0))  # re-check: the wall clock may be stepped


def make_master(bus: dict[str, Any]) -> ModbusMaster:
    """The master for one bus of the configuration document (type rtu or tcp)."""
    if bus["type"] == "rtu":
        return RtuMaster(bus["port"], bus["baud"], bus["parity"], bus["stopbits"])
    return TcpMaster(bus["host"], bus["port"], max(1.0, bus["timeout_ms"] / 1000))


class BusPoller:
    """Polls the meters of one bus at their intervals, aligned to multiples of interval_s on
    the wall clock (10 s: :00, :10, ...); one request at a time, one store transaction per
    poll of a meter. A meter that stopped answering is tried ever less often (exponential
    backoff up to MAX_BACKOFF_S), with no retries, so the other meters keep their schedule.
    A cycle that runs late skips the ticks it missed: the schedule never drifts."""

    def __init__(
        self,
        bus: dict[str, Any],
        meters: Sequence[MeterSpec],
        sink: ReadingSink,
        stats: dict[int, MeterStats] | None = None,
        master: ModbusMaster | None = None,
        clock: WallClock | None = None,
        max_backoff_s: float = MAX_BACKOFF_S,
    ) -> None:
        self.bus = bus
        self.bus_id: str = bus["id"]
        self.meters = {m.unit: m for m in meters}
        self.sink = sink
        self.stats = stats if stats is not None else {}
        for m in meters:
            self.stats.setdefault(m.device_id, MeterStats(m.device_id, m.name))
        self.master = master or make_master(bus)
        self.clock = clock or WallClock()
        self.timeout_s: float = bus["timeout_ms"] / 1000
        self.retries: int = bus["retries"]
        self.max_backoff_s = max_backoff_s
        tcp = bus["type"] == "tcp"
        if tcp:
            plan_bus = Bus(115200, 10)
        else:
            bits = 10 if bus["parity"] == "N" and bus["stopbits"] == 1 else 11
            plan_bus = Bus(bus["baud"], bits)
        reads = []
        devices = {}
        for m in meters:
            for it in items_for_profile(m.profile, m.unit, m.quantities):
                reads.append((it, m.interval_s))
            devices[m.unit] = _device(m.profile, tcp)
        self.planner = Planner(reads, devices, plan_bus) if reads else None
        self.intervals = sorted({m.interval_s for m in meters})
        self.last_tick_s: int | None = None
        self.ticks_missed = 0
        self.cycles = 0
        self.last_cycle_s = 0.0
        self.bus_error: str | None = None
        self.polling = False  # a tick is in progress: its readings are not all stored yet
        self.stopping = False  # run() starts no new tick

    def next_tick(self, now_s: float) -> int:
        """The first tick at or after now_s (and after the last one run) with a meter due."""
        best = None
        for i in self.intervals:
            t = math.ceil(now_s / i) * i
            if self.last_tick_s is not None and t <= self.last_tick_s:
                t = (self.last_tick_s // i + 1) * i
            best = t if best is None else min(best, t)
        assert best is not None
        return int(best)

    async def run(self) -> None:
        """Poll forever (until cancelled); a bus that cannot be opened is retried."""
        if self.planner is None:
            return
        open_backoff_s = 1.0
        try:
            while True:
                try:
                    await self.master.open()
                    self.bus_error = None
                    open_backoff_s = 1.0
                except (SerialPortError, ModbusError) as exc:
                    if self.bus_error != str(exc):
                        log.error("bus %s: %s", self.bus_id, exc)
                    self.bus_error = str(exc)
                    for m in self.meters.values():
                        st = self.stats[m.device_id]
                        st.last_error = str(exc)
                    await asyncio.sleep(open_backoff_s)
                    open_backoff_s = min(open_backoff_s * 2, 30.0)
                    continue
                now = self.clock.time()
                t = self.next_tick(now)
                if self.last_tick_s is not None:
                    missed = self._ticks_between(self.last_tick_s, t)
                    if missed:
                        self.ticks_missed += missed
                        log.warning(
                            "bus %s: %d tick(s) skipped, the last cycle ran late", self.bus_id,
                            missed,
                        )  # fmt: skip
                await self.clock.sleep_until(t)
                if self.stopping:
                    return
                try:
                    self.polling = True
                    await self.poll_tick(t)
                except SerialPortError as exc:
                    log.error("bus %s: %s", self.bus_id, exc)
                    self.bus_error = str(exc)
                    self.master.close()
                except Exception:  # a bug or a full disk must not end polling for good
                    log.exception("bus %s: polling tick %d failed", self.bus_id, t)
                    await asyncio.sleep(1.0)
                finally:
                    self.polling = False
                if self.stopping:
                    return
        finally:
            self.master.close()

    async def stop_between_ticks(self, task: asyncio.Task[None], timeout_s: float = 10.0) -> None:
        """End task (this poller's run()) without cutting a tick short: the meters have served
        the values of a tick in progress, and cancelling it would drop them (a configuration
        change must lose nothing). Waits for that tick at most timeout_s, then cancels."""
        self.stopping = True
        deadline = time.monotonic() + timeout_s
        while self.polling and not task.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, timeout_s)

    def _ticks_between(self, a: int, b: int) -> int:
        n = 0
        for t in range(a + 1, b):
            if any(t % i == 0 for i in self.intervals):
                n += 1
                if n > 1000:
                    break
        return n

    async def poll_tick(self, t_s: int) -> None:
        """Poll every meter due at tick t_s (whole UTC seconds); readings get ts_ms t_s*1000."""
        self.last_tick_s = t_s
        if self.planner is None:
            return
        started = time.monotonic()
        by_unit: dict[int, list[Request]] = {}
        for r in self.planner.plan_for(t_s):
            by_unit.setdefault(r.unit, []).append(r)
        healthy = []
        probing = []
        for unit, requests in by_unit.items():
            meter = self.meters[unit]
            st = self.stats[meter.device_id]
            if t_s < st.backoff_until_s:
                st.skipped_backoff += 1
                continue
            (probing if st.consecutive_failures >= 2 else healthy).append((meter, requests))
        # Meters in backoff go last, so their timeouts never delay a healthy meter's reading.
        for meter, requests in healthy + probing:
            await self.poll_meter(meter, requests, t_s)
        self.cycles += 1
        self.last_cycle_s = time.monotonic() - started

    async def poll_meter(self, meter: MeterSpec, requests: Iterable[Request], t_s: int) -> bool:
        """Read one meter's requests and commit its readings in one append; True if all came."""
        st = self.stats[meter.device_id]
        retries = 0 if st.consecutive_failures >= 2 else self.retries
        ts_ms = int(t_s * 1000)
        got: dict[str, float | int] = {}
        answered = False
        complete = True
        for req in requests:
            pdu = modbus.read_request_pdu(req.function, req.address, req.count)
            try:
                data = await read_with_retries(
                    self.master, meter.unit, pdu, self.timeout_s, retries, st
                )
            except ModbusError as exc:
                complete = False
                if isinstance(exc, ModbusExceptionResponse):
                    answered = True
                    continue
                if isinstance(exc, NoAnswerError) and not answered:
                    break  # silent meter: do not spend the bus on its other requests
                continue
            answered = True
            got.update(decode_request(meter, req, data, st))
        if got:
            readings = [(channel_id(meter.device_id, n), ts_ms, v) for n, v in got.items()]
            self.sink.append(readings)
        if complete:
            st.polls_ok += 1
            st.last_ok_ts_ms = ts_ms
            st.last_error = None
        else:
            st.polls_failed += 1
        if answered:
            st.consecutive_failures = 0
            st.backoff_until_s = 0.0
        else:
            st.consecutive_failures += 1
            n = st.consecutive_failures
            if n >= 2:
                delay = min(
                    meter.interval_s * 2 ** (n - 1), max(self.max_backoff_s, meter.interval_s)
                )
                st.backoff_until_s = t_s + delay
                if n == 2:
                    log.warning(
                        "meter %s (unit %d on bus %s) stopped answering: backing off (%s)",
                        meter.name, meter.unit, self.bus_id, st.last_error,
                    )  # fmt: skip
        return complete


def callable_sink(fn: Callable[[Sequence[Reading]], Any]) -> ReadingSink:
    """A sink from a function (tests, edge read)."""

    class _Sink:
        def append(self, readings: Sequence[Reading]) -> Any:
            return fn(readings)

    return _Sink()
