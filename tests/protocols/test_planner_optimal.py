"""The poll planner is optimal under its cost model: it matches brute force over every set of
requests on small random inputs, is never worse than the peer strategies of bench/poll.py,
and reads only registers the bundled profiles allow."""

import random
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import poll
from protocols import planner as pl

# ---------------------------------------------------------------- an independent cost model


def request_cost(count, bus, turnaround_ms):
    """Exact bus time of one read of `count` registers (docs/planner.md), as a Fraction."""
    char = Fraction(bus.bits_per_char, bus.baud)
    silence = Fraction(7, 4000) if bus.baud > 19200 else Fraction(7, 2) * char
    return (8 + 5 + 2 * count) * char + 2 * silence + Fraction(turnaround_ms, 1000)


def safe_registers(items, readable, function):
    """Registers a device answers: its readable blocks for `function` plus every item's own;
    None when it answers all."""
    if readable is None:
        return None
    blocks = readable.get(function, []) if isinstance(readable, dict) else readable
    regs = {a for s, n in blocks for a in range(s, s + n)}
    return regs | {a for i in items for a in range(i.address, i.address + i.count)}


def allowed(start, end, items, limit, safe, max_gap):
    """Whether one request may read registers start..end-1: within the limit, and every
    register no item inside the request covers is answered, in runs of at most max_gap."""
    if end - start > limit:
        return False
    inside = [i for i in items if start <= i.address and i.address + i.count <= end]
    covered = {a for i in inside for a in range(i.address, i.address + i.count)}
    run = 0
    for a in range(start, end):
        if a in covered:
            run = 0
            continue
        run += 1
        if (safe is not None and a not in safe) or (max_gap is not None and run > max_gap):
            return False
    return True


def brute_force(items, limit, safe, max_gap, bus, turnaround_ms):
    """Least (cost, requests, registers) over every set of requests reading all `items` of
    one (unit, function): any start and end, overlaps allowed. Set cover by DP over subsets:
    some request of the cover reads the lowest unread item."""
    lo = min(i.address for i in items)
    hi = max(i.address + i.count for i in items)
    n = len(items)
    by_item = [[] for _ in range(n)]
    for start in range(lo, hi):
        for end in range(start + 1, min(hi, start + limit) + 1):
            mask = 0
            for k, i in enumerate(items):
                if start <= i.address and i.address + i.count <= end:
                    mask |= 1 << k
            if mask and allowed(start, end, items, limit, safe, max_gap):
                cost = (request_cost(end - start, bus, turnaround_ms), 1, end - start)
                for k in range(n):
                    if mask >> k & 1:
                        by_item[k].append((mask, cost))
    best = [None] * (1 << n)
    best[0] = (Fraction(0), 0, 0)
    for todo in range(1, 1 << n):
        k = (todo & -todo).bit_length() - 1
        for mask, cost in by_item[k]:
            rest = best[todo & ~mask]
            cand = (rest[0] + cost[0], rest[1] + 1, rest[2] + cost[2])
            if best[todo] is None or cand < best[todo]:
                best[todo] = cand
    return best[-1]


def plan_cost(requests, bus, turnaround_ms):
    total = (Fraction(0), 0, 0)
    for r in requests:
        c = request_cost(r.count, bus, turnaround_ms[r.unit])
        total = (total[0] + c, total[1] + 1, total[2] + r.count)
    return total


def check_plan(requests, items, devices, max_gap):
    """Every item read exactly once, at the right offset, by an allowed request."""
    by_key = {i.key: i for i in items}
    seen = []
    for r in requests:
        run = [i for i in items if (i.unit, i.function) == (r.unit, r.function)]
        dev = devices[r.unit]
        safe = safe_registers(run, dev.readable, r.function)
        assert allowed(r.address, r.address + r.count, run, dev.max_registers, safe, max_gap)
        for p in r.items:
            it = by_key[p.key]
            assert (it.unit, it.function) == (r.unit, r.function)
            assert (r.address + p.offset, p.count) == (it.address, it.count)
            assert p.offset >= 0 and p.offset + p.count <= r.count
            seen.append(p.key)
    assert sorted(seen) == sorted(by_key)


# ---------------------------------------------------------------- random inputs

BUSES = [pl.Bus(b, c) for b in (1200, 9600, 19200, 38400, 115200) for c in (10, 11)]


