"""Pages of the fleet itself: overview, gateways (search, filter, sort, bulk actions), one
gateway, one meter or sensor with its charts and CSV export. Reads and writes go through
fleet/api/queries.py, fleet/db/registry.py, fleet/config_service.py, fleet/rollouts.py and
fleet/telemetry/storage.py, with the API's role and organisation rules."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from fleet import alerts, audit, auth, config_service, rollouts
from fleet.api import queries as q
from fleet.db import registry
from fleet.telemetry import storage
from fleet.ui import charts, reads
from fleet.ui import common as c
from fleet.ui.security import Session
from fleet.ui.web import ZONE, lang_of, render, translate

router = APIRouter()
PAGE_SIZE = 50
ALL = 1_000_000  # "every row" for in-page filtering (as q.list_gateways does for tags)
COUNTER_UNITS = {"Wh", "varh", "m³"}
RANGES = {"6h": 6 * 3600_000, "24h": 86_400_000, "7d": 7 * 86_400_000, "30d": 30 * 86_400_000}
MAX_POINTS = 800
QUARTER_MS = 900_000


def _status_key(gw: dict[str, Any], alerting: set[str]) -> str:
    """One word for a gateway's state, shown as text and icon (never colour alone)."""
    if gw["status"] != "accepted":
        return gw["status"]
    if gw["id"] in alerting:
        return "alerting" if gw["online"] else "offline"
    return "online" if gw["online"] else "offline"


def _open_alert_gateways(conn: Any, org_id: int) -> tuple[list[dict[str, Any]], set[str]]:
    items, _ = alerts.list_alerts(conn, org_id, True, None, None, 500, 0)
    return items, {a["gateway_id"] for a in items if a["gateway_id"]}


# --- overview -------------------------------------------------------------------------------


@router.get("/")
def overview(request: Request) -> Response:
    s = c.session(request)
    cx = c.ctx(request)
    org = s.principal.org_id
    with cx.ro() as conn:
        gws, _ = q.list_gateways(conn, org, limit=ALL)
        sites, _ = q.list_sites(conn, org, None, ALL, 0)
        open_alerts, alerting = _open_alert_gateways(conn, org)
        per_hour = reads.readings_per_hour(conn, org, cx.now_ms - 24 * reads.HOUR_MS)
        organisation = q.get_org(conn, org)
    site_names = {st["id"]: st["name"] for st in sites}
    rows: dict[Any, dict[str, Any]] = {}
    totals = {"online": 0, "offline": 0, "alerting": 0, "pending": 0}
    for gw in gws:
        key = _status_key(gw, alerting)
        row = rows.setdefault(
            gw["site_id"],
            {"site": site_names.get(gw["site_id"]), "site_id": gw["site_id"], "online": 0,
             "offline": 0, "alerting": 0, "pending": 0},
        )  # fmt: skip
        if key in row:
            row[key] += 1
            totals[key] += 1
    hour_now = cx.now_ms - cx.now_ms % reads.HOUR_MS
    hours = [(hour_now - i * reads.HOUR_MS, per_hour.get(hour_now - i * reads.HOUR_MS, 0))
             for i in range(23, -1, -1)]  # fmt: skip
    lang = lang_of(request)
    chart = charts.bar_chart(
        hours, hours[0][0], hour_now + reads.HOUR_MS, reads.HOUR_MS,
        translate(lang, "overview.readings_unit"), translate(lang, "overview.data_arriving"),
        translate(lang, "overview.data_desc", n=sum(n for _, n in hours)), lang,
    )  # fmt: skip
    return render(
        request,
        "overview.html",
        {
            "organisation": organisation,
            "sites": sorted(rows.values(), key=lambda r: (r["site"] is None, r["site"] or "")),
            "totals": totals,
            "alerts": open_alerts[:10],
            "alert_total": len(open_alerts),
            "readings_24h": sum(n for _, n in hours),
            "chart": chart,
        },
    )


