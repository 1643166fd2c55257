"""Poll planner: the Modbus read requests that fetch a set of values in the least bus time.

Pure computation on item descriptions: it never opens a port, sleeps or reads a clock."""

# Cost model (docs/planner.md has the worked figures)
# ---------------------------------------------------
# One RTU read request costs, on the bus,
#
#     (request_bytes + response_bytes) * char_time + 2 * silence + turnaround
#
#   char_time      = bits_per_char / baud (11 bits for 8E1 or 8N2, 10 for 8N1)
#   silence        = 3.5 char times; fixed 1.75 ms above 19200 baud (Modbus over serial line
#                    V1.02, 2.5.1.1), one before the request and one before the response
#   request_bytes  = 8 (unit, function, address, quantity, CRC) for functions 03 and 04
#   response_bytes = 5 + 2 * n for n registers (unit, function, byte count, data, CRC)
#   turnaround     = the device's own answer delay (Device.turnaround_s)
#
# So a request of n registers costs a + b * n with a, b > 0: every extra request and every
# extra register read is paid for, and nothing else is.
#
# Limits: at most 125 registers per request, or the device's lower max_registers;
# a value of several registers is read whole by one request; a register that belongs to no
# requested item is read only if it lies in one of the device's `readable` blocks (devices
# answer exception 02 for holes) and the run of such registers is at most `max_gap` long.
#
# Algorithm and why it is optimal
# -------------------------------
# Items are planned separately per (unit, function). Sort the items by start address. A group
# of items that are consecutive in this order is read by one request spanning their hull; it
# is feasible iff the span fits the limit and every run of registers inside the hull that no
# item of the group covers is readable and at most max_gap long. A dynamic programme over the
# sorted items picks the partition into consecutive groups with the least total time
# (ties: fewer requests, then fewer registers); extending a group to the right only lengthens
# its span and adds gaps that later items cannot fill again (they start later), so each group
# start scans forward until the first infeasible extension: O(n * k) for k items per window.
#
# No plan does better, even one whose requests overlap or whose groups interleave: take an
# optimal set of requests, shrink each to the hull of the items it contains and drop any
# request inside another (both only lower the cost). The remaining requests have strictly
# increasing starts and ends, so the requests containing an item form a run of indices and
# "the last request containing the item" is non-decreasing in the item's start address.
# Giving every item to that request yields groups consecutive in sorted order, each group's
# hull lies inside its request, and any register of the hull covered by an item given to a
# later request is also covered by the group's member reaching the hull's end, so the group's
# gaps are parts of the request's gaps. The groups are feasible and cost no more. Overlapping
# and duplicate items need no special case. tests/protocols/test_planner_optimal.py checks the
# result against brute force over all request sets.

from collections import namedtuple

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_REQUEST_BYTES = const(8)
_RESPONSE_OVERHEAD = const(5)
_MAX_REGISTERS = const(125)


class PlanError(ValueError):
    pass


# A value to read: `count` registers from `address` of `unit` with `function` (3 or 4).
Item = namedtuple("Item", "key unit function address count")
# Where an item sits in a response: `offset` registers after the request's address.
Part = namedtuple("Part", "key offset count")
# A read request and the Parts it carries, in address order.
Request = namedtuple("Request", "unit function address count items")


class Bus:
    # The serial line: baud and bits per character (11 for 8E1 or 8N2, 10 for 8N1).
    def __init__(self, baud=9600, bits_per_char=11):
        if baud <= 0 or bits_per_char not in (10, 11):
            raise PlanError(
                "bus at %r baud with %r-bit characters: a character is 10 bits (8N1) or 11 "
                "(8E1, 8O1, 8N2)" % (baud, bits_per_char)
            )
        self.baud = baud
        self.bits_per_char = bits_per_char
        self.char_time_s = bits_per_char / baud
        # Modbus over serial line V1.02, 2.5.1.1: fixed t3.5 of 1.75 ms above 19200 baud
        self.silence_s = 0.00175 if baud > 19200 else 3.5 * self.char_time_s

    def request_time_s(self, count, turnaround_s=0.0):
        # Bus time of one read of `count` registers under the cost model.
        n_bytes = _REQUEST_BYTES + _RESPONSE_OVERHEAD + 2 * count
        return n_bytes * self.char_time_s + 2 * self.silence_s + turnaround_s


