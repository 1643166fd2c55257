"""A simulated meter: answers Modbus request PDUs as its model does (register layout from a
protocols/ profile, exception 02 outside its readable blocks), with values from its
electrical model, faults from its fault engine, and everything served logged as ground truth.

Transport-free: hw_sim.rtu and hw_sim.tcp move the bytes; this module never does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hw_sim import faults as fx
from hw_sim.clock import SimClock
from hw_sim.faults import Fault, FaultEngine
from hw_sim.physics import ElectricalModel
from hw_sim.truth import GroundTruth
from protocols import modbus, values
from protocols.profiles import Profile

DEFAULT_TURNAROUND_MS = 20.0  # when neither profile nor scenario says: typical small meter

# Faults after which the client does not get the values (so they are not ground truth).
_UNDELIVERED = ("crc_error", "bit_flip", "truncated", "no_answer", "vanish", "exception")


@dataclass
class Reply:
    """What a meter does with one request: the response PDU (None: stays silent), the fault
    injected, and the values it carries, to be logged once the transport commits."""

    ts_ms: int
    via: str
    request: dict[str, int]
    pdu: bytes | None = None
    fault: Fault | None = None
    values: list[tuple[str, float]] = field(default_factory=list)
    extra_delay_s: float = 0.0
    garbage: bytes = b""

    def mangle_rtu(self, frame: bytes) -> bytes:
        """Apply a byte-level fault to an RTU frame (unit, PDU, CRC)."""
        f = self.fault
        if f is None:
            return frame
        if f.kind == "crc_error":
            return fx.corrupt_crc(frame, f)
        if f.kind == "bit_flip":
            return fx.flip_bit(frame, f, 1, len(frame) - 2)  # CRC left as sent: it then fails
        if f.kind == "truncated":
            return fx.truncate(frame, f)
        if f.kind == "garbage":
            self.garbage = fx.garbage(f)
        return frame

    def mangle_tcp(self, adu: bytes) -> bytes:
        """Apply a byte-level fault to a Modbus TCP ADU (7-byte MBAP header + PDU)."""
        f = self.fault
        if f is None:
            return adu
        if f.kind == "bit_flip":
            # Only in the register data: TCP has no CRC, so this is a wrong value the client
            # cannot detect (a flipped header would just break the framing).
            first = 9 if len(adu) > 9 and not adu[7] & 0x80 else 7
            return fx.flip_bit(adu, f, first, len(adu))
        if f.kind == "truncated":
            return fx.truncate(adu, f)
        if f.kind == "garbage":
            self.garbage = fx.garbage(f)
            return adu + self.garbage
        return adu


class SimMeter:
    """One meter at one unit id: a profile, an electrical model, a fault engine."""

    def __init__(
        self,
        name: str,
        profile: Profile,
        unit: int,
        model: ElectricalModel,
        clock: SimClock,
        truth: GroundTruth,
        faults: FaultEngine | None = None,
        turnaround_ms: float | None = None,
        bus: str = "",
    ) -> None:
        self.name = name
        self.profile = profile
        self.unit = unit
        self.model = model
        self.clock = clock
        self.truth = truth
        self.faults = faults or FaultEngine([], 0, name)
        self.bus = bus
        serial = profile.serial or {}
        if turnaround_ms is None:
            turnaround_ms = serial.get("turnaround_ms")
        self.turnaround_s = (
            DEFAULT_TURNAROUND_MS if turnaround_ms is None else float(turnaround_ms)
        ) / 1000.0
        self.requests = 0
        self._by_function: dict[int, list[Any]] = {}
        for spec in profile.quantities.values():
            self._by_function.setdefault(spec.function, []).append(spec)
        for specs in self._by_function.values():
            specs.sort(key=lambda s: s.address)
        # Identification registers a scanner reads (meter code, model name) that are not
        # quantities: served with a value that passes the probe.
        self._probes: dict[int, list[tuple[int, bytes]]] = {}
        identify = getattr(profile, "identify", None)
        for probe in identify.probes if identify else ():
            data = _probe_bytes(probe)
            if data is not None:
                self._probes.setdefault(probe.function, []).append((probe.address, data))

    # -- request path --------------------------------------------------------------------
    def serve(self, pdu: bytes, via: str) -> Reply:
        """Answer one request PDU at the current simulated time (not yet logged)."""
        ts_ms = self.clock.now_ms()
        self.requests += 1
        function = pdu[0] if pdu else 0
        address = (pdu[1] << 8 | pdu[2]) if len(pdu) >= 5 else 0
        count = (pdu[3] << 8 | pdu[4]) if len(pdu) >= 5 else 0
        reply = Reply(ts_ms, via, {"function": function, "address": address, "count": count})
        fault = self.faults.draw(ts_ms)
        reply.fault = fault
        kind = fault.kind if fault else None
        if kind in ("no_answer", "vanish"):
            return reply
        if kind == "counter_reset":
            before = dict(self.model.counters)
            self.model.advance(ts_ms)
            self.model.reset_counters()
            fault.detail["counters_before"] = {k: round(v, 3) for k, v in before.items()}
        if kind == "late_answer":
            reply.extra_delay_s = float(fault.params["delay_ms"]) / 1000.0
        if kind == "exception":
            code = int(fault.params["code"])
            fault.detail["code"] = code
            reply.pdu = modbus.exception_pdu(function, code)
            return reply
        sample: dict[str, float] = {}

        def read(fn: int, addr: int, n: int) -> bytes:
            data, served = self._registers(fn, addr, n, ts_ms, sample)
            reply.values = served
            return data

        reply.pdu = modbus.handle_request(pdu, read=read)
        if reply.pdu[0] & 0x80:
            reply.values = []
        return reply

    def commit(self, reply: Reply) -> None:
        """Log what was actually put on the wire: the fault (never silent) and the values
        a correct client now holds."""
        f = reply.fault
        common = {"via": reply.via, "unit": self.unit, "bus": self.bus}
        if f is not None:
            detail = {k: v for k, v in f.detail.items() if k != "aux"}
            self.truth.fault(
                reply.ts_ms, self.name, f.kind, request=reply.request, detail=detail, **common
            )
        if f is not None and f.kind in _UNDELIVERED:
            return
        for quantity, value in reply.values:
            self.truth.value(reply.ts_ms, self.name, quantity, value, **common)

    # -- the register image --------------------------------------------------------------
    def _registers(
        self, function: int, address: int, count: int, ts_ms: int, sample: dict[str, float]
    ) -> tuple[bytes, list[tuple[str, float]]]:
        if function not in (modbus.READ_HOLDING_REGISTERS, modbus.READ_INPUT_REGISTERS):
            raise modbus.ModbusExceptionResponse(function, modbus.ILLEGAL_FUNCTION)
        if count > self.profile.max_registers:
            raise modbus.ModbusExceptionResponse(function, modbus.ILLEGAL_DATA_VALUE)
        if not self._readable(function, address, count):
            raise modbus.ModbusExceptionResponse(function, modbus.ILLEGAL_DATA_ADDRESS)
        if not sample:
            sample.update(self.model.sample(ts_ms))
        end = address + count
        data = bytearray(2 * count)
        served: list[tuple[str, float]] = []
        for spec in self._by_function.get(function, ()):
            s_end = spec.address + spec.count
            if s_end <= address or spec.address >= end:
                continue
            raw = _encode(spec, sample.get(spec.name, 0.0))
            lo = max(address, spec.address)
            hi = min(end, s_end)
            data[2 * (lo - address) : 2 * (hi - address)] = raw[
                2 * (lo - spec.address) : 2 * (hi - spec.address)
            ]
            if spec.address >= address and s_end <= end:
                # What a correct client decodes from these registers is the truth.
                v = values.decode(
                    raw,
                    0,
                    spec.type,
                    spec.word_order,
                    spec.byte_order,
                    spec.scale,
                    spec.offset,
                    spec.na,
                )
                if v is not None:
                    served.append((spec.name, v))
        for p_addr, p_data in self._probes.get(function, ()):
            p_end = p_addr + len(p_data) // 2
            lo = max(address, p_addr)
            hi = min(end, p_end)
            if lo < hi and not self._covered(function, lo, hi):
                data[2 * (lo - address) : 2 * (hi - address)] = p_data[
                    2 * (lo - p_addr) : 2 * (hi - p_addr)
                ]
        return bytes(data), served

    def _covered(self, function: int, lo: int, hi: int) -> bool:
        for spec in self._by_function.get(function, ()):
            if spec.address < hi and spec.address + spec.count > lo:
                return True
        return False

    def _readable(self, function: int, address: int, count: int) -> bool:
        """Every register of the request lies in a readable block of the model, or belongs
        to a mapped quantity or identification register; else the meter answers 02."""
        end = address + count
        spans = list(self.profile.readable_blocks(function))
        spans += [(s.address, s.count) for s in self._by_function.get(function, ())]
        spans += [(a, len(d) // 2) for a, d in self._probes.get(function, ())]
        covered = bytearray(count)
        for start, n in spans:
            for r in range(max(address, start), min(end, start + n)):
                covered[r - address] = 1
        return all(covered)

    def fail(self, duration_s: float) -> int:
        """Stop answering for duration_s simulated seconds from now, on request (fault
        injection by an operator, e.g. the demo's fail-meter); logged as an `operator_fault`
        event, and each unanswered request as a `vanish` fault. Returns until when (UTC ms)."""
        now = self.clock.now_ms()
        until = self.faults.vanish_for(now, duration_s)
        self.truth.event(
            now, self.name, "operator_fault", detail={"fault": "vanish", "until_ms": until}
        )
        return until

    # -- persistence ---------------------------------------------------------------------
    def state(self) -> dict:
        return self.model.state()

    def restore(self, state: dict) -> None:
        self.model.restore(state)


def _encode(spec: Any, value: float) -> bytes:
    try:
        return values.encode(
            value, spec.type, spec.word_order, spec.byte_order, spec.scale, spec.offset
        )
    except ValueError:
        if spec.type.startswith("f"):
            raise
        # An integer counter that overflows its register wraps, as on the real meter.
        bits = 16 * values.register_count(spec.type)
        raw = round((value - spec.offset) / spec.scale) % (1 << bits)
        if spec.type.startswith("i") and raw >= 1 << (bits - 1):
            raw -= 1 << bits
        return values.encode(raw, spec.type, spec.word_order, spec.byte_order)


def _probe_bytes(probe: Any) -> bytes | None:
    """Register bytes that pass an identification probe, or None if none can be made."""
    if probe.type == "ascii":
        text = (probe.equals or probe.prefix or ("",))[0]
        raw = text.encode()[: 2 * probe.count]
        return raw + bytes(2 * probe.count - len(raw))
    if probe.equals is not None:
        value = probe.equals[0]
    elif probe.range is not None:
        value = (probe.range[0] + probe.range[1]) / 2.0 / probe.scale
        if not probe.type.startswith("f"):
            value = round(value)
    else:
        return None
    return values.encode(value, probe.type, probe.word_order, probe.byte_order)
