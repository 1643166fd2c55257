"""The poll planner's cost model, limits and ticks, on CPython and MicroPython."""

from portable import approx, raises

from protocols import planner as pl
from protocols.planner import Bus, Device, Item, PlanError


class Profile:
    # The attributes of profiles.Profile the adapter uses (tests/protocols/test_planner_optimal.py
    # runs it on the bundled profiles): hole 4..9 refused, 12..19 readable for function 4;
    # "status" (function 3) has no readable blocks.
    model = "test3ph"
    max_registers = 8
    turnaround_ms = 20

    def __init__(self):
        self.quantities = q = {}
        for name, f, a, c in (
            ("voltage_l1", 4, 0, 2),
            ("voltage_l2", 4, 2, 2),
            ("frequency", 4, 10, 2),
            ("power_total", 4, 20, 2),
            ("energy_import", 4, 40, 4),
            ("status", 3, 5, 1),
        ):
            q[name] = Item(name, 0, f, a, c)

    def readable_blocks(self, function):
        return [(0, 4), (10, 20)] if function == 4 else []


def spans(requests):
    return [(r.address, r.count) for r in requests]


def keys(requests):
    return [[p.key for p in r.items] for r in requests]


def regs(*addr_counts, unit=1, function=3):
    return [Item(i, unit, function, a, c) for i, (a, c) in enumerate(addr_counts)]


def test_char_time_and_silence_at_9600_8e1():
    bus = Bus(9600, 11)
    assert approx(bus.char_time_s, 0.0011458333)  # 11 bits / 9600 baud
    assert approx(bus.silence_s, 0.0040104167)  # 3.5 characters


def test_silence_is_fixed_1_75_ms_above_19200_baud():
    # Modbus over serial line V1.02, 2.5.1.1
    assert approx(Bus(38400, 11).silence_s, 0.00175)
    assert approx(Bus(115200, 10).silence_s, 0.00175)
    assert approx(Bus(19200, 11).silence_s, 3.5 * 11 / 19200)


def test_read_of_two_registers_is_8_plus_9_bytes_and_two_silences():
    bus = Bus(9600, 11)
    # 17 bytes * 1.1458 ms + 2 * 4.0104 ms = 27.5 ms, plus the device's turnaround
    assert approx(bus.request_time_s(2), 0.0275)
    assert approx(bus.request_time_s(2, 0.020), 0.0475)
    assert approx(Bus(9600, 10).request_time_s(2), (17 + 7) * 10 / 9600)


def test_bus_time_of_a_plan_is_the_sum_of_its_requests():
    items = [Item("a", 1, 3, 0, 2), Item("b", 2, 3, 0, 1)]
    devices = {1: Device(turnaround_s=0.010)}
    want = Bus().request_time_s(2, 0.010) + Bus().request_time_s(1)
    assert approx(pl.bus_time_s(pl.plan(items, devices), devices), want)
    assert pl.plan([]) == [] and pl.bus_time_s([]) == 0


def test_adjacent_values_share_one_request_with_their_offsets():
    p = pl.plan([Item("v2", 1, 4, 2, 2), Item("v1", 1, 4, 0, 2), Item("f", 1, 4, 4, 1)])
    assert spans(p) == [(0, 5)]
    assert [tuple(x) for x in p[0].items] == [("v1", 0, 2), ("v2", 2, 2), ("f", 4, 1)]


def test_max_registers_splits_without_cutting_a_value():
    p = pl.plan(regs((0, 2), (2, 2), (4, 2), (6, 2), (8, 2)), {1: Device(max_registers=5)})
    assert len(p) == 3 and all(r.count <= 5 for r in p)
    assert sorted(k for ks in keys(p) for k in ks) == [0, 1, 2, 3, 4]
    for r in p:
        assert all(0 <= x.offset and x.offset + x.count <= r.count for x in r.items)


def test_value_longer_than_the_device_limit_is_a_plan_error():
    e = raises(PlanError, pl.plan, [Item("e", 7, 3, 0, 4)], {7: Device(max_registers=2)})
    assert "'e'" in str(e) and "1..2" in str(e)


def test_refused_hole_is_never_read():
    items = regs((0, 2), (4, 2))
    assert spans(pl.plan(items, {1: Device(readable=[[0, 2], [4, 2]])})) == [(0, 2), (4, 2)]
    assert spans(pl.plan(items, {1: Device(readable=[[0, 6]])})) == [(0, 6)]


def test_readable_blocks_are_per_function():
    items = regs((0, 1), (3, 1))
    assert spans(pl.plan(items, {1: Device(readable={4: [[0, 9]]})})) == [(0, 1), (3, 1)]
    assert spans(pl.plan(items, {1: Device(readable={3: [[0, 9]]})})) == [(0, 4)]


def test_items_own_registers_are_readable_outside_the_blocks():
    p = pl.plan(regs((0, 1), (1, 2), (4, 1)), {1: Device(readable=[])})
    assert spans(p) == [(0, 3), (4, 1)]


def test_max_gap_is_honoured():
    assert spans(pl.plan(regs((0, 1), (5, 1)), max_gap=3)) == [(0, 1), (5, 1)]
    assert spans(pl.plan(regs((0, 1), (5, 1)), max_gap=4)) == [(0, 6)]
    assert spans(pl.plan(regs((0, 1), (1, 1)), max_gap=0)) == [(0, 2)]


