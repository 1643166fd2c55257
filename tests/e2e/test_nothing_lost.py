"""The promise that matters most, end to end, for both gateway kinds: every value a meter served
in a successful poll is stored by the fleet exactly once, whatever fails in between.

Real parts only: `fleet serve` (SQLite) in a subprocess, an external Mosquitto with the
fleet's password and ACL files, a TCP proxy as the gateway's network, hw_sim meters with seeded
faults in their own process (`hw-sim run`, ground truth to a file), and the gateway: the Linux
agent (`edge run`) or the MicroPython firmware on the real interpreter. The gateway is
provisioned through a claim token and configured over the API, as a technician and an operator
would. Then, in a seeded order and at seeded moments: gateway SIGKILLs, a dropped and a paused
network, a broker crash, a fleet crash. A configuration change must reach the gateway; a broken
one (a bus whose port does not exist) must be refused or rolled back, and the fleet must show
it. At the end the meters stop, the gateway drains, and what the fleet's API returns is matched
request by request against hw_sim's ground truth (tests/edge/truth_match.py)."""

from __future__ import annotations

import os
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    Api,
    Broker,
    EdgeGateway,
    FirmwareGateway,
    Fleet,
    GatewayProcess,
    TcpProxy,
    broker_accepts,
    now_ms,
    wait_until,
)
from truth_match import (
    lost_polls,
    match_readings,
    requests_on_bus,
    scenario_toml,
    unexplained_losses,
)

from fleet import admin
from fleet.db.engine import make_engine
from hw_sim.truth import read_jsonl
from protocols import codec, quantities
from protocols.profiles import load_profile

pytestmark = [pytest.mark.timeout(170), pytest.mark.usefixtures("need_mosquitto")]

QUANTITIES = ["voltage_l1", "power_total", "energy_import", "voltage_l1_l2", "energy_import_l1"]
UNITS = (1, 2)  # Modbus units; the meters' device ids are the same numbers
FAULTS = [  # 10% of requests; none of them delivers values
    {"kind": "crc_error", "rate": 0.03},
    {"kind": "no_answer", "rate": 0.03},
    {"kind": "exception", "rate": 0.02},
    {"kind": "truncated", "rate": 0.02},
]
RETRIES = 1
BAUD = 38400
NO_SUCH_PORT = "/dev/e2e-no-such-port"
# The chaos, shuffled by the seed: each entry happens once, at a seeded moment.
EVENTS = ["kill", "drop", "broker", "kill", "fleet", "pause", "kill"]
# How long before an interruption (SIGKILL, meters stopped) a served value may still be lost:
# the edge agent stores a meter's readings when its poll ends (one poll in flight); the firmware
# also holds readings in RAM for flush_interval_s (1 s) before they reach its flash log.
LOSS_WINDOW_MS = {"edge": 2500, "firmware": 4000}
SEED = {"edge": 11, "firmware": 12}


def config_doc(bus_path: str, batch_interval_s: int = 1) -> dict[str, Any]:
    return {
        "buses": [{"type": "rtu", "id": "b1", "port": bus_path, "baud": BAUD, "parity": "N",
                   "timeout_ms": 200, "retries": RETRIES}],
        "meters": [{"id": u, "name": f"m{u}", "bus": "b1", "unit": u, "profile": "sdm630",
                    "interval_s": 1, "quantities": QUANTITIES} for u in UNITS],
        "uplink": {"batch_interval_s": batch_interval_s},
        "rollback": {"contact_timeout_s": 60, "all_polls_failing_s": 60},
    }  # fmt: skip


def quantise(channel: int, value: float) -> Any:
    """A served value as the uplink carries it (the quantity's resolution)."""
    m, e = codec.parse_resolution(quantities.resolution_of(quantities.name_of(channel & 0xFF)))
    return codec.dequantise(codec.quantise(value, m, e), m, e)


