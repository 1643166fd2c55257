# Runs on MicroPython (tests/firmware/test_packed_profiles.py): builds the meters of every
# bundled model with firmware.meter.load_meters, from the packed profiles of the compiled tree
# ("packed") or from the JSON files as a source tree has them ("json"), and prints what the
# poller gets of them as one JSON line, with the heap the meters keep.
import gc
import json
import sys

how = sys.argv[1]
models = sys.argv[2:]
if how == "json":
    import protocols.profile_pack

    protocols.profile_pack.load_packed = lambda model, folder=None: None
else:  # the packed path must never reach the JSON loader and its validator
    sys.modules["protocols.profiles"] = object()
gc.collect()
before = gc.mem_alloc()
from firmware.meter import load_meters  # noqa: E402

entries = [{"id": i + 1, "name": m, "unit": i + 1, "profile": m} for i, m in enumerate(models)]
meters = load_meters(entries)
gc.collect()
kept = gc.mem_alloc() - before
out = []
for m in sorted(meters, key=lambda m: m.device_id):
    quantities = {}
    for name in m.quantities:
        quantities[name] = list(m.quantities[name])
    items = sorted([[list(it.key), it.unit, it.function, it.address, it.count] for it in m.items])
    blocks = {}
    for f in m.device.readable:
        blocks[str(f)] = sorted([list(b) for b in m.device.readable[f]])
    out.append([m.device_id, m.unit, items, quantities, blocks, m.device.max_registers,
                m.device.turnaround_s])  # fmt: skip
print(json.dumps({"kept": kept, "meters": out}))
