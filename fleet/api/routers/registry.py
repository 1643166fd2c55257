"""Routes of sites and gateways: list (filter, sort, page), detail, edit, approve/reject a
pending gateway, revoke, rotate credentials; its devices, channels, latest values, rejected
batches and telemetry (raw or 15-minute, JSON or CSV)."""

from __future__ import annotations

import io
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from fleet import audit, auth
from fleet.api import queries as q
from fleet.api import schemas as s
from fleet.api.deps import Admin, CtxDep, Operator, PagingDep, Technician, Viewer
from fleet.api.errors import Conflict, Invalid, not_found
from fleet.db import registry
from fleet.telemetry import storage

router = APIRouter()
SiteId = Annotated[int, Path(ge=1, le=s.MAX_ID)]
GatewayId = Annotated[str, Path(pattern=s.GATEWAY_ID, description="the gateway's id")]
MAX_RANGE_MS = 366 * 86_400_000


def _page(items: list, total: int, page: object) -> dict:
    return {"items": items, "total": total, "limit": page.limit, "offset": page.offset}  # type: ignore[attr-defined]


# --- sites --------------------------------------------------------------------------------


@router.get("/sites", response_model=s.Page[s.SiteOut], tags=["sites"])
def list_sites(
    me: Viewer,
    ctx: CtxDep,
    page: PagingDep,
    tag: Annotated[str | None, Query(max_length=64)] = None,
) -> dict:
    with ctx.ro() as conn:
        items, total = q.list_sites(conn, me.org_id, tag, page.limit, page.offset)
    return _page(items, total, page)


@router.post("/sites", response_model=s.SiteOut, status_code=201, tags=["sites"])
def create_site(body: s.SiteIn, me: Operator, ctx: CtxDep) -> dict:
    with ctx.tx() as conn:
        if q.site_name_taken(conn, me.org_id, body.name):
            raise Conflict(f"a site named {body.name!r} exists: choose another name")
        site_id = registry.create_site(conn, me.org_id, **body.model_dump())
        audit.record(conn, me, "site.create", f"site:{site_id}", ctx.now_ms, {"name": body.name})
        return q.get_site(conn, me.org_id, site_id)  # type: ignore[return-value]


@router.get("/sites/{site_id}", response_model=s.SiteOut, tags=["sites"])
def get_site(site_id: SiteId, me: Viewer, ctx: CtxDep) -> dict:
    with ctx.ro() as conn:
        site = q.get_site(conn, me.org_id, site_id)
    if site is None:
        raise not_found("site", site_id)
    return site


@router.patch("/sites/{site_id}", response_model=s.SiteOut, tags=["sites"])
def patch_site(site_id: SiteId, body: s.SitePatch, me: Operator, ctx: CtxDep) -> dict:
    values = body.model_dump(exclude_unset=True)
    with ctx.tx() as conn:
        if q.get_site(conn, me.org_id, site_id) is None:
            raise not_found("site", site_id)
        for key in ("name", "address", "building_type", "tags"):
            if key in values and values[key] is None:
                raise Invalid(
                    f"{key}: must not be null",
                    errors=[{"path": key, "message": "must not be null"}],
                )
        if "name" in values and q.site_name_taken(conn, me.org_id, values["name"], site_id):
            raise Conflict(f"a site named {values['name']!r} exists: choose another name")
        q.patch_site(conn, site_id, values)
        audit.record(conn, me, "site.update", f"site:{site_id}", ctx.now_ms, values)
        return q.get_site(conn, me.org_id, site_id)  # type: ignore[return-value]


@router.delete("/sites/{site_id}", status_code=204, tags=["sites"])
def delete_site(site_id: SiteId, me: Admin, ctx: CtxDep) -> None:
    """Delete a site; its gateways stay, without a site."""
    with ctx.tx() as conn:
        site = q.get_site(conn, me.org_id, site_id)
        if site is None:
            raise not_found("site", site_id)
        q.delete_site(conn, site_id)
        audit.record(conn, me, "site.delete", f"site:{site_id}", ctx.now_ms, {"name": site["name"]})


# --- gateways -----------------------------------------------------------------------------

GatewaySort = Literal[tuple(k for key in q.GATEWAY_SORTS for k in (key, "-" + key))]  # type: ignore[valid-type]


