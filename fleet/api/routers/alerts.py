"""Routes of alerts: open ones and their history, one alert, acknowledge."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from fleet import alerts, audit
from fleet.api import schemas as s
from fleet.api.deps import CtxDep, PagingDep, Technician, Viewer
from fleet.api.errors import not_found

router = APIRouter(tags=["alerts"])
AlertId = Annotated[int, Path(ge=1, le=s.MAX_ID)]


@router.get("/alerts", response_model=s.Page[s.AlertOut])
def list_alerts(
    me: Viewer,
    ctx: CtxDep,
    page: PagingDep,
    open_only: Annotated[bool, Query(alias="open", description="false: closed ones too")] = True,
    gateway_id: Annotated[str | None, Query(pattern=s.GATEWAY_ID)] = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
) -> dict:
    with ctx.ro() as conn:
        items, total = alerts.list_alerts(
            conn, me.org_id, open_only, gateway_id, kind, page.limit, page.offset
        )
    return {"items": items, "total": total, "limit": page.limit, "offset": page.offset}


@router.get("/alerts/{alert_id}", response_model=s.AlertOut)
def get_alert(alert_id: AlertId, me: Viewer, ctx: CtxDep) -> dict:
    with ctx.ro() as conn:
        try:
            return alerts.get(conn, alert_id, me.org_id)
        except alerts.UnknownAlert:
            raise not_found("alert", alert_id) from None


@router.post("/alerts/{alert_id}/acknowledge", response_model=s.AlertOut)
def acknowledge_alert(alert_id: AlertId, me: Technician, ctx: CtxDep) -> dict:
    with ctx.tx() as conn:
        try:
            alerts.acknowledge(conn, alert_id, me.org_id, me.user_id, ctx.now_ms)
        except alerts.UnknownAlert:
            raise not_found("alert", alert_id) from None
        audit.record(conn, me, "alert.acknowledge", f"alert:{alert_id}", ctx.now_ms)
        return alerts.get(conn, alert_id, me.org_id)
