"""The agent's poller against hw_sim meters: values equal the simulator's ground truth, faults
are counted, a silent meter backs off while the others keep their wall-clock schedule."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from edge.poller import BusPoller, MeterSpec, MeterStats
from hw_sim.faults import LateAnswers
from hw_sim.scenario import Building
from protocols.profiles import load_profile
from protocols.quantities import channel_id

QUANTITIES = ("voltage_l1", "current_l1", "power_total", "energy_import", "frequency")


class ListSink:
    def __init__(self) -> None:
        self.calls: list[list[tuple[int, int, Any]]] = []

    def append(self, readings: Any) -> None:
        self.calls.append(list(readings))

    @property
    def readings(self) -> list[tuple[int, int, Any]]:
        return [r for call in self.calls for r in call]


def _building(meters: list[dict[str, Any]], baud: int = 19200, parity: str = "N") -> Building:
    return Building({"bus": [{"name": "b1", "baud": baud, "parity": parity, "meter": meters}]})


def _rtu(path: str, baud: int = 19200, parity: str = "N", **kw: Any) -> dict[str, Any]:
    bus = {"type": "rtu", "id": "b1", "port": path, "baud": baud, "parity": parity,
           "stopbits": 1, "timeout_ms": 200, "retries": 1}  # fmt: skip
    bus.update(kw)
    return bus


def _meter(device_id: int, unit: int, profile: str = "sdm630", interval_s: int = 1) -> MeterSpec:
    p = load_profile(profile)
    names = tuple(q for q in QUANTITIES if q in p.quantities)
    return MeterSpec(device_id, f"m{unit}", unit, p, interval_s, names)


def _truth_by_channel(building: Building, ids: dict[str, int]) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for r in building.truth.values():
        if r["quantity"] not in QUANTITIES:
            continue  # served because a request spanned it, but not asked for
        out.setdefault(channel_id(ids[r["source"]], r["quantity"]), []).append(r["value"])
    return out


def _readings_by_channel(readings: list[tuple[int, int, Any]]) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for ch, _ts, v in readings:
        out.setdefault(ch, []).append(v)
    return out


def test_polled_values_equal_ground_truth_with_tick_timestamps() -> None:
    with _building([{"name": "m1", "profile": "sdm630", "unit": 1},
                    {"name": "m2", "profile": "sdm72dm", "unit": 2}]) as b:  # fmt: skip
        sink = ListSink()
        poller = BusPoller(_rtu(b.bus().path), [_meter(11, 1), _meter(12, 2, "sdm72dm")], sink)

        async def go() -> None:
            t = int(time.time()) + 1
            for tick in (t, t + 1):
                await poller.clock.sleep_until(tick)
                await poller.poll_tick(tick)
            poller.master.close()

        asyncio.run(go())
        # one store transaction per poll of a meter
        assert len(sink.calls) == 4
        assert {ts for _c, ts, _v in sink.readings} == {
            (int(poller.last_tick_s) - 1) * 1000,
            int(poller.last_tick_s) * 1000,
        }
        assert _readings_by_channel(sink.readings) == _truth_by_channel(b, {"m1": 11, "m2": 12})
        assert poller.stats[11].polls_ok == 2 and poller.stats[12].polls_ok == 2


def test_tcp_meter_values_equal_ground_truth() -> None:
    with Building(
        {"tcp": [{"name": "t1", "meter": [{"name": "m5", "profile": "sdm630", "unit": 5}]}]}
    ) as b:
        ep = b.tcp()
        sink = ListSink()
        bus = {"type": "tcp", "id": "t1", "host": "127.0.0.1", "port": ep.port,
               "timeout_ms": 500, "retries": 1}  # fmt: skip
        poller = BusPoller(bus, [_meter(5, 5)], sink)

        async def go() -> None:
            for tick in (100, 101, 102):
                await poller.poll_tick(tick)
            poller.master.close()

        asyncio.run(go())
        assert len(sink.readings) == 3 * len(QUANTITIES)
        assert _readings_by_channel(sink.readings) == _truth_by_channel(b, {"m5": 5})


def test_bus_faults_are_counted_and_only_good_answers_become_readings() -> None:
    faults = [{"kind": "crc_error", "rate": 0.15}, {"kind": "no_answer", "rate": 0.1},
              {"kind": "exception", "rate": 0.1}, {"kind": "truncated", "rate": 0.1}]  # fmt: skip
    with _building([{"name": "m1", "profile": "sdm630", "unit": 1, "faults": faults}], 38400) as b:
        sink = ListSink()
        poller = BusPoller(
            _rtu(b.bus().path, 38400, timeout_ms=80, retries=2), [_meter(1, 1)], sink
        )

        async def go() -> None:
            for tick in range(1000, 1020):
                await poller.poll_tick(tick)
            poller.master.close()

        asyncio.run(go())
        st: MeterStats = poller.stats[1]
        injected = {k: len(b.truth.faults("m1", fault=k)) for k in ("crc_error", "no_answer",
                                                                      "exception", "truncated")}  # fmt: skip
        assert st.crc_errors == injected["crc_error"] > 0
        assert st.timeouts == injected["no_answer"] > 0
        assert st.exceptions == injected["exception"] > 0
        assert st.frame_errors == injected["truncated"] > 0
        assert st.polls_ok + st.polls_failed == 20
        assert _readings_by_channel(sink.readings) == _truth_by_channel(b, {"m1": 1})


@pytest.mark.parametrize("retries", [1, 0])
def test_a_late_answer_never_passes_for_the_answer_to_another_request(retries: int) -> None:
    # A late answer (100 ms past the turnaround; the poller waits 80 ms) comes while the retry
    # waits, or, without retries, when the next request would already be on the line. RTU
    # answers carry no request id and these four requests have answers of one shape, so
    # only silence on the line keeps a late answer (or the retry's own answer, after it) from
    # being taken for the next request's: a voltage stored as power, and every later value of
    # the poll shifted by one.
    names = ("voltage_l1", "power_total", "voltage_l1_l2", "energy_import_l1")
    with _building([{"name": "m1", "profile": "sdm630", "unit": 1}], 38400) as b:
        b.bus().meters[1].faults = LateAnswers(100)  # type: ignore[assignment]
        sink = ListSink()
        meter = MeterSpec(1, "m1", 1, load_profile("sdm630"), 1, names)
        poller = BusPoller(_rtu(b.bus().path, 38400, timeout_ms=80, retries=retries), [meter], sink)
        assert {r.count for r in poller.planner.plan_for(0)} == {2}  # four requests, one shape

        async def go() -> None:
            for tick in range(1000, 1008):
                await poller.poll_tick(tick)
                await asyncio.sleep(0.2)  # ticks come a second apart: no answer is that late
            poller.master.close()

        asyncio.run(go())
        served: dict[int, list[Any]] = {}
        for r in b.truth.values("m1"):
            served.setdefault(channel_id(1, r["quantity"]), []).append(r["value"])
        late = len(b.truth.faults("m1", fault="late_answer"))
    got = _readings_by_channel(sink.readings)
    for ch, values in got.items():
        # each reading a value served for its own quantity, in order, none twice (after a
        # late answer the meter served the request twice: the poller keeps one of the two)
        left = iter(served[ch])
        assert all(v in left for v in values), (ch, values, served[ch])
    assert late >= 4 and poller.stats[1].timeouts >= late
    assert {ch: len(v) >= 4 for ch, v in got.items()} == {channel_id(1, n): True for n in names}


def test_silent_meter_backs_off_while_others_keep_schedule() -> None:
    with _building([{"name": "m1", "profile": "sdm630", "unit": 1}]) as b:
        sink = ListSink()
        # unit 9 is configured but nobody answers there
        poller = BusPoller(
            _rtu(b.bus().path, timeout_ms=150, retries=2), [_meter(1, 1), _meter(9, 9)], sink
        )

        async def go() -> None:
            task = asyncio.create_task(poller.run())
            await asyncio.sleep(6.5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(go())
        ticks = sorted({ts for _c, ts, _v in sink.readings})
        # the answering meter was read at every whole second, none skipped
        assert len(ticks) >= 5
        assert all(b - a == 1000 and a % 1000 == 0 for a, b in zip(ticks, ticks[1:], strict=False))
        assert poller.ticks_missed == 0
        silent = poller.stats[9]
        assert silent.polls_ok == 0 and silent.consecutive_failures >= 2
        assert silent.skipped_backoff >= 2
        # full retries only before backoff: far fewer than 3 timeouts per tick
        assert silent.timeouts < 3 * len(ticks) / 2


def test_next_tick_is_aligned_and_skips_missed_ticks_without_drift() -> None:
    poller = BusPoller(
        _rtu("/dev/null"), [_meter(1, 1, interval_s=10), _meter(2, 2, interval_s=15)], ListSink()
    )
    assert poller.next_tick(101.5) == 105
    assert poller.next_tick(110.0) == 110
    poller.last_tick_s = 110
    assert poller.next_tick(110.2) == 120
    # a cycle that ran until 143.4 skips 120, 130, 135, 140 and keeps the grid
    assert poller.next_tick(143.4) == 150
    assert poller._ticks_between(110, 150) == 4


class _FirstCallSink(ListSink):
    """A ListSink that sets `first` when the first meter's readings are stored (the poller
    then reads the other meters of the same tick)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = asyncio.Event()

    def append(self, readings: Any) -> None:
        super().append(readings)
        self.first.set()


