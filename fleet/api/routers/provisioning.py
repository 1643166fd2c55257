"""Routes of provisioning: claim tokens (create in bulk, list, revoke) for operators and
technicians, and the gateway's HTTPS exchange of a claim token for its identity."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from fleet import audit, auth
from fleet.api import queries as q
from fleet.api import schemas as s
from fleet.api.deps import CtxDep, PagingDep, Technician
from fleet.api.errors import ApiError, Invalid, not_found
from fleet.auth import ClaimError

router = APIRouter()
ClaimId = Annotated[int, Path(ge=1, le=s.MAX_ID)]


class ClaimRefused(ApiError):
    status = 403
    title = "Claim refused"


@router.get("/claim-tokens", response_model=s.Page[s.ClaimTokenOut], tags=["provisioning"])
def list_claim_tokens(
    me: Technician,
    ctx: CtxDep,
    page: PagingDep,
    open_only: Annotated[bool, Query(alias="open")] = False,
) -> dict:
    with ctx.ro() as conn:
        items, total = q.list_claims(
            conn, me.org_id, open_only, ctx.now_ms, page.limit, page.offset
        )
    return {"items": items, "total": total, "limit": page.limit, "offset": page.offset}


@router.post(
    "/claim-tokens",
    response_model=list[s.ClaimTokenCreated],
    status_code=201,
    tags=["provisioning"],
)
def create_claim_tokens(body: s.ClaimTokenIn, me: Technician, ctx: CtxDep) -> list:
    """count single-use tokens bound to your organisation (and a site), valid for ttl_s;
    each token text is shown this one time."""
    out = []
    with ctx.tx() as conn:
        if body.site_id is not None and q.get_site(conn, me.org_id, body.site_id) is None:
            raise Invalid(
                f"site_id: site {body.site_id} not found in your organisation",
                errors=[{"path": "site_id", "message": "no such site in your organisation"}],
            )
        for _ in range(body.count):
            claim_id, token = auth.create_claim_token(
                conn,
                me.org_id,
                ctx.now_ms,
                body.ttl_s * 1000,
                me.user_id,
                site_id=body.site_id,
                require_approval=body.require_approval,
                label=body.label,
            )
            out.append({**q.get_claim(conn, me.org_id, claim_id), "token": token})  # type: ignore[dict-item]
        audit.record(
            conn,
            me,
            "claim_token.create",
            f"claim_tokens:{out[0]['id']}..{out[-1]['id']}",
            ctx.now_ms,
            {
                "count": body.count,
                "site_id": body.site_id,
                "require_approval": body.require_approval,
            },
        )
    return out


@router.delete("/claim-tokens/{claim_id}", status_code=204, tags=["provisioning"])
def revoke_claim_token(claim_id: ClaimId, me: Technician, ctx: CtxDep) -> None:
    """Revoke an unused claim token (it expires now)."""
    with ctx.tx() as conn:
        if q.get_claim(conn, me.org_id, claim_id) is None:
            raise not_found("claim token", claim_id)
        q.expire_claim(conn, claim_id, ctx.now_ms)
        audit.record(conn, me, "claim_token.revoke", f"claim_token:{claim_id}", ctx.now_ms)


@router.post("/provision/claim", response_model=s.ClaimOut, status_code=201, tags=["provisioning"])
def claim(body: s.ClaimIn, ctx: CtxDep) -> dict:
    """The gateway's exchange (authenticated by the claim token itself): its id, MQTT
    username and password, config-signing key and the broker URL; shown this one time.
    status "pending" means an operator must approve it before the broker lets it in."""
    try:
        with ctx.tx() as conn:
            claimed = auth.exchange_claim(
                conn, body.token, ctx.now_ms, body.gateway_id, body.name, body.fw_version
            )
            audit.record(
                conn,
                auth.Principal(
                    org_id=claimed.org_id, role=auth.VIEWER, gateway_id=claimed.gateway_id
                ),
                "gateway.claim",
                f"gateway:{claimed.gateway_id}",
                ctx.now_ms,
                {"status": claimed.status, "site_id": claimed.site_id, "via": "https"},
            )
    except ClaimError as e:
        raise ClaimRefused(str(e)) from None
    return claimed.as_json(ctx.settings.broker_url)