def test_gap_is_filled_exactly_while_cheaper_than_a_request():
    # 9600 baud 8E1, no turnaround: a request costs 13 + 7 characters of overhead and a
    # register 2, so filling 10 registers ties, and a tie takes fewer requests.
    assert spans(pl.plan(regs((0, 1), (10, 1)))) == [(0, 11)]
    assert spans(pl.plan(regs((0, 1), (11, 1)))) == [(0, 12)]
    assert spans(pl.plan(regs((0, 1), (12, 1)))) == [(0, 1), (12, 1)]
    # a 20 ms turnaround is worth 8.7 registers more: a gap of 18 still pays
    slow = {1: Device(turnaround_s=0.020)}
    assert len(pl.plan(regs((0, 1), (19, 1)), slow)) == 1
    assert len(pl.plan(regs((0, 1), (20, 1)), slow)) == 2


def test_units_and_functions_are_planned_separately():
    items = regs((0, 2), unit=2) + [Item("f4", 1, 4, 2, 2), Item("a", 1, 3, 2, 2)]
    items.append(Item("b", 1, 3, 0, 2))
    p = pl.plan(items)
    assert [tuple(r[:4]) for r in p] == [(1, 3, 0, 4), (1, 4, 2, 2), (2, 3, 0, 2)]


def test_duplicate_and_overlapping_items_are_read_once():
    items = [Item("lo", 1, 3, 10, 2), Item("lo2", 1, 3, 10, 2), Item("mid", 1, 3, 11, 2)]
    p = pl.plan(items)
    assert spans(p) == [(10, 3)]
    assert [(x.key, x.offset) for x in p[0].items] == [("lo", 0), ("lo2", 0), ("mid", 1)]


def test_bad_input_names_what_to_fix():
    assert "twice" in str(raises(PlanError, pl.plan, [Item("k", 1, 3, 0, 1)] * 2))
    assert "function 6" in str(raises(PlanError, pl.plan, [Item("k", 1, 6, 0, 1)]))
    assert "40001" in str(raises(PlanError, pl.plan, [Item("k", 1, 3, 65535, 2)]))
    assert "125" in str(raises(PlanError, Device, 200))
    raises(PlanError, Bus, 9600, 12)
    raises(PlanError, pl.plan, [], None, None, -1)


READS = [
    (Item("power", 1, 4, 12, 2), 10),
    (Item("voltage", 1, 4, 0, 2), 60),
    (Item("energy", 1, 4, 72, 2), 900),
]


def test_due_items_per_tick():
    def due(t):
        return [i.key for i in pl.due_items(READS, t)]

    assert due(0) == due(1800) == ["power", "voltage", "energy"]
    assert due(10) == ["power"] and due(7) == []
    assert due(120) == ["power", "voltage"]


def test_planner_caches_one_plan_per_due_set():
    planner = pl.Planner(READS)
    a = planner.plan_for(10)
    assert keys(a) == [["power"]]
    assert planner.plan_for(20) is a
    assert planner.plan_for(3) == []
    both = planner.plan_for(60)
    assert keys(both) == [["voltage", "power"]]
    assert planner.plan_for(180) is both
    assert keys(planner.plan_for(900)) == [["voltage", "power"], ["energy"]]
    assert len(planner._cache) == 4  # {10}, {}, {10, 60}, {10, 60, 900}


def test_schedule_lists_each_distinct_due_set_once():
    sched = pl.plan_schedule(READS)
    assert [t for t, _ in sched] == [10, 60, 900]
    assert [len(p) for _, p in sched] == [1, 1, 2]
    odd = [(Item("a", 1, 3, 0, 1), 6), (Item("b", 1, 3, 40, 1), 4)]
    assert [t for t, _ in pl.plan_schedule(odd)] == [4, 6, 12]


def test_planner_rejects_bad_intervals_up_front():
    raises(PlanError, pl.Planner, [(Item("a", 1, 3, 0, 1), 0)])
    raises(PlanError, pl.Planner, [(Item("a", 1, 3, 0, 1), 1.5)])


def test_items_for_profile_use_defaults_and_types():
    items = pl.items_for_profile(Profile(), 3, ["voltage_l1", "energy_import", "status"])
    assert [tuple(i) for i in items] == [
        ((3, "voltage_l1"), 3, 4, 0, 2),
        ((3, "energy_import"), 3, 4, 40, 4),
        ((3, "status"), 3, 3, 5, 1),
    ]
    assert len(pl.items_for_profile(Profile(), 1)) == 6
    assert "flux" in str(raises(PlanError, pl.items_for_profile, Profile(), 1, ["flux"]))


def test_profile_plan_respects_its_limits_and_holes():
    dev = pl.device_for_profile(Profile())
    assert dev.max_registers == 8 and approx(dev.turnaround_s, 0.020)
    p = pl.plan(pl.items_for_profile(Profile(), 5), {5: dev})
    # function 4 never reads the refused hole 4..9; status (function 3) is read alone
    assert [tuple(r[1:4]) for r in p] == [(3, 5, 1), (4, 0, 4), (4, 10, 2), (4, 20, 2), (4, 40, 4)]


def test_forty_quantity_meter_plans_within_a_small_heap():
    items = [Item(i, 1, 4, (i * 7) % 300, 2) for i in range(40)]
    dev = Device(max_registers=60, readable=[[0, 100], [150, 100]], turnaround_s=0.005)
    p = pl.plan(items, {1: dev})
    assert sorted(x.key for r in p for x in r.items) == list(range(40))
    assert all(r.count <= 60 for r in p)
