"""Poll benchmark: requests and bus time per cycle to read every quantity of each bundled meter
profile at 9600 baud 8E1, for the poll planner and for the strategies of other gateways.

Run from the repository root: `python -m bench.poll [--quick] [--json]`. It only computes plans
under the planner's cost model (docs/planner.md); no bus is touched.

Peers, reimplemented from their documented behaviour (docs/planner.md has the sources):
- naive: one request per quantity (ThingsBoard's Modbus connector, emonhub).
- telegraf_<none|shrink|rearrange|aggressive|max_insert>: Telegraf's inputs.modbus
  `optimization` setting. Fields are sorted by address (longer first on ties) and cut into
  runs of touching fields; none/shrink pack each run greedily up to the request limit (with no
  omitted fields the two coincide), rearrange and aggressive move request boundaries to fewer
  registers without more requests (rearrange within a run, aggressive over all fields, which
  fills any hole), max_insert joins fields while the hole before a field is at most
  `optimization_max_register_fill`; every fill 1..125 is tried and the best valid one kept.
- esphome: ESPHome modbus_controller ranges, which join a register only when it starts where
  the range ends (holes are bridged only by hand with register_count; skip_updates does not
  apply to a single-interval cycle).

Peers are given the device's own max_registers (Telegraf's is fixed at 125 and ESPHome has
none, so this favours them). A request that includes a register the device refuses (outside
its readable blocks and its quantities) is answered with exception 02: it costs the request
plus a 5-byte exception response, its values are lost, and the plan counts as invalid. Invalid
plans are reported but never chosen as the best peer.
"""

import time

from bench._common import emit, parse_args, print_table, table_stream
from protocols import planner as pl
from protocols.profiles import load_all

BAUD = 9600
BITS_PER_CHAR = 11  # 8E1
UNIT = 1
TELEGRAF = ("none", "shrink", "rearrange", "aggressive", "max_insert")
MAX_FILL = 125  # Telegraf accepts optimization_max_register_fill 1..125


def _end(item):
    return item.address + item.count


def _hull(group):
    start = min(i.address for i in group)
    return start, max(_end(i) for i in group) - start


def _registers(groups):
    return sum(_hull(g)[1] for g in groups)


def telegraf_sorted(items):
    """Telegraf's field order: address ascending, the longer field first on equal addresses."""
    return sorted(items, key=lambda i: (i.address, -i.count))


def touching_runs(fields):
    """Runs of fields in which each field starts where the run so far ends."""
    runs = []
    for f in fields:
        if runs and f.address == _end(runs[-1][-1]):
            runs[-1].append(f)
        else:
            runs.append([f])
    return runs


def shrink(fields, limit):
    """Greedy packing: a field joins the open request while it ends within start + limit."""
    groups = []
    for f in fields:
        if groups and _end(f) <= groups[-1][0].address + limit:
            groups[-1].append(f)
        else:
            groups.append([f])
    return groups


def rearrange(fields, limit):
    """Telegraf's request-boundary search: start from shrink, then try every split before a
    field that does not touch its predecessor, packing the left part and optimising the right
    part again; keep a split only if it needs no more requests and fewer registers. The result
    for a suffix depends only on where it starts, so it is memoised (same result, no blow-up)."""
    memo = {}

    def best_from(lo):
        if lo in memo:
            return memo[lo]
        sub = fields[lo:]
        best = shrink(sub, limit)
        best_regs = _registers(best)
        for i in range(1, len(sub) - 1):
            if _end(sub[i - 1]) == sub[i].address:
                continue
            cand = shrink(sub[:i], limit) + best_from(lo + i)
            if len(cand) > len(best) or _registers(cand) >= best_regs:
                continue
            best, best_regs = cand, _registers(cand)
        memo[lo] = best
        return best

    return best_from(0) if fields else []


def max_insert(fields, limit, fill):
    """Join the next field while the hole after the previous field is at most `fill`
    registers and the request stays within the limit (overlapping fields: no hole)."""
    groups = []
    for f in fields:
        if groups:
            start = groups[-1][0].address
            hole = max(0, f.address - _end(groups[-1][-1]))
            if hole <= fill and _end(f) - start <= limit:
                groups[-1].append(f)
                continue
        groups.append([f])
    return groups


def peer_groups(strategy, fields, limit, fill=None):
    """Request groups of one (unit, function) under a peer strategy."""
    fields = telegraf_sorted(fields)
    if strategy == "naive":
        return [[f] for f in fields]
    if strategy in ("telegraf_none", "telegraf_shrink", "esphome"):
        return [g for run in touching_runs(fields) for g in shrink(run, limit)]
    if strategy == "telegraf_rearrange":
        return [g for run in touching_runs(fields) for g in rearrange(run, limit)]
    if strategy == "telegraf_aggressive":
        return rearrange(fields, limit)
    if strategy == "telegraf_max_insert":
        return max_insert(fields, limit, fill)
    raise ValueError(f"unknown strategy {strategy!r}")


