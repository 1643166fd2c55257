"""Checks of what the firmware does when the heap (or the flash) runs short, run ON MicroPython
(unix port): the poller shares the plans of meters of one model, keeps polling through
MemoryErrors and loses as few readings as it can, the flash log keeps the readings in RAM when a record cannot be written, and a desired
configuration given up for lack of memory causes one restart, not one per delivery. Driven by
test_out_of_memory.py:

    micropython -X heapsize=128K mpy_oom_checks.py <flash image> <check name>
Prints "ok <check>" on success; an AssertionError (exit 1) says what broke."""

import asyncio
import builtins
import gc
import os
import sys

from mpy_log_helpers import NOW_MS, Capture, wipe
from mpy_log_helpers import readings as log_readings

TICK_S = NOW_MS // 1000 + 60


# -- the poller ----------------------------------------------------------------------------


class Master:
    """An RTU master whose meter answers every request with registers holding 200.0 (f32)."""

    def __init__(self):
        self.requests = 0

    async def read(self, unit, pdu, timeout_ms, retries, stats=None):
        self.requests += 1
        count = pdu[3] << 8 | pdu[4]
        return (b"\x43\x48\x00\x00" * count)[: 2 * count]


class Sink:
    """The buffer as the poller sees it; the first `fail` appends (all if < 0) raise
    MemoryError before taking anything, as Buffer.append promises."""

    def __init__(self, fail=0):
        self.fail = fail
        self.calls = 0
        self.got = []

    def append(self, readings):
        self.calls += 1
        if self.fail:
            self.fail -= 1
            raise MemoryError("no room for the readings")
        self.got.extend(readings)


class Clock:
    """A board whose clock moves 250 ms each time it is read and runs 1000x faster than the
    host's, so run() goes through many ticks in a fraction of a second."""

    clock_scale = 1000

    def __init__(self):
        self.t = NOW_MS

    def utc_ms(self):
        self.t += 250
        return self.t


class FlakyValues:
    """protocols.values with a decode that runs out of memory on the listed calls."""

    def __init__(self, real, fail_calls):
        self.real = real
        self.fail_calls = fail_calls
        self.calls = 0

    def decode(self, *args):
        self.calls += 1
        if self.calls in self.fail_calls:
            raise MemoryError("decode")
        return self.real.decode(*args)


_METERS = []


def meters():
    """Two SDM630 meters with five quantities each (the profile is loaded once)."""
    from firmware.meter import Meter

    if not _METERS:
        import protocols
        from protocols.profiles import load_profile, release

        profile = load_profile("sdm630")
        names = ["voltage_l1", "current_l1", "power_total", "energy_import", "frequency"]
        for i in (1, 2):
            entry = {"id": i, "name": f"m{i}", "bus": "b1", "unit": i, "profile": "sdm630",
                     "interval_s": 10, "quantities": names}  # fmt: skip
            _METERS.append((entry, profile))
        profile = None
        release()  # as the app does: the profile code is not needed once meters exist
        sys.modules.pop("protocols.profiles", None)
        del protocols.profiles
        gc.collect()

    return [Meter(e, p) for e, p in _METERS]


def poller(sink, master=None, board=None):
    from firmware.poller import Poller

    bus = {"type": "rtu", "id": "b1", "port": "-", "timeout_ms": 100, "retries": 0}
    return Poller(bus, meters(), sink, board or Clock(), master=master or Master())


def reference():
    """The readings of one tick with nothing running short."""
    sink = Sink()
    asyncio.run(poller(sink).poll_tick(TICK_S))
    assert len(sink.got) == 10, sink.got
    return sink.got


def check_poller_retries_append(d):
    want = reference()
    sink = Sink(fail=1)
    p = poller(sink)
    asyncio.run(p.poll_tick(TICK_S))
    assert sink.got == want, (sink.got, want)
    assert p.memory_errors == 1 and p.dropped_readings == 0, (p.memory_errors, p.dropped_readings)
    st = p.status()
    assert st["memory_errors"] == 1 and st["dropped_readings"] == 0, st
    print("ok poller_retries_append")


def check_poller_retries_decode(d):
    import firmware.poller as poller_module

    want = reference()
    real = poller_module.values
    poller_module.values = FlakyValues(real, (1, 7))  # one value of each meter, once
    try:
        sink = Sink()
        p = poller(sink)
        asyncio.run(p.poll_tick(TICK_S))
    finally:
        poller_module.values = real
    assert sink.got == want, (sink.got, want)
    assert p.memory_errors == 2 and p.dropped_readings == 0, (p.memory_errors, p.dropped_readings)
    print("ok poller_retries_decode")


