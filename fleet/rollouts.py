"""Staged configuration rollouts (contract 5): a JSON merge patch goes to a chosen set of
gateways in batches at a chosen rate, first a small share, and halts by itself when the share
of failures passes a threshold; halt, resume, cancel; per-gateway state queued -> delivered ->
applied | failed | rolled_back. The server calls tick() periodically, and the MQTT bridge calls
it for a rollout as soon as a report settles one of its targets (so the next batch need not wait
for the period); delivery goes through config_service.set_desired_many, which queues the envelope in
the MQTT outbox (no MQTT here)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from fleet import config_service
from fleet.config_service import ConfigInvalid
from fleet.db import tables as t
from fleet.db.engine import transaction
from protocols import messages

QUEUED, DELIVERED, APPLIED, FAILED, ROLLED_BACK = t.TARGET_STATES
RUNNING, PAUSED, HALTED, CANCELLED, COMPLETED = t.ROLLOUT_STATES
DEFAULT_REPORT_TIMEOUT_S = 900
_MAX_CREATE_ERRORS = 50


class RolloutError(ValueError):
    """A rollout request that cannot be carried out; the message says what to change."""


class UnknownRollout(LookupError):
    pass


@dataclass
class TickResult:
    delivered: int = 0
    failed: int = 0
    halted: list[int] = field(default_factory=list)
    completed: list[int] = field(default_factory=list)
    # rollout id -> when (ms) it may deliver its next batch, for those held back by their rate
    due_ms: dict[int, int] = field(default_factory=dict)

    def add(self, other: TickResult) -> None:
        self.delivered += other.delivered
        self.failed += other.failed
        self.halted += other.halted
        self.completed += other.completed
        self.due_ms.update(other.due_ms)


def create(
    conn: Connection,
    org_id: int,
    patch: dict[str, Any],
    now_ms: int,
    name: str = "",
    gateway_ids: list[str] | None = None,
    site_ids: list[int] | None = None,
    tags: list[str] | None = None,
    batch_size: int | None = None,
    batch_share: float | None = None,
    rate_per_min: float | None = None,
    failure_threshold: float = 0.1,
    report_timeout_s: int = DEFAULT_REPORT_TIMEOUT_S,
    created_by: int | None = None,
) -> int:
    """A new running rollout of patch to the selected accepted gateways of org; its id.

    Batches: batch_size gateways, or batch_share of the targets (rounded up), or all at once.
    A batch goes out when the previous one has settled (every gateway reported or timed out
    after report_timeout_s) and, with rate_per_min, when the batch fits that rate. The patch
    is tried on every target's current document first: ConfigInvalid lists the problems."""
    if not isinstance(patch, dict) or not patch:
        raise RolloutError("patch: a non-empty JSON merge patch of the configuration document")
    if "version" in patch or "gateway" in patch:
        raise RolloutError("patch: must not set version or gateway (each gateway has its own)")
    if batch_size is not None and batch_share is not None:
        raise RolloutError("give batch_size or batch_share, not both")
    if not 0 <= failure_threshold <= 1:
        raise RolloutError("failure_threshold: a share between 0 and 1")
    targets = config_service.select_gateways(conn, org_id, gateway_ids, site_ids, tags)
    if not targets:
        raise RolloutError("no accepted gateway of your organisation matches the selection")
    errors: list[str] = []
    current = config_service.current_documents(conn, targets)
    for gw in targets:
        try:
            config_service.prepare(gw, _patched(current, gw, patch), 1)
        except ConfigInvalid as e:
            errors += [f"{gw}: {err}" for err in e.errors]
        if len(errors) >= _MAX_CREATE_ERRORS:
            break
    if errors:
        raise ConfigInvalid(errors[:_MAX_CREATE_ERRORS])
    rollout_id = conn.execute(
        sa.insert(t.rollouts)
        .values(
            org_id=org_id,
            name=name,
            state=RUNNING,
            target={"gateway_ids": gateway_ids, "site_ids": site_ids, "tags": tags},
            change={
                "patch": patch,
                "report_timeout_s": report_timeout_s,
                "baseline_failed": 0,
                "baseline_finished": 0,
            },
            batch_size=batch_size,
            batch_share=batch_share,
            rate_per_min=rate_per_min,
            failure_threshold=failure_threshold,
            created_by=created_by,
            created_ts_ms=now_ms,
            updated_ts_ms=now_ms,
        )
        .returning(t.rollouts.c.id)
    ).scalar_one()
    conn.execute(
        sa.insert(t.rollout_targets),
        [
            {"rollout_id": rollout_id, "gateway_id": gw, "state": QUEUED, "updated_ts_ms": now_ms}
            for gw in targets
        ],
    )
    return rollout_id


