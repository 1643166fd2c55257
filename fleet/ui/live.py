"""Live updates of the UI as server-sent events: gateway status, a gateway's latest values and
a rollout's progress, polled from the database (so any fleet instance serves any browser)
and sent when they change. Pages work without it; static/live.js applies the updates."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from fleet import alerts, rollouts
from fleet.api import queries as q
from fleet.db import registry
from fleet.ui import common as c
from fleet.ui.security import Session
from fleet.ui.web import fmt_age, fmt_num, fmt_ts, lang_of, translate

router = APIRouter()
POLL_S = 1.0
STREAM_S = 120.0  # then the browser reconnects (and the session is checked again)
HEARTBEAT_S = 15.0
MAX_GATEWAYS = 2000


def snapshot(
    s: Session, cx: Any, lang: str, gateway_id: str | None, rollout_id: int | None
) -> dict[str, Any]:
    """What live.js shows, already translated and formatted."""
    from fleet.ui.pages_fleet import _status_key

    org = s.principal.org_id
    out: dict[str, Any] = {}
    with cx.ro() as conn:
        gws, _ = q.list_gateways(conn, org, limit=MAX_GATEWAYS)
        open_alerts, _ = alerts.list_alerts(conn, org, True, None, None, 500, 0)
        alerting = {a["gateway_id"] for a in open_alerts if a["gateway_id"]}
        out["alerts"] = len(open_alerts)
        out["gateways"] = {
            g["id"]: {
                "state": (key := _status_key(g, alerting)),
                "label": translate(lang, "state." + key),
                "seen": fmt_age(lang, g["last_seen_ts_ms"], cx.now_ms),
                "reported": g["reported_config_version"],
                "desired": g["desired_config_version"],
            }
            for g in gws
        }
        if gateway_id and q.get_gateway(conn, org, gateway_id) is not None:
            units = {ch["channel"]: ch["unit"] for ch in q.channels(conn, gateway_id)}
            out["values"] = {
                str(v.channel): {"value": fmt_num(lang, v.value), "unit": units.get(v.channel, ""),
                                 "ts": fmt_ts(lang, v.ts_ms)}
                for v in registry.latest_values(conn, gateway_id)
            }  # fmt: skip
        if rollout_id is not None:
            try:
                r = rollouts.get(conn, rollout_id, org)
            except rollouts.UnknownRollout:
                r = None
            if r is not None:
                total = sum(r["counts"].values())
                done = r["counts"]["applied"] + r["counts"]["failed"] + r["counts"]["rolled_back"]
                out["rollout"] = {
                    "id": rollout_id,
                    "state": r["state"],
                    "label": translate(lang, "rollout_state." + r["state"]),
                    "counts": r["counts"],
                    "done": done,
                    "total": total,
                    "reason": r["halt_reason"] or "",
                }
                out["targets"] = {
                    t["gateway_id"]: {"state": t["state"],
                                      "label": translate(lang, "target_state." + t["state"])}
                    for t in rollouts.targets(conn, rollout_id)
                }  # fmt: skip
    return out


@router.get("/live")
async def live(request: Request) -> Response:
    s = await run_in_threadpool(c.session, request)
    lang = lang_of(request)
    gw = request.query_params.get("gw", "")[:64] or None
    rollout = c.form_int(request.query_params, "rollout")  # type: ignore[arg-type]
    settings = request.app.state.settings

    async def events() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        loop = asyncio.get_running_loop()
        end = loop.time() + STREAM_S
        last: str | None = None
        beat = loop.time()
        while loop.time() < end:
            if await request.is_disconnected():
                return
            cx = c.Ctx(settings)
            data = await run_in_threadpool(snapshot, s, cx, lang, gw, rollout)
            text = json.dumps(data, separators=(",", ":"), sort_keys=True)
            if text != last:
                last = text
                beat = loop.time()
                yield f"event: update\ndata: {text}\n\n"
            elif loop.time() - beat > HEARTBEAT_S:
                beat = loop.time()
                yield ": still here\n\n"
            await asyncio.sleep(POLL_S)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