async def _run_ticks(p, ticks, timeout_ms=10000):
    task = asyncio.create_task(p.run())
    waited = 0
    while p.cycles < ticks and not task.done() and waited < timeout_ms:
        await asyncio.sleep_ms(10)
        waited += 10
    ended = task.done()
    if ended:
        try:
            task.result() if hasattr(task, "result") else await task
        except MemoryError as e:
            raise AssertionError(f"run() ended with {e!r} after {p.cycles} ticks") from None
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    assert not ended, f"run() ended after {p.cycles} ticks"
    assert p.cycles >= ticks, p.cycles


def check_poller_drops_and_goes_on(d):
    sink = Sink(fail=-1)  # the buffer never has room
    master = Master()
    p = poller(sink, master)
    asyncio.run(_run_ticks(p, 3))
    assert sink.got == [], sink.got
    # every tick polled both meters (5 requests or fewer each) and counted what it lost
    assert master.requests >= 3 * 2, master.requests
    assert p.dropped_readings == 10 * p.cycles, (p.dropped_readings, p.cycles)
    assert p.memory_errors >= p.cycles, (p.memory_errors, p.cycles)
    for st in p.stats.values():
        assert st.polls_ok == p.cycles and st.consecutive_failures == 0, st.as_status()
    print("ok poller_drops_and_goes_on")


def check_poller_run_survives_a_failing_tick(d):
    sink = Sink()
    p = poller(sink)
    plan_for = p.planner.plan_for
    calls = []

    def flaky(t_s):
        calls.append(t_s)
        if len(calls) == 1:
            raise MemoryError("plan")
        return plan_for(t_s)

    p.planner.plan_for = flaky
    asyncio.run(_run_ticks(p, 2))
    assert p.memory_errors == 1, p.memory_errors
    assert len(sink.got) == 10 * p.cycles, (len(sink.got), p.cycles)
    print("ok poller_run_survives_a_failing_tick")


def check_poller_plans_of_one_model_are_shared(d):
    p = poller(Sink())
    plan = p.planner.plan_for(TICK_S)
    assert [unit for unit, _ in plan] == [1, 2], plan
    assert plan[0][1] is plan[1][1], plan  # same model, same quantities: one request list
    formats = {}  # repr -> ids of the formats (type, orders, scale, offset, na) with it
    for _pdu, parts in plan[0][1]:
        for i in range(0, len(parts), 3):
            formats.setdefault(repr(parts[i + 2]), set()).add(id(parts[i + 2]))
    assert len(formats) < 5, formats  # five quantities, fewer ways to decode them
    assert [len(ids) for ids in formats.values()] == [1] * len(formats), formats
    print("ok poller_plans_of_one_model_are_shared")


class _Spec:
    """A quantity of a made-up profile: one u16 holding register at address 0, code 1."""

    code = count = 1
    function = 3
    address = 0
    type = "u16"
    word_order = byte_order = "big"
    offset = 0
    na = None

    def __init__(self, scale):
        self.scale = scale


class _Profile:
    model = "made_up"
    max_registers = 125
    turnaround_ms = None

    def __init__(self, scale):
        self.quantities = {"x": _Spec(scale)}

    def readable_blocks(self, function):
        return []


def check_poller_keeps_int_and_float_scales_apart(d):
    from firmware.meter import Meter
    from firmware.poller import Poller

    # 2 == 2.0, but a u16 scaled by 2 is an int and by 2.0 a float: not one shared format
    meters = []
    for unit, scale in ((1, 2), (2, 2.0)):
        entry = {"id": unit, "name": "m", "bus": "b1", "unit": unit, "interval_s": 10}
        meters.append(Meter(entry, _Profile(scale)))
    sink = Sink()
    bus = {"type": "rtu", "id": "b1", "port": "-", "timeout_ms": 100, "retries": 0}
    asyncio.run(Poller(bus, meters, sink, Clock(), master=Master()).poll_tick(TICK_S))
    got = {channel >> 8: value for channel, _ts, value in sink.got}
    assert got == {1: 2 * 0x4348, 2: 2 * 0x4348} and type(got[1]) is int, got
    assert type(got[2]) is float, got
    print("ok poller_keeps_int_and_float_scales_apart")


