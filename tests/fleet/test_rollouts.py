"""Staged rollouts: batch sizes, waiting for a batch to settle, per-gateway states from the
gateways' reports (via config_service.record_reported), automatic halt on the failure share,
resume, cancel, report timeouts, the rate limit, when a rollout may go on (what the bridge asks
before advancing it), a batch in which some gateways cannot be configured, and the API."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from api_helpers import NOW_MS, add_gateway, bearer, client, make_org
from sqlalchemy import Engine

from fleet import config_service, rollouts
from fleet.db import tables as t
from fleet.db.engine import read, transaction
from protocols import messages


@pytest.fixture
def fleet10(db: Engine) -> tuple[int, list[str]]:
    with transaction(db) as conn:
        org_id = conn.execute(
            sa.insert(t.organisations)
            .values(slug="t", name="T", created_ts_ms=0)
            .returning(t.organisations.c.id)
        ).scalar_one()
    gws = [
        add_gateway(db, org_id, f"gw-{i:02d}", tags=("pilot",) if i < 4 else ()) for i in range(10)
    ]
    return org_id, gws


def _create(db: Engine, org_id: int, **kw: object) -> int:
    with transaction(db) as conn:
        return rollouts.create(conn, org_id, {"uplink": {"batch_interval_s": 30}}, NOW_MS, **kw)  # type: ignore[arg-type]


def _tick(db: Engine, now: int) -> rollouts.TickResult:
    return rollouts.tick(db, now)


def _report(
    db: Engine, status: str, gateways: list[str] | None = None, rollout_id: int | None = None
) -> list[str]:
    """Every delivered gateway (or the given ones) reports status for its rollout version."""
    with transaction(db) as conn:
        targets = rollouts.targets(conn, rollout_id, rollouts.DELIVERED) if rollout_id else []
        done = []
        for tg in targets:
            if gateways is not None and tg["gateway_id"] not in gateways:
                continue
            v = tg["config_version"]
            report = {"gateway": tg["gateway_id"], "version": v if status == messages.REPORT_APPLIED else v - 1,
                      "desired_version": v, "status": status, "reason": None if status == "applied" else "broken",
                      "ts_ms": NOW_MS}  # fmt: skip
            config_service.record_reported(
                conn, tg["gateway_id"], messages.decode_reported(messages.encode_reported(**report))
            )
            done.append(tg["gateway_id"])
    return done


def _counts(db: Engine, rid: int) -> dict[str, int]:
    with read(db) as conn:
        return rollouts.counts(conn, rid)


def _state(db: Engine, rid: int) -> str:
    with read(db) as conn:
        return rollouts.get(conn, rid)["state"]


def test_batches_go_out_one_after_another_and_complete(
    db: Engine, fleet10: tuple[int, list[str]]
) -> None:
    org_id, gws = fleet10
    rid = _create(db, org_id, batch_size=3)
    assert _counts(db, rid)["queued"] == 10
    assert _tick(db, NOW_MS).delivered == 3
    assert _tick(db, NOW_MS + 1).delivered == 0  # the first batch has not settled
    assert len(_report(db, "applied", rollout_id=rid)) == 3
    with read(db) as conn:
        v = conn.execute(
            sa.select(t.gateways.c.reported_config_version).where(t.gateways.c.id == gws[0])
        ).scalar()
        doc = config_service.get_document(conn, gws[0])
    assert v == 2 and doc.doc["uplink"] == {"batch_interval_s": 30} and doc.rollout_id == rid
    sizes = []
    for step in range(2, 10):
        res = _tick(db, NOW_MS + step)
        sizes.append(res.delivered)
        _report(db, "applied", rollout_id=rid)
        if _state(db, rid) == "completed":
            break
    assert [s for s in sizes if s] == [3, 3, 1]
    _tick(db, NOW_MS + 20)
    assert _state(db, rid) == "completed"
    assert _counts(db, rid) == {
        "queued": 0,
        "delivered": 0,
        "applied": 10,
        "failed": 0,
        "rolled_back": 0,
    }


def test_share_and_tag_targeting(db: Engine, fleet10: tuple[int, list[str]]) -> None:
    org_id, gws = fleet10
    rid = _create(db, org_id, tags=["pilot"], batch_share=0.5)
    assert sum(_counts(db, rid).values()) == 4
    assert _tick(db, NOW_MS).delivered == 2  # ceil(0.5 * 4)


def test_failure_share_above_threshold_halts_then_resume_and_cancel(
    db: Engine, fleet10: tuple[int, list[str]]
) -> None:
    org_id, gws = fleet10
    rid = _create(db, org_id, batch_size=2, failure_threshold=0.25)
    _tick(db, NOW_MS)
    _report(db, "applied", [gws[0]], rollout_id=rid)
    _report(db, "rolled_back", [gws[1]], rollout_id=rid)
    res = _tick(db, NOW_MS + 1)
    assert res.halted == [rid] and res.delivered == 0
    with read(db) as conn:
        r = rollouts.get(conn, rid)
    assert r["state"] == "halted" and "1 of 2" in r["halt_reason"]
    assert r["counts"] == {"queued": 8, "delivered": 0, "applied": 1, "failed": 0, "rolled_back": 1}
    assert _tick(db, NOW_MS + 2).delivered == 0  # halted: nothing more goes out
    with transaction(db) as conn:
        rollouts.resume(conn, rid, NOW_MS + 3)
    assert _tick(db, NOW_MS + 4).delivered == 2  # the old failure no longer counts
    _report(db, "rejected", rollout_id=rid)
    assert _tick(db, NOW_MS + 5).halted == [rid]
    assert _counts(db, rid)["failed"] == 2
    with transaction(db) as conn:
        rollouts.cancel(conn, rid, NOW_MS + 6)
        with pytest.raises(rollouts.RolloutError):
            rollouts.resume(conn, rid, NOW_MS + 6)
    assert _tick(db, NOW_MS + 7).delivered == 0
    assert _state(db, rid) == "cancelled" and _counts(db, rid)["queued"] == 6


def test_silent_gateway_fails_after_the_report_timeout(
    db: Engine, fleet10: tuple[int, list[str]]
) -> None:
    org_id, gws = fleet10
    rid = _create(db, org_id, gateway_ids=gws[:1], report_timeout_s=60, failure_threshold=1.0)
    _tick(db, NOW_MS)
    assert _tick(db, NOW_MS + 59_000).failed == 0
    assert _tick(db, NOW_MS + 60_000).failed == 1
    with read(db) as conn:
        (target,) = rollouts.targets(conn, rid)
    assert target["state"] == "failed" and "no report within 60 s" in target["reason"]


def test_rate_limits_how_fast_batches_follow(db: Engine, fleet10: tuple[int, list[str]]) -> None:
    org_id, _ = fleet10
    rid = _create(db, org_id, batch_size=2, rate_per_min=4)  # 2 gateways per 30 s
    assert _tick(db, NOW_MS).delivered == 2
    _report(db, "applied", rollout_id=rid)
    held = _tick(db, NOW_MS + 29_000)
    assert held.delivered == 0 and held.due_ms == {rid: NOW_MS + 30_000}
    assert _tick(db, NOW_MS + 30_000).delivered == 2


def test_invalid_patch_is_refused_with_gateway_and_path(
    db: Engine, fleet10: tuple[int, list[str]]
) -> None:
    org_id, gws = fleet10
    with transaction(db) as conn, pytest.raises(config_service.ConfigInvalid) as e:
        rollouts.create(
            conn, org_id, {"uplink": {"batch_interval_s": 0}}, NOW_MS, gateway_ids=gws[:2]
        )
    assert e.value.errors[0].startswith("gw-00: uplink.batch_interval_s")


def test_rollout_api(db: Engine) -> None:
    a = make_org(db, "town-a", roles=("operator",))
    c = client(db)
    h = bearer(a.tokens["operator"])
    r = c.post("/api/v1/rollouts", json={"patch": {"uplink": {"batch_interval_s": 0}}}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["path"].endswith(
        "uplink.batch_interval_s"
    )
    r = c.post(
        "/api/v1/rollouts",
        json={
            "name": "slower",
            "patch": {"uplink": {"batch_interval_s": 60}},
            "tags": ["school"],
            "batch_size": 1,
        },
        headers=h,
    )
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    assert r.json()["counts"]["queued"] == 1 and r.json()["state"] == "running"
    assert c.post(f"/api/v1/rollouts/{rid}/halt", headers=h).json()["state"] == "halted"
    assert c.post(f"/api/v1/rollouts/{rid}/halt", headers=h).status_code == 409
    assert c.post(f"/api/v1/rollouts/{rid}/resume", headers=h).json()["state"] == "running"
    assert c.post(f"/api/v1/rollouts/{rid}/cancel", headers=h).json()["state"] == "cancelled"
    targets = c.get(f"/api/v1/rollouts/{rid}/targets", headers=h).json()
    assert [(x["gateway_id"], x["state"]) for x in targets] == [(a.gateway, "queued")]
    assert c.get("/api/v1/rollouts", headers=h).json()["total"] == 2  # and the helper's own


def test_a_report_names_its_rollout_and_the_rollout_may_go_on_once_its_stage_settled(
    db: Engine, fleet10: tuple[int, list[str]]
) -> None:
    org_id, gws = fleet10
    rid = _create(db, org_id, gateway_ids=gws[:4], batch_size=2)
    with read(db) as conn:
        assert rollouts.ready_ids(conn) == [rid]  # created: its first batch can go
    assert _tick(db, NOW_MS).delivered == 2
    with read(db) as conn:
        assert rollouts.ready_ids(conn) == []
        first, second = rollouts.targets(conn, rid, rollouts.DELIVERED)
    with transaction(db) as conn:
        v = first["config_version"]
        report = {"gateway": first["gateway_id"], "version": v, "desired_version": v,
                  "status": "applied", "reason": None, "ts_ms": NOW_MS}  # fmt: skip
        assert config_service.record_reported(conn, first["gateway_id"], report) == rid
        assert not rollouts.should_advance(conn, rid)  # the other one still owes its report
        # the same report again settles nothing
        assert config_service.record_reported(conn, first["gateway_id"], report) is None
    _report(db, "applied", [second["gateway_id"]], rollout_id=rid)
    with read(db) as conn:
        assert rollouts.should_advance(conn, rid)
        assert rollouts.ready_ids(conn) == [rid]
    with transaction(db) as conn:
        rollouts.halt(conn, rid, NOW_MS + 1)
    with read(db) as conn:
        assert not rollouts.should_advance(conn, rid) and rollouts.ready_ids(conn) == []


def test_a_failure_over_the_threshold_asks_for_an_advance_before_the_stage_settled(
    db: Engine, fleet10: tuple[int, list[str]]
) -> None:
    org_id, gws = fleet10
    rid = _create(db, org_id, batch_size=4, failure_threshold=0.25)
    _tick(db, NOW_MS)
    _report(db, "applied", gws[:1], rollout_id=rid)
    with read(db) as conn:
        assert not rollouts.should_advance(conn, rid)
    _report(db, "rejected", gws[1:2], rollout_id=rid)  # 1 of 2 finished failed: 50 % > 25 %
    with read(db) as conn:
        assert rollouts.should_advance(conn, rid)
    assert _tick(db, NOW_MS + 1).halted == [rid]


def test_reports_reach_the_rollout_that_issued_the_version(
    db: Engine, fleet10: tuple[int, list[str]]
) -> None:
    org_id, gws = fleet10
    old = _create(db, org_id, gateway_ids=gws[:1])
    _tick(db, NOW_MS)
    with transaction(db) as conn:
        rollouts.cancel(conn, old, NOW_MS + 1)
        new = rollouts.create(conn, org_id, {"uplink": {"batch_interval_s": 45}}, NOW_MS + 1,
                              gateway_ids=gws[:1])  # fmt: skip
    _tick(db, NOW_MS + 2)
    with read(db) as conn:
        (old_target,) = rollouts.targets(conn, old)
        (new_target,) = rollouts.targets(conn, new)
    assert (old_target["config_version"], new_target["config_version"]) == (2, 3)
    _report(db, "applied", rollout_id=new)
    _report(db, "rolled_back", rollout_id=old)  # a late report of the cancelled one
    with read(db) as conn:
        assert rollouts.targets(conn, old)[0]["state"] == "rolled_back"
        assert rollouts.targets(conn, new)[0]["state"] == "applied"


def test_a_gateway_that_cannot_be_configured_fails_alone_in_its_batch(
    db: Engine, fleet10: tuple[int, list[str]]
) -> None:
    org_id, gws = fleet10
    rid = _create(db, org_id, gateway_ids=gws[:3], failure_threshold=1.0)
    with transaction(db) as conn:  # e.g. its credentials were reset after the rollout began
        conn.execute(
            sa.update(t.gateways).where(t.gateways.c.id == gws[1]).values(signing_key=None)
        )
    res = _tick(db, NOW_MS)
    assert (res.delivered, res.failed) == (2, 1)
    with read(db) as conn:
        by_gw = {tg["gateway_id"]: tg for tg in rollouts.targets(conn, rid)}
        docs = {gw: config_service.get_document(conn, gw) for gw in gws[:3]}
    assert by_gw[gws[1]]["state"] == "failed" and "no signing key" in by_gw[gws[1]]["reason"]
    assert docs[gws[1]].version == 1  # untouched
    for gw in (gws[0], gws[2]):
        assert by_gw[gw]["state"] == "delivered" and by_gw[gw]["config_version"] == 2
        assert docs[gw].rollout_id == rid and docs[gw].doc["uplink"] == {"batch_interval_s": 30}
        assert docs[gw].doc["gateway"] == gw and docs[gw].doc["version"] == 2


def test_a_group_of_reports_is_recorded_as_one_by_one(
    db: Engine, fleet10: tuple[int, list[str]]
) -> None:
    org_id, gws = fleet10
    rid = _create(db, org_id, gateway_ids=gws[:3], failure_threshold=1.0)
    _tick(db, NOW_MS)

    def report(gw: str, version: int, status: str) -> tuple[str, dict]:
        return gw, {"gateway": gw, "version": version if status == "applied" else 1,
                    "desired_version": version, "status": status, "reason": None,
                    "ts_ms": NOW_MS}  # fmt: skip

    group = [
        report(gws[0], 2, "applied"),
        report(gws[1], 2, "applied"),
        report(gws[1], 2, "rolled_back"),  # its trial failed after it applied
        report(gws[2], 1, "applied"),  # a version no rollout issued
        report("gw-unknown", 2, "applied"),
    ]
    with transaction(db) as conn:
        assert config_service.record_reported_many(conn, group, NOW_MS + 1) == {rid}
        assert config_service.record_reported_many(conn, group[:1], NOW_MS + 2) == set()
    with read(db) as conn:
        states = {tg["gateway_id"]: tg["state"] for tg in rollouts.targets(conn, rid)}
        reported = dict(
            conn.execute(
                sa.select(t.gateways.c.id, t.gateways.c.reported_config_version).where(
                    t.gateways.c.id.in_(gws[:3])
                )
            ).all()
        )
    assert states == {gws[0]: "applied", gws[1]: "rolled_back", gws[2]: "delivered"}
    assert reported == {gws[0]: 2, gws[1]: 1, gws[2]: 1}


def test_a_target_that_applied_then_rolled_back_ends_rolled_back_and_counts_as_a_failure(
    db: Engine, fleet10: tuple[int, list[str]]
) -> None:
    # A gateway reports "applied" as soon as it runs the new document, and "rolled_back" later,
    # in a report of its own, when the trial finds that document broken (the e2e suite's
    # broken bus port). By then its stage may have settled and the next batch gone out.
    org_id, gws = fleet10
    rid = _create(db, org_id, gateway_ids=gws[:4], batch_size=2, failure_threshold=0.25)
    assert _tick(db, NOW_MS).delivered == 2
    assert sorted(_report(db, "applied", rollout_id=rid)) == gws[:2]
    assert _tick(db, NOW_MS + 1).delivered == 2  # the first stage settled: the next batch
    with read(db) as conn:
        (target,) = [tg for tg in rollouts.targets(conn, rid) if tg["gateway_id"] == gws[1]]
    v = target["config_version"]
    assert target["state"] == "applied"
    reason = "every poll failed for 60 s: bus b1: /dev/ttyNOPE9 does not exist"
    report = {"gateway": gws[1], "version": v - 1, "desired_version": v,
              "status": "rolled_back", "reason": reason, "ts_ms": NOW_MS + 2}  # fmt: skip
    with transaction(db) as conn:
        settled = config_service.record_reported(
            conn, gws[1], messages.decode_reported(messages.encode_reported(**report))
        )
        assert settled == rid  # the bridge advances the rollout at once
        assert rollouts.should_advance(conn, rid)  # 1 of 2 finished failed: 50 % > 25 %
    with read(db) as conn:
        by_gw = {tg["gateway_id"]: tg for tg in rollouts.targets(conn, rid)}
    assert (by_gw[gws[1]]["state"], by_gw[gws[1]]["reason"]) == ("rolled_back", reason)
    assert by_gw[gws[0]]["state"] == "applied"
    res = _tick(db, NOW_MS + 3)
    assert res.halted == [rid] and res.delivered == 0
    with read(db) as conn:
        r = rollouts.get(conn, rid)
    assert r["state"] == "halted" and "1 of 2 gateways failed" in r["halt_reason"]
    assert r["counts"] == {"queued": 0, "delivered": 2, "applied": 1, "failed": 0,
                           "rolled_back": 1}  # fmt: skip