# --- gateways list and bulk actions ------------------------------------------------------------

SORTS = tuple(k for key in q.GATEWAY_SORTS for k in (key, "-" + key))


def _list_args(request: Request) -> dict[str, Any]:
    p = request.query_params
    args: dict[str, Any] = {}
    status = p.get("status", "")
    online = p.get("online", "")
    if status in ("pending", "accepted", "rejected", "revoked"):
        args["status"] = status
    if online in ("yes", "no"):
        args["online"] = online == "yes"
    if p.get("tag"):
        args["tag"] = p["tag"][:64]
    if p.get("site", "").isdigit():
        args["site_id"] = int(p["site"])
    if p.get("fw"):
        args["fw_version"] = p["fw"][:64]
    if p.get("config", "").isdigit():
        args["config_version"] = int(p["config"])
    sort = p.get("sort", "id")
    args["sort"] = sort if sort in SORTS else "id"
    return args


@router.get("/gateways")
def gateways(request: Request) -> Response:
    s = c.session(request)
    cx = c.ctx(request)
    args = _list_args(request)
    search = request.query_params.get("q", "").strip().lower()[:100]
    try:
        page = max(0, int(request.query_params.get("page", "0")))
    except ValueError:
        page = 0
    with cx.ro() as conn:
        items, total = q.list_gateways(conn, s.principal.org_id, limit=ALL, **args)
        sites, _ = q.list_sites(conn, s.principal.org_id, None, ALL, 0)
        _, alerting = _open_alert_gateways(conn, s.principal.org_id)
        configured = [g for g in items if g["desired_config_version"]]
    if search:
        items = [g for g in items if search in g["id"] or search in (g["name"] or "").lower()]
    total = len(items)
    shown = items[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
    for g in shown:
        g["state"] = _status_key(g, alerting)
    params = {k: v for k, v in request.query_params.items() if k != "page"}
    return render(
        request,
        "gateways.html",
        {
            "gateways": shown,
            "total": total,
            "page": page,
            "pages": max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE),
            "params": params,
            "sites": sites,
            "site_names": {st["id"]: st["name"] for st in sites},
            "sorts": list(q.GATEWAY_SORTS),
            "sort": args["sort"],
            "sources": configured[:200],
            "result": request.query_params.get("done"),
            "errors": [],
        },
    )


class _Undo(Exception):
    """Rolls back a bulk change that failed for one of its gateways."""


def _assign_config(
    cx: Any, me: auth.Principal, source: str, ids: list[str], errors: list[str], lang: str
) -> None:
    """Copy the desired configuration of gateway source to every gateway of ids (a new
    version each), all or none."""
    with cx.tx() as conn:
        c.found(q.get_gateway(conn, me.org_id, source))
        try:
            doc = config_service.get_document(conn, source).doc
        except config_service.UnknownVersion:
            raise c.UiNotFound() from None
        doc.pop("version", None)
        for gid in ids:
            gw = c.found(q.get_gateway(conn, me.org_id, gid))
            if gw["status"] != "accepted":
                errors.append(f"{gid}: {translate(lang, 'bulk.not_accepted')}")
                continue
            try:
                stored, _ = config_service.set_desired(
                    conn, gid, {**doc, "gateway": gid}, cx.now_ms, me.user_id,
                    f"copied from {source}",
                )  # fmt: skip
            except config_service.ConfigInvalid as e:
                errors += [f"{gid}: {err}" for err in e.errors]
                continue
            audit.record(conn, me, "config.set", f"gateway:{gid}", cx.now_ms,
                         {"version": stored.version, "source": source})  # fmt: skip
        if errors:
            raise _Undo()


@router.post("/gateways/bulk")
async def bulk(request: Request) -> Response:
    s, form = await c.post_form(request, auth.TECHNICIAN)
    # database work and rendering off the event loop the MQTT bridge shares
    return await run_in_threadpool(_bulk, request, s, form)


