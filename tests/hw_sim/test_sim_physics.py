"""Meter physics: P = U·I·cos φ per phase, totals are sums, plausible grid values, load
shapes by day type, energy counters that integrate power, never run backwards and persist."""

import json
import math
from datetime import datetime

import pytest

from hw_sim.clock import SimClock
from hw_sim.loadshape import load_share, zone
from hw_sim.physics import ElectricalModel, LoadParams
from hw_sim.scenario import Building

BERLIN = zone("Europe/Berlin")
# Monday 10 March 2025 and the Saturday after, local time (CET, +01:00).
MONDAY_10H = int(datetime.fromisoformat("2025-03-10T10:00:00+01:00").timestamp() * 1000)
MONDAY_03H = int(datetime.fromisoformat("2025-03-10T03:00:00+01:00").timestamp() * 1000)
SATURDAY_10H = int(datetime.fromisoformat("2025-03-15T10:00:00+01:00").timestamp() * 1000)
HOUR_MS = 3_600_000


def model(shape="school", seed=1, **params):
    return ElectricalModel(LoadParams(shape=shape, **params), BERLIN, 3, seed)


def test_each_phase_obeys_p_equals_u_i_cos_phi_and_totals_are_sums():
    m = model(peak_power_w=30_000, base_power_w=3_000, cos_phi=0.9)
    for k in range(50):
        v = m.sample(MONDAY_10H + k * 60_000)
        for n in (1, 2, 3):
            u, i, pf = v[f"voltage_l{n}"], v[f"current_l{n}"], v[f"power_factor_l{n}"]
            assert v[f"power_l{n}"] == pytest.approx(u * i * pf, rel=1e-12)
            assert v[f"apparent_power_l{n}"] == pytest.approx(u * i, rel=1e-12)
            assert v[f"reactive_power_l{n}"] == pytest.approx(
                u * i * math.sin(math.acos(pf)), rel=1e-9
            )
        for q in ("power", "reactive_power", "apparent_power"):
            assert v[f"{q}_total"] == pytest.approx(sum(v[f"{q}_l{n}"] for n in (1, 2, 3)))
        assert v["power_factor_total"] == pytest.approx(
            v["power_total"] / v["apparent_power_total"]
        )


def test_grid_values_are_plausible():
    m = model()
    samples = [m.sample(MONDAY_10H + k * 1000) for k in range(200)]
    for v in samples:
        for n in (1, 2, 3):
            assert 220 < v[f"voltage_l{n}"] < 240
        assert 49.9 < v["frequency"] < 50.1
        # line-to-line voltage is sqrt(3) times phase voltage in a balanced system
        assert v["voltage_l1_l2"] == pytest.approx(math.sqrt(3) * 230, rel=0.03)
    # noise: values differ from one second to the next
    assert len({round(v["voltage_l1"], 6) for v in samples}) > 150


def test_school_load_is_high_on_weekday_mornings_and_low_at_night_and_weekends():
    assert load_share("school", MONDAY_10H, BERLIN) > 0.9
    assert load_share("school", MONDAY_03H, BERLIN) < 0.1
    assert load_share("school", SATURDAY_10H, BERLIN) < 0.2
    # pools open at weekends, offices do not
    assert load_share("pool", SATURDAY_10H, BERLIN) > 0.9
    assert load_share("office", SATURDAY_10H, BERLIN) < 0.1
    m = model(peak_power_w=50_000, base_power_w=5_000, noise=0.0)
    assert m.sample(MONDAY_10H)["power_total"] > 40_000
    assert m.sample(MONDAY_03H + 7 * 24 * HOUR_MS)["power_total"] < 10_000


def test_energy_counter_integrates_power_over_a_day():
    m = model(peak_power_w=40_000, base_power_w=4_000, noise=0.0)
    m.sample(MONDAY_03H)
    start = m.counters["energy_import"]
    # independent integral: mean power sampled every 10 s, rectangle rule
    step_ms = 10_000
    expected_wh = (
        sum(m.mean_power_w(MONDAY_03H + k * step_ms + step_ms // 2) for k in range(24 * 360))
        * step_ms
        / HOUR_MS
    )
    for k in range(1, 25):
        m.sample(MONDAY_03H + k * HOUR_MS)
    got_wh = m.counters["energy_import"] - start
    assert got_wh == pytest.approx(expected_wh, rel=0.002)
    # per-phase import counters add up to the total
    assert sum(m.counters[f"energy_import_l{n}"] for n in (1, 2, 3)) == pytest.approx(
        m.counters["energy_import"] - 0.0, rel=1e-9
    )


def test_energy_counters_never_run_backwards_even_if_asked_for_the_past():
    m = model()
    last = -1.0
    for ts in (
        MONDAY_10H,
        MONDAY_10H + 5000,
        MONDAY_10H - HOUR_MS,
        MONDAY_10H + HOUR_MS,
        MONDAY_10H + 10 * 24 * HOUR_MS,
        MONDAY_10H + 3,
    ):
        e = m.sample(ts)["energy_import"]
        assert e >= last
        last = e


def test_single_phase_meter_reports_only_l1():
    m = ElectricalModel(LoadParams(shape="office"), BERLIN, 1, 3)
    v = m.sample(MONDAY_10H)
    assert v["current_l2"] == v["current_l3"] == 0.0
    assert v["power_total"] == pytest.approx(v["power_l1"])


def test_clock_runs_faster_than_real_time_and_jumps_only_forward():
    c = SimClock(speed=3600.0, start_ms=MONDAY_10H)
    t0 = c.now_ms()
    import time

    time.sleep(0.05)
    assert c.now_ms() - t0 == pytest.approx(0.05 * 3600 * 1000, rel=0.5)
    c.advance(HOUR_MS)
    assert c.now_ms() - t0 >= HOUR_MS
    with pytest.raises(ValueError):
        c.advance(-1)


def test_counters_persist_across_restarts_with_a_state_file(tmp_path):
    state = tmp_path / "state.json"
    config = {
        "sim": {"state_file": str(state), "speed": 3600.0, "start": "2025-03-10T08:00:00+01:00"},
        "tcp": [
            {
                "name": "t",
                "meter": [{"name": "m", "profile": "sdm630", "unit": 1, "peak_power_w": 50_000}],
            }
        ],
    }
    first = Building(config)
    first.start()
    first.clock.advance(5 * HOUR_MS)
    first.meter("m").model.sample(first.clock.now_ms())
    before = first.meter("m").model.counters["energy_import"]
    assert before > 100_000  # five school hours at tens of kW
    first.stop()
    saved_ms = json.loads(state.read_text())["clock_ms"]
    second = Building(config)  # same fixed start: time resumes, counters continue
    assert second.clock.now_ms() >= saved_ms
    second.start()
    try:
        after = second.meter("m").model.sample(second.clock.now_ms())["energy_import"]
    finally:
        second.stop()
    assert after >= before