def _patched(current: dict[str, dict[str, Any]], gateway_id: str, patch: dict[str, Any]) -> Any:
    """The gateway's current document (from config_service.current_documents) with the patch
    applied, without its version: each gateway gets its own next one."""
    doc = config_service.merge_patch(current.get(gateway_id, {}), patch)
    doc.pop("version", None)
    return doc


def get(conn: Connection, rollout_id: int, org_id: int | None = None) -> dict[str, Any]:
    """A rollout's row with "counts" per target state (every state present)."""
    q = sa.select(t.rollouts).where(t.rollouts.c.id == rollout_id)
    if org_id is not None:
        q = q.where(t.rollouts.c.org_id == org_id)
    row = conn.execute(q).mappings().first()
    if row is None:
        raise UnknownRollout(f"rollout {rollout_id} not found")
    out = dict(row)
    out["counts"] = counts(conn, rollout_id)
    return out


def counts(conn: Connection, rollout_id: int) -> dict[str, int]:
    rt = t.rollout_targets.c
    found = dict(
        conn.execute(
            sa.select(rt.state, sa.func.count())
            .where(rt.rollout_id == rollout_id)
            .group_by(rt.state)
        ).all()
    )
    return {s: int(found.get(s, 0)) for s in t.TARGET_STATES}


def targets(conn: Connection, rollout_id: int, state: str | None = None) -> list[dict[str, Any]]:
    rt = t.rollout_targets.c
    q = sa.select(t.rollout_targets).where(rt.rollout_id == rollout_id)
    if state is not None:
        q = q.where(rt.state == state)
    return [dict(r) for r in conn.execute(q.order_by(rt.gateway_id)).mappings()]


def _set_state(conn: Connection, rollout_id: int, state: str, now_ms: int, **values: Any) -> None:
    conn.execute(
        sa.update(t.rollouts)
        .where(t.rollouts.c.id == rollout_id)
        .values(state=state, updated_ts_ms=now_ms, **values)
    )


def halt(
    conn: Connection, rollout_id: int, now_ms: int, reason: str = "halted by an operator"
) -> None:
    """Stop delivering new batches (delivered gateways still report)."""
    r = get(conn, rollout_id)
    if r["state"] not in (RUNNING, PAUSED):
        raise RolloutError(
            f"rollout {rollout_id} is {r['state']}: only a running one can be halted"
        )
    _set_state(conn, rollout_id, HALTED, now_ms, halt_reason=reason)


def resume(conn: Connection, rollout_id: int, now_ms: int) -> None:
    """Continue a halted rollout. Failures so far are taken as seen: the threshold applies to
    the gateways that finish from now on."""
    r = get(conn, rollout_id)
    if r["state"] not in (HALTED, PAUSED):
        raise RolloutError(
            f"rollout {rollout_id} is {r['state']}: only a halted one can be resumed"
        )
    c = r["counts"]
    change = dict(r["change"])
    change["baseline_failed"] = c[FAILED] + c[ROLLED_BACK]
    change["baseline_finished"] = c[FAILED] + c[ROLLED_BACK] + c[APPLIED]
    _set_state(conn, rollout_id, RUNNING, now_ms, halt_reason=None, change=change)


def cancel(conn: Connection, rollout_id: int, now_ms: int) -> None:
    """End a rollout: queued gateways stay queued and never get the change."""
    r = get(conn, rollout_id)
    if r["state"] in (CANCELLED, COMPLETED):
        raise RolloutError(f"rollout {rollout_id} is already {r['state']}")
    _set_state(conn, rollout_id, CANCELLED, now_ms)


@dataclass(frozen=True)
class Report:
    """What a gateway reported of a desired version (protocols.messages.decode_reported)."""

    gateway_id: str
    desired_version: int
    status: str
    reason: str | None


_REPORTED_STATE = {
    messages.REPORT_APPLIED: APPLIED,
    messages.REPORT_REJECTED: FAILED,
    messages.REPORT_ROLLED_BACK: ROLLED_BACK,
}


def on_report(
    conn: Connection,
    gateway_id: str,
    desired_version: int,
    status: str,
    reason: str | None,
    now_ms: int,
) -> int | None:
    """A gateway reported what became of desired_version (config_service.record_reported).
    Returns the rollout whose target this settled (None: no rollout was waiting for it)."""
    settled = on_reports(conn, [Report(gateway_id, desired_version, status, reason)], now_ms)
    return next(iter(settled), None)