def test_stop_between_ticks_lets_the_tick_in_progress_end_and_starts_no_other(
    sim_bus: Callable[..., Building],
) -> None:
    b = sim_bus("sdm630@1", "sdm630@2", "sdm630@3", baud=19200, parity="N")
    sink = _FirstCallSink()
    poller = BusPoller(_rtu(b.bus().path, timeout_ms=300), [_meter(u, u) for u in (1, 2, 3)], sink)

    async def go() -> None:
        task = asyncio.create_task(poller.run())
        await asyncio.wait_for(sink.first.wait(), 5)
        assert poller.polling  # meters 2 and 3 of this tick are still to be read
        await poller.stop_between_ticks(task)
        assert task.done() and not poller.polling

    asyncio.run(go())
    assert len(sink.calls) == 3  # the three polls of one tick, not one of another
    assert len({ts for _c, ts, _v in sink.readings}) == 1
    # every value the meters served reached the sink
    ids = {f"sdm630@{u}": u for u in (1, 2, 3)}
    assert _readings_by_channel(sink.readings) == _truth_by_channel(b, ids)
    assert {ch >> 8 for ch, _ts, _v in sink.readings} == {1, 2, 3}


def test_stop_between_ticks_cancels_a_tick_that_outlasts_its_timeout(
    sim_bus: Callable[..., Building],
) -> None:
    # Unit 9 never answers: with 3 attempts of 400 ms its tick takes over a second, more
    # than the stop is willing to wait (a stuck bus must not hold up a stop or a new config).
    b = sim_bus("sdm630@1", baud=19200, parity="N")
    poller = BusPoller(_rtu(b.bus().path, timeout_ms=400, retries=2), [_meter(9, 9)], ListSink())

    async def go() -> float:
        task = asyncio.create_task(poller.run())
        for _ in range(200):
            if poller.polling:
                break
            await asyncio.sleep(0.01)
        assert poller.polling
        started = time.monotonic()
        await poller.stop_between_ticks(task, timeout_s=0.2)
        assert task.done()
        return time.monotonic() - started

    assert asyncio.run(go()) < 0.6
    assert poller.master.port is None  # the port is closed: a new poller may open it
