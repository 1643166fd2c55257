"""Hardware-in-the-loop entry for the unix port: runs one part of the gateway (the Modbus
poller or the LoRa receiver) from a JSON file and prints every reading as a JSON line, so
tests compare the real interpreter's output with hw_sim's ground truth. Not used on boards.

    micropython -X heapsize=96K -m firmware.hil poll|lora <config.json>

config: {"board": {...}, "buses": [...], "meters": [...], "lora": {...}, "sensors": [...],
"duration_s": 5}; output lines: {"r": [[channel, ts_ms, value], ...]}, then {"stats": ...}."""

import asyncio
import json
import sys


class PrintSink:
    """A buffer stand-in: one JSON line per append."""

    def __init__(self):
        self.count = 0

    def append(self, readings):
        self.count += len(readings)
        print(json.dumps({"r": [list(r) for r in readings]}))


async def _run_for(coro, duration_s):
    task = asyncio.create_task(coro)
    await asyncio.sleep_ms(int(duration_s * 1000))
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


def poll(cfg, sink):
    import gc

    from firmware.meter import load_meters

    meters = load_meters(cfg["meters"])  # profiles first: nothing else in the heap yet
    gc.collect()
    from firmware.poller import Poller

    board = _board(cfg)
    pollers = []
    for bus in cfg["buses"]:
        mine = [m for m in meters if m.bus_id == bus["id"]]
        pollers.append(Poller(bus, mine, sink, board))
    meters = mine = None  # planned: as in the app, the pollers keep only their plans

    async def main():
        tasks = [asyncio.create_task(p.run()) for p in pollers]
        await asyncio.sleep_ms(int(cfg["duration_s"] * 1000))
        for t in tasks:
            t.cancel()
        await asyncio.sleep_ms(0)

    asyncio.run(main())
    stats = {}
    for p in pollers:
        for st in p.stats.values():
            stats[str(st.device_id)] = st.as_status()
        stats[p.bus_id] = {"ticks_missed": p.ticks_missed, "cycles": p.cycles}
    return stats


def lora(cfg, sink):
    board = _board(cfg)
    from firmware.lora import LoraReceiver

    rx = LoraReceiver(cfg["lora"], cfg.get("sensors", ()), sink, board)
    asyncio.run(_run_for(rx.run(), cfg["duration_s"]))
    return rx.status()


def _board(cfg):
    from firmware.boards import load

    return load(cfg.get("board", {}).get("name", "unix"), cfg.get("board"))


def main(argv):
    with open(argv[2]) as f:
        cfg = json.load(f)
    sink = PrintSink()
    stats = (poll if argv[1] == "poll" else lora)(cfg, sink)
    import gc

    gc.collect()
    stats["mem_free"] = gc.mem_free()
    print(json.dumps({"stats": stats}))


main(sys.argv)