def peer_plan(strategy, items, devices, fill=None):
    """Requests (planner.Request tuples) that a peer strategy sends for `items`."""
    runs = {}
    for it in items:
        runs.setdefault((it.unit, it.function), []).append(it)
    out = []
    for (unit, function), fields in sorted(runs.items()):
        limit = devices[unit].max_registers
        for g in peer_groups(strategy, fields, limit, fill):
            start, count = _hull(g)
            parts = tuple(pl.Part(i.key, i.address - start, i.count) for i in g)
            out.append(pl.Request(unit, function, start, count, parts))
    return out


def readable_registers(device, function):
    """Registers the device answers for `function`; None when it answers every register."""
    blocks = device.readable
    if blocks is None:
        return None
    if isinstance(blocks, dict):
        blocks = blocks.get(function, ())
    return {r for start, count in blocks for r in range(start, start + count)}


def evaluate(requests, devices, bus):
    """Requests, registers and bus time of one cycle; refused requests cost an exception."""
    bus_s = 0.0
    refused = 0
    lost = set()
    read = set()
    for r in requests:
        device = devices[r.unit]
        ok_regs = readable_registers(device, r.function)
        ok = r.count <= device.max_registers and (
            ok_regs is None or all(a in ok_regs for a in range(r.address, r.address + r.count))
        )
        keys = {p.key for p in r.items}
        if ok:
            bus_s += bus.request_time_s(r.count, device.turnaround_s)
            read |= keys
        else:
            bus_s += bus.request_time_s(0, device.turnaround_s)  # 8 + 5-byte exception
            refused += 1
            lost |= keys
    return {
        "requests": len(requests),
        "registers": sum(r.count for r in requests),
        "bus_ms": round(bus_s * 1000, 3),
        "refused_requests": refused,
        "values_lost": len(lost - read),
        "valid": refused == 0,
    }


def bench_profile(profile, bus, repeats):
    """The per-profile result: planner and every peer on all of the profile's quantities."""
    items = pl.items_for_profile(profile, UNIT)
    devices = {UNIT: pl.device_for_profile(profile)}
    t0 = time.perf_counter()
    for _ in range(repeats):
        plan = pl.plan(items, devices, bus)
    plan_ms = (time.perf_counter() - t0) * 1000 / repeats
    result = {"model": profile.model, "quantities": len(items)}
    result["planner"] = evaluate(plan, devices, bus)
    result["planner"]["plan_ms"] = round(plan_ms, 3)
    result["naive"] = evaluate(peer_plan("naive", items, devices), devices, bus)
    result["esphome"] = evaluate(peer_plan("esphome", items, devices), devices, bus)
    for s in TELEGRAF[:-1]:
        name = "telegraf_" + s
        result[name] = evaluate(peer_plan(name, items, devices), devices, bus)
    best = None
    for fill in range(1, MAX_FILL + 1):
        r = evaluate(peer_plan("telegraf_max_insert", items, devices, fill), devices, bus)
        r["fill"] = fill
        rank = (not r["valid"], r["bus_ms"])
        if best is None or rank < best[0]:
            best = (rank, r)
    result["telegraf_max_insert"] = best[1]
    peers = ["naive", "esphome"] + ["telegraf_" + s for s in TELEGRAF]
    valid = [p for p in peers if result[p]["valid"]]
    best_peer = min(valid, key=lambda p: result[p]["bus_ms"])
    result["best_peer"] = best_peer
    result["ratio_to_best_peer"] = round(
        result["planner"]["bus_ms"] / result[best_peer]["bus_ms"], 4
    )
    result["speedup_vs_naive"] = round(result["naive"]["bus_ms"] / result["planner"]["bus_ms"], 3)
    return result


def _cell(r):
    mark = "" if r["valid"] else f" !{r['refused_requests']}"
    return f"{r['requests']}/{r['bus_ms']:.1f}{mark}"


def main(argv=None):
    args = parse_args(__doc__.splitlines()[0], argv)
    bus = pl.Bus(BAUD, BITS_PER_CHAR)
    repeats = 5 if args.quick else 200
    results = [bench_profile(p, bus, repeats) for p in load_all()]
    out = table_stream(args)
    print(
        f"requests/bus ms per cycle at {BAUD} baud {BITS_PER_CHAR} bits per character; "
        "'!n': n requests refused (plan invalid)",
        file=out,
    )
    cols = ["planner", "naive", "esphome"] + ["telegraf_" + s for s in TELEGRAF]
    heads = ["model", "n"] + [c.replace("telegraf_", "tg_") for c in cols] + ["vs best"]
    rows = []
    for r in results:
        cells = [_cell(r[c]) for c in cols]
        rows.append([r["model"], r["quantities"]] + cells + [f"{r['ratio_to_best_peer']:.3f}"])
    print_table(heads, rows, out)
    summary = {
        "baud": BAUD,
        "bits_per_char": BITS_PER_CHAR,
        "profiles": results,
        "worst_ratio_to_best_peer": max(r["ratio_to_best_peer"] for r in results),
        "min_speedup_vs_naive": min(r["speedup_vs_naive"] for r in results),
    }
    print(
        f"worst planner/best-peer bus time {summary['worst_ratio_to_best_peer']:.3f}, least "
        f"speed-up over one request per value {summary['min_speedup_vs_naive']:.2f}x",
        file=out,
    )
    emit(args, "poll", summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