class Device:
    # A unit's request size limit, its turnaround, and the registers it answers without an
    # exception: readable is None (all), a list of [start, count] blocks for every function,
    # or a dict function -> blocks (a function not in it has no readable holes).
    def __init__(self, max_registers=_MAX_REGISTERS, readable=None, turnaround_s=0.0):
        if not 1 <= max_registers <= _MAX_REGISTERS:
            raise PlanError("max_registers %r is outside 1..125" % (max_registers,))
        self.max_registers = max_registers
        self.readable = readable
        self.turnaround_s = turnaround_s


_DEFAULT_DEVICE = Device()


def _device(devices, unit):
    d = devices and devices.get(unit)
    return d or _DEFAULT_DEVICE


def _safe(spans, lo, hi):
    # Whether registers lo..hi-1 all lie in the (start, count) spans.
    while lo < hi:
        for s, c in spans:
            if s <= lo < s + c:
                lo = s + c
                break
        else:
            return False
    return True


def _plan_run(run, unit, function, device, bus, max_gap, out):
    # run: the items of one (unit, function), sorted by address then count.
    # Registers readable without an exception: the blocks plus every item's own registers.
    spans = device.readable
    if spans is not None:
        if isinstance(spans, dict):
            spans = spans.get(function, ())
        spans = list(spans)
        for it in run:
            spans.append((it.address, it.count))
    # Exact integer costs in units of 1 / (2000 * baud) s, so a tie the model implies (one
    # more request against more registers) stays a tie for the tie-break to decide.
    char_u = 2000 * bus.bits_per_char
    base_u = (_REQUEST_BYTES + _RESPONSE_OVERHEAD) * char_u
    base_u += int(round((2 * bus.silence_s + device.turnaround_s) * 2000 * bus.baud))
    n = len(run)
    # best[j]: (cost, requests, registers) of the best plan for run[:j]; back[j]: the
    # start of its last group.
    best = [None] * (n + 1)
    back = [0] * (n + 1)
    best[0] = (0, 0, 0)
    for i in range(n):
        cost, reqs, regs = best[i]
        start = end = run[i].address
        for j in range(i, n):
            a = run[j].address
            if a > end:
                if max_gap is not None and a - end > max_gap:
                    break
                if spans is not None and not _safe(spans, end, a):
                    break
            end = max(end, a + run[j].count)
            if end - start > device.max_registers:
                break
            c = (cost + base_u + 2 * char_u * (end - start), reqs + 1, regs + end - start)
            if best[j + 1] is None or c < best[j + 1]:
                best[j + 1] = c
                back[j + 1] = i
    j = n
    k = len(out)
    while j > 0:
        i = back[j]
        start = end = run[i].address
        parts = []
        for it in run[i:j]:
            parts.append(Part(it.key, it.address - start, it.count))
            end = max(end, it.address + it.count)
        out.insert(k, Request(unit, function, start, end - start, tuple(parts)))
        j = i


def plan(items, devices=None, bus=None, max_gap=None):
    # The Requests that read `items` (Items with unique keys) in the least bus time.
    #
    # devices: unit -> Device (others get Device()); bus: Bus (default 9600 baud 8E1);
    # max_gap: most registers of no item one request may read (None: cost model decides).
    # Sorted by unit, function and address.
    bus = bus or Bus()
    if max_gap is not None and max_gap < 0:
        raise PlanError("max_gap %r is negative: 0 reads only adjacent values" % (max_gap,))
    runs = {}
    keys = set()
    for it in items:
        limit = _device(devices, it.unit).max_registers
        if it.function not in (3, 4):
            raise PlanError("item %r: function %r is not 3 or 4" % (it.key, it.function))
        if not 1 <= it.count <= limit or not 0 <= it.address <= 65536 - it.count:
            raise PlanError(
                "item %r: %r registers at %r, but unit %r reads 1..%d registers per request "
                "at addresses 0..65535 (convert 30001/40001-style numbers)"
                % (it.key, it.count, it.address, it.unit, limit)
            )
        if it.key in keys:
            raise PlanError("item key %r appears twice: every value needs its own" % (it.key,))
        keys.add(it.key)
        # len(keys) keeps equal items in input order (MicroPython's sort is not stable)
        runs.setdefault((it.unit, it.function), []).append((it.address, it.count, len(keys), it))
    out = []
    for rk in sorted(runs):
        run = sorted(runs[rk])
        for n in range(len(run)):
            run[n] = run[n][3]
        _plan_run(run, rk[0], rk[1], _device(devices, rk[0]), bus, max_gap, out)
    return out


def bus_time_s(requests, devices=None, bus=None):
    # Bus time of executing `requests` once, under the cost model.
    bus = bus or Bus()
    t = 0
    for r in requests:
        t += bus.request_time_s(r.count, _device(devices, r.unit).turnaround_s)
    return t


