"""Routes of who is who: login/logout (sessions for the UI), the caller, the organisation,
its users (memberships with roles), API tokens and the audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from fleet import audit, auth
from fleet.api import queries as q
from fleet.api import schemas as s
from fleet.api.deps import SESSION_COOKIE, Admin, CtxDep, PagingDep, Viewer
from fleet.api.errors import Conflict, Forbidden, Invalid, Unauthorized, not_found

router = APIRouter()
UserId = Annotated[int, Path(ge=1, le=s.MAX_ID)]
TokenId = Annotated[int, Path(ge=1, le=s.MAX_ID)]


@router.post("/auth/login", response_model=s.LoginOut, tags=["auth"])
def login(body: s.LoginIn, ctx: CtxDep, response: Response) -> s.LoginOut:
    """A session for the UI: also set as the HttpOnly cookie fleet_session."""
    with ctx.tx() as conn:
        token = auth.login(conn, body.email, body.password, body.organisation, ctx.now_ms)
        session = auth.authenticate_token(conn, token, ctx.now_ms) if token else None
        if session is not None:
            audit.record(
                conn, session, "session.login", f"user:{session.user_id}", ctx.now_ms,
                {"token_id": session.token_id},
            )  # fmt: skip
    if token is None:
        raise Unauthorized("email, password or organisation is wrong")
    response.set_cookie(
        SESSION_COOKIE, token, max_age=auth.SESSION_TTL_MS // 1000, httponly=True, samesite="strict"
    )
    return s.LoginOut(token=token, expires_ts_ms=ctx.now_ms + auth.SESSION_TTL_MS)


@router.post("/auth/logout", status_code=204, tags=["auth"])
def logout(me: Viewer, ctx: CtxDep, response: Response) -> None:
    """End this session or revoke the token used for this request."""
    with ctx.tx() as conn:
        if me.token_id is not None:
            q.revoke_token(conn, me.token_id)
            audit.record(conn, me, "session.logout", f"token:{me.token_id}", ctx.now_ms)
    response.delete_cookie(SESSION_COOKIE)


@router.get("/me", response_model=s.Me, tags=["auth"])
def whoami(me: Viewer) -> s.Me:
    return s.Me(user_id=me.user_id, email=me.email, org_id=me.org_id, role=me.role)  # type: ignore[arg-type]


@router.get("/organisation", response_model=s.OrganisationOut, tags=["organisation"])
def get_organisation(me: Viewer, ctx: CtxDep) -> dict:
    with ctx.ro() as conn:
        return q.get_org(conn, me.org_id)


@router.patch("/organisation", response_model=s.OrganisationOut, tags=["organisation"])
def patch_organisation(body: s.OrganisationPatch, me: Admin, ctx: CtxDep) -> dict:
    values = body.model_dump(exclude_none=True)
    with ctx.tx() as conn:
        q.patch_org(conn, me.org_id, values)
        audit.record(
            conn, me, "organisation.update", f"organisation:{me.org_id}", ctx.now_ms, values
        )
        return q.get_org(conn, me.org_id)


# --- users (members of the organisation) ----------------------------------------------------


@router.get("/users", response_model=s.Page[s.UserOut], tags=["users"])
def list_users(me: Admin, ctx: CtxDep, page: PagingDep) -> dict:
    with ctx.ro() as conn:
        items, total = q.list_members(conn, me.org_id, page.limit, page.offset)
    return {"items": items, "total": total, "limit": page.limit, "offset": page.offset}


@router.post("/users", response_model=s.UserOut, status_code=201, tags=["users"])
def add_user(body: s.UserIn, me: Admin, ctx: CtxDep) -> dict:
    """Add a user to the organisation with a role; a new email needs a password."""
    email = body.email.strip().lower()
    with ctx.tx() as conn:
        user = q.user_by_email(conn, email)
        if user is None:
            if body.password is None:
                raise Invalid(
                    "password: required for a new user",
                    errors=[{"path": "password", "message": "required for a new user"}],
                )
            user_id = q.create_user(
                conn, email, auth.hash_password(body.password), body.name, body.locale, ctx.now_ms
            )
        else:
            user_id = user["id"]
            if q.get_member(conn, me.org_id, user_id) is not None:
                raise Conflict(
                    f"{email} is already a member: change the role with PATCH /users/{user_id}"
                )
        q.set_membership(conn, user_id, me.org_id, body.role)
        audit.record(
            conn, me, "user.add", f"user:{user_id}", ctx.now_ms, {"email": email, "role": body.role}
        )
        return q.get_member(conn, me.org_id, user_id)  # type: ignore[return-value]


@router.get("/users/{user_id}", response_model=s.UserOut, tags=["users"])
def get_user(user_id: UserId, me: Admin, ctx: CtxDep) -> dict:
    with ctx.ro() as conn:
        user = q.get_member(conn, me.org_id, user_id)
    if user is None:
        raise not_found("user", user_id)
    return user


@router.patch("/users/{user_id}", response_model=s.UserOut, tags=["users"])
def patch_user(user_id: UserId, body: s.UserPatch, me: Admin, ctx: CtxDep) -> dict:
    with ctx.tx() as conn:
        user = q.get_member(conn, me.org_id, user_id)
        if user is None:
            raise not_found("user", user_id)
        if (
            body.role is not None
            and body.role != "admin"
            and user["role"] == "admin"
            and q.count_admins(conn, me.org_id) <= 1
        ):
            raise Conflict(
                "the organisation needs at least one admin: make another user admin first"
            )
        if body.role is not None:
            q.set_membership(conn, user_id, me.org_id, body.role)
        q.patch_user(conn, user_id, body.model_dump(exclude_none=True, include={"name", "locale"}))
        audit.record(
            conn,
            me,
            "user.update",
            f"user:{user_id}",
            ctx.now_ms,
            body.model_dump(exclude_none=True),
        )
        return q.get_member(conn, me.org_id, user_id)  # type: ignore[return-value]


@router.delete("/users/{user_id}", status_code=204, tags=["users"])
def remove_user(user_id: UserId, me: Admin, ctx: CtxDep) -> None:
    """Remove the user from this organisation (the account stays for other organisations)."""
    with ctx.tx() as conn:
        user = q.get_member(conn, me.org_id, user_id)
        if user is None:
            raise not_found("user", user_id)
        if user["role"] == "admin" and q.count_admins(conn, me.org_id) <= 1:
            raise Conflict(
                "the organisation needs at least one admin: make another user admin first"
            )
        q.remove_membership(conn, user_id, me.org_id)
        audit.record(
            conn, me, "user.remove", f"user:{user_id}", ctx.now_ms, {"email": user["email"]}
        )


# --- API tokens ---------------------------------------------------------------------------


@router.get("/tokens", response_model=s.Page[s.TokenOut], tags=["tokens"])
def list_tokens(me: Viewer, ctx: CtxDep, page: PagingDep) -> dict:
    """Your tokens; an admin sees every token of the organisation."""
    with ctx.ro() as conn:
        items, total = q.list_tokens(
            conn, me.org_id, None if me.may(auth.ADMIN) else me.user_id, page.limit, page.offset
        )
    return {"items": items, "total": total, "limit": page.limit, "offset": page.offset}


@router.post("/tokens", response_model=s.TokenCreated, status_code=201, tags=["tokens"])
def create_token(body: s.TokenIn, me: Viewer, ctx: CtxDep) -> dict:
    """A token for yourself, with at most your role; the token text is shown once."""
    role = body.role or me.role
    if not me.may(role) or me.user_id is None:
        raise Forbidden(f"a token cannot have more than your role ({me.role})")
    expires = ctx.now_ms + body.ttl_s * 1000 if body.ttl_s else None
    with ctx.tx() as conn:
        token_id, token = auth.create_api_token(
            conn, me.user_id, me.org_id, role, body.name, ctx.now_ms, expires
        )
        audit.record(
            conn,
            me,
            "token.create",
            f"token:{token_id}",
            ctx.now_ms,
            {"name": body.name, "role": role},
        )
        return {**q.get_token(conn, me.org_id, token_id), "token": token}  # type: ignore[dict-item]


@router.delete("/tokens/{token_id}", status_code=204, tags=["tokens"])
def revoke_token(token_id: TokenId, me: Viewer, ctx: CtxDep) -> None:
    """Revoke one of your tokens (an admin: any token of the organisation)."""
    with ctx.tx() as conn:
        row = q.get_token(conn, me.org_id, token_id)
        if row is None or (row["user_id"] != me.user_id and not me.may(auth.ADMIN)):
            raise not_found("token", token_id)
        q.revoke_token(conn, token_id)
        audit.record(conn, me, "token.revoke", f"token:{token_id}", ctx.now_ms)


# --- audit log ------------------------------------------------------------------------------


@router.get("/audit", response_model=s.Page[s.AuditOut], tags=["audit"])
def list_audit(
    me: Admin,
    ctx: CtxDep,
    page: PagingDep,
    action: Annotated[str | None, Query(max_length=64, description="prefix, e.g. gateway.")] = None,
    target: Annotated[str | None, Query(max_length=200)] = None,
    user_id: Annotated[int | None, Query(ge=1, le=s.MAX_ID)] = None,
    since_ts_ms: Annotated[int | None, Query(ge=0, le=s.MAX_TS_MS)] = None,
    until_ts_ms: Annotated[int | None, Query(ge=0, le=s.MAX_TS_MS)] = None,
) -> dict:
    with ctx.ro() as conn:
        items, total = audit.entries(
            conn,
            me.org_id,
            page.limit,
            page.offset,
            action,
            target,
            user_id,
            since_ts_ms,
            until_ts_ms,
        )
    return {"items": items, "total": total, "limit": page.limit, "offset": page.offset}
