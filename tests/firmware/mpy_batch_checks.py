"""Checks of the batch size cap that run ON MicroPython (unix port), on littlefs in a
file-backed block device: the flash log takes at most its batch_readings (96 unless the
settings say otherwise) and encodes them from the records where they lie, and the uplink
sends the live readings of one interval in as many full batches as they fill, back to back.
Driven by test_batch_cap.py:

    micropython -X heapsize=96K mpy_batch_checks.py <flash image> <check name>
Prints "ok <check>" on success (and what the test compares on CPython); an AssertionError
(exit 1) says what broke."""

import asyncio
import sys
from binascii import hexlify

from firmware.boards import load
from firmware.flashlog import Buffer
from firmware.uplink import Uplink

NOW_MS = 1767225600000  # 2026-01-01T00:00:00Z


def readings(n):
    # Four meters with ten quantities each, a row every second: ints and floats (0.1 V).
    out = []
    for i in range(n):
        row, q = divmod(i, 40)
        dev, code = divmod(q, 10)
        v = 2300 + i if code < 6 else (i % 50) + 0.5
        out.append(((dev + 1) << 8 | (code + 1), NOW_MS - 60000 + row * 1000, v))
    return out


def check_log_caps_batches(d):
    # Small records and segments: batches end inside a record and span segments.
    b = Buffer(d, segment_bytes=600, flush_count=10)
    b.append(readings(200))
    b.flush()
    while True:
        batch = b.next_batch(200, NOW_MS)  # the real codec, into the buffer made at start
        if batch is None:
            break
        print("batch", batch.seq, batch.count, hexlify(batch.payload).decode())
    assert b.status()["depth"] == 200 and b.status()["dropped_readings"] == 0, b.status()
    print("ok log_caps_batches")


class Client:
    on_message = None

    def __init__(self):
        self.sent = []

    async def publish(self, topic, payload, qos=0, retain=False):
        self.sent.append((topic, bytes(payload)))


def check_uplink_sends_full_batches_back_to_back(d):
    b = Buffer(d)
    up = Uplink(Client(), b, "gw", 1, "test", lambda: NOW_MS, batch_interval_s=10,
                max_batch_readings=b.batch_readings)  # fmt: skip
    b.append(readings(140))  # one interval of four meters with 35 quantities each
    asyncio.run(up._send_due())
    counts = [b.batch(seq).count for seq in b.unacked()]
    assert counts == [96, 44], counts
    assert not [seq for seq in b.unacked() if b.batch(seq).historical]
    b.append(readings(10))  # the last batch was not full: these wait for the next interval
    asyncio.run(up._send_due())
    assert up.sent_batches == 2 and b.depth() == 150, (up.sent_batches, b.depth())
    print("ok uplink_sends_full_batches_back_to_back")


def main():
    board = load("unix", {"flash_image": sys.argv[1], "flash_block_size": 512, "flash_blocks": 256})
    d = board.mount_flash() + "/log"
    globals()["check_" + sys.argv[2]](d)


main()