class Scenario:
    """Everything one test runs, started in order and stopped in reverse."""

    def __init__(self, tmp: Path, kind: str) -> None:
        self.tmp = tmp
        self.kind = kind
        self.rng = random.Random(SEED[kind])
        self.broker = Broker(tmp / "broker")
        self.fleet = Fleet(tmp, self.broker)
        self.proxy: TcpProxy | None = None
        self.api: Api | None = None
        self.gw: GatewayProcess | None = None
        self.events: list[tuple[str, int]] = []  # (what, wall clock ms)

    def close(self) -> None:
        for stop in (
            lambda: self.gw and self.gw.stop(),
            lambda: self.api and self.api.close(),
            self.fleet.stop,
            lambda: self.proxy and self.proxy.stop(),
            self.broker.stop,
        ):
            try:
                stop()
            except Exception as e:  # noqa: BLE001 - teardown goes on; the test has its verdict
                print(f"teardown: {e!r}")

    # -- the fleet side ---------------------------------------------------------------------

    def gateway_row(self) -> dict[str, Any]:
        assert self.api is not None and self.gw is not None
        return dict(self.api.ok("GET", f"/gateways/{self.gw.gateway_id}"))

    def reported(self) -> dict[str, Any]:
        assert self.api is not None and self.gw is not None
        return dict(self.api.ok("GET", f"/gateways/{self.gw.gateway_id}/config/reported"))

    def wait_reported(self, version: int, timeout_s: float = 40) -> None:
        assert self.gw is not None
        gw = self.gw

        def done() -> bool:
            gw.check_alive()
            return self.reported()["reported_version"] == version

        wait_until(done, timeout_s, f"{gw.kind} gateway reports config {version}", gw.output)

    def wait_trial_over(self, version: int, timeout_s: float = 30) -> None:
        """The gateway's status says version runs and is no longer on trial (last good)."""
        assert self.gw is not None
        gw = self.gw

        def done() -> bool:
            gw.check_alive()
            st = self.gateway_row().get("last_status") or {}
            c = st.get("config") or {}
            return c.get("version") == version and c.get("last_good_version") == version

        wait_until(done, timeout_s, f"config {version} becomes the last good one", gw.output)

    # -- chaos --------------------------------------------------------------------------------

    def pause_s(self, lo: float = 0.5, hi: float = 2.0) -> None:
        """A seeded stretch of normal operation between two events (timing, not correctness)."""
        time.sleep(self.rng.uniform(lo, hi))

    def do(self, event: str) -> None:
        assert self.gw is not None and self.proxy is not None
        self.events.append((event, now_ms()))
        if event == "kill":
            self.gw.kill()
            self.gw.start()
            self.gw.wait_running()
        elif event == "drop":  # the network drops every connection and refuses new ones
            self.proxy.drop()
            self.pause_s(2, 4)
            self.proxy.restore()
        elif event == "pause":  # no byte moves; the keepalives (4 s) notice
            self.proxy.pause()
            self.pause_s(6.5, 8)
            self.proxy.restore()
        elif event == "broker":
            self.broker.kill()
            self.pause_s(1, 3)
            self.broker.start()
        elif event == "fleet":
            self.fleet.kill()
            self.pause_s(1, 3)
            self.fleet.start()
        else:
            raise AssertionError(event)


def start_gateway(s: Scenario, ident: dict[str, Any]) -> GatewayProcess:
    assert s.proxy is not None
    workdir = s.tmp / "gateway"
    if s.kind == "edge":
        return EdgeGateway(workdir, ident, s.proxy.port)
    from mpy_build import shared_tree, tool

    return FirmwareGateway(
        workdir, ident, s.proxy.port, shared_tree(), tool("micropython"), _fw_heap()
    )


def _fw_heap() -> str:
    # Loaded from .mpy files on the 64-bit unix port, the firmware's code takes ~140 KB of the
    # heap (~60 KB more than from a board's ROMFS; docs/firmware.md, "Memory"). At 192K a
    # configuration document then often cannot be checked (one restart, then it is rejected:
    # tests/firmware/test_out_of_memory.py); this suite is about exactly-once delivery, so it
    # gives the heap that ROMFS would leave free. FW_HEAP overrides.
    return os.environ.get("FW_HEAP", "256K")


