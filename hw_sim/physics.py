"""Electrical physics of a simulated meter: phase voltages, currents from a load shape,
P = U·I·cos φ per phase, totals that are sums, frequency, and energy counters that
integrate power and never run backwards. Takes time as an argument; never reads a clock.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from datetime import tzinfo

from hw_sim.loadshape import check_shape, load_share

_PHASE_ANGLE_RAD = (0.0, -2.0 * math.pi / 3.0, 2.0 * math.pi / 3.0)
_MAX_STEP_MS = 60_000  # integration step; energy is exact for the piecewise-linear shape
_MAX_STEPS = 2000  # long gaps (restart after days) use coarser steps, still monotonic
_DEMAND_WINDOW_MS = 15 * 60_000  # demand = mean power over the last 15 minutes

COUNTERS = (
    "energy_import",
    "energy_export",
    "reactive_energy_import",
    "reactive_energy_export",
    "energy_import_l1",
    "energy_import_l2",
    "energy_import_l3",
)


def derive_seed(*parts: object) -> int:
    """A stable 64-bit seed from a scenario seed and names (Python's hash() is salted)."""
    text = ":".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


@dataclass
class LoadParams:
    """What a meter measures: the load behind it and the grid it sits on."""

    shape: str = "office"
    peak_power_w: float = 20_000.0
    base_power_w: float = 2_000.0
    cos_phi: float = 0.95
    phase_shares: tuple[float, ...] = (0.36, 0.33, 0.31)
    voltage_v: float = 230.0
    frequency_hz: float = 50.0
    noise: float = 0.02  # relative noise on power; 0 gives smooth curves

    def __post_init__(self) -> None:
        check_shape(self.shape)
        if self.base_power_w < 0 or self.peak_power_w < self.base_power_w:
            raise ValueError(
                f"need 0 <= base_power_w <= peak_power_w (got {self.base_power_w}, "
                f"{self.peak_power_w})"
            )
        if not 0.3 <= self.cos_phi <= 1.0:
            raise ValueError(f"cos_phi must be between 0.3 and 1.0 (got {self.cos_phi})")
        total = sum(self.phase_shares)
        if total <= 0 or any(s < 0 for s in self.phase_shares):
            raise ValueError(f"phase_shares must be >= 0 and not all 0: {self.phase_shares}")
        self.phase_shares = tuple(s / total for s in self.phase_shares)


@dataclass
class ElectricalModel:
    """One meter's electrical state. ``sample(ts_ms)`` gives every quantity at ts_ms."""

    params: LoadParams
    tz: tzinfo
    phases: int = 3
    seed: int = 0
    counters: dict[str, float] = field(default_factory=dict)
    last_ts_ms: int | None = None

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        for name in COUNTERS:
            self.counters.setdefault(name, 0.0)
        shares = self.params.phase_shares
        if self.phases == 1:
            shares = (1.0, 0.0, 0.0)
        elif len(shares) != 3:
            raise ValueError("phase_shares needs three entries for a three-phase meter")
        self._shares = shares
        # Each phase sits a little above or below nominal, as on a real feeder.
        self._v_offset = tuple(self._rng.uniform(-2.0, 2.0) for _ in range(3))

    # -- deterministic part ------------------------------------------------------------
    def mean_power_w(self, ts_ms: int) -> float:
        """Noise-free total active power at ts_ms (what the energy counters integrate)."""
        p = self.params
        return p.base_power_w + (p.peak_power_w - p.base_power_w) * load_share(
            p.shape, ts_ms, self.tz
        )

    def advance(self, ts_ms: int) -> None:
        """Integrate power into the energy counters up to ts_ms. Time never goes back."""
        if self.last_ts_ms is None:
            self.last_ts_ms = ts_ms
            return
        span_ms = ts_ms - self.last_ts_ms
        if span_ms <= 0:
            return
        steps = max(1, min(_MAX_STEPS, math.ceil(span_ms / _MAX_STEP_MS)))
        step_ms = span_ms / steps
        energy_wh = 0.0
        t = float(self.last_ts_ms)
        p0 = self.mean_power_w(int(t))
        for _ in range(steps):
            t1 = t + step_ms
            p1 = self.mean_power_w(int(t1))
            energy_wh += (p0 + p1) * 0.5 * step_ms / 3_600_000.0
            t, p0 = t1, p1
        tan_phi = math.tan(math.acos(self.params.cos_phi))
        c = self.counters
        c["energy_import"] += energy_wh
        c["reactive_energy_import"] += energy_wh * tan_phi
        for i, share in enumerate(self._shares):
            c[f"energy_import_l{i + 1}"] += energy_wh * share
        self.last_ts_ms = ts_ms

    def reset_counters(self) -> None:
        """The meter was replaced: a new device starts counting from zero."""
        for name in COUNTERS:
            self.counters[name] = 0.0

    # -- one measurement ---------------------------------------------------------------
    def sample(self, ts_ms: int) -> dict[str, float]:
        """All quantities at ts_ms, consistent with each other (totals are sums)."""
        self.advance(ts_ms)
        p = self.params
        rng = self._rng
        mean_w = self.mean_power_w(ts_ms)
        share_of_peak = mean_w / p.peak_power_w if p.peak_power_w else 0.0
        out: dict[str, float] = {}
        phasors_v = []
        phasors_i = []
        tot_p = tot_q = tot_s = 0.0
        for i in range(3):
            n = i + 1
            if i >= self.phases:
                for q in ("voltage", "current", "power", "reactive_power", "apparent_power"):
                    out[f"{q}_l{n}"] = 0.0
                out[f"power_factor_l{n}"] = 1.0
                phasors_v.append(0j)
                phasors_i.append(0j)
                continue
            # The feeder drops a few volts under load; small fast noise on top.
            u = p.voltage_v + self._v_offset[i] - 4.0 * share_of_peak + rng.gauss(0.0, 0.3)
            pf = min(1.0, max(0.3, p.cos_phi + rng.gauss(0.0, 0.005)))
            p_target = mean_w * self._shares[i] * (1.0 + rng.gauss(0.0, p.noise))
            current = max(0.0, p_target) / (u * pf)
            s = u * current
            power = s * pf  # P = U·I·cos φ exactly
            reactive = s * math.sqrt(max(0.0, 1.0 - pf * pf))
            out[f"voltage_l{n}"] = u
            out[f"current_l{n}"] = current
            out[f"power_l{n}"] = power
            out[f"reactive_power_l{n}"] = reactive
            out[f"apparent_power_l{n}"] = s
            out[f"power_factor_l{n}"] = pf
            tot_p += power
            tot_q += reactive
            tot_s += s
            angle = _PHASE_ANGLE_RAD[i]
            phasors_v.append(u * complex(math.cos(angle), math.sin(angle)))
            phi = math.acos(pf)
            phasors_i.append(current * complex(math.cos(angle - phi), math.sin(angle - phi)))
        out["voltage_l1_l2"] = abs(phasors_v[0] - phasors_v[1]) if self.phases == 3 else 0.0
        out["voltage_l2_l3"] = abs(phasors_v[1] - phasors_v[2]) if self.phases == 3 else 0.0
        out["voltage_l3_l1"] = abs(phasors_v[2] - phasors_v[0]) if self.phases == 3 else 0.0
        out["current_n"] = abs(sum(phasors_i)) if self.phases == 3 else out["current_l1"]
        out["power_total"] = tot_p
        out["reactive_power_total"] = tot_q
        out["apparent_power_total"] = tot_s
        out["power_factor_total"] = tot_p / tot_s if tot_s else 1.0
        out["frequency"] = (
            p.frequency_hz
            + 0.02 * math.sin(2.0 * math.pi * ts_ms / 600_000.0)
            + rng.gauss(0.0, 0.004)
        )
        out["power_demand_total"] = self._demand_w(ts_ms)
        out.update(self.counters)
        return out

    def _demand_w(self, ts_ms: int) -> float:
        points = 16
        step = _DEMAND_WINDOW_MS / (points - 1)
        return sum(self.mean_power_w(int(ts_ms - k * step)) for k in range(points)) / points

    # -- persistence -------------------------------------------------------------------
    def state(self) -> dict:
        return {"counters": dict(self.counters), "last_ts_ms": self.last_ts_ms}

    def restore(self, state: dict) -> None:
        for name, value in state.get("counters", {}).items():
            if name in self.counters:
                self.counters[name] = float(value)
        self.last_ts_ms = state.get("last_ts_ms")