def _bulk(request: Request, s: Session, form: FormData) -> Response:
    me = s.principal
    action = c.form_str(form, "action")
    ids = sorted({str(v) for v in form.getlist("gw") if isinstance(v, str)})[:1000]
    cx = c.ctx(request)
    lang = lang_of(request)
    errors: list[str] = []
    if not ids:
        errors.append(translate(lang, "bulk.none_selected"))
    elif action == "tag":
        tag = c.form_str(form, "tag", max_len=64)
        if not tag or not all(ch.isalnum() or ch in "_.:-" for ch in tag):
            errors.append(translate(lang, "bulk.bad_tag"))
        else:
            with cx.tx() as conn:
                for gid in ids:
                    gw = c.found(q.get_gateway(conn, me.org_id, gid))
                    tags = list(gw["tags"] or [])
                    if tag not in tags:
                        q.patch_gateway(conn, gid, {"tags": [*tags, tag]})
                        audit.record(conn, me, "gateway.update", f"gateway:{gid}", cx.now_ms,
                                     {"tags": [*tags, tag], "via": "ui bulk"})  # fmt: skip
            return c.redirect(c.PREFIX + "/gateways", done="tagged")
    elif action == "config":
        if not me.may(auth.OPERATOR):
            errors.append(translate(lang, "error.role", role=auth.OPERATOR))
        else:
            source = c.form_str(form, "source", max_len=64)
            try:
                _assign_config(cx, me, source, ids, errors, lang)
            except _Undo:
                pass  # every gateway or none: errors say why
            if not errors:
                return c.redirect(c.PREFIX + "/gateways", done="config")
    elif action == "rollout":
        if not me.may(auth.OPERATOR):
            errors.append(translate(lang, "error.role", role=auth.OPERATOR))
        else:
            try:
                patch = json.loads(c.form_str(form, "patch", max_len=100_000) or "{}")
            except ValueError as e:
                patch = None
                errors.append(translate(lang, "rollout.bad_json", detail=str(e)))
            share = c.form_int(form, "batch_percent")
            threshold = c.form_int(form, "failure_percent", 10)
            if patch is not None:
                with cx.tx() as conn:
                    for gid in ids:
                        c.found(q.get_gateway(conn, me.org_id, gid))
                    try:
                        rid = rollouts.create(
                            conn, me.org_id, patch, cx.now_ms,
                            name=c.form_str(form, "name", max_len=200), gateway_ids=ids,
                            batch_share=(share / 100 if share else None),
                            failure_threshold=min(100, threshold or 0) / 100,
                            created_by=me.user_id,
                        )  # fmt: skip
                    except rollouts.RolloutError as e:
                        errors.append(str(e))
                    except config_service.ConfigInvalid as e:
                        errors += e.errors
                    else:
                        audit.record(conn, me, "rollout.create", f"rollout:{rid}", cx.now_ms,
                                     {"patch": patch, "via": "ui"})  # fmt: skip
                        return c.redirect(f"{c.PREFIX}/rollouts/{rid}", done="created")
    else:
        errors.append(translate(lang, "bulk.unknown_action"))
    return render(request, "bulk_error.html", {"errors": errors, "ids": ids}, 422)


# --- one gateway ------------------------------------------------------------------------------