@router.get("/gateways", response_model=s.Page[s.GatewayOut], tags=["gateways"])
def list_gateways(
    me: Viewer,
    ctx: CtxDep,
    page: PagingDep,
    status: s.GatewayStatus | None = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
    site_id: Annotated[int | None, Query(ge=1, le=s.MAX_ID)] = None,
    fw_version: Annotated[str | None, Query(max_length=64)] = None,
    config_version: Annotated[int | None, Query(ge=0, le=s.MAX_ID, description="reported")] = None,
    online: bool | None = None,
    sort: Annotated[GatewaySort, Query(description="a column, - for descending")] = "id",
) -> dict:
    with ctx.ro() as conn:
        items, total = q.list_gateways(
            conn,
            me.org_id,
            status=status,
            tag=tag,
            site_id=site_id,
            fw_version=fw_version,
            config_version=config_version,
            online=online,
            sort=sort,
            limit=page.limit,
            offset=page.offset,
        )
    return _page(items, total, page)


def _gateway(conn: object, me: object, gateway_id: str) -> dict:
    gw = q.get_gateway(conn, me.org_id, gateway_id)  # type: ignore[arg-type, attr-defined]
    if gw is None:
        raise not_found("gateway", gateway_id)
    return gw


@router.get("/gateways/{gateway_id}", response_model=s.GatewayOut, tags=["gateways"])
def get_gateway(gateway_id: GatewayId, me: Viewer, ctx: CtxDep) -> dict:
    with ctx.ro() as conn:
        return _gateway(conn, me, gateway_id)


@router.patch("/gateways/{gateway_id}", response_model=s.GatewayOut, tags=["gateways"])
def patch_gateway(gateway_id: GatewayId, body: s.GatewayPatch, me: Technician, ctx: CtxDep) -> dict:
    """Name, site and tags (set site_id to null to take it out of its site)."""
    values = body.model_dump(exclude_unset=True)
    with ctx.tx() as conn:
        _gateway(conn, me, gateway_id)
        for key in ("name", "tags"):
            if key in values and values[key] is None:
                raise Invalid(
                    f"{key}: must not be null",
                    errors=[{"path": key, "message": "must not be null"}],
                )
        if (
            values.get("site_id") is not None
            and q.get_site(conn, me.org_id, values["site_id"]) is None
        ):
            raise Invalid(
                f"site_id: site {values['site_id']} not found in your organisation",
                errors=[{"path": "site_id", "message": "no such site in your organisation"}],
            )
        q.patch_gateway(conn, gateway_id, values)
        audit.record(conn, me, "gateway.update", f"gateway:{gateway_id}", ctx.now_ms, values)
        return _gateway(conn, me, gateway_id)


def _transition(
    gateway_id: str, me: object, ctx: CtxDep, new: str, allowed_from: tuple[str, ...]
) -> dict:
    with ctx.tx() as conn:
        gw = _gateway(conn, me, gateway_id)
        if gw["status"] not in allowed_from:
            raise Conflict(
                f"gateway {gateway_id} is {gw['status']}: only a gateway that is "
                f"{' or '.join(allowed_from)} can become {new}"
            )
        registry.set_gateway_status(conn, gateway_id, new)
        audit.record(
            conn, me, f"gateway.{new}", f"gateway:{gateway_id}", ctx.now_ms, {"from": gw["status"]}
        )  # type: ignore[arg-type]
        return _gateway(conn, me, gateway_id)


@router.post("/gateways/{gateway_id}/approve", response_model=s.GatewayOut, tags=["gateways"])
def approve_gateway(gateway_id: GatewayId, me: Operator, ctx: CtxDep) -> dict:
    """Let a pending gateway in (its credentials start to work)."""
    return _transition(gateway_id, me, ctx, "accepted", ("pending",))


@router.post("/gateways/{gateway_id}/reject", response_model=s.GatewayOut, tags=["gateways"])
def reject_gateway(gateway_id: GatewayId, me: Operator, ctx: CtxDep) -> dict:
    return _transition(gateway_id, me, ctx, "rejected", ("pending",))


@router.post("/gateways/{gateway_id}/revoke", response_model=s.GatewayOut, tags=["gateways"])
def revoke_gateway(gateway_id: GatewayId, me: Operator, ctx: CtxDep) -> dict:
    """Lock a gateway out for good: the broker refuses its credentials from now on."""
    return _transition(gateway_id, me, ctx, "revoked", ("pending", "accepted"))


@router.post(
    "/gateways/{gateway_id}/rotate-credentials", response_model=s.Credentials, tags=["gateways"]
)
def rotate_credentials(gateway_id: GatewayId, me: Operator, ctx: CtxDep) -> dict:
    """A new MQTT password (shown once); the old one stops working."""
    with ctx.tx() as conn:
        gw = _gateway(conn, me, gateway_id)
        if gw["status"] in ("revoked", "rejected"):
            raise Conflict(
                f"gateway {gateway_id} is {gw['status']}: provision it again with a claim token"
            )
        secret = auth.rotate_gateway_secret(conn, gateway_id)
        audit.record(conn, me, "gateway.rotate_credentials", f"gateway:{gateway_id}", ctx.now_ms)
    return {"gateway_id": gateway_id, "mqtt_username": gateway_id, "mqtt_password": secret}


