"""Codec benchmark: bytes per reading of the telemetry batch (docs/protocol.md) for a day of
10 s polls of a three-phase SDM630 with all its 35 quantities, batched per minute and per hour
as a gateway sends them, against ThingsBoard-style JSON and against zlib/lzma of the raw values;
encode/decode speed on CPython and the heap the encoder needs on MicroPython.

Run from the repository root: `python -m bench.codec [--quick] [--json]`.

The readings come from hw_sim's electrical model (hw_sim/physics.py), seeded, so every run
sees the same day: a school on a Tuesday in March (Europe/Berlin), base load 3 kW, peak 40 kW,
cos phi 0.93, 2 % noise on power, 230 V feeders with 0.3 V noise that sag under load,
frequency 50 Hz +- 0.02 Hz, energy counters that integrate power and start at realistic
meter readings (48 MWh imported). Each poll is stamped 120..150 ms after its 10 s tick (the
bus time of the reads), which is what a gateway's timestamps look like. Values are kept at
the profile's resolution (0.1 V, 1 mA, 1 W, 0.001, 0.01 Hz, 1 Wh).

Comparisons, all for exactly the same readings:
- json: ThingsBoard's gateway telemetry, {"<device>": [{"ts": ms, "values": {name: value}}]}
  per batch, compact separators, values printed at their resolution (shortest decimal; the
  real connector prints float32 registers with up to 17 digits, which is larger).
- json_zlib: that JSON deflated (zlib level 9), what a gateway could compress before sending.
- raw_zlib / raw_lzma: the integers value/resolution and the timestamps as int64 columns,
  per batch, compressed with zlib level 9 and xz preset 9 (an entropy reference: general
  purpose compressors given the same column layout as the codec).

MicroPython (.venv/bin/micropython, the unix port: 64-bit, so pointers and boxed floats take
twice the room they take on a 32-bit board): the codec is loaded from source and warmed up,
the output buffer preallocated as firmware does, then the readings of one batch are unpacked
from one binary record per reading (as from a gateway's flash log) and encoded.
Reported: the smallest -X heapsize in which that works (found by bisection), the heap in use
before encoding, and all bytes encode_batch allocates with the collector off.
"""

import json
import lzma
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from datetime import datetime
from zoneinfo import ZoneInfo

from bench._common import emit, parse_args, print_table, table_stream
from hw_sim.physics import ElectricalModel, LoadParams
from protocols import codec
from protocols import quantities as q
from protocols.profiles import load_profile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 20240312
DEVICE_ID = 1
INTERVAL_MS = 10_000
TZ = "Europe/Berlin"
DAY_START = datetime(2024, 3, 12, tzinfo=ZoneInfo(TZ))  # a Tuesday
START_COUNTERS_WH = {
    "energy_import": 48_213_000.0,
    "energy_export": 0.0,
    "reactive_energy_import": 9_804_000.0,
    "reactive_energy_export": 0.0,
    "energy_import_l1": 17_380_000.0,
    "energy_import_l2": 15_902_000.0,
    "energy_import_l3": 14_931_000.0,
}
MPY_BATCH_READINGS = (210, 500)  # one minute of one SDM630; the default max_batch_readings


