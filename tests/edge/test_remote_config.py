"""Remote configuration (contract 4) without a broker: signature, schema, atomic files,
reports, the trial period and the rollback to the last good configuration."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from edge.remote_config import ApplyError, Health, RemoteConfig, atomic_write_json, read_json
from protocols import lora, messages
from protocols.sign import make_envelope

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
PROFILES = {"sdm630": ["voltage_l1", "power_total"], "sdm120": ["voltage_l1"]}


def doc(version: int, port: str = "/dev/ttyUSB0", **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "version": version,
        "gateway": "gw-test",
        "buses": [{"type": "rtu", "id": "b1", "port": port}],
        "meters": [{"id": 1, "name": "main", "bus": "b1", "unit": 1, "profile": "sdm630"}],
        "rollback": {"contact_timeout_s": 300, "all_polls_failing_s": 120},
    }
    d.update(extra)
    return d


def signed(d: dict[str, Any], key: bytes = KEY) -> bytes:
    return make_envelope(json.dumps(d), key).encode()


class Fixture:
    def __init__(self, tmp: Path) -> None:
        self.now = 1_700_000_000.0
        self.applied: list[int] = []
        self.reports: list[tuple[int, int, str, str | None]] = []
        self.contact_ms: int | None = None
        self.poll_ok_ms: int | None = None
        self.fail_apply = False
        self.dir = tmp / "config"

    def make(self) -> RemoteConfig:
        async def apply(d: dict[str, Any] | None) -> None:
            if self.fail_apply:
                raise ApplyError("profile file unreadable")
            self.applied.append(d["version"] if d else 0)

        async def report(v: int, desired: int, status: str, reason: str | None) -> bool:
            self.reports.append((v, desired, status, reason))
            return True

        health = Health(lambda: self.contact_ms, lambda: self.poll_ok_ms, lambda: True)
        return RemoteConfig(
            self.dir, "gw-test", (KEY,), apply, report, health, PROFILES, lora.FORMATS,
            clock=lambda: self.now,
        )  # fmt: skip

    def healthy(self) -> None:
        self.contact_ms = self.poll_ok_ms = int(self.now * 1000)


@pytest.fixture
def fx(tmp_path: Path) -> Fixture:
    return Fixture(tmp_path)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_signed_valid_config_is_applied_atomically_and_reported(fx: Fixture) -> None:
    rc = fx.make()
    assert rc.boot(doc(1)) is not None and rc.last_good is not None
    assert run(rc.handle(signed(doc(2)))) == messages.REPORT_APPLIED
    assert fx.applied == [2]
    assert fx.reports[-1] == (2, 2, "applied", None)
    running = read_json(fx.dir / "running.json")
    assert running["doc"]["version"] == 2 and running["trial"] is True
    assert running["doc"]["meters"][0]["interval_s"] == 10  # defaults filled in
    assert read_json(fx.dir / "pending.json")["version"] == 2
    assert not list(fx.dir.glob("*.tmp"))


@pytest.mark.parametrize(
    "payload, why",
    [
        (signed(doc(2), b"another key 0123"), "signature does not match"),
        (json.dumps(doc(2)).encode(), "envelope"),
        (
            signed(
                doc(2, meters=[{"id": 1, "name": "m", "bus": "b9", "unit": 1, "profile": "xyz"}])
            ),
            "no bus with id 'b9'",
        ),  # fmt: skip
        (signed({**doc(2), "gateway": "gw-other"}), "this is 'gw-test'"),
    ],
)
def test_bad_documents_are_rejected_and_the_running_config_stays(
    fx: Fixture, payload: bytes, why: str
) -> None:
    rc = fx.make()
    rc.boot(doc(1))
    assert run(rc.handle(payload)) == messages.REPORT_REJECTED
    assert fx.applied == []
    version, _desired, status, reason = fx.reports[-1]
    assert (version, status) == (1, "rejected") and reason is not None and why in reason
    assert rc.running is not None and rc.running["version"] == 1


def test_unknown_profile_is_rejected_with_the_known_ones(fx: Fixture) -> None:
    rc = fx.make()
    rc.boot(doc(1))
    bad = doc(2, meters=[{"id": 1, "name": "m", "bus": "b1", "unit": 1, "profile": "abc"}])
    run(rc.handle(signed(bad)))
    assert "unknown profile 'abc' (known: sdm120, sdm630)" in str(fx.reports[-1][3])


def test_apply_failure_is_rejected_and_nothing_changes(fx: Fixture) -> None:
    rc = fx.make()
    rc.boot(doc(1))
    fx.fail_apply = True
    assert run(rc.handle(signed(doc(2)))) == "rejected"
    assert "could not be applied" in str(fx.reports[-1][3])
    assert read_json(fx.dir / "running.json")["doc"]["version"] == 1


def test_older_version_is_rejected(fx: Fixture) -> None:
    rc = fx.make()
    rc.boot(doc(5))
    assert run(rc.handle(signed(doc(4)))) == "rejected"
    assert fx.reports[-1][:3] == (5, 4, "rejected") and "older" in str(fx.reports[-1][3])


def test_redelivered_desired_config_is_reported_again_not_reapplied(fx: Fixture) -> None:
    rc = fx.make()
    rc.boot(doc(1))
    run(rc.handle(signed(doc(2))))
    run(rc.handle(signed(doc(2))))  # retained message after a reconnect
    assert fx.applied == [2]
    assert fx.reports[-1] == (2, 2, "applied", None)


def test_all_polls_failing_rolls_back_to_last_good_and_reports(fx: Fixture) -> None:
    rc = fx.make()
    rc.boot(doc(1))
    fx.healthy()
    run(rc.handle(signed(doc(2, port="/dev/ttyNOPE"))))
    for _ in range(119):
        fx.now += 1
        fx.contact_ms = int(fx.now * 1000)  # the fleet is there; the meters are not
        assert rc.check() is None
    fx.now += 1
    reason = rc.check()
    assert reason == "every poll failed for 120 s"
    run(rc.rollback(reason))
    assert fx.applied == [2, 1]
    assert fx.reports[-1] == (1, 2, "rolled_back", "every poll failed for 120 s")
    assert rc.running is not None and rc.running["version"] == 1 and not rc.trial
    # the retained desired 2 comes again on reconnect: not retried, reported again
    run(rc.handle(signed(doc(2, port="/dev/ttyNOPE"))))
    assert fx.applied == [2, 1]
    assert fx.reports[-1] == (1, 2, "rolled_back", "every poll failed for 120 s")


def test_lost_fleet_contact_rolls_back(fx: Fixture) -> None:
    rc = fx.make()
    rc.boot(doc(1))
    run(rc.handle(signed(doc(2))))
    fx.now += 299
    fx.poll_ok_ms = int(fx.now * 1000)
    assert rc.check() is None
    fx.now += 1
    assert rc.check() == "no contact with the fleet for 300 s"


def test_healthy_config_becomes_last_good_and_survives_a_restart(fx: Fixture) -> None:
    rc = fx.make()
    rc.boot(doc(1))
    run(rc.handle(signed(doc(2))))
    for _ in range(301):
        fx.now += 1
        fx.healthy()
        assert rc.check() is None
    assert not rc.trial and rc.last_good is not None and rc.last_good["version"] == 2
    again = fx.make()
    assert again.boot(doc(1))["version"] == 2  # the running file wins over initial_config
    assert not again.trial and again.last_good["version"] == 2


def test_config_that_keeps_crashing_the_agent_is_rolled_back_at_boot(fx: Fixture) -> None:
    rc = fx.make()
    rc.boot(doc(1))
    run(rc.handle(signed(doc(2))))
    for _ in range(3):
        again = fx.make()
        again.boot(None)
        assert again.check() is None
    last = fx.make()
    assert last.boot(None)["version"] == 2
    reason = last.check()
    assert reason is not None and "restarted 3 times" in reason
    run(last.rollback(reason))
    assert fx.reports[-1][:3] == (1, 2, "rolled_back")


def test_atomic_write_never_leaves_a_torn_file(tmp_path: Path) -> None:
    path = tmp_path / "running.json"
    atomic_write_json(path, {"doc": {"version": 1}})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"doc": object()})  # fails while writing the temporary file
    assert read_json(path) == {"doc": {"version": 1}}