@pytest.mark.parametrize("kind", ["edge", "firmware"])
def test_every_served_value_is_stored_once_through_crashes_cuts_and_faults(
    kind: str, tmp_path: Path, sim_process: Any
) -> None:
    s = Scenario(tmp_path, kind)
    try:
        _run(s, tmp_path, sim_process)
    finally:
        s.close()


def _run(s: Scenario, tmp: Path, sim_process: Any) -> None:
    gw_id = f"e2e-{s.kind}"
    # meters in their own process: their wire timing never waits for this one
    (tmp / "building.toml").write_text(
        scenario_toml(tmp / "bus0", BAUD, UNITS, FAULTS, seed=SEED[s.kind])
    )
    sim = sim_process("building.toml", "--truth", "truth.jsonl")
    bus_path = str(tmp / "bus0")

    s.broker.start()
    s.fleet.start()
    engine = make_engine(str(s.fleet.database))
    admin.create_org(engine, "musterstadt", "Stadt Musterstadt")
    admin.create_user(engine, "it@musterstadt.example", "long-password", "musterstadt", "admin")
    token = admin.create_token(engine, "it@musterstadt.example", "musterstadt", "e2e")
    engine.dispose()
    s.api = api = Api(s.fleet, token)
    s.proxy = TcpProxy(s.broker.port)
    s.proxy.start()

    # provisioning: a claim token (operator), exchanged for an identity (the gateway's side)
    claim = api.ok("POST", "/claim-tokens", 201, json={"count": 1, "label": "e2e"})[0]["token"]
    ident = api.ok("POST", "/provision/claim", 201,
                   json={"token": claim, "gateway_id": gw_id, "fw_version": s.kind})  # fmt: skip
    assert ident["next_seq"] == 1
    v1 = api.ok("PUT", f"/gateways/{gw_id}/config", 201, json=config_doc(bus_path))["version"]
    wait_until(
        lambda: broker_accepts(s.broker.port, ident["mqtt_username"], ident["mqtt_password"]),
        20, "the fleet gave the broker the gateway's account",
    )  # fmt: skip

    s.gw = gw = start_gateway(s, ident)
    gw.start()
    gw.wait_running()
    s.wait_reported(v1)
    want = {quantities.channel_id(u, q) for u in UNITS for q in QUANTITIES}

    def latest_channels() -> bool:
        gw.check_alive()
        got = api.ok("GET", f"/gateways/{gw_id}/latest")
        return {x["channel"] for x in got} >= want

    wait_until(latest_channels, 30, "readings of every channel", gw.output)
    s.wait_trial_over(v1)  # trial window 6 s (TIME_SCALE): v1 becomes the last good one

    # -- chaos, in a seeded order at seeded moments ----------------------------------------------
    events = list(EVENTS)
    s.rng.shuffle(events)
    for event in events:
        s.pause_s()
        s.do(event)
    s.pause_s()

    # -- configuration: a change reaches the gateway, a broken one comes back ----------------
    v2 = api.ok("PUT", f"/gateways/{gw_id}/config", 201,
                json=config_doc(bus_path, batch_interval_s=2))["version"]  # fmt: skip
    s.events.append(("config", now_ms()))
    s.wait_reported(v2)
    s.wait_trial_over(v2)  # so that a rollback returns to v2
    broken_bus = dict(config_doc(bus_path)["buses"][0], port=NO_SUCH_PORT)
    rollout = api.ok("POST", "/rollouts", 201, json={
        "name": "e2e: a bus whose port does not exist", "patch": {"buses": [broken_bus]},
        "gateway_ids": [gw_id], "report_timeout_s": 120,
    })  # fmt: skip
    s.events.append(("config", now_ms()))

    def target_settled() -> dict[str, Any] | None:
        gw.check_alive()
        targets = api.ok("GET", f"/rollouts/{rollout['id']}/targets")
        assert len(targets) == 1, targets
        return targets[0] if targets[0]["state"] in ("failed", "rolled_back") else None

    target = wait_until(target_settled, 60, "the broken configuration's rollback", gw.output)
    v3 = target["config_version"]
    assert v3 == v2 + 1
    # The gateway ran v3, found it broken (the agent: every poll failing; the firmware: the
    # bus would not open at its restart) and went back to v2; the fleet shows why.
    assert target["state"] == "rolled_back", target
    assert target["reason"], target
    assert s.reported() == {"gateway_id": gw_id, "reported_version": v2, "desired_version": v3,
                            "in_sync": False}  # fmt: skip
    roll = api.ok("GET", f"/rollouts/{rollout['id']}")
    assert roll["counts"]["rolled_back"] == 1, roll
    # the operator goes back to v2's document: a new version, in sync again
    v4 = api.ok("POST", f"/gateways/{gw_id}/config/rollback", 201, json={"version": v2})["version"]
    s.events.append(("config", now_ms()))
    s.wait_reported(v4)
    assert s.reported()["in_sync"] is True
    s.pause_s()
    s.do("kill")  # one more power cut, now under the restored configuration

    # -- the end: the meters stop, the gateway drains -----------------------------------------
    s.pause_s()
    meters_stopped_ms = now_ms()
    assert sim["stop"]() == 0
    s.events.append(("meters stopped", meters_stopped_ms))

    def drained() -> bool:
        gw.check_alive()
        row = s.gateway_row()
        st = row.get("last_status") or {}
        fresh = (row.get("last_status_ts_ms") or 0) > meters_stopped_ms + 3000
        return fresh and st.get("buffer_depth") == 0

    wait_until(drained, 60, "the gateway drained its buffer", gw.output)
    row = s.gateway_row()
    assert row["online"] is True and row["boot"] >= len(gw.starts_ms), row

    start = gw.starts_ms[0] - 60_000
    raw = api.ok("GET", f"/gateways/{gw_id}/telemetry", params={
        "channel": sorted(want), "start_ts_ms": start, "end_ts_ms": now_ms() + 60_000})["raw"]  # fmt: skip
    readings = [(int(ch), p["ts_ms"], p["value"]) for ch, pts in raw.items() for p in pts]
    gw.stop()
    s.fleet.stop()

    # -- what the fleet stored, against what the meters served ---------------------------------
    db = sqlite3.connect(s.fleet.database)
    try:
        seqs = [r[0] for r in db.execute(
            "SELECT seq FROM batches WHERE gateway_id = ? ORDER BY seq", (gw_id,))]  # fmt: skip
        (stored,) = db.execute(
            "SELECT COALESCE(SUM(readings), 0) FROM batches WHERE gateway_id = ?", (gw_id,)
        ).fetchone()
        rejected = db.execute(
            "SELECT seq, kind, reason FROM rejected_batches WHERE gateway_id = ?", (gw_id,)
        ).fetchall()
    finally:
        db.close()
    assert rejected == [], rejected
    assert seqs == list(range(1, len(seqs) + 1)), "a batch sequence number never arrived"
    keys = {(ch, ts) for ch, ts, _v in readings}
    assert len(keys) == len(readings), "a reading stored twice"
    # every reading of every stored batch is in the API's answer (none merged away)
    assert stored == len(readings), (stored, len(readings))
    assert {ch for ch, _, _ in readings} == want

    records = read_jsonl(tmp / "truth.jsonl")
    assert sum(r["type"] == "fault" for r in records) >= 8, "the meter faults did not happen"
    requests = requests_on_bus(records, load_profile("sdm630"), RETRIES, gw.starts_ms)
    # each stored reading is a value a meter served for it, and no served value counts twice
    try:
        match_readings(requests, readings, lambda device: device, quantise)
    except AssertionError as e:
        raise AssertionError(f"{e}\nevents: {s.events}\nstarts: {gw.starts_ms}") from None
    # every served value reached the fleet, but those of a poll cut short by a power cut
    interruptions = gw.kills_ms + [meters_stopped_ms]
    lost = lost_polls(requests, QUANTITIES)
    unexplained = unexplained_losses(lost, interruptions, LOSS_WINDOW_MS[s.kind])
    assert not unexplained, (
        f"served but never stored, away from any kill: {unexplained}\nevents: {s.events}\n"
        f"kills: {gw.kills_ms}"
    )
    assert len(readings) > 300, len(readings)
