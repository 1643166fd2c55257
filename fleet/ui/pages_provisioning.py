"""Provisioning pages: claim tokens (create, printable label with QR code, revoke) and the
gateways waiting for approval. Claim tokens are made by fleet/auth.py, listed and revoked by
fleet/api/queries.py, as the API's /claim-tokens routes do."""

from __future__ import annotations

from typing import Any

import qrcode
import qrcode.image.svg
from fastapi import APIRouter, Request
from fastapi.responses import Response
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from fleet import audit, auth
from fleet.api import queries as q
from fleet.ui import common as c
from fleet.ui.web import lang_of, render, translate

router = APIRouter()
MAX_COUNT = 100


def qr_svg(text: str) -> Markup:
    """text as a QR code in SVG (one path; no inline styles), for the printed label."""
    image = qrcode.make(
        text,
        image_factory=qrcode.image.svg.SvgPathImage,
        error_correction=qrcode.constants.ERROR_CORRECT_M,
        box_size=10,
        border=4,
    )
    svg = image.to_string(encoding="unicode")
    svg = svg.replace("<svg ", '<svg class="qr" role="img" aria-label="QR" ', 1)
    return Markup(svg)


@router.get("/provisioning")
def provisioning(request: Request) -> Response:
    s = c.session(request, auth.TECHNICIAN)
    cx = c.ctx(request)
    with cx.ro() as conn:
        claims, total = q.list_claims(conn, s.principal.org_id, False, cx.now_ms, 100, 0)
        pending, _ = q.list_gateways(conn, s.principal.org_id, status="pending", limit=200)
        sites, _ = q.list_sites(conn, s.principal.org_id, None, 1000, 0)
    for cl in claims:
        cl["state"] = (
            "used"
            if cl["used_ts_ms"]
            else "expired"
            if cl["expires_ts_ms"] <= cx.now_ms
            else "open"
        )
    return render(
        request,
        "provisioning.html",
        {"claims": claims, "total": total, "pending": pending, "sites": sites,
         "site_names": {st["id"]: st["name"] for st in sites}, "errors": {},
         "done": request.query_params.get("done")},
    )  # fmt: skip


@router.post("/provisioning/claims")
async def create_claims(request: Request) -> Response:
    s, form = await c.post_form(request, auth.TECHNICIAN)
    me = s.principal
    lang = lang_of(request)
    count = c.form_int(form, "count", 1) or 0
    ttl_days = c.form_int(form, "ttl_days", 7) or 0
    site_id = c.form_int(form, "site")
    label = c.form_str(form, "label", max_len=200)
    require_approval = form.get("approval") == "on"
    errors: dict[str, str] = {}
    if not 1 <= count <= MAX_COUNT:
        errors["count"] = translate(lang, "claims.bad_count", max=MAX_COUNT)
    if not 1 <= ttl_days <= 365:
        errors["ttl_days"] = translate(lang, "claims.bad_ttl")
    cx = c.ctx(request)

    def create() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        with cx.tx() as conn:
            if site_id is not None and q.get_site(conn, me.org_id, site_id) is None:
                errors["site"] = translate(lang, "claims.bad_site")
            if errors:
                return out
            for _ in range(count):
                claim_id, token = auth.create_claim_token(
                    conn, me.org_id, cx.now_ms, ttl_days * 86_400_000, me.user_id,
                    site_id=site_id, require_approval=require_approval, label=label,
                )  # fmt: skip
                out.append({**q.get_claim(conn, me.org_id, claim_id), "token": token})  # type: ignore[dict-item]
            audit.record(
                conn, me, "claim_token.create", f"claim_tokens:{out[0]['id']}..{out[-1]['id']}",
                cx.now_ms, {"count": count, "site_id": site_id,
                            "require_approval": require_approval, "via": "ui"},
            )  # fmt: skip
            site = q.get_site(conn, me.org_id, site_id) if site_id else None
            org_name = q.get_org(conn, me.org_id)["name"]
            for item in out:
                item["site"] = site["name"] if site else None
                item["org"] = org_name
        return out

    created = await run_in_threadpool(create)
    if errors:
        with cx.ro() as conn:
            claims, total = q.list_claims(conn, me.org_id, False, cx.now_ms, 100, 0)
            pending, _ = q.list_gateways(conn, me.org_id, status="pending", limit=200)
            sites, _ = q.list_sites(conn, me.org_id, None, 1000, 0)
        for cl in claims:
            cl["state"] = "used" if cl["used_ts_ms"] else "open"
        return render(
            request,
            "provisioning.html",
            {"claims": claims, "total": total, "pending": pending, "sites": sites,
             "site_names": {st["id"]: st["name"] for st in sites}, "errors": errors,
             "done": None},
            422,
        )  # fmt: skip
    for item in created:
        item["qr"] = qr_svg(item["token"])
    # The token texts exist only in this answer: the label page must not be cached.
    return render(request, "labels.html", {"labels": created})


@router.post("/provisioning/claims/{claim_id}/revoke")
async def revoke_claim(request: Request, claim_id: int) -> Response:
    s, _ = await c.post_form(request, auth.TECHNICIAN)
    cx = c.ctx(request)

    def revoke() -> None:
        with cx.tx() as conn:
            c.found(q.get_claim(conn, s.principal.org_id, claim_id))
            q.expire_claim(conn, claim_id, cx.now_ms)
            audit.record(conn, s.principal, "claim_token.revoke", f"claim_token:{claim_id}",
                         cx.now_ms)  # fmt: skip

    await run_in_threadpool(revoke)
    return c.redirect(c.PREFIX + "/provisioning", done="revoked")
