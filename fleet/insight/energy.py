"""Energy per quarter hour and per period from the registers of energy meters (counters), not
from integrating power. Rules (docs/insight.md): a counter that drops starts a new segment
(reset or a swapped meter on the same channel) and the drop is never negative consumption;
across a gap in the data the counter difference is spread evenly over the missing quarter
hours and flagged "interpolated"; a quarter hour no reading can account for is "missing".
Pure: quarter-hour aggregates in, numbers out."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from fleet.insight.calendar import QUARTER_MS

MEASURED, INTERPOLATED, MISSING = "measured", "interpolated", "missing"


@dataclass(frozen=True)
class CounterBucket:
    """A counter's readings in one quarter hour (from storage.aggregates_15min): the first and
    last reading and the smallest and largest one, in the channel's unit."""

    ts_ms: int
    first: float
    last: float
    min: float
    max: float


@dataclass
class ChannelEnergy:
    """One meter's consumption per quarter hour (bucket start -> kWh, or m³ for water) and when
    it was in service: from its first quarter hour with data to `end_ts_ms` (now for a meter
    still configured, the end of its last quarter hour for one taken out)."""

    energy: dict[int, float] = field(default_factory=dict)
    interpolated: set[int] = field(default_factory=set)
    resets: list[int] = field(default_factory=list)  # quarter hours where a new segment began
    start_ts_ms: int | None = None
    end_ts_ms: int | None = None

    def status(self, ts_ms: int) -> str:
        if ts_ms in self.interpolated:
            return INTERPOLATED
        return MEASURED if ts_ms in self.energy else MISSING


def _drop(before: float, after: float) -> bool:
    # Counters are stored at their resolution (>= 1e-3); float noise is far below that.
    return after < before - 1e-9 * max(1.0, abs(before))


def counter_energy(
    buckets: Iterable[CounterBucket], scale: float, end_ts_ms: int | None = None
) -> ChannelEnergy:
    """Consumption per quarter hour of one counter channel; `scale` converts its unit to kWh
    (0.001 for Wh, the calorific value for m³ of gas, 1 to keep m³ of water).

    A quarter hour gets the increase from the previous quarter hour's last reading to its own
    last reading (so nothing between two readings is lost), or, after a gap or a reset, only
    the increase within itself. A drop inside a quarter hour (one reset) counts the rise
    before and after it: (max - first) + (last - min)."""
    out = ChannelEnergy()
    prev: CounterBucket | None = None
    for b in sorted(buckets, key=lambda x: x.ts_ms):
        inner_reset = _drop(b.first, b.min) or _drop(b.max, b.last)
        inner = (b.max - b.first) + (b.last - b.min) if inner_reset else b.last - b.first
        if inner_reset:
            out.resets.append(b.ts_ms)
        energy = inner
        if prev is not None:
            step = b.first - prev.last
            missing = (b.ts_ms - prev.ts_ms) // QUARTER_MS - 1
            if _drop(prev.last, b.first):
                if b.ts_ms not in out.resets:
                    out.resets.append(b.ts_ms)
            elif missing <= 0:
                energy += step
            else:
                share = step * scale / missing
                for k in range(1, missing + 1):
                    ts = prev.ts_ms + k * QUARTER_MS
                    out.energy[ts] = share
                    out.interpolated.add(ts)
        else:
            out.start_ts_ms = b.ts_ms
        out.energy[b.ts_ms] = energy * scale
        prev = b
    if prev is not None:
        last_end = prev.ts_ms + QUARTER_MS
        out.end_ts_ms = max(last_end, end_ts_ms) if end_ts_ms is not None else last_end
    return out


def power_energy(avg_power_w: dict[int, float], end_ts_ms: int | None = None) -> ChannelEnergy:
    """Where a meter has no energy register: the energy of each quarter hour from its average
    power (W) in it. Quarter hours without readings stay missing (never interpolated)."""
    out = ChannelEnergy()
    for ts, w in sorted(avg_power_w.items()):
        out.energy[ts] = w * 0.25 / 1000
    if out.energy:
        out.start_ts_ms = min(out.energy)
        last_end = max(out.energy) + QUARTER_MS
        out.end_ts_ms = max(last_end, end_ts_ms) if end_ts_ms is not None else last_end
    return out


