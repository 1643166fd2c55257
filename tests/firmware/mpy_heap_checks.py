"""Checks of the firmware's answers to a fragmented heap that run ON MicroPython (unix port):
the uplink takes smaller batches on MemoryError instead of reconnecting over and over, and a
desired configuration the heap had no room to check is retried, then checked after a restart,
then given up on (reported), never retried forever. Driven by test_heap_backlog.py:

    micropython -X heapsize=96K mpy_heap_checks.py <folder> <check name>
Prints "ok <check>" on success; an AssertionError (exit 1) says what broke."""

import asyncio
import os
import sys

from firmware.configmgr import ConfigManager
from firmware.flashlog import Batch
from firmware.uplink import GROW_AFTER, MIN_BATCH_READINGS, Uplink


class Client:
    on_message = None


class FragmentedBuffer:
    """next_batch fails for more than room readings; persist_then_fail: the batch is stored
    (next_seq moves on) before the MemoryError, as when it strikes after the batch file."""

    def __init__(self, room, persist_then_fail=False):
        self.room = room
        self.persist_then_fail = persist_then_fail
        self.next_seq = 1
        self.calls = []

    def next_batch(self, n, now_ms):
        self.calls.append(n)
        if self.persist_then_fail:
            self.persist_then_fail = False
            self.next_seq += 1
            raise MemoryError("after the batch file")
        if n > self.room:
            raise MemoryError("fragmented")
        b = Batch(self.next_seq, False, n, b"x", now_ms)
        self.next_seq += 1
        return b


def uplink(buf):
    return Uplink(Client(), buf, "gw", 1, "test", lambda: 0, max_batch_readings=200)


def check_uplink_halves(d):
    buf = FragmentedBuffer(30)
    up = uplink(buf)
    b = up._take(200, 0)
    assert buf.calls == [200, 100, 50, 25], buf.calls
    assert b.count == 25 and b.seq == 1 and up.memory_retries == 3 and up.batch_cap == 25
    buf.calls = []
    for _ in range(GROW_AFTER - 1):  # the lowered cap holds (the first counts), then grows
        assert up._take(200, 0).count == 25
    assert buf.calls == [25] * (GROW_AFTER - 1) and up.batch_cap == 50, (buf.calls, up.batch_cap)
    buf.room = 1000
    for _ in range(3 * GROW_AFTER):
        up._take(200, 0)
    assert up.batch_cap == 200, up.batch_cap
    # below the floor: MemoryError goes to the run loop (which reconnects, backing off)
    buf = FragmentedBuffer(MIN_BATCH_READINGS - 1)
    up = uplink(buf)
    try:
        up._take(200, 0)
        raise AssertionError("no MemoryError below the floor")
    except MemoryError:
        pass
    assert buf.calls[-1] == MIN_BATCH_READINGS and buf.next_seq == 1, buf.calls
    # stored before the error: its seq comes back, to be sent as stored (nothing skipped)
    buf = FragmentedBuffer(1000, persist_then_fail=True)
    up = uplink(buf)
    assert up._take(200, 0) == 1 and buf.next_seq == 2
    assert up._take(200, 0).seq == 2
    print("ok uplink_halves")


async def _config(d):
    restarts = []
    reports = []

    async def report(*a):
        reports.append(a)

    async def no_room(payload):
        raise MemoryError("fragmented")

    async def fine(payload):
        return "applied"

    def manager():
        m = ConfigManager(d, "gw", [b"k"], None, report, lambda: None, lambda: None,
                          lambda: False, lambda: 0, restart=lambda: restarts.append(1))  # fmt: skip
        m.boot(None)
        return m

    pending = d + "/desired.pending"
    m = manager()
    m.handle = no_room
    m.on_desired(b'{"envelope": 1}')
    await m.step()  # collected and queued again
    assert m._queue == [b'{"envelope": 1}'] and not restarts
    await m.step()  # saved; a restart checks it on a fresh heap
    assert restarts == [1] and m._queue == [] and pending.split("/")[-1] in os.listdir(d)
    m = manager()  # after the restart: first in the queue
    assert m._queue == [b'{"envelope": 1}'], m._queue
    m.handle = no_room
    await m.step()  # still no room: given up on, reported, never retried forever
    assert restarts == [1] and m._queue == [], (restarts, m._queue)
    assert "desired.pending" not in os.listdir(d)
    assert len(reports) == 1 and reports[0][2] == "rejected" and "memory" in reports[0][3]
    # a document that fits after the restart: the saved copy is forgotten
    m = manager()
    m.handle = no_room
    m.on_desired(b"doc 2")
    await m.step()
    await m.step()
    m = manager()
    m.handle = fine
    await m.step()
    assert "desired.pending" not in os.listdir(d) and m._memory_tries == 0
    print("ok config_memory")


def check_config_memory(d):
    asyncio.run(_config(d))


def main():
    d = sys.argv[1]
    try:
        os.mkdir(d)
    except OSError:
        pass
    globals()["check_" + sys.argv[2]](d)


main()
