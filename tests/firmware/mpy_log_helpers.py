# Helpers of the flash-log checks that run on MicroPython (mpy_flashlog_checks.py,
# mpy_oom_checks.py): test readings, an encoder that keeps what it gets, emptying a folder.
import os

NOW_MS = 1767225600000  # 2026-01-01T00:00:00Z


def readings(n, first=0, age_ms=60000):
    # Ints and floats, so both value kinds go through the records; the first is age_ms old.
    out = []
    for i in range(first, first + n):
        v = i * 1000 + 7 if i % 2 else i + 0.25
        out.append((0x0B01 + (i % 3), NOW_MS - age_ms + i * 1000, v))
    return out


class Capture:
    """An encoder that keeps what it was given (the codec is tested elsewhere)."""

    def __init__(self):
        self.got = []

    def __call__(self, seq, rs, historical, resolution):
        self.got = list(rs)
        return b"batch %d n=%d" % (seq, len(rs))


def wipe(d):
    try:
        names = os.listdir(d)
    except OSError:
        return
    for n in names:
        os.remove(d + "/" + n)
