"""Technician tools on one bus: find the line settings and unit ids of the meters on it and
recognise their models (edge scan), and read every quantity of one meter once (edge read).

Probing and identification only; printing and argument parsing are edge/cli.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge.poller import (
    MeterSpec,
    MeterStats,
    ModbusMaster,
    NoAnswerError,
    RtuMaster,
    TcpMaster,
    available_profiles,
    decode_request,
    plan_meter,
    read_with_retries,
)
from edge.serial_port import SerialPortError
from protocols import modbus, values
from protocols.modbus import ModbusError, ModbusExceptionResponse
from protocols.planner import Bus
from protocols.profiles import Profile, probe_matches, probe_text

# Most common first: 9600 and 19200 cover nearly every installed meter; 8E1 is the Modbus
# default, 8N1 the factory setting of many (Eastron, Carlo Gavazzi).
DEFAULT_BAUDS = (9600, 19200, 2400, 4800, 38400, 57600, 115200, 1200)
DEFAULT_PARITIES = ("E", "N", "O")
QUICK_UNITS = 10  # units 1..10 are tried at every setting before the rest of the range
PROBE_TURNAROUND_S = 0.08  # how long a meter may think before answering a probe

Progress = Callable[[str], None]


class ScanError(Exception):
    """A scan or read that cannot go on; the message says what to check."""


@dataclass
class FoundUnit:
    unit: int
    model: str | None = None
    manufacturer: str | None = None
    name: str | None = None
    candidates: list[str] = field(default_factory=list)  # several models fit (weak probes)
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "model": self.model,
            "manufacturer": self.manufacturer,
            "name": self.name,
            "candidates": self.candidates,
            "note": self.note,
        }


@dataclass
class ScanResult:
    port: str
    baud: int | None = None
    parity: str | None = None
    stopbits: int = 1
    units: list[FoundUnit] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "baud": self.baud,
            "parity": self.parity,
            "stopbits": self.stopbits,
            "units": [u.as_dict() for u in self.units],
            "seconds": round(self.seconds, 2),
        }


def parse_units(text: str) -> list[int]:
    """Unit ids from "1-247", "3", "1,2,10-20"; ValueError naming the bad part."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if hi else a
        except ValueError:
            raise ValueError(f"unit range {part!r}: use numbers like 1-247 or 3,5,7") from None
        if not 1 <= a <= b <= modbus.MAX_RTU_UNIT:
            raise ValueError(f"unit range {part!r}: units are 1..247")
        out.extend(u for u in range(a, b + 1) if u not in out)
    if not out:
        raise ValueError("no units to scan")
    return out


def probe_timeout_s(baud: int, bits_per_char: int, turnaround_s: float) -> float:
    """Wait for the first answer byte: the longest probe answer on the wire plus turnaround."""
    return modbus.char_time_s(baud, bits_per_char) * 16 + turnaround_s


_PROBE_PDU = modbus.read_request_pdu(modbus.READ_HOLDING_REGISTERS, 0, 1)


async def _present(master: ModbusMaster, unit: int, timeout_s: float) -> bool:
    """Whether anything valid comes back from unit: a value or an exception both count."""
    try:
        await master.transact(unit, _PROBE_PDU, timeout_s)
    except ModbusExceptionResponse:
        return True
    except NoAnswerError:
        return False
    except ModbusError:
        return False  # noise or a wrong-setting echo: not a clean answer
    return True


async def _open(path: str, baud: int, parity: str, stopbits: int) -> RtuMaster:
    # Probes need no recovery silence after a timeout: the unit id of a late answer tells.
    master = RtuMaster(path, baud, parity, stopbits, recover_after_error=False)
    try:
        await master.open()
    except SerialPortError as exc:
        raise ScanError(str(exc)) from exc
    return master


async def scan(
    path: str,
    bauds: Sequence[int] = DEFAULT_BAUDS,
    parities: Sequence[str] = DEFAULT_PARITIES,
    units: Sequence[int] = tuple(range(1, 248)),
    stopbits: int = 1,
    turnaround_s: float = PROBE_TURNAROUND_S,
    identify: bool = True,
    progress: Progress | None = None,
) -> ScanResult:
    """Find the setting at which meters answer on the bus at `path`, then every answering
    unit, then each one's model. Units 1..QUICK_UNITS are tried at every setting first; the
    first setting a unit answers at is taken and no other setting is tried."""
    say = progress or (lambda _msg: None)
    started = time.monotonic()
    settings = [(b, p) for b in bauds for p in parities]
    quick = [u for u in units if u <= QUICK_UNITS]
    rest = [u for u in units if u > QUICK_UNITS]
    result = ScanResult(path, stopbits=stopbits)
    found: list[int] = []
    for phase in (quick, rest):
        if not phase:
            continue
        for baud, parity in settings:
            master = await _open(path, baud, parity, stopbits)
            try:
                timeout = probe_timeout_s(baud, master.bits_per_char, turnaround_s)
                for i, unit in enumerate(phase):
                    say(f"{baud} 8{parity}{stopbits}: unit {unit} ({i + 1}/{len(phase)})")
                    if await _present(master, unit, timeout):
                        found.append(unit)
                        say(f"unit {unit} answers at {baud} 8{parity}{stopbits}")
                        break
                if found:
                    result.baud, result.parity = baud, parity
                    # The setting is known: the remaining units only at this one.
                    remaining = [u for u in units if u > found[0]]
                    for i, unit in enumerate(remaining):
                        say(f"{baud} 8{parity}{stopbits}: unit {unit} ({i + 1}/{len(remaining)})")
                        if await _present(master, unit, timeout):
                            found.append(unit)
                    if identify:
                        profiles = available_profiles()
                        for unit in found:
                            say(f"identifying unit {unit}")
                            result.units.append(await identify_unit(master, unit, profiles))
                    else:
                        result.units = [FoundUnit(u) for u in found]
                    result.seconds = time.monotonic() - started
                    return result
            finally:
                master.close()
    result.seconds = time.monotonic() - started
    return result