# -- the flash log -------------------------------------------------------------------------

_open = builtins.open


class TornFile:
    """A segment file whose write stores half the data, then fails (flash full)."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def write(self, data):
        self.f.write(bytes(data[: len(data) // 2]))
        raise OSError(28)  # ENOSPC

    def close(self):
        self.f.close()


class Faults:
    """open() for firmware.flashlog: the next appends to a segment ("ab") fail as planned:
    "torn" (half the record written, then OSError), "memory" (MemoryError at open), "error"
    (OSError at open), "ok"."""

    def __init__(self):
        self.plan = []
        self.failed = 0

    def __call__(self, path, mode="r"):
        if mode != "ab" or not self.plan:
            return _open(path, mode)
        what = self.plan.pop(0)
        if what == "ok":
            return _open(path, mode)
        self.failed += 1
        if what == "memory":
            raise MemoryError("open")
        if what == "error":
            raise OSError(5)  # EIO
        return TornFile(_open(path, mode))


def readings(n, first=0):
    return log_readings(n, first, age_ms=600000)


def faulty_log():
    import firmware.flashlog as flashlog

    faults = Faults()
    flashlog.open = faults  # module globals come before builtins
    return faults


def everything(d):
    """Every reading on flash, read by a Buffer opened afresh (as after a restart; the
    caller's Buffer is gone: two of them do not fit the heap with the readings)."""
    from firmware.flashlog import Buffer

    gc.collect()
    b = Buffer(d)
    cap = Capture()
    assert b.next_batch(1000, NOW_MS, encode=cap) is not None
    return cap.got, b


def check_buffer_torn_write_loses_nothing(d):
    from firmware.flashlog import Buffer

    wipe(d)
    faults = faulty_log()
    rs = readings(60)
    b = Buffer(d)
    b.append(rs[:40])
    faults.plan = ["torn"]
    b.append(rs[40:48])  # the record is full; its write fails half-way: kept in RAM
    assert faults.failed == 1 and b.depth() == 48, (faults.failed, b.depth())
    b.append(rs[48:60])  # written first (not after the torn tail), then 12 more wait
    assert b.flush() is True
    assert b.depth() == 60, b.depth()
    b = None
    got, b2 = everything(d)
    assert got == rs, (len(got), got[:3])
    assert b2.torn_records == 1, b2.torn_records  # the half record, where a power cut leaves one
    print("ok buffer_torn_write_loses_nothing")


def check_buffer_memory_error_at_flush_is_retried(d):
    from firmware.flashlog import Buffer

    wipe(d)
    faults = faulty_log()
    rs = readings(50)
    b = Buffer(d)
    faults.plan = ["memory"]
    b.append(rs)  # the full record's flush collects and writes it on the second try
    assert faults.failed == 1 and b.unsent == 48 and b.depth() == 50, (b.unsent, b.depth())
    b.flush()
    b = None
    got, _ = everything(d)
    assert got == rs, len(got)
    print("ok buffer_memory_error_at_flush_is_retried")


def check_buffer_failing_flash_keeps_ram_readings(d):
    from firmware.flashlog import Buffer

    wipe(d)
    faults = faulty_log()
    rs = readings(60)
    b = Buffer(d)
    faults.plan = ["error"] * 8
    b.append(rs[:48])  # full, not written: kept in RAM
    assert b.depth() == 48 and b.unsent == 0, (b.depth(), b.unsent)
    for attempt in range(2):  # no room for more: refused whole, nothing half-taken
        try:
            b.append(rs[48:53])
            raise AssertionError("an append past a full record that cannot be written")
        except OSError:
            pass
        assert b.depth() == 48 and b.unsent == 0, (attempt, b.depth(), b.unsent)
    assert b.flush() is False and b.depth() == 48, b.depth()  # logged, kept, not raised
    try:
        b.next_batch(1000, NOW_MS, encode=Capture())  # must not read a record over them
        raise AssertionError("a batch taken while the RAM readings could not be written")
    except OSError:
        pass
    assert b.depth() == 48 and b.next_seq == 1, (b.depth(), b.next_seq)
    faults.plan = []  # the flash works again
    b.append(rs[48:60])
    cap = Capture()
    batch = b.next_batch(1000, NOW_MS, encode=cap)
    assert batch.seq == 1 and cap.got == rs, (batch.seq, len(cap.got))
    assert b.dropped == 0 and b.depth() == 60, (b.dropped, b.depth())
    print("ok buffer_failing_flash_keeps_ram_readings")


def check_buffer_long_append_counts_what_it_cannot_keep(d):
    from firmware.flashlog import Buffer

    wipe(d)
    faults = faulty_log()
    rs = readings(100)
    b = Buffer(d)
    faults.plan = ["ok"] + ["error"] * 4
    b.append(rs)  # 48 written, 48 held in RAM, the last 4 have no room: counted as dropped
    assert b.dropped == 4 and b.depth() == 96, (b.dropped, b.depth())
    faults.plan = []
    b.flush()
    b = None
    got, b2 = everything(d)
    assert got == rs[:96], len(got)
    print("ok buffer_long_append_counts_what_it_cannot_keep")


# -- configuration -------------------------------------------------------------------------


async def _config(d):
    from firmware.configmgr import ConfigManager

    restarts = []
    reports = []

    async def report(*a):
        reports.append(a)

    async def no_room(payload):
        raise MemoryError("fragmented")

    handled = []

    async def fine(payload):
        handled.append(payload)
        return "applied"

    def manager(handle):
        m = ConfigManager(d, "gw", [b"k"], None, report, lambda: None, lambda: None,
                          lambda: False, lambda: 0, restart=lambda: restarts.append(1))  # fmt: skip
        m.boot(None)
        m.handle = handle
        return m

    async def deliver(m, payload, steps=3):
        m.on_desired(payload)
        for _ in range(steps):
            await m.step()

    doc_a = b'{"alg": "HMAC-SHA256", "doc": "{\\"version\\": 7}", "sig": "aa"}'
    doc_b = b'{"alg": "HMAC-SHA256", "doc": "{\\"version\\": 8}", "sig": "bb"}'
    m = manager(no_room)
    await deliver(m, doc_a)
    assert restarts == [1], restarts  # retried, saved, restart asked for: a fresh heap
    m = manager(no_room)  # after the restart: checked first, still no room: given up
    m.on_desired(doc_a)  # the broker delivers the retained document again on connect
    for _ in range(4):
        await m.step()
    assert restarts == [1], restarts  # the re-delivery is checked here, not after a restart
    assert len(reports) == 2, reports
    for r in reports:
        assert r[2] == "rejected" and "out of memory" in r[3] and "send it again" in r[3], r
    for _ in range(3):  # every reconnect delivers it again, every restart too: no more restarts
        m = manager(no_room)
        await deliver(m, doc_a)
        assert m._queue == [] and restarts == [1], (m._queue, restarts)
    assert len(reports) == 5 and reports[-1][2] == "rejected", reports
    assert "desired.pending" not in os.listdir(d), os.listdir(d)
    # checked with room to spare, it still had its restart: short again, no second one
    m = manager(fine)
    await deliver(m, doc_a, 1)
    assert handled == [doc_a], handled
    m.handle = no_room
    await deliver(m, doc_a)
    assert restarts == [1] and len(reports) == 6, (restarts, reports)
    # a different document (sent again: a new version, a new signature) clears the mark...
    m = manager(fine)
    await deliver(m, doc_b, 1)
    assert handled == [doc_a, doc_b] and "desired.restarted" not in os.listdir(d), os.listdir(d)
    # ... and has its one restart for lack of memory, then no more
    m.handle = no_room
    await deliver(m, doc_b)
    assert restarts == [1, 1], restarts
    m = manager(no_room)
    m.on_desired(doc_b)
    for _ in range(4):
        await m.step()
    m = manager(no_room)
    await deliver(m, doc_b)
    assert restarts == [1, 1] and len(reports) == 9, (restarts, reports)
    print("ok config_given_up_restarts_once")


def check_config_given_up_restarts_once(d):
    asyncio.run(_config(d))


def main():
    name = sys.argv[2]
    if name.startswith("poller"):  # no flash; the profile first, while the heap is in one piece
        meters()
        gc.collect()
        globals()["check_" + name](None)
        return
    from firmware.boards import load

    board = load("unix", {"flash_image": sys.argv[1], "flash_block_size": 512, "flash_blocks": 256})
    d = board.mount_flash() + ("/config" if name.startswith("config") else "/log")
    try:
        os.mkdir(d)
    except OSError:
        pass
    globals()["check_" + name](d)


main()