@st.composite
def cases(draw):
    items = []
    for k in range(draw(st.integers(1, 7))):
        unit = draw(st.sampled_from([1, 1, 1, 2]))
        function = draw(st.sampled_from([3, 3, 4]))
        count = draw(st.sampled_from([1, 1, 2, 2, 4]))
        items.append(pl.Item(k, unit, function, draw(st.integers(0, 20)), count))
    devices = {}
    turnaround_ms = {}
    for unit in (1, 2):
        readable = draw(
            st.one_of(
                st.none(),
                st.lists(st.tuples(st.integers(0, 22), st.integers(1, 8)), max_size=3),
                st.dictionaries(
                    st.sampled_from([3, 4]),
                    st.lists(st.tuples(st.integers(0, 22), st.integers(1, 8)), max_size=3),
                ),
            )
        )
        turnaround_ms[unit] = draw(st.sampled_from([0, 1, 5, 20, 50]))
        devices[unit] = pl.Device(draw(st.integers(4, 14)), readable, turnaround_ms[unit] / 1000)
    max_gap = draw(st.sampled_from([None, None, 0, 1, 2, 3, 6]))
    return items, devices, turnaround_ms, max_gap, draw(st.sampled_from(BUSES))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_plan_matches_brute_force_over_all_request_sets(case):
    items, devices, turnaround_ms, max_gap, bus = case
    requests = pl.plan(items, devices, bus, max_gap)
    check_plan(requests, items, devices, max_gap)
    want = (Fraction(0), 0, 0)
    for unit in (1, 2):
        for function in (3, 4):
            run = [i for i in items if (i.unit, i.function) == (unit, function)]
            if not run:
                continue
            dev = devices[unit]
            safe = safe_registers(run, dev.readable, function)
            best = brute_force(run, dev.max_registers, safe, max_gap, bus, turnaround_ms[unit])
            want = (want[0] + best[0], want[1] + best[1], want[2] + best[2])
    # least time, then fewest requests, then fewest registers
    assert plan_cost(requests, bus, turnaround_ms) == want
    assert abs(pl.bus_time_s(requests, devices, bus) - float(want[0])) < 1e-9


def random_meter(rng):
    """Non-overlapping values of one unit and function, as in a validated profile."""
    items = []
    address = rng.randrange(0, 5)
    for k in range(rng.randrange(1, 25)):
        count = rng.choice([1, 2, 2, 2, 4])
        items.append(pl.Item(k, 1, 4, address, count))
        address += count + rng.choice([0, 0, 0, 1, 2, 3, 6, 10, 20, 40])
    top = address + 10
    readable = None
    if rng.random() < 0.6:
        readable = []
        for _ in range(rng.randrange(0, 4)):
            start = rng.randrange(0, top)
            readable.append((start, rng.randrange(1, 60)))
    dev = pl.Device(rng.randrange(4, 126), readable, rng.choice([0, 2, 10, 20, 40]) / 1000)
    return items, {1: dev}


def cost_if_allowed(requests, items, devices, bus, turnaround_ms, max_gap=None):
    """Exact bus time of a plan of one unit and function 4, or None if a request is not
    allowed (refused registers, over the limit, or a longer hole than max_gap)."""
    dev = devices[1]
    safe = safe_registers(items, dev.readable, 4)
    for r in requests:
        if not allowed(r.address, r.address + r.count, items, dev.max_registers, safe, max_gap):
            return None
    return plan_cost(requests, bus, turnaround_ms)[0]


@pytest.mark.parametrize("seed", range(4))
def test_never_worse_than_any_valid_peer_plan(seed):
    rng = random.Random(seed)
    touching_only = ["naive", "esphome", "telegraf_none", "telegraf_shrink", "telegraf_rearrange"]
    for _ in range(150):
        items, devices = random_meter(rng)
        bus = rng.choice(BUSES)
        ta = {1: round(devices[1].turnaround_s * 1000)}

        def planner(max_gap=None, items=items, devices=devices, bus=bus, ta=ta):
            return plan_cost(pl.plan(items, devices, bus, max_gap), bus, ta)[0]

        def peer(name, fill=None, max_gap=None, items=items, devices=devices, bus=bus, ta=ta):
            requests = poll.peer_plan(name, items, devices, fill)
            return cost_if_allowed(requests, items, devices, bus, ta, max_gap)

        best = planner()
        for name in touching_only + ["telegraf_aggressive"]:
            if peer(name) is not None:
                assert best <= peer(name), name
        for name in touching_only:
            # these join only touching values: the planner does as well without any hole
            assert planner(0) <= peer(name, max_gap=0), name
        for fill in (1, 3, 10, 50, 125):
            c = peer("telegraf_max_insert", fill, max_gap=fill)
            if c is not None:
                assert planner(fill) <= c and best <= c, fill