def generate(hours):
    """Polls [(ts_ms, {quantity: value at its resolution})] of one SDM630, every 10 s."""
    profile = load_profile("sdm630")
    params = LoadParams(
        shape="school", peak_power_w=40_000.0, base_power_w=3_000.0, cos_phi=0.93, noise=0.02
    )
    model = ElectricalModel(params=params, tz=ZoneInfo(TZ), phases=3, seed=SEED)
    model.counters.update(START_COUNTERS_WH)
    jitter = random.Random(SEED)
    start_ms = int(DAY_START.timestamp() * 1000)
    polls = []
    for k in range(hours * 3600_000 // INTERVAL_MS):
        tick = start_ms + k * INTERVAL_MS
        ts = tick + 120 + jitter.randrange(31)
        sample = model.sample(ts)
        values = {}
        for name, spec in profile.quantities.items():
            m, e = codec.parse_resolution(spec.resolution)
            values[name] = codec.dequantise(codec.quantise(sample[name], m, e), m, e)
        polls.append((ts, values))
    return polls


def readings_of(polls):
    return [
        (q.channel_id(DEVICE_ID, name), ts, value)
        for ts, values in polls
        for name, value in values.items()
    ]


def batches(polls, minutes):
    """Consecutive groups of polls, `minutes` of them each."""
    per = minutes * 60_000 // INTERVAL_MS
    return [polls[i : i + per] for i in range(0, len(polls), per)]


def thingsboard_json(polls):
    doc = {"sdm630-1": [{"ts": ts, "values": values} for ts, values in polls]}
    return json.dumps(doc, separators=(",", ":")).encode()


def raw_columns(polls):
    """int64 columns: the timestamps, then each quantity's value / resolution."""
    profile = load_profile("sdm630")
    fmt = f"<{len(polls)}q"
    out = [struct.pack(fmt, *[ts for ts, _ in polls])]
    for name, spec in profile.quantities.items():
        m, e = codec.parse_resolution(spec.resolution)
        out.append(struct.pack(fmt, *[codec.quantise(v[name], m, e) for _, v in polls]))
    return b"".join(out)


def size_row(polls, minutes):
    groups = batches(polls, minutes)
    n = sum(len(g) for g in groups) * len(polls[0][1])
    sizes = {"codec": 0, "json": 0, "json_zlib": 0, "raw_zlib": 0, "raw_lzma": 0}
    for seq, g in enumerate(groups, 1):
        sizes["codec"] += len(codec.encode_batch(seq, readings_of(g)))
        js = thingsboard_json(g)
        sizes["json"] += len(js)
        sizes["json_zlib"] += len(zlib.compress(js, 9))
        raw = raw_columns(g)
        sizes["raw_zlib"] += len(zlib.compress(raw, 9))
        sizes["raw_lzma"] += len(lzma.compress(raw, preset=9))
    per = {k: round(v / n, 3) for k, v in sizes.items()}
    return {
        "batch_minutes": minutes,
        "batches": len(groups),
        "readings": n,
        **{k + "_bytes_per_reading": v for k, v in per.items()},
    }


def speed(polls, minutes):
    """Readings per second to encode and to decode every batch of the run (best of 3)."""
    groups = [readings_of(g) for g in batches(polls, minutes)]
    n = sum(len(g) for g in groups)
    encoded = [codec.encode_batch(i, g) for i, g in enumerate(groups)]
    enc = dec = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for i, g in enumerate(groups):
            codec.encode_batch(i, g)
        t1 = time.perf_counter()
        for data in encoded:
            codec.decode_batch(data)
        t2 = time.perf_counter()
        enc = min(enc, t1 - t0)
        dec = min(dec, t2 - t1)
    return round(n / enc), round(n / dec)


_MPY_SCRIPT = """
import gc, json, struct, sys
sys.path.insert(0, ROOT)
from protocols import codec, codec_encode
# A running gateway has encoded before: its modules and the catalogue's caches are loaded.
codec.encode_batch(0, [(ch, 0, 0) for ch in CHANNELS])
gc.collect()
out = bytearray(OUT_BYTES)  # preallocated at start-up, as firmware does
f = open(DATA, "rb")
raw = f.read()
f.close()
readings = [None] * COUNT
for i in range(COUNT):  # each record: a type byte, then channel, ts_ms, value
    fmt = "<IQd" if raw[i * 21] else "<IQq"
    readings[i] = struct.unpack_from(fmt, raw, i * 21 + 1)
raw = None
gc.collect()
before = gc.mem_alloc()
if GC_OFF:
    gc.disable()
data = codec.encode_batch(1, readings, out=out)
allocated = gc.mem_alloc() - before
gc.enable()
print(json.dumps({"allocated": allocated, "in_use": before, "bytes": len(data)}))
"""


def _run_micropython(mpy, script, heap_kb):
    proc = subprocess.run(
        [mpy, "-X", f"heapsize={heap_kb}K", script], capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def micropython_heap(polls, n_readings):
    """What encoding one batch of n_readings costs on MicroPython (unix port, 64-bit: pointers
    and boxed floats are twice their size on a 32-bit board): the smallest heap that loads the
    codec, holds the readings and encodes them; the heap in use before encoding; and all bytes
    encode_batch allocates with the collector off (its garbage included)."""
    mpy = os.path.join(os.path.dirname(sys.executable), "micropython")
    if not os.path.exists(mpy):
        return None
    rows = readings_of(polls)[:n_readings]
    with tempfile.TemporaryDirectory() as tmp:
        data_path = os.path.join(tmp, "readings.bin")
        with open(data_path, "wb") as f:
            for ch, ts, value in rows:
                is_float = isinstance(value, float)
                f.write(struct.pack("<BIQd" if is_float else "<BIQq", is_float, ch, ts, value))
        scripts = {}
        for gc_off in (False, True):
            path = os.path.join(tmp, f"heap_{gc_off:d}.py")
            text = _MPY_SCRIPT.replace("ROOT", repr(ROOT)).replace("DATA", repr(data_path))
            text = text.replace("COUNT", str(len(rows))).replace("OUT_BYTES", str(4 * len(rows)))
            text = text.replace("CHANNELS", repr(sorted({r[0] for r in rows})))
            with open(path, "w") as f:
                f.write(text.replace("GC_OFF", str(gc_off)))
            scripts[gc_off] = path
        total = _run_micropython(mpy, scripts[True], 1024)
        lo, hi = 8, 256  # KiB; find the smallest heap that works
        if _run_micropython(mpy, scripts[False], hi) is None:
            return {"readings": n_readings, "ok": False}
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _run_micropython(mpy, scripts[False], mid) is None:
                lo = mid
            else:
                hi = mid
        at_min = _run_micropython(mpy, scripts[False], hi)
    return {
        "readings": n_readings,
        "ok": True,
        "min_heap_bytes": hi * 1024,
        "fits_64k": hi <= 64,
        "heap_in_use_before_bytes": at_min["in_use"],
        "encode_allocated_bytes": total["allocated"],
        "batch_bytes": total["bytes"],
    }


def main(argv=None):
    args = parse_args(__doc__.split("\n\n")[0], argv)
    hours = 2 if args.quick else 24
    polls = generate(hours)
    out = table_stream(args)
    rows = [size_row(polls, 1), size_row(polls, 60)]
    enc_rate, dec_rate = speed(polls, 1)
    heap = [micropython_heap(polls, n) for n in MPY_BATCH_READINGS]
    cols = ("codec", "json", "json_zlib", "raw_zlib", "raw_lzma")
    print(
        f"bytes per reading, {hours} h of 10 s polls of one SDM630 ({len(polls[0][1])}"
        f" quantities), {rows[0]['readings']} readings",
        file=out,
    )
    print_table(
        ("batch",) + cols + ("json/codec",),
        [
            [f"{r['batch_minutes']} min"]
            + [r[c + "_bytes_per_reading"] for c in cols]
            + [round(r["json_bytes_per_reading"] / r["codec_bytes_per_reading"], 1)]
            for r in rows
        ],
        out,
    )
    print(
        f"\nCPython: encode {enc_rate} readings/s, decode {dec_rate} readings/s (1-minute batches)",
        file=out,
    )
    for h in heap:
        if h is None:
            print("MicroPython: interpreter not found, heap not measured", file=out)
        elif h["ok"]:
            print(
                f"MicroPython: a {h['readings']}-reading batch ({h['batch_bytes']} bytes) encodes"
                f" in a {h['min_heap_bytes'] // 1024}K heap ({h['heap_in_use_before_bytes']}"
                f" bytes in use before: interpreter, codec, readings); encode_batch allocates"
                f" {h['encode_allocated_bytes']} bytes in all",
                file=out,
            )
        else:
            print(f"MicroPython: {h['readings']} readings did not encode in 256K", file=out)
    minute, hour = rows
    result = {
        "hours": hours,
        "quantities": len(polls[0][1]),
        "readings": minute["readings"],
        "bytes_per_reading": minute["codec_bytes_per_reading"],
        "json_bytes_per_reading": minute["json_bytes_per_reading"],
        "ratio_json_to_codec": round(
            minute["json_bytes_per_reading"] / minute["codec_bytes_per_reading"], 2
        ),
        "hourly_bytes_per_reading": hour["codec_bytes_per_reading"],
        "hourly_json_bytes_per_reading": hour["json_bytes_per_reading"],
        "batches": rows,
        "encode_readings_per_s": enc_rate,
        "decode_readings_per_s": dec_rate,
        "micropython_heap": heap,
    }
    emit(args, "codec", result)
    return result


if __name__ == "__main__":
    main()
