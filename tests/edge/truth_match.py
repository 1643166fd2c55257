"""Pairs the readings a gateway delivered with the requests hw_sim's meters answered, so a test
can prove each reading is a value served for it, none twice, and which served values never
arrived. Matching is by request, never by rounding the ground truth's timestamps to ticks.
Also writes the scenario of such meters for `hw-sim run`, which keeps their wire timing
independent of the test's own process.

A reading carries its tick T (whole seconds); the ground truth carries the simulated moment a
request reached its meter, which under load can lie past the next second boundary. The agent
polls tick T at or after T on the wall clock (hw_sim's clock at speed 1 is the wall clock and
never lags it), reads each quantity of a meter once per tick, and ends the poll of one tick
before it starts the next. So the reading of a quantity at tick T came from the first
request for it that reached the meter at or after T: that request's first attempt or a retry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from protocols.profiles import Profile
from protocols.quantities import name_of


class Request:
    """One request as the meters saw it: each attempt (the first, then its retries) is the
    values served for it, empty when a fault kept them from the gateway."""

    def __init__(self, unit: int, key: frozenset[str], ts_ms: int) -> None:
        self.unit = unit
        self.key = key  # the quantities the request reads
        self.first_ts_ms = ts_ms
        self.last_ts_ms = ts_ms
        self.attempts: list[dict[str, float]] = []
        self.claimed: set[str] = set()  # quantities a reading was matched to

    def served(self, quantity: str) -> list[float]:
        return [a[quantity] for a in self.attempts if quantity in a]

    def __repr__(self) -> str:
        return (
            f"Request(unit {self.unit}, {sorted(self.key)} at {self.first_ts_ms}, {self.attempts})"
        )


def requests_on_bus(
    records: Iterable[dict[str, Any]],
    profile: Profile,
    retries: int,
    starts_ms: Iterable[int] = (),
) -> list[Request]:
    """The requests that reached the meters of one bus, in order, from the ground truth's value
    and fault records (all meters of the bus have ``profile``).

    An attempt is one fault record or the value records of one answer (same unit, same
    ts_ms). The attempts of one request follow each other on the bus, 1 + retries at most;
    a gateway start (``starts_ms``, wall clock before it) between two attempts separates them.
    """

    def covered(req: dict[str, int]) -> frozenset[str]:
        lo, hi = req["address"], req["address"] + req["count"]
        return frozenset(
            n for n, q in profile.quantities.items()
            if q.function == req["function"] and lo <= q.address and q.address + q.count <= hi
        )  # fmt: skip

    attempts: list[tuple[int, int, set[str], dict[str, float]]] = []
    for r in records:
        if r["type"] == "fault":
            attempts.append((r["ts_ms"], r["unit"], set(covered(r["request"])), {}))
        elif r["type"] == "value":
            last = attempts[-1] if attempts else None
            if last is None or last[:2] != (r["ts_ms"], r["unit"]) or r["quantity"] in last[3]:
                last = (r["ts_ms"], r["unit"], set(), {})
                attempts.append(last)
            last[2].add(r["quantity"])
            last[3][r["quantity"]] = r["value"]
    starts = sorted(starts_ms)
    out: list[Request] = []
    for ts, unit, key, values in attempts:
        req = out[-1] if out else None
        if (
            req is None
            or (req.unit, req.key) != (unit, frozenset(key))
            or len(req.attempts) > retries
            or any(req.last_ts_ms < s <= ts for s in starts)
        ):
            req = Request(unit, frozenset(key), ts)
            out.append(req)
        req.attempts.append(values)
        req.last_ts_ms = ts
    return out


def match_readings(
    requests: list[Request],
    readings: Iterable[tuple[int, int, Any]],
    unit_of: Callable[[int], int],
    quantise: Callable[[int, float], Any],
) -> None:
    """Match each reading (channel, ts_ms, value) to the request that produced it; assert its
    value is one that request served (as the uplink quantises it) and that no request is
    matched twice. unit_of: the Modbus unit of a channel's device id."""
    by_quantity: dict[tuple[int, str], list[Request]] = {}
    for req in requests:
        for q in req.key:
            by_quantity.setdefault((req.unit, q), []).append(req)
    for ch, ts_ms, v in readings:
        unit, q = unit_of(ch >> 8), name_of(ch & 0xFF)
        req = next((r for r in by_quantity.get((unit, q), ()) if r.first_ts_ms >= ts_ms), None)
        assert req is not None, f"{q} of unit {unit} at {ts_ms} = {v}: no request for it after"
        served = [quantise(ch, x) for x in req.served(q)]
        assert v in served, f"{q} of unit {unit} at {ts_ms} = {v}, but {req} served {served}"
        assert q not in req.claimed, f"{q} of unit {unit} at {ts_ms}: {req} delivered twice"
        req.claimed.add(q)


def lost_polls(requests: list[Request], wanted: Iterable[str]) -> list[list[Request]]:
    """After match_readings: runs of requests of one meter whose served values (of the wanted
    quantities) reached no reading, as a meter poll cut short leaves them (the agent stores a
    meter's readings when its poll ends). Requests that served nothing do not end a run."""
    wanted = set(wanted)
    runs: list[list[Request]] = []
    run: list[Request] | None = None
    for req in requests:
        if run is not None and req.unit != run[0].unit:
            run = None
        served = {q for a in req.attempts for q in a if q in wanted}
        if not served:
            continue
        if served <= req.claimed:
            run = None
            continue
        if run is None:
            run = []
            runs.append(run)
        run.append(req)
    return runs


def unexplained_losses(
    runs: list[list[Request]], interruptions_ms: Iterable[int], before_ms: int, after_ms: int = 500
) -> list[list[Request]]:
    """The runs of lost_polls() that no interruption explains: a run is explained when all of
    its requests reached the meter within before_ms before (or after_ms after) one of the
    interruptions (a SIGKILL, the meters' stop: wall clock ms), as a poll cut short by it."""
    moments = list(interruptions_ms)
    return [
        run for run in runs
        if not any(t - before_ms <= run[0].first_ts_ms and run[-1].last_ts_ms <= t + after_ms
                   for t in moments)
    ]  # fmt: skip


def scenario_toml(
    link: Path,
    baud: int,
    units: Iterable[int],
    faults: Iterable[dict[str, Any]] = (),
    seed: int = 7,
) -> str:
    """A hw-sim scenario: sdm630 meters m<unit> with faults on one bus "b1" at baud 8N1,
    served on the PTY link (a path to open like /dev/ttyUSB0)."""
    lines = [f"[sim]\nseed = {seed}", '[[bus]]\nname = "b1"', f'baud = {baud}\nparity = "N"']
    lines.append(f'link = "{link}"')
    for u in units:
        lines.append(f'[[bus.meter]]\nname = "m{u}"\nprofile = "sdm630"\nunit = {u}')
        for f in faults:
            lines.append(f'[[bus.meter.faults]]\nkind = "{f["kind"]}"\nrate = {f["rate"]}')
    return "\n".join(lines) + "\n"