def on_reports(conn: Connection, reports: list[Report], now_ms: int) -> set[int]:
    """on_report for many reports with a few statements (the bridge's group of reports); the
    rollouts of which they settled at least one target. Reports of one target in one call
    apply by kind in the order the kinds first appear (applied, then a rollback after it)."""
    # The document names the rollout that issued it: the target is then found by its primary
    # key, not by scanning every rollout's targets for the gateway (one scan per report made
    # recording the reports of a 10,000-gateway rollout quadratic).
    cd = t.config_documents.c
    keys = sorted({(r.gateway_id, r.desired_version) for r in reports})
    issued: dict[tuple[str, int], int] = {}
    for i in range(0, len(keys), 500):
        rows = conn.execute(
            sa.select(cd.gateway_id, cd.version, cd.rollout_id).where(
                sa.tuple_(cd.gateway_id, cd.version).in_(keys[i : i + 500]),
                cd.rollout_id.is_not(None),
            )
        )
        issued.update(((gw, int(v)), int(rid)) for gw, v, rid in rows)
    # one executemany per (rollout, new state), in the order the reports came
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in reports:
        state = _REPORTED_STATE.get(r.status)
        rollout_id = issued.get((r.gateway_id, r.desired_version))
        if state is None or rollout_id is None:
            continue
        groups.setdefault((rollout_id, state), []).append(
            {"b_gw": r.gateway_id, "b_version": r.desired_version, "b_reason": r.reason}
        )
    rt = t.rollout_targets.c
    settled: set[int] = set()
    for (rollout_id, state), params in groups.items():
        # A rollback follows "applied": the trial found the running document broken.
        from_states = (DELIVERED, APPLIED) if state == ROLLED_BACK else (DELIVERED,)
        done = conn.execute(
            sa.update(t.rollout_targets)
            .where(
                rt.rollout_id == rollout_id,
                rt.gateway_id == sa.bindparam("b_gw"),
                rt.config_version == sa.bindparam("b_version"),
                sa.or_(*(rt.state == s for s in from_states)),  # no IN: executemany
            )
            .values(state=state, reason=sa.bindparam("b_reason"), updated_ts_ms=now_ms),
            params,
        ).rowcount
        if done:
            settled.add(rollout_id)
    return settled


def _batch_len(r: Any, total: int) -> int:
    if r["batch_size"]:
        return max(1, int(r["batch_size"]))
    if r["batch_share"]:
        return max(1, math.ceil(float(r["batch_share"]) * total))
    return total


def _over_threshold(r: Any, c: dict[str, int]) -> str | None:
    """Why the rollout must halt (its failure share since the last resume passed the
    threshold), or None."""
    failed = c[FAILED] + c[ROLLED_BACK] - int(r["change"].get("baseline_failed", 0))
    finished = (
        c[FAILED] + c[ROLLED_BACK] + c[APPLIED] - int(r["change"].get("baseline_finished", 0))
    )
    if finished > 0 and failed / finished > r["failure_threshold"]:
        return (
            f"{failed} of {finished} gateways failed ({failed / finished:.0%}), more than the "
            f"threshold of {r['failure_threshold']:.0%}"
        )
    return None


def should_advance(conn: Connection, rollout_id: int) -> bool:
    """Whether advance() has work now for a running rollout whose targets just got reports: its
    stage settled (no target awaits a report) or its failures passed the threshold."""
    try:
        r = get(conn, rollout_id)
    except UnknownRollout:
        return False
    if r["state"] != RUNNING:
        return False
    return r["counts"][DELIVERED] == 0 or _over_threshold(r, r["counts"]) is not None


def ready_ids(conn: Connection) -> list[int]:
    """Running rollouts no target of which awaits a report: advance() delivers their next batch
    (rate permitting) or completes them. One read, no lock: for a bridge to notice a new
    rollout, or a stage settled on another instance, sooner than the periodic tick."""
    r, rt = t.rollouts.c, t.rollout_targets.c
    waiting = sa.exists().where(rt.rollout_id == r.id, rt.state == DELIVERED)
    q = sa.select(r.id).where(r.state == RUNNING, ~waiting).order_by(r.id)
    return list(conn.execute(q).scalars())


