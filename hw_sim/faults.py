"""Fault injection: which fault (if any) hits a request or a radio packet, decided by a
seeded random stream per device so a run is reproducible. Decides and mangles bytes;
logging every injected fault is the caller's job (see hw_sim.meter, hw_sim.lora).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

# kind: (where it applies, default parameters, what a test engineer sees)
MODBUS_FAULTS: dict[str, tuple[str, dict[str, Any], str]] = {
    "crc_error": ("rtu", {}, "response whose CRC is wrong (client must discard it)"),
    "bit_flip": (
        "rtu,tcp",
        {},
        "one bit of the response flipped; on RTU the CRC then "
        "fails, on TCP (no CRC) the client gets a silently wrong value",
    ),
    "no_answer": ("rtu,tcp", {}, "the request is ignored (client times out)"),
    "late_answer": (
        "rtu,tcp",
        {"delay_ms": 1500},
        "correct response, delay_ms after the normal turnaround",
    ),
    "truncated": ("rtu,tcp", {}, "only the first part of the response is sent"),
    "garbage": (
        "rtu,tcp",
        {"max_bytes": 16},
        "correct response followed, after a t3.5 "
        "silence, by 1..max_bytes random bytes of line noise",
    ),
    "exception": (
        "rtu,tcp",
        {"code": 4},
        "Modbus exception response with this code (4 = server device failure, 6 = busy)",
    ),
    "vanish": (
        "rtu,tcp",
        {"duration_s": 60.0},
        "the meter disappears for duration_s simulated seconds (no answers at all), then returns",
    ),
    "counter_reset": ("rtu,tcp", {}, "the meter was replaced: energy counters restart at 0"),
}

LORA_FAULTS: dict[str, tuple[str, dict[str, Any], str]] = {
    "lost": ("lora", {}, "the uplink never reaches the gateway"),
    "duplicated": ("lora", {}, "the gateway receives the same uplink twice"),
    "corrupted": ("lora", {}, "one bit of the payload flipped (the radio CRC passed)"),
}


class FaultConfigError(ValueError):
    """A fault rule in a scenario is invalid."""


@dataclass
class FaultRule:
    """Inject ``kind`` into a share ``rate`` (0..1) of requests or uplinks of one device."""

    kind: str
    rate: float
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any], catalogue: dict, where: str) -> FaultRule:
        d = dict(d)
        kind = d.pop("kind", None)
        if kind not in catalogue:
            raise FaultConfigError(
                f"{where}: unknown fault kind {kind!r}; choose one of: {', '.join(catalogue)}"
            )
        rate = d.pop("rate", None)
        if not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
            raise FaultConfigError(
                f"{where}: fault {kind} needs rate between 0 and 1 "
                f"(share of requests), got {rate!r}"
            )
        defaults = catalogue[kind][1]
        unknown = set(d) - set(defaults)
        if unknown:
            raise FaultConfigError(
                f"{where}: fault {kind} has no parameter "
                f"{', '.join(sorted(unknown))}; it takes: "
                f"{', '.join(defaults) or 'nothing but rate'}"
            )
        return cls(kind, float(rate), {**defaults, **d})


@dataclass
class Fault:
    """One injected fault. ``detail`` says exactly what was done (for the log)."""

    kind: str
    params: dict[str, Any]
    detail: dict[str, Any] = field(default_factory=dict)


class FaultEngine:
    """Draws at most one fault per request from a seeded stream.

    Rules are mutually exclusive: one uniform draw per request falls into the slice of
    one rule (slices are as wide as the rates), so each kind occurs at exactly its rate
    in the long run, independent of the others. Every request consumes the same number
    of draws, so the sequence of faults depends only on the seed and request count.
    """

    def __init__(self, rules: list[FaultRule], seed: int, where: str = "device") -> None:
        total = sum(r.rate for r in rules)
        if total > 1.0 + 1e-9:
            raise FaultConfigError(
                f"{where}: fault rates add up to {total:.3f} > 1; a "
                "request can suffer at most one fault"
            )
        self.rules = list(rules)
        self.rng = random.Random(seed)
        self.vanished_until_ms: int | None = None

    def vanish_for(self, ts_ms: int, duration_s: float) -> int:
        """Make the device vanish from ts_ms for duration_s simulated seconds, on request (an
        operator's fault injection, e.g. the demo's fail-meter); returns until when (UTC ms).
        The draws of the seeded stream are not touched: the rules' faults stay as they were."""
        if not duration_s > 0:
            raise ValueError(f"duration_s must be > 0 (got {duration_s})")
        until = ts_ms + int(float(duration_s) * 1000)
        self.vanished_until_ms = max(self.vanished_until_ms or 0, until)
        return self.vanished_until_ms

    def draw(self, ts_ms: int) -> Fault | None:
        r = self.rng.random()
        aux = self.rng.random()  # for the fault's own choices (bit, length), always drawn
        chosen = None
        acc = 0.0
        for rule in self.rules:
            acc += rule.rate
            if r < acc:
                chosen = rule
                break
        if self.vanished_until_ms is not None:
            if ts_ms < self.vanished_until_ms:
                return Fault("vanish", {}, {"ongoing": True, "until_ms": self.vanished_until_ms})
            self.vanished_until_ms = None
        if chosen is None:
            return None
        fault = Fault(chosen.kind, chosen.params, {})
        fault.detail["aux"] = aux
        if chosen.kind == "vanish":
            until = ts_ms + int(float(chosen.params["duration_s"]) * 1000)
            self.vanished_until_ms = until
            fault.detail["until_ms"] = until
        return fault