def _events(
    conn: Any, me: auth.Principal, gateway_id: str, lang: str
) -> list[tuple[int, str, str]]:
    """(ts_ms, kind, text) of what happened to a gateway, newest first: alerts, configuration
    versions, refused batches, and for admins the audit log."""
    events: list[tuple[int, str, str]] = []
    items, _ = alerts.list_alerts(conn, me.org_id, False, gateway_id, None, 50, 0)
    for a in items:
        events.append(
            (a["opened_ts_ms"], "alert", translate(lang, "event.alert_opened", kind=a["kind"]))
        )
        if a["closed_ts_ms"]:
            events.append(
                (a["closed_ts_ms"], "alert", translate(lang, "event.alert_closed", kind=a["kind"]))
            )
    docs, _ = config_service.history(conn, gateway_id, 20, 0)
    for d in docs:
        events.append(
            (
                d.created_ts_ms,
                "config",
                translate(lang, "event.config", v=d.version)
                + (f" – {d.comment}" if d.comment else ""),
            )
        )
    rejected, _ = q.rejected_batches(conn, gateway_id, 20, 0)
    for r in rejected:
        events.append(
            (
                r["ts_ms"],
                "rejected",
                translate(lang, "event.rejected", seq=r["seq"], reason=r["reason"]),
            )
        )
    if me.may(auth.ADMIN):
        entries, _ = audit.entries(conn, me.org_id, 30, 0, target=f"gateway:{gateway_id}")
        for e in entries:
            events.append(
                (
                    e["ts_ms"],
                    "audit",
                    f"{e['action']} ({e['email'] or e['actor_gateway_id'] or 'cli'})",
                )
            )
    events.sort(key=lambda ev: -ev[0])
    return events[:60]  # fmt: skip


def _device_rows(conn: Any, gateway_id: str) -> list[dict[str, Any]]:
    latest = {v.channel: v for v in registry.latest_values(conn, gateway_id)}
    chans = q.channels(conn, gateway_id)
    out = []
    for d in q.devices(conn, gateway_id):
        d["channels"] = [
            {**ch, "latest": latest.get(ch["channel"])}
            for ch in chans
            if ch["device_id"] == d["device_id"] and ch["active"]
        ]
        out.append(d)
    return out


@router.get("/gateways/{gateway_id}")
def gateway(request: Request, gateway_id: str) -> Response:
    s = c.session(request)
    cx = c.ctx(request)
    lang = lang_of(request)
    with cx.ro() as conn:
        gw = c.found(q.get_gateway(conn, s.principal.org_id, gateway_id[:64]))
        site = q.get_site(conn, s.principal.org_id, gw["site_id"]) if gw["site_id"] else None
        _, alerting = _open_alert_gateways(conn, s.principal.org_id)
        devices = _device_rows(conn, gateway_id)
        events = _events(conn, s.principal, gateway_id, lang)
    gw["state"] = _status_key(gw, alerting)
    return render(
        request,
        "gateway.html",
        {"gw": gw, "site": site, "devices": devices, "events": events,
         "status": gw["last_status"] or {}, "done": request.query_params.get("done")},
    )  # fmt: skip


@router.post("/gateways/{gateway_id}/edit")
async def edit_gateway(request: Request, gateway_id: str) -> Response:
    s, form = await c.post_form(request, auth.TECHNICIAN)
    cx = c.ctx(request)
    values = {
        "name": c.form_str(form, "name", max_len=200),
        "tags": [t for t in c.split_tags(c.form_str(form, "tags")) if len(t) <= 64][:50],
    }

    def save() -> None:
        with cx.tx() as conn:
            c.found(q.get_gateway(conn, s.principal.org_id, gateway_id[:64]))
            q.patch_gateway(conn, gateway_id, values)
            audit.record(
                conn, s.principal, "gateway.update", f"gateway:{gateway_id}", cx.now_ms, values
            )

    await run_in_threadpool(save)
    return c.redirect(f"{c.PREFIX}/gateways/{gateway_id}", done="saved")


TRANSITIONS = {"approve": ("accepted", ("pending",)), "reject": ("rejected", ("pending",)),
               "revoke": ("revoked", ("pending", "accepted"))}  # fmt: skip


@router.post("/gateways/{gateway_id}/approve")
async def approve(request: Request, gateway_id: str) -> Response:
    return await _transition(request, gateway_id, "approve")


@router.post("/gateways/{gateway_id}/reject")
async def reject(request: Request, gateway_id: str) -> Response:
    return await _transition(request, gateway_id, "reject")


@router.post("/gateways/{gateway_id}/revoke")
async def revoke(request: Request, gateway_id: str) -> Response:
    return await _transition(request, gateway_id, "revoke")


