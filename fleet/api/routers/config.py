"""Routes of configuration: a gateway's desired and reported version, put a new version
(validated: 422 with every error and its path), history, one version, diff, roll back; and
staged rollouts (create, list, detail with per-state counts, targets, halt/resume/cancel)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query

from fleet import audit, config_service, rollouts
from fleet.api import queries as q
from fleet.api import schemas as s
from fleet.api.deps import CtxDep, Operator, PagingDep, Viewer
from fleet.api.errors import Conflict, Invalid, not_found
from fleet.config_service import ConfigInvalid

router = APIRouter()
GatewayId = Annotated[str, Path(pattern=s.GATEWAY_ID)]
Version = Annotated[int, Path(ge=1, le=s.MAX_ID)]
RolloutId = Annotated[int, Path(ge=1, le=s.MAX_ID)]


def _invalid(e: ConfigInvalid) -> Invalid:
    errors = []
    for text in e.errors:
        path, _, message = text.rpartition(": ") if ": " in text else ("", "", text)
        errors.append({"path": path, "message": message})
    return Invalid("the configuration is invalid: " + "; ".join(e.errors), errors=errors)


def _check_gateway(conn: Any, org_id: int, gateway_id: str) -> dict:
    gw = q.get_gateway(conn, org_id, gateway_id)
    if gw is None:
        raise not_found("gateway", gateway_id)
    return gw


def _doc_out(d: config_service.StoredDocument) -> dict:
    return {
        "gateway_id": d.gateway_id,
        "version": d.version,
        "document": d.doc,
        "created_ts_ms": d.created_ts_ms,
        "created_by": d.created_by,
        "comment": d.comment,
        "rollout_id": d.rollout_id,
    }


def _get(conn: Any, gateway_id: str, version: int | None) -> config_service.StoredDocument:
    try:
        return config_service.get_document(conn, gateway_id, version)
    except config_service.UnknownVersion as e:
        raise (
            not_found("configuration of gateway", gateway_id)
            if version is None
            else Invalid(str(e))
        ) from None


@router.get("/gateways/{gateway_id}/config", response_model=s.ConfigOut, tags=["config"])
def get_desired(gateway_id: GatewayId, me: Viewer, ctx: CtxDep) -> dict:
    """The desired document (the newest version)."""
    with ctx.ro() as conn:
        _check_gateway(conn, me.org_id, gateway_id)
        return _doc_out(_get(conn, gateway_id, None))


@router.put(
    "/gateways/{gateway_id}/config", response_model=s.ConfigOut, status_code=201, tags=["config"]
)
def put_config(
    gateway_id: GatewayId,
    me: Operator,
    ctx: CtxDep,
    document: Annotated[
        dict[str, Any], Body(description="the configuration document (docs/config.md)")
    ],
    comment: Annotated[str, Query(max_length=500)] = "",
) -> dict:
    """A new desired version: "version" and "gateway" may be left out (they are filled in);
    422 lists every problem with its path. The signed document is published retained."""
    with ctx.tx() as conn:
        gw = _check_gateway(conn, me.org_id, gateway_id)
        if gw["status"] in ("revoked", "rejected"):
            raise Conflict(
                f"gateway {gateway_id} is {gw['status']}: it cannot receive configurations"
            )
        try:
            stored, _ = config_service.set_desired(
                conn, gateway_id, document, ctx.now_ms, me.user_id, comment
            )
        except ConfigInvalid as e:
            raise _invalid(e) from None
        audit.record(
            conn, me, "config.set", f"gateway:{gateway_id}", ctx.now_ms, {"version": stored.version}
        )
    return _doc_out(stored)


@router.get("/gateways/{gateway_id}/config/reported", response_model=s.ReportedOut, tags=["config"])
def get_reported(gateway_id: GatewayId, me: Viewer, ctx: CtxDep) -> dict:
    with ctx.ro() as conn:
        gw = _check_gateway(conn, me.org_id, gateway_id)
    return {
        "gateway_id": gateway_id,
        "reported_version": gw["reported_config_version"],
        "desired_version": gw["desired_config_version"],
        "in_sync": gw["reported_config_version"] == gw["desired_config_version"],
    }


@router.get(
    "/gateways/{gateway_id}/config/history",
    response_model=s.Page[s.ConfigVersionOut],
    tags=["config"],
)
def config_history(gateway_id: GatewayId, me: Viewer, ctx: CtxDep, page: PagingDep) -> dict:
    with ctx.ro() as conn:
        _check_gateway(conn, me.org_id, gateway_id)
        docs, total = config_service.history(conn, gateway_id, page.limit, page.offset)
    items = [{k: v for k, v in _doc_out(d).items() if k != "document"} for d in docs]
    return {"items": items, "total": total, "limit": page.limit, "offset": page.offset}


@router.get(
    "/gateways/{gateway_id}/config/versions/{version}", response_model=s.ConfigOut, tags=["config"]
)
def config_version(gateway_id: GatewayId, version: Version, me: Viewer, ctx: CtxDep) -> dict:
    with ctx.ro() as conn:
        _check_gateway(conn, me.org_id, gateway_id)
        try:
            return _doc_out(config_service.get_document(conn, gateway_id, version))
        except config_service.UnknownVersion:
            raise not_found(
                f"version {version} of the configuration of gateway", gateway_id
            ) from None


@router.get("/gateways/{gateway_id}/config/diff", response_model=s.DiffOut, tags=["config"])
def config_diff(
    gateway_id: GatewayId,
    me: Viewer,
    ctx: CtxDep,
    from_version: Annotated[int, Query(alias="from", ge=1, le=s.MAX_ID)],
    to_version: Annotated[
        int | None, Query(alias="to", ge=1, le=s.MAX_ID, description="default: desired")
    ] = None,
) -> dict:
    """What changed between two versions (paths as in validation errors)."""
    with ctx.ro() as conn:
        _check_gateway(conn, me.org_id, gateway_id)
        try:
            old = config_service.get_document(conn, gateway_id, from_version)
            new = config_service.get_document(conn, gateway_id, to_version)
        except config_service.UnknownVersion as e:
            raise Invalid(str(e), errors=[{"path": "query:from/to", "message": str(e)}]) from None
    changes = [c for c in config_service.diff(old.doc, new.doc) if c["path"] != "version"]
    return {"from_version": old.version, "to_version": new.version, "changes": changes}


@router.post(
    "/gateways/{gateway_id}/config/rollback",
    response_model=s.ConfigOut,
    status_code=201,
    tags=["config"],
)
def config_rollback(gateway_id: GatewayId, body: s.RollbackIn, me: Operator, ctx: CtxDep) -> dict:
    """Go back to an earlier document: a new version with the old body."""
    with ctx.tx() as conn:
        gw = _check_gateway(conn, me.org_id, gateway_id)
        if gw["status"] in ("revoked", "rejected"):
            raise Conflict(
                f"gateway {gateway_id} is {gw['status']}: it cannot receive configurations"
            )
        try:
            stored, _ = config_service.rollback_to(
                conn, gateway_id, body.version, ctx.now_ms, me.user_id
            )
        except config_service.UnknownVersion as e:
            raise Invalid(str(e), errors=[{"path": "version", "message": str(e)}]) from None
        except ConfigInvalid as e:
            raise _invalid(e) from None
        audit.record(
            conn,
            me,
            "config.rollback",
            f"gateway:{gateway_id}",
            ctx.now_ms,
            {"to": body.version, "version": stored.version},
        )
    return _doc_out(stored)


# --- rollouts -------------------------------------------------------------------------------


@router.get("/rollouts", response_model=s.Page[s.RolloutOut], tags=["rollouts"])
def list_rollouts(
    me: Viewer,
    ctx: CtxDep,
    page: PagingDep,
    state: Annotated[str | None, Query(max_length=16)] = None,
) -> dict:
    with ctx.ro() as conn:
        ids, total = rollouts.list_ids(conn, me.org_id, state, page.limit, page.offset)
        items = [rollouts.get(conn, i) for i in ids]
    return {"items": items, "total": total, "limit": page.limit, "offset": page.offset}


@router.post("/rollouts", response_model=s.RolloutOut, status_code=201, tags=["rollouts"])
def create_rollout(body: s.RolloutIn, me: Operator, ctx: CtxDep) -> dict:
    """Roll a JSON merge patch out to the selected gateways in stages (see docs/api.md)."""
    params = body.model_dump()
    with ctx.tx() as conn:
        try:
            rollout_id = rollouts.create(
                conn, me.org_id, now_ms=ctx.now_ms, created_by=me.user_id, **params
            )
        except rollouts.RolloutError as e:
            raise Invalid(str(e)) from None
        except ConfigInvalid as e:
            raise _invalid(e) from None
        audit.record(
            conn,
            me,
            "rollout.create",
            f"rollout:{rollout_id}",
            ctx.now_ms,
            {"name": body.name, "patch": body.patch},
        )
        return rollouts.get(conn, rollout_id)


def _rollout(conn: Any, org_id: int, rollout_id: int) -> dict:
    try:
        return rollouts.get(conn, rollout_id, org_id)
    except rollouts.UnknownRollout:
        raise not_found("rollout", rollout_id) from None


@router.get("/rollouts/{rollout_id}", response_model=s.RolloutOut, tags=["rollouts"])
def get_rollout(rollout_id: RolloutId, me: Viewer, ctx: CtxDep) -> dict:
    with ctx.ro() as conn:
        return _rollout(conn, me.org_id, rollout_id)


@router.get(
    "/rollouts/{rollout_id}/targets", response_model=list[s.RolloutTargetOut], tags=["rollouts"]
)
def rollout_targets(
    rollout_id: RolloutId,
    me: Viewer,
    ctx: CtxDep,
    state: Annotated[str | None, Query(max_length=16)] = None,
) -> list:
    with ctx.ro() as conn:
        _rollout(conn, me.org_id, rollout_id)
        return rollouts.targets(conn, rollout_id, state)


def _control(rollout_id: int, me: Any, ctx: CtxDep, verb: str) -> dict:
    with ctx.tx() as conn:
        _rollout(conn, me.org_id, rollout_id)
        try:
            getattr(rollouts, verb)(conn, rollout_id, ctx.now_ms)
        except rollouts.RolloutError as e:
            raise Conflict(str(e)) from None
        audit.record(conn, me, f"rollout.{verb}", f"rollout:{rollout_id}", ctx.now_ms)
        return rollouts.get(conn, rollout_id)


@router.post("/rollouts/{rollout_id}/halt", response_model=s.RolloutOut, tags=["rollouts"])
def halt_rollout(rollout_id: RolloutId, me: Operator, ctx: CtxDep) -> dict:
    return _control(rollout_id, me, ctx, "halt")


@router.post("/rollouts/{rollout_id}/resume", response_model=s.RolloutOut, tags=["rollouts"])
def resume_rollout(rollout_id: RolloutId, me: Operator, ctx: CtxDep) -> dict:
    return _control(rollout_id, me, ctx, "resume")


@router.post("/rollouts/{rollout_id}/cancel", response_model=s.RolloutOut, tags=["rollouts"])
def cancel_rollout(rollout_id: RolloutId, me: Operator, ctx: CtxDep) -> dict:
    return _control(rollout_id, me, ctx, "cancel")