def due_items(reads, t_s):
    # Items of `reads` ((item, interval_s) pairs) due at tick t_s (whole seconds).
    due = []
    for r in reads:
        if int(t_s) % r[1] == 0:
            due.append(r[0])
    return due


class Planner:
    # Plans per tick for reads at several intervals, cached per distinct due set. The due
    # set at tick t is fixed by the intervals that divide t, so that tuple is the cache key.
    def __init__(self, reads, devices=None, bus=None, max_gap=None, max_cached=16):
        self.reads = reads = list(reads)
        intervals = set()
        for r in reads:
            if not isinstance(r[1], int) or r[1] < 1:
                raise PlanError("item %r: interval_s must be whole seconds >= 1" % (r[0].key,))
            intervals.add(r[1])
        self.intervals = sorted(intervals)
        self.args = (devices, bus or Bus(), max_gap)
        self.max_cached = max_cached
        self._cache = {}
        # Every read is due at tick 0: planning them rejects bad items now, not at some tick,
        # and the plan is kept for that due set (schedule() would plan it a second time).
        self._cache[self._due_key(0)] = plan(due_items(reads, 0), *self.args)

    def precompute(self, convert=None):
        # Plan every distinct due set now (schedule()) and drop the reads and devices, so a
        # small gateway keeps only the plans; convert(plan), if given, turns each plan into
        # the caller's own (smaller) form, which plan_for() then returns. False, keeping
        # everything as it was, when there are more due sets than max_cached.
        if len(self.schedule()) > self.max_cached:
            self._cache.clear()
            return False
        if convert is not None:
            for key in list(self._cache):
                self._cache[key] = convert(self._cache[key])
        self.reads = self.args = None
        return True

    def _due_key(self, t_s):
        key = []
        for i in self.intervals:
            if int(t_s) % i == 0:
                key.append(i)
        return tuple(key)

    def plan_for(self, t_s):
        # The Requests due at tick t_s (whole seconds); [] when nothing is due.
        key = self._due_key(t_s)
        p = self._cache.get(key)
        if p is None:
            if self.reads is None:  # precomputed: every due set is cached, so none is due
                return []
            if len(self._cache) >= self.max_cached:
                self._cache.clear()
            p = self._cache[key] = plan(due_items(self.reads, t_s), *self.args)
        return p

    def schedule(self):
        # [(t_s, plan)] for every distinct due set, at the first tick > 0 it occurs.
        out = []
        for t, _key in due_sets(self.intervals):
            out.append((t, self.plan_for(t)))
        return out


def due_sets(intervals):
    # [(t_s, due set)] for each distinct due set of reads at `intervals` (whole seconds >= 1),
    # by first tick > 0; a due set is the tuple, in the order of `intervals`, of the intervals
    # that divide the tick. A set of intervals is first due together at their least common
    # multiple, so the lcm closure of the intervals holds every first tick (no scan of the
    # hyperperiod).
    ticks = []
    for i in intervals:
        for t in ticks + [i]:
            a, b = t, i
            while b:
                a, b = b, a % b
            if t * i // a not in ticks:
                ticks.append(t * i // a)
    out = []
    seen = set()
    for t in sorted(ticks):
        key = []
        for i in intervals:
            if t % i == 0:
                key.append(i)
        key = tuple(key)
        if key not in seen:
            seen.add(key)
            out.append((t, key))
    return out


def plan_schedule(reads, devices=None, bus=None, max_gap=None):
    # [(t_s, plan)] for each distinct set of reads due together (Planner.schedule).
    return Planner(reads, devices, bus, max_gap).schedule()


# Profile adapter, for profiles.Profile objects (or anything with the same attributes).


def items_for_profile(profile, unit, quantity_names=None):
    # Items reading the named quantities (all when None) of a meter with `profile` at
    # `unit`; an item's key is (unit, quantity name).
    out = []
    for name in quantity_names or profile.quantities:
        q = profile.quantities.get(name)
        if q is None:
            raise PlanError("meter model %s has no quantity %r" % (profile.model, name))
        out.append(Item((unit, name), unit, q.function, q.address, q.count))
    return out


def device_for_profile(profile):
    # The Device of a meter with `profile`: its limit, turnaround and readable blocks, to
    # which every quantity's own registers are added.
    blocks = {}
    for q in profile.quantities.values():
        if q.function not in blocks:
            blocks[q.function] = list(profile.readable_blocks(q.function))
        blocks[q.function].append((q.address, q.count))
    return Device(profile.max_registers, blocks, (profile.turnaround_ms or 0) / 1000)