async def identify_unit(
    master: ModbusMaster, unit: int, profiles: Sequence[Profile], timeout_s: float = 0.3
) -> FoundUnit:
    """The model of the meter at unit, by the profiles' identify rules (strong ones first)."""
    cache: dict[tuple[int, int, int], bytes | None] = {}

    async def read(function: int, address: int, count: int) -> bytes | None:
        key = (function, address, count)
        if key not in cache:
            pdu = modbus.read_request_pdu(function, address, count)
            try:
                cache[key] = await read_with_retries(master, unit, pdu, timeout_s, 1)
            except ModbusError:
                cache[key] = None
        return cache[key]

    strong: list[Profile] = []
    weak: list[Profile] = []
    ordered = sorted(
        (p for p in profiles if p.identify is not None),
        key=lambda p: (not p.identify.strong, p.model),
    )
    for p in ordered:
        ok = True
        for probe in p.identify.probes:
            data = await read(probe.function, probe.address, probe.count)
            if data is None:
                ok = False
                break
            if probe.type == "ascii":
                value: Any = probe_text(data)
            else:
                value = values.decode(data, 0, probe.type, probe.word_order, probe.byte_order)
            if not probe_matches(probe, value):
                ok = False
                break
        if ok:
            (strong if p.identify.strong else weak).append(p)
            if p.identify.strong:
                break
    found = FoundUnit(unit)
    match = strong[0] if strong else (weak[0] if len(weak) == 1 else None)
    if match is not None:
        found.model, found.manufacturer, found.name = match.model, match.manufacturer, match.name
        if not strong:
            found.note = "recognised by plausible values only: confirm on the meter's label"
    elif weak:
        found.candidates = [p.model for p in weak]
        found.note = "several models fit: check the meter's label"
    else:
        found.note = "answers, but no known profile matches: add a profile (docs/meters.md)"
    return found


# ---------------------------------------------------------------------------------------------
# One-shot read


@dataclass
class ReadResult:
    unit: int
    profile: Profile
    ts_ms: int
    values: dict[str, float | int]
    missing: list[str]
    errors: list[str]
    stats: MeterStats

    def as_dict(self) -> dict[str, Any]:
        q = self.profile.quantities
        return {
            "unit": self.unit,
            "profile": self.profile.model,
            "ts_ms": self.ts_ms,
            "values": {n: {"value": v, "unit": q[n].unit} for n, v in self.values.items()},
            "missing": self.missing,
            "errors": self.errors,
        }


async def read_meter(
    master: ModbusMaster,
    unit: int,
    profile: Profile,
    timeout_s: float = 0.5,
    retries: int = 1,
    quantities: Sequence[str] | None = None,
    tcp: bool = False,
) -> ReadResult:
    """Every quantity of one meter, read once with the planner's requests."""
    names = tuple(quantities or profile.quantities)
    meter = MeterSpec(0, profile.model, unit, profile, 1, names)
    stats = MeterStats(0, profile.model)
    bus = None
    if isinstance(master, RtuMaster):
        bus = Bus(master.baud, 10 if master.bits_per_char == 10 else 11)
    requests = plan_meter(meter, bus, tcp or isinstance(master, TcpMaster))
    ts_ms = int(time.time() * 1000)
    got: dict[str, float | int] = {}
    errors: list[str] = []
    for req in requests:
        pdu = modbus.read_request_pdu(req.function, req.address, req.count)
        try:
            data = await read_with_retries(master, unit, pdu, timeout_s, retries, stats)
        except NoAnswerError as exc:
            if not got and not errors:
                raise ScanError(str(exc)) from exc
            errors.append(str(exc))
            continue
        except ModbusError as exc:
            errors.append(str(exc))
            continue
        got.update(decode_request(meter, req, data))
    ordered = {n: got[n] for n in names if n in got}
    missing = [n for n in names if n not in got]
    return ReadResult(unit, profile, ts_ms, ordered, missing, errors, stats)