def test_peer_strategies_follow_their_documented_behaviour():
    # Touching runs [0..4) and [10..12); limit 3 registers.
    items = [
        pl.Item("a", 1, 3, 0, 1),
        pl.Item("b", 1, 3, 1, 2),
        pl.Item("c", 1, 3, 3, 1),
        pl.Item("d", 1, 3, 10, 2),
    ]
    devices = {1: pl.Device(3)}

    def spans(name, fill=None):
        return [(r.address, r.count) for r in poll.peer_plan(name, items, devices, fill)]

    assert spans("naive") == [(0, 1), (1, 2), (3, 1), (10, 2)]
    assert spans("telegraf_none") == spans("esphome") == [(0, 3), (3, 1), (10, 2)]
    assert spans("telegraf_max_insert", 5) == [(0, 3), (3, 1), (10, 2)]
    wide = {1: pl.Device(20)}
    assert [r.count for r in poll.peer_plan("telegraf_aggressive", items, wide)] == [12]
    assert [r.count for r in poll.peer_plan("telegraf_max_insert", items, wide, 5)] == [4, 2]
    assert [r.count for r in poll.peer_plan("telegraf_max_insert", items, wide, 6)] == [12]


def test_aggressive_moves_a_boundary_to_read_fewer_registers():
    # Limit 7: shrink packs 0 and 6 into one request (7 registers) and leaves 7 alone (1);
    # splitting before 6 gives [0] + [6, 7]: still two requests, 1 + 2 registers.
    items = [pl.Item(k, 1, 3, a, 1) for k, a in enumerate([0, 6, 7])]
    devices = {1: pl.Device(7)}
    assert [
        (r.address, r.count) for r in poll.peer_plan("telegraf_aggressive", items, devices)
    ] == [
        (0, 1),
        (6, 2),
    ]
    # rearrange keeps holes: it never joins 0 with 6
    assert len(poll.peer_plan("telegraf_rearrange", items, devices)) == 2


def test_refused_requests_cost_an_exception_and_invalidate_the_plan():
    items = [pl.Item("a", 1, 3, 0, 1), pl.Item("b", 1, 3, 5, 1)]
    devices = {1: pl.Device(10, [(0, 1), (5, 1)], 0.0)}
    bus = pl.Bus()
    aggressive = poll.evaluate(poll.peer_plan("telegraf_aggressive", items, devices), devices, bus)
    assert not aggressive["valid"] and aggressive["values_lost"] == 2
    assert aggressive["bus_ms"] == round(bus.request_time_s(0) * 1000, 3)
    planner = poll.evaluate(pl.plan(items, devices, bus), devices, bus)
    assert planner["valid"] and planner["requests"] == 2


def bundled_profiles():
    from protocols.profiles import load_all

    return load_all()


def test_bundled_profiles_plan_only_registers_they_allow():
    for profile in bundled_profiles():
        items = pl.items_for_profile(profile, 7)
        devices = {7: pl.device_for_profile(profile)}
        requests = pl.plan(items, devices)
        for r in requests:
            assert r.count <= profile.max_registers, profile.model
            ok = {a for s, n in profile.readable_blocks(r.function) for a in range(s, s + n)}
            for q in profile.quantities.values():
                if q.function == r.function:
                    ok |= set(range(q.address, q.address + q.count))
            assert set(range(r.address, r.address + r.count)) <= ok, (profile.model, r)
        check_plan(requests, items, devices, None)
        assert len(requests) < len(items) or len(items) <= 2, profile.model


def test_bigger_inputs_stay_fast():
    import time

    rng = random.Random(7)
    items = [pl.Item(k, 1, 3, rng.randrange(0, 2000), rng.choice([1, 2, 4])) for k in range(400)]
    t0 = time.perf_counter()
    requests = pl.plan(items, {1: pl.Device(125, [(0, 1000)], 0.02)})
    assert time.perf_counter() - t0 < 2.0
    check_plan(requests, items, {1: pl.Device(125, [(0, 1000)], 0.02)}, None)
