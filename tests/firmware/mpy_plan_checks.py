# Runs on MicroPython (tests/firmware/test_planning_by_meter.py): how the poller plans at
# start-up, from the packed profiles of the compiled tree. Usage: <flash, unused> <check>;
# each check prints "ok <check>" (and figures as "<name> <value>" lines).
import gc
import sys

BUS = {"type": "rtu", "id": "b1", "port": "-", "baud": 19200, "timeout_ms": 100, "retries": 0}


class Sink:
    def append(self, readings):
        pass


def _entries():
    # units out of order, two of one model alike, one with a subset, other intervals
    names = ["power_total", "voltage_l1", "energy_import", "frequency"]
    return [
        {"id": 1, "name": "a", "bus": "b1", "unit": 7, "profile": "sdm630", "interval_s": 10},
        {"id": 2, "name": "b", "bus": "b1", "unit": 2, "profile": "sdm630", "interval_s": 10},
        {
            "id": 3,
            "name": "c",
            "bus": "b1",
            "unit": 5,
            "profile": "sdm630",
            "interval_s": 30,
            "quantities": names,
        },  # fmt: skip
        {"id": 4, "name": "d", "bus": "b1", "unit": 3, "profile": "sdm120", "interval_s": 60},
        {"id": 5, "name": "e", "bus": "b1", "unit": 9, "profile": "sdm630", "interval_s": 15},
    ]


def check_poller_plans_meter_by_meter_as_all_together():
    import firmware.poller as poller_module
    from firmware.meter import load_meters
    from firmware.poller import Poller

    by_meter = Poller(BUS, load_meters(_entries()), Sink(), None, master=object())
    assert by_meter._compacted, "the plans were not made at start-up"
    poller_module._MAX_DUE_SETS = 0  # the other way: one Planner of every meter's items
    together = Poller(BUS, load_meters(_entries()), Sink(), None, master=object())
    assert not together._compacted and type(together.planner).__name__ == "Planner"
    for t in range(0, 181):  # the hyperperiod of 10, 15, 30 and 60 s, and one more tick
        want = together._compact(together.planner.plan_for(t))
        got = list(by_meter.planner.plan_for(t))
        assert got == want, (t, got, want)
    assert by_meter.planner.plan_for(60)[0][0] == 2  # every unit due, in unit order
    print("ok poller_plans_meter_by_meter_as_all_together")


def _kept(n):
    from firmware.meter import load_meters

    gc.collect()
    before = gc.mem_alloc()
    entries = [{"id": u, "name": "m", "bus": "b1", "unit": u, "profile": "sdm630"}
               for u in range(1, n + 1)]  # fmt: skip
    meters = load_meters(entries)
    entries = None
    gc.collect()
    return gc.mem_alloc() - before, meters


def check_meters_hold_no_items_until_planned():
    _kept(1)  # loads the modules that stay loaded
    one, meters = _kept(1)
    meters = None
    six, meters = _kept(6)
    per_meter = (six - one) // 5
    print("bytes_per_meter", per_meter)
    # 35 Items and a Device of its own took ~5 KB per SDM630 on the 64-bit unix port
    assert per_meter < 1000, per_meter
    assert meters[0].device is meters[5].device
    assert len(meters[3].items) == 35  # built when the poller asks for them
    print("ok meters_hold_no_items_until_planned")


def check_planner_plans_each_due_set_once():
    import protocols.planner as planner

    real = planner.plan
    calls = []

    def counted(items, *args):
        calls.append(len(items))
        return real(items, *args)

    planner.plan = counted
    reads = [(planner.Item("p", 1, 4, 0, 2), 10), (planner.Item("e", 1, 4, 40, 2), 60)]
    p = planner.Planner(reads)
    assert p.precompute() is True
    assert sorted(calls) == [1, 2], calls  # {10} and {10, 60}: the full set is not redone
    print("ok planner_plans_each_due_set_once")


globals()["check_" + sys.argv[2]]()