async def _transition(request: Request, gateway_id: str, verb: str) -> Response:
    """Approve or reject a pending gateway, revoke one (as POST /api/v1/gateways/{id}/...)."""
    s, form = await c.post_form(request, auth.OPERATOR)
    new, allowed = TRANSITIONS[verb]
    cx = c.ctx(request)

    def change() -> str | None:
        with cx.tx() as conn:
            gw = c.found(q.get_gateway(conn, s.principal.org_id, gateway_id[:64]))
            if gw["status"] not in allowed:
                return str(gw["status"])
            registry.set_gateway_status(conn, gateway_id, new)
            audit.record(conn, s.principal, f"gateway.{new}", f"gateway:{gateway_id}", cx.now_ms,
                         {"from": gw["status"], "via": "ui"})  # fmt: skip
        return None

    refused = await run_in_threadpool(change)
    if refused is not None:
        lang = lang_of(request)
        text = translate(lang, "gateway.bad_transition", status=refused, new=new)
        return render(request, "bulk_error.html", {"ids": [gateway_id], "errors": [text]}, 409)
    back = c.form_str(form, "back")
    return c.redirect(c.safe_next(back) if back else f"{c.PREFIX}/gateways/{gateway_id}", done=new)


# --- one meter or sensor: charts and CSV ---------------------------------------------------


def _range(request: Request, now_ms: int) -> tuple[int, int, str]:
    p = request.query_params
    name = p.get("range", "24h")
    if name == "custom":
        try:
            start = datetime.strptime(p.get("from", ""), "%Y-%m-%d").replace(tzinfo=ZONE)
            end = datetime.strptime(p.get("to", ""), "%Y-%m-%d").replace(tzinfo=ZONE)
            end += timedelta(days=1)
            t0, t1 = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
            if 0 < t1 - t0 <= 366 * 86_400_000:
                return t0, t1, name
        except ValueError:
            pass
        name = "24h"
    span = RANGES.get(name, RANGES["24h"])
    return now_ms - span, now_ms, name if name in RANGES else "24h"