class QuarterHour(NamedTuple):
    ts_ms: int
    energy_kwh: float | None  # None: missing
    status: str


def combine(
    channels: Sequence[ChannelEnergy], start_ts_ms: int, end_ts_ms: int
) -> list[QuarterHour]:
    """The quarter hours of [start, end) of several meters measuring one carrier in one
    building (summed). A quarter hour is measured when every meter in service then has a
    measured value, interpolated when some value is interpolated and none missing, missing
    when a meter in service has none or no meter is in service (before the first meter,
    between a removed meter and its replacement)."""
    out: list[QuarterHour] = []
    ts = start_ts_ms - start_ts_ms % QUARTER_MS
    serving_any = [c for c in channels if c.start_ts_ms is not None and c.start_ts_ms < end_ts_ms
                   and (c.end_ts_ms or 0) > ts]  # fmt: skip
    if len(serving_any) == 1:  # the common case, a building with one meter per carrier: fast
        ch = serving_any[0]
        lo, hi, energy, interp = ch.start_ts_ms or 0, ch.end_ts_ms or 0, ch.energy, ch.interpolated
        while ts < end_ts_ms:
            e = energy.get(ts) if lo <= ts < hi else None
            if e is None:
                out.append(QuarterHour(ts, None, MISSING))
            else:
                out.append(QuarterHour(ts, e, INTERPOLATED if ts in interp else MEASURED))
            ts += QUARTER_MS
        return out
    channels = serving_any
    while ts < end_ts_ms:
        total = 0.0
        status = MEASURED
        serving = 0
        for ch in channels:
            if ch.start_ts_ms is None or not ch.start_ts_ms <= ts < (ch.end_ts_ms or 0):
                continue
            serving += 1
            st = ch.status(ts)
            if st == MISSING:
                status = MISSING
                break
            if st == INTERPOLATED:
                status = INTERPOLATED
            total += ch.energy[ts]
        if serving == 0:
            status = MISSING
        out.append(QuarterHour(ts, None if status == MISSING else total, status))
        ts += QUARTER_MS
    return out


@dataclass(frozen=True)
class PeriodEnergy:
    """Consumption in one period and how much of the period the data covers: shares of its
    quarter hours up to now that are measured or interpolated, and the missing ranges."""

    label: str
    start_ts_ms: int
    end_ts_ms: int
    energy_kwh: float  # measured + interpolated; missing quarter hours add nothing
    interpolated_kwh: float
    quarter_hours: int  # of the period up to now
    measured_share: float | None  # None: the period has not begun
    interpolated_share: float | None
    missing: list[tuple[int, int]]  # [from, to) UTC ms

    @property
    def complete(self) -> bool:
        return not self.missing and self.quarter_hours > 0


def period_energy(
    channels: Sequence[ChannelEnergy],
    periods: Sequence[tuple[str, int, int]],
    now_ms: int,
) -> list[PeriodEnergy]:
    """PeriodEnergy of each (label, start, end) period, counting quarter hours before now."""
    out = []
    for label, start, end in periods:
        stop = min(end, now_ms - now_ms % QUARTER_MS)
        qhs = combine(channels, start, stop) if stop > start else []
        out.append(summarise(label, start, end, qhs))
    return out


def summarise(label: str, start: int, end: int, qhs: Sequence[QuarterHour]) -> PeriodEnergy:
    energy = sum(q.energy_kwh or 0.0 for q in qhs)
    interp = sum(q.energy_kwh or 0.0 for q in qhs if q.status == INTERPOLATED)
    n = len(qhs)
    measured = sum(1 for q in qhs if q.status == MEASURED)
    interpolated = sum(1 for q in qhs if q.status == INTERPOLATED)
    return PeriodEnergy(
        label,
        start,
        end,
        energy,
        interp,
        n,
        measured / n if n else None,
        interpolated / n if n else None,
        missing_ranges(qhs),
    )


def missing_ranges(qhs: Sequence[QuarterHour]) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for q in qhs:
        if q.status != MISSING:
            continue
        if ranges and ranges[-1][1] == q.ts_ms:
            ranges[-1] = (ranges[-1][0], q.ts_ms + QUARTER_MS)
        else:
            ranges.append((q.ts_ms, q.ts_ms + QUARTER_MS))
    return ranges