class LateAnswers:
    """In place of a meter's FaultEngine (``meter.faults = LateAnswers(100)``): a share of the
    answers delay_ms late, but never two in a row, so a client's retry after a late answer is
    answered in time and the late answer and the retry's own answer both reach the line (the
    case a client must not take for the answer to its next request). Seeded like FaultEngine;
    no other fault, and an operator's vanish_for does not apply."""

    def __init__(self, delay_ms: int, share: float = 0.25, seed: int = 3) -> None:
        self.delay_ms = delay_ms
        self.share = share
        self.rng = random.Random(seed)
        self.late = False

    def draw(self, ts_ms: int) -> Fault | None:
        self.late = not self.late and self.rng.random() < self.share
        return Fault("late_answer", {"delay_ms": self.delay_ms}) if self.late else None


def _aux_int(fault: Fault, n: int) -> int:
    """A number in [0, n) from the fault's own draw."""
    return min(n - 1, int(fault.detail.pop("aux", 0.0) * n))


def corrupt_crc(frame: bytes, fault: Fault) -> bytes:
    """Change the last two bytes (the RTU CRC) so the frame fails its CRC check."""
    x = 1 + _aux_int(fault, 0xFFFF)
    fault.detail["crc_xor"] = x
    return frame[:-2] + bytes((frame[-2] ^ (x & 0xFF), frame[-1] ^ (x >> 8)))


def flip_bit(frame: bytes, fault: Fault, first: int, end: int) -> bytes:
    """Flip one bit among frame[first:end] (the part after addresses/headers)."""
    nbits = max(1, (end - first) * 8)
    bit = _aux_int(fault, nbits)
    pos = first + bit // 8
    fault.detail["byte"] = pos
    fault.detail["bit"] = bit % 8
    out = bytearray(frame)
    out[pos] ^= 1 << (bit % 8)
    return bytes(out)


def truncate(frame: bytes, fault: Fault) -> bytes:
    keep = 1 + _aux_int(fault, max(1, len(frame) - 1))
    fault.detail["sent_bytes"] = keep
    fault.detail["frame_bytes"] = len(frame)
    return frame[:keep]


def garbage(fault: Fault) -> bytes:
    """1..max_bytes bytes of line noise, derived from the fault's own draw."""
    rng = random.Random(fault.detail.get("aux", 0.0))
    n = 1 + _aux_int(fault, int(fault.params.get("max_bytes", 16)))
    data = bytes(rng.getrandbits(8) for _ in range(n))
    fault.detail["garbage_hex"] = data.hex()
    return data
