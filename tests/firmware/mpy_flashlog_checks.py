"""Flash-log checks that run ON MicroPython (unix port), on littlefs in a file-backed block
device: torn writes at every byte offset, crashes between the batch file and the state,
persistence of seq and boot, the bound with drop-oldest. Driven by test_flashlog.py:

    micropython -X heapsize=96K mpy_flashlog_checks.py <flash image> <check name>
Prints "ok <check>" on success; an AssertionError (exit 1) says what broke."""

import os
import sys

from mpy_log_helpers import NOW_MS, Capture, readings, wipe

from firmware.boards import load
from firmware.flashlog import Buffer


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def check_torn_every_offset(d):
    wipe(d)
    b = Buffer(d, flush_count=2)
    b.increment_boot()
    rs = readings(6)
    b.append(rs)  # three records of two readings: the last is "the one being written"
    segs = [n for n in os.listdir(d) if n.startswith("s0")]
    assert len(segs) == 1, segs
    seg = d + "/" + segs[0]
    data = read(seg)
    state = read(d + "/state")
    rec_len = len(data) // 3
    assert rec_len * 3 == len(data)
    start = len(data) - rec_len
    cases = 0
    for off in range(start, len(data)):
        for mode in (0, 1, 2):
            wipe(d)
            write(d + "/state", state)
            if mode == 0:  # power cut: the write stopped at off
                torn = data[:off]
            elif mode == 1:  # the rest of the record is erased flash
                torn = data[:off] + b"\xff" * (len(data) - off)
            else:  # the rest is garbage (a page programmed with something else)
                torn = data[:off] + bytes((i * 37 + off) & 0xFF for i in range(len(data) - off))
                if off == start:
                    torn = data[:off] + b"\xa5\x01" + torn[off + 2 :]
            write(seg, torn)
            b = Buffer(d, flush_count=2)
            assert b.boot == 1, b.boot
            cap = Capture()
            batch = b.next_batch(1000, NOW_MS, encode=cap)
            assert cap.got == rs[:4], (off, mode, len(cap.got))
            assert batch.seq == 1 and batch.count == 4
            assert b.torn_records == (0 if mode == 0 and off == start else 1), (off, mode)
            # the log goes on after the torn record: new readings are kept and sent
            b.append(readings(3, 100))
            batch = b.next_batch(1000, NOW_MS, encode=cap)
            assert cap.got == readings(3, 100) and batch.seq == 2, (off, mode)
            cases += 1
    print("ok torn_every_offset", cases)


def check_crash_between_batch_and_state(d):
    wipe(d)
    b = Buffer(d, flush_count=4)
    b.append(readings(8))
    b.flush()
    before = read(d + "/state")
    cap = Capture()
    batch = b.next_batch(4, NOW_MS, encode=cap)
    assert batch.seq == 1 and cap.got == readings(4)
    write(d + "/state", before)  # the state write never happened
    b = Buffer(d)
    assert b.unacked() == [1] and b.next_seq == 2
    again = b.batch(1)
    assert again.payload == batch.payload and again.count == 4  # identical bytes on resend
    batch2 = b.next_batch(100, NOW_MS, encode=cap)
    assert batch2.seq == 2 and cap.got == readings(4, 4)  # no reading sent twice
    print("ok crash_between_batch_and_state")


def check_seq_boot_ack_persist(d):
    wipe(d)
    b = Buffer(d, flush_count=48)
    assert b.increment_boot() == 1
    b.append(readings(10))
    b1 = b.next_batch(5, NOW_MS)  # the real codec
    b2 = b.next_batch(5, NOW_MS)
    assert (b1.seq, b2.seq) == (1, 2) and b.depth() == 10
    assert b.ack(1) == 5 and b.ack(1) == 0
    b.append(readings(3, 50))  # in RAM only: a power cut now loses these three
    b = Buffer(d)
    assert b.increment_boot() == 2
    assert b.unacked() == [2] and b.next_seq == 3 and b.depth() == 5
    assert b.batch(2).payload == b2.payload
    assert b.status()["acked_readings"] == 5
    assert b.ack(2, "refused: bad batch") == 5 and b.status()["dropped_readings"] == 5
    b.append(readings(2, 60))
    assert b.next_batch(100, NOW_MS).seq == 3
    write(d + "/b000000000009.tmp", b"half a batch")  # a batch write cut short
    b = Buffer(d)
    assert "b000000000009.tmp" not in os.listdir(d) and b.unacked() == [3]
    print("ok seq_boot_ack_persist")


def check_bound_drops_oldest(d):
    wipe(d)
    b = Buffer(d, max_bytes=3000, segment_bytes=1000, flush_count=10, batch_readings=1000)
    b.append(readings(200))
    st = b.status()
    assert st["file_bytes"] <= 3000, st
    assert st["dropped_readings"] > 0 and st["dropped_readings"] + b.depth() == 200, st
    cap = Capture()
    b.next_batch(1000, NOW_MS, encode=cap)
    assert cap.got == readings(200)[st["dropped_readings"] :]  # the newest are kept
    b = Buffer(d)
    assert b.status()["dropped_readings"] == st["dropped_readings"]
    print("ok bound_drops_oldest")


def check_historical_flag(d):
    wipe(d)
    b = Buffer(d, live_window_ms=120000)
    b.append([(0x0B01, NOW_MS - 1000, 1)])
    assert not b.next_batch(10, NOW_MS, encode=Capture()).historical
    b.append([(0x0B01, NOW_MS - 3600000, 1)])
    assert b.next_batch(10, NOW_MS, encode=Capture()).historical
    assert b.next_batch(10, NOW_MS) is None
    print("ok historical_flag")


def main():
    board = load("unix", {"flash_image": sys.argv[1], "flash_block_size": 512, "flash_blocks": 256})
    d = board.mount_flash() + "/log"
    globals()["check_" + sys.argv[2]](d)


main()
