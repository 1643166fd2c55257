"""firmware/timesync.py on the real interpreter (compiled): readings stamped before the first
NTP sync are held, then released with the offset added; an NTP answer from a local UDP server
is decoded to UTC ms; a server that never answers gives a bounded NtpError."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import threading
from pathlib import Path

import pytest
from mpy_build import HEAP, compile_tree, tool

PROBE = r"""
import sys, json, asyncio
from firmware.timesync import TimeSync, ntp_ms, NtpError

class Board:  # a board whose clock was never set: it counts from 1970 + uptime
    def __init__(self):
        self.t = 5000
    def utc_ms(self):
        return self.t
    def set_utc_ms(self, ts):
        self.t = ts

class Sink:
    def __init__(self):
        self.got = []
    def append(self, readings):
        self.got.extend(readings)

b = Board()
sink = Sink()
ts = TimeSync(b, sink)
ts.append([(1, b.utc_ms(), 1.5)])
b.t += 1000
ts.append([(2, b.utc_ms(), 2.5)])
held = len(sink.got)
true_now = 1767225600000  # 2026-01-01
ts.set_time(true_now)
ts.append([(3, b.utc_ms(), 3.5)])
out = {"held_before": held, "got": sink.got, "offset": ts.offset_ms, "synced": ts.synced()}

async def net():
    port = int(sys.argv[1])
    out["ntp"] = await ntp_ms("127.0.0.1", 1000, port)
    try:
        await ntp_ms("127.0.0.1", 300, int(sys.argv[2]))
    except NtpError as e:
        out["silent"] = str(e)

asyncio.run(net())
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = compile_tree(tmp_path_factory.mktemp("fw"))
    (out / "ts_probe.py").write_text(PROBE)
    return out


def test_held_readings_are_corrected_and_ntp_is_decoded(tree: Path) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    # 2026-01-01T00:00:00.5Z as NTP seconds (since 1900) and fraction (RFC 4330)
    secs = 1767225600 + 2208988800

    def answer() -> None:
        data, addr = server.recvfrom(48)
        reply = bytearray(48)
        reply[0] = 0x1C
        struct.pack_into("!II", reply, 40, secs, 1 << 31)
        server.sendto(bytes(reply), addr)

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    try:
        proc = subprocess.run(
            [
                tool("micropython"),
                "-X",
                f"heapsize={HEAP}",
                "ts_probe.py",
                str(server.getsockname()[1]),
                str(silent.getsockname()[1]),
            ],  # fmt: skip
            cwd=str(tree),
            env=dict(os.environ, MICROPYPATH=f"{tree}:.frozen"),
            capture_output=True,
            text=True,
            timeout=20,
        )
    finally:
        t.join(timeout=5)
        server.close()
        silent.close()
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["held_before"] == 0  # nothing leaves with an unset clock
    offset = 1767225600000 - 6000
    assert out["offset"] == offset and out["synced"] is True
    assert out["got"] == [[1, 5000 + offset, 1.5], [2, 6000 + offset, 2.5],
                          [3, 1767225600000, 3.5]]  # fmt: skip
    assert out["ntp"] == 1767225600500
    assert "no answer within 300 ms" in out["silent"]