def _thin(points: list[tuple[int, float]], t0: int, t1: int) -> list[tuple[int, float]]:
    """At most MAX_POINTS points: means of equal time slices (a chart is 800 px wide)."""
    if len(points) <= MAX_POINTS:
        return points
    width = (t1 - t0) / MAX_POINTS
    slices: dict[int, list[tuple[int, float]]] = {}
    for ts, v in points:
        slices.setdefault(int((ts - t0) // width), []).append((ts, v))
    return [(int(sum(p[0] for p in sl) / len(sl)), sum(p[1] for p in sl) / len(sl))
            for _, sl in sorted(slices.items())]  # fmt: skip


def _device(
    conn: Any, me: auth.Principal, gateway_id: str, device_id: int
) -> tuple[dict, dict, list]:
    gw = c.found(q.get_gateway(conn, me.org_id, gateway_id[:64]))
    dev = c.found(
        next((d for d in q.devices(conn, gateway_id) if d["device_id"] == device_id), None)
    )
    chans = [ch for ch in q.channels(conn, gateway_id) if ch["device_id"] == device_id]
    return gw, dev, chans  # fmt: skip


@router.get("/gateways/{gateway_id}/devices/{device_id}")
def device(request: Request, gateway_id: str, device_id: int) -> Response:
    s = c.session(request)
    cx = c.ctx(request)
    lang = lang_of(request)
    t0, t1, range_name = _range(request, cx.now_ms)
    with cx.ro() as conn:
        gw, dev, chans = _device(conn, s.principal, gateway_id, device_id)
        numbers = [ch["channel"] for ch in chans]
        raw = storage.raw_readings(conn, gateway_id, numbers, t0, t1) if numbers else {}
        aggs = storage.aggregates_15min(conn, gateway_id, numbers, t0, t1) if numbers else {}
        latest = {v.channel: v for v in registry.latest_values(conn, gateway_id)}
    long_range = t1 - t0 > 2 * 86_400_000
    plots = []
    load_profile = None
    for ch in chans:
        label = (
            translate(lang, "quantity." + ch["quantity"])
            if f"quantity.{ch['quantity']}" in _keys(lang)
            else ch["quantity"]
        )
        counter = ch["unit"] in COUNTER_UNITS or ch["quantity"] == "pulse_count"
        rows = aggs.get(ch["channel"], [])
        if counter:
            bars = [(a.bucket_ts_ms, a.delta) for a in rows]
            bar_ms = QUARTER_MS
            if long_range:  # per hour: a month of quarter hours would be 2,880 bars
                hourly: dict[int, float] = {}
                for ts, v in bars:
                    hourly[ts - ts % 3_600_000] = hourly.get(ts - ts % 3_600_000, 0.0) + v
                bars, bar_ms = sorted(hourly.items()), 3_600_000
            title = translate(lang, "device.per_interval", q=label, minutes=bar_ms // 60_000)
            svg = charts.bar_chart(bars, t0, t1, bar_ms, ch["unit"], title,
                                   translate(lang, "device.chart_desc", n=len(bars)), lang)  # fmt: skip
            plots.append(
                {"channel": ch, "label": label, "title": title, "svg": svg, "n": len(bars)}
            )
            if ch["unit"] == "Wh" and load_profile is None and ch["quantity"] == "energy_import":
                load_profile = [(a.bucket_ts_ms, a.delta * 4) for a in rows]  # Wh per 15 min -> W
        else:
            points = (
                raw.get(ch["channel"], [])
                if not long_range
                else [(a.bucket_ts_ms, a.avg) for a in rows]
            )
            points = _thin(list(points), t0, t1)
            title = label
            svg = charts.line_chart(points, t0, t1, ch["unit"], title,
                                    translate(lang, "device.chart_desc", n=len(points)), lang)  # fmt: skip
            plots.append(
                {"channel": ch, "label": label, "title": title, "svg": svg, "n": len(points)}
            )
            if ch["unit"] == "W" and ch["quantity"] in ("power_total", "power_demand_total"):
                load_profile = [(a.bucket_ts_ms, a.avg) for a in rows]
    profile_svg = None
    if load_profile is not None:
        profile_svg = charts.bar_chart(
            load_profile, t0, t1, QUARTER_MS, "W", translate(lang, "device.load_profile"),
            translate(lang, "device.chart_desc", n=len(load_profile)), lang,
        )  # fmt: skip
    return render(
        request,
        "device.html",
        {"gw": gw, "dev": dev, "channels": chans, "plots": plots, "profile_svg": profile_svg,
         "profile_n": len(load_profile or []), "latest": latest, "range": range_name,
         "ranges": list(RANGES), "t0": t0, "t1": t1,
         "from_date": datetime.fromtimestamp(t0 / 1000, ZONE).strftime("%Y-%m-%d"),
         "to_date": datetime.fromtimestamp((t1 - 1) / 1000, ZONE).strftime("%Y-%m-%d")},
    )  # fmt: skip


def _keys(lang: str) -> dict[str, str]:
    from fleet.ui.web import messages

    return messages(lang)


@router.get("/gateways/{gateway_id}/devices/{device_id}/export.csv")
def device_csv(request: Request, gateway_id: str, device_id: int) -> Response:
    s = c.session(request)
    cx = c.ctx(request)
    t0, t1, _ = _range(request, cx.now_ms)
    interval = "15min" if request.query_params.get("interval") == "15min" else "raw"
    out = io.StringIO()
    with cx.ro() as conn:
        _, _, chans = _device(conn, s.principal, gateway_id, device_id)
        storage.export_csv(conn, out, gateway_id, [ch["channel"] for ch in chans], t0, t1, interval)
    name = f"{gateway_id}-device{device_id}-{interval}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