@router.get("/gateways/{gateway_id}/devices", response_model=list[s.DeviceOut], tags=["gateways"])
def list_devices(gateway_id: GatewayId, me: Viewer, ctx: CtxDep) -> list:
    with ctx.ro() as conn:
        _gateway(conn, me, gateway_id)
        return q.devices(conn, gateway_id)


@router.get("/gateways/{gateway_id}/channels", response_model=list[s.ChannelOut], tags=["gateways"])
def list_channels(gateway_id: GatewayId, me: Viewer, ctx: CtxDep) -> list:
    with ctx.ro() as conn:
        _gateway(conn, me, gateway_id)
        return q.channels(conn, gateway_id)


@router.get("/gateways/{gateway_id}/latest", response_model=list[s.LatestOut], tags=["telemetry"])
def latest_values(gateway_id: GatewayId, me: Viewer, ctx: CtxDep) -> list:
    """The newest reading of each channel, by reading timestamp (not arrival)."""
    with ctx.ro() as conn:
        _gateway(conn, me, gateway_id)
        return [v._asdict() for v in registry.latest_values(conn, gateway_id)]


@router.get(
    "/gateways/{gateway_id}/rejected-batches",
    response_model=s.Page[s.RejectedBatchOut],
    tags=["gateways"],
)
def list_rejected(gateway_id: GatewayId, me: Viewer, ctx: CtxDep, page: PagingDep) -> dict:
    """Batches the fleet refused (malformed, unknown channels, impossible timestamps) and why."""
    with ctx.ro() as conn:
        _gateway(conn, me, gateway_id)
        items, total = q.rejected_batches(conn, gateway_id, page.limit, page.offset)
    return _page(items, total, page)


@router.get(
    "/gateways/{gateway_id}/telemetry",
    response_model=s.TelemetryOut,
    tags=["telemetry"],
    responses={200: {"content": {"text/csv": {}}}},
)
def telemetry(
    request: Request,
    gateway_id: GatewayId,
    me: Viewer,
    ctx: CtxDep,
    channel: Annotated[
        list[int], Query(min_length=1, max_length=256, description="channel numbers")
    ],
    start_ts_ms: Annotated[int, Query(ge=0, le=s.MAX_TS_MS)],
    end_ts_ms: Annotated[int, Query(ge=0, le=s.MAX_TS_MS)],
    interval: Literal["raw", "15min"] = "raw",
    format: Literal["json", "csv"] | None = None,  # noqa: A002 - the query parameter's name
) -> object:
    """Readings or quarter-hour aggregates of several channels in [start_ts_ms, end_ts_ms).
    CSV with ?format=csv or Accept: text/csv."""
    if not 0 < end_ts_ms - start_ts_ms <= MAX_RANGE_MS:
        raise Invalid(
            "end_ts_ms must be after start_ts_ms, at most 366 days later",
            errors=[{"path": "query:end_ts_ms", "message": "after start_ts_ms, within 366 days"}],
        )
    if any(not 0 <= c < 2**32 for c in channel):
        raise Invalid(
            "channel: numbers 0 .. 2^32 - 1",
            errors=[{"path": "query:channel", "message": "out of range"}],
        )
    csv = format == "csv" or (format is None and "text/csv" in request.headers.get("accept", ""))
    with ctx.ro() as conn:
        _gateway(conn, me, gateway_id)
        if csv:
            out = io.StringIO()
            storage.export_csv(conn, out, gateway_id, channel, start_ts_ms, end_ts_ms, interval)
            return Response(out.getvalue(), media_type="text/csv; charset=utf-8")
        body: dict = {
            "gateway_id": gateway_id,
            "interval": interval,
            "start_ts_ms": start_ts_ms,
            "end_ts_ms": end_ts_ms,
        }
        if interval == "raw":
            data = storage.raw_readings(conn, gateway_id, channel, start_ts_ms, end_ts_ms)
            body["raw"] = {
                str(ch): [{"ts_ms": ts, "value": v} for ts, v in rows] for ch, rows in data.items()
            }
        else:
            aggs = storage.aggregates_15min(conn, gateway_id, channel, start_ts_ms, end_ts_ms)
            body["aggregates"] = {str(ch): [a._asdict() for a in rows] for ch, rows in aggs.items()}
    return body