def advance(conn: Connection, rollout_id: int, now_ms: int) -> TickResult:
    """One step of one rollout in the caller's transaction: time out silent gateways, halt on
    too many failures, complete, or deliver the next batch."""
    result = TickResult()
    r = get(conn, rollout_id)
    if r["state"] not in (RUNNING, HALTED, CANCELLED, PAUSED):
        return result
    rt = t.rollout_targets.c
    timeout_ms = int(r["change"].get("report_timeout_s", DEFAULT_REPORT_TIMEOUT_S)) * 1000
    timed_out = conn.execute(
        sa.update(t.rollout_targets)
        .where(
            rt.rollout_id == rollout_id,
            rt.state == DELIVERED,
            rt.updated_ts_ms <= now_ms - timeout_ms,
        )
        .values(
            state=FAILED,
            reason=f"no report within {timeout_ms // 1000} s of delivery",
            updated_ts_ms=now_ms,
        )
    ).rowcount
    result.failed += timed_out
    if r["state"] != RUNNING:
        return result
    c = counts(conn, rollout_id)
    reason = _over_threshold(r, c)
    if reason is not None:
        _set_state(conn, rollout_id, HALTED, now_ms, halt_reason=reason)
        result.halted.append(rollout_id)
        return result
    if c[QUEUED] == 0:
        if c[DELIVERED] == 0:
            _set_state(conn, rollout_id, COMPLETED, now_ms)
            result.completed.append(rollout_id)
        return result
    if c[DELIVERED] > 0:
        return result  # the previous batch has not settled yet
    total = sum(c.values())
    size = _batch_len(r, total)
    started = c[QUEUED] < total
    if r["rate_per_min"] and started:
        due_ms = r["updated_ts_ms"] + math.ceil(size / float(r["rate_per_min"]) * 60_000)
        if now_ms < due_ms:
            result.due_ms[rollout_id] = due_ms
            return result
    # Claim this step: a second fleet instance ticking the same rollout updates no row and stops.
    claimed = conn.execute(
        sa.update(t.rollouts)
        .where(t.rollouts.c.id == rollout_id, t.rollouts.c.updated_ts_ms == r["updated_ts_ms"])
        .values(updated_ts_ms=now_ms)
    ).rowcount
    if claimed != 1:
        return result
    batch = (
        conn.execute(
            sa.select(rt.gateway_id)
            .where(rt.rollout_id == rollout_id, rt.state == QUEUED)
            .order_by(rt.gateway_id)
            .limit(size)
        )
        .scalars()
        .all()
    )
    patch = r["change"]["patch"]
    current = config_service.current_documents(conn, batch)
    docs = {gw: _patched(current, gw, patch) for gw in batch}
    done, refused = config_service.set_desired_many(
        conn,
        docs,
        now_ms,
        created_by=r["created_by"],
        comment=f"rollout {rollout_id}",
        rollout_id=rollout_id,
    )
    target = (rt.rollout_id == rollout_id) & (rt.gateway_id == sa.bindparam("b_gw"))
    if refused:
        conn.execute(
            sa.update(t.rollout_targets)
            .where(target)
            .values(state=FAILED, reason=sa.bindparam("b_reason"), updated_ts_ms=now_ms),
            [{"b_gw": gw, "b_reason": str(e)} for gw, e in sorted(refused.items())],
        )
        result.failed += len(refused)
    if done:
        conn.execute(
            sa.update(t.rollout_targets)
            .where(target)
            .values(
                state=DELIVERED, config_version=sa.bindparam("b_version"), updated_ts_ms=now_ms
            ),
            [{"b_gw": gw, "b_version": stored.version} for gw, (stored, _) in sorted(done.items())],
        )
        result.delivered += len(done)
    return result


def tick(engine: Engine, now_ms: int, rollout_ids: Iterable[int] | None = None) -> TickResult:
    """Advance every unfinished rollout (or only those of rollout_ids), each in its own
    transaction. The server calls this every few seconds, the bridge when reports settled
    targets (any number of fleet instances may: a step is claimed by one)."""
    total = TickResult()
    q = sa.select(t.rollouts.c.id).where(t.rollouts.c.state.in_((RUNNING, HALTED, CANCELLED)))
    if rollout_ids is not None:
        q = q.where(t.rollouts.c.id.in_(list(rollout_ids)))
    with engine.connect() as conn:
        ids = conn.execute(q.order_by(t.rollouts.c.id)).scalars().all()
    for rollout_id in ids:
        with transaction(engine) as conn:
            total.add(advance(conn, rollout_id, now_ms))
    return total


def list_ids(
    conn: Connection, org_id: int, state: str | None, limit: int, offset: int
) -> tuple[list[int], int]:
    """(rollout ids newest first, total) of an organisation, optionally in one state."""
    r = t.rollouts.c
    where = [r.org_id == org_id] + ([r.state == state] if state else [])
    total = conn.execute(
        sa.select(sa.func.count()).select_from(t.rollouts).where(*where)
    ).scalar_one()
    ids = conn.execute(
        sa.select(r.id).where(*where).order_by(r.id.desc()).limit(limit).offset(offset)
    ).scalars()
    return list(ids), int(total)
