"""Alerts (open, history, acknowledge), users and roles, API tokens and the audit log, through
fleet/alerts.py, fleet/auth.py, fleet/audit.py and fleet/api/queries.py with the API's rules
(at least one admin stays; a token never has more than its user's role)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from fleet import alerts, audit, auth
from fleet.api import queries as q
from fleet.ui import common as c
from fleet.ui.web import lang_of, render, translate

router = APIRouter()


def _page_no(request: Request) -> int:
    try:
        return max(0, int(request.query_params.get("page", "0")))
    except ValueError:
        return 0


# --- alerts -----------------------------------------------------------------------------------


@router.get("/alerts")
def alerts_page(request: Request) -> Response:
    s = c.session(request)
    cx = c.ctx(request)
    history = request.query_params.get("history") == "1"
    page = _page_no(request)
    with cx.ro() as conn:
        items, total = alerts.list_alerts(
            conn, s.principal.org_id, not history, None, None, 50, page * 50
        )
    return render(
        request,
        "alerts.html",
        {"alerts": items, "total": total, "history": history, "page": page,
         "pages": max(1, (total + 49) // 50), "done": request.query_params.get("done")},
    )  # fmt: skip


@router.post("/alerts/{alert_id}/acknowledge")
async def acknowledge(request: Request, alert_id: int) -> Response:
    s, form = await c.post_form(request, auth.TECHNICIAN)
    cx = c.ctx(request)

    def ack() -> None:
        with cx.tx() as conn:
            try:
                alerts.acknowledge(conn, alert_id, s.principal.org_id, s.principal.user_id,
                                   cx.now_ms)  # fmt: skip
            except alerts.UnknownAlert:
                raise c.UiNotFound() from None
            audit.record(conn, s.principal, "alert.acknowledge", f"alert:{alert_id}", cx.now_ms)

    await run_in_threadpool(ack)
    return c.redirect(c.PREFIX + "/alerts", done="acknowledged")


# --- users and roles --------------------------------------------------------------------------


def _users_page(request: Request, error: str = "", status: int = 200) -> Response:
    s = c.session(request, auth.ADMIN)
    cx = c.ctx(request)
    with cx.ro() as conn:
        users, total = q.list_members(conn, s.principal.org_id, 500, 0)
    return render(
        request, "users.html",
        {"users": users, "total": total, "roles": auth.ROLES, "error": error,
         "done": request.query_params.get("done")},
        status,
    )  # fmt: skip


@router.get("/users")
def users_page(request: Request) -> Response:
    return _users_page(request)


@router.post("/users")
async def add_user(request: Request) -> Response:
    s, form = await c.post_form(request, auth.ADMIN)
    me = s.principal
    lang = lang_of(request)
    email = c.form_str(form, "email", max_len=254).lower()
    name = c.form_str(form, "name", max_len=200)
    role = c.form_str(form, "role")
    password = str(form.get("password", ""))[:1024]
    cx = c.ctx(request)

    def add() -> str:
        if "@" not in email or role not in auth.ROLES:
            return translate(lang, "users.bad_input")
        with cx.tx() as conn:
            user = q.user_by_email(conn, email)
            if user is None:
                if len(password) < 8:
                    return translate(lang, "password.too_short")
                user_id = q.create_user(conn, email, auth.hash_password(password), name, lang,
                                        cx.now_ms)  # fmt: skip
            else:
                user_id = user["id"]
                if q.get_member(conn, me.org_id, user_id) is not None:
                    return translate(lang, "users.already_member", email=email)
            q.set_membership(conn, user_id, me.org_id, role)
            audit.record(conn, me, "user.add", f"user:{user_id}", cx.now_ms,
                         {"email": email, "role": role, "via": "ui"})  # fmt: skip
        return ""

    error = await run_in_threadpool(add)
    if error:
        return await run_in_threadpool(_users_page, request, error, 422)
    return c.redirect(c.PREFIX + "/users", done="added")


@router.post("/users/{user_id}/{verb}")
async def change_user(request: Request, user_id: int, verb: str) -> Response:
    """verb: role (form field role) or remove; the last admin can be neither."""
    if verb not in ("role", "remove"):
        raise c.UiNotFound()
    s, form = await c.post_form(request, auth.ADMIN)
    me = s.principal
    lang = lang_of(request)
    role = c.form_str(form, "role")
    cx = c.ctx(request)

    def change() -> str:
        with cx.tx() as conn:
            user = c.found(q.get_member(conn, me.org_id, user_id))
            demotes_admin = user["role"] == "admin" and (verb == "remove" or role != "admin")
            if demotes_admin and q.count_admins(conn, me.org_id) <= 1:
                return translate(lang, "users.last_admin")
            if verb == "remove":
                q.remove_membership(conn, user_id, me.org_id)
                audit.record(conn, me, "user.remove", f"user:{user_id}", cx.now_ms,
                             {"email": user["email"], "via": "ui"})  # fmt: skip
            elif role in auth.ROLES:
                q.set_membership(conn, user_id, me.org_id, role)
                audit.record(conn, me, "user.update", f"user:{user_id}", cx.now_ms,
                             {"role": role, "via": "ui"})  # fmt: skip
            else:
                return translate(lang, "users.bad_input")
        return ""

    error = await run_in_threadpool(change)
    if error:
        return await run_in_threadpool(_users_page, request, error, 409)
    return c.redirect(c.PREFIX + "/users", done=verb)


# --- API tokens -------------------------------------------------------------------------------


def _tokens_page(
    request: Request, created: dict[str, Any] | None = None, error: str = "", status: int = 200
) -> Response:
    s = c.session(request)
    me = s.principal
    cx = c.ctx(request)
    with cx.ro() as conn:
        items, total = q.list_tokens(
            conn, me.org_id, None if me.may(auth.ADMIN) else me.user_id, 200, 0
        )
    # sessions are tokens too (prefix fleets_): listed, so they can be ended remotely
    return render(
        request, "tokens.html",
        {"tokens": items, "total": total, "created": created, "error": error,
         "roles": [r for r in auth.ROLES if me.may(r)], "done": request.query_params.get("done")},
        status,
    )  # fmt: skip


@router.get("/tokens")
def tokens_page(request: Request) -> Response:
    return _tokens_page(request)


@router.post("/tokens")
async def create_token(request: Request) -> Response:
    s, form = await c.post_form(request, auth.VIEWER)
    me = s.principal
    lang = lang_of(request)
    name = c.form_str(form, "name", max_len=200)
    role = c.form_str(form, "role") or me.role
    days = c.form_int(form, "ttl_days")
    cx = c.ctx(request)

    def create() -> tuple[dict[str, Any] | None, str]:
        if role not in auth.ROLES or not me.may(role) or me.user_id is None:
            return None, translate(lang, "tokens.too_strong", role=me.role)
        if not name:
            return None, translate(lang, "tokens.name_required")
        expires = cx.now_ms + days * 86_400_000 if days else None
        with cx.tx() as conn:
            token_id, token = auth.create_api_token(
                conn, me.user_id, me.org_id, role, name, cx.now_ms, expires
            )
            audit.record(conn, me, "token.create", f"token:{token_id}", cx.now_ms,
                         {"name": name, "role": role, "via": "ui"})  # fmt: skip
        return {"id": token_id, "token": token, "name": name, "role": role}, ""

    created, error = await run_in_threadpool(create)
    return await run_in_threadpool(_tokens_page, request, created, error, 422 if error else 201)


@router.post("/tokens/{token_id}/revoke")
async def revoke_token(request: Request, token_id: int) -> Response:
    s, _ = await c.post_form(request, auth.VIEWER)
    me = s.principal
    cx = c.ctx(request)

    def revoke() -> None:
        with cx.tx() as conn:
            row = q.get_token(conn, me.org_id, token_id)
            if row is None or (row["user_id"] != me.user_id and not me.may(auth.ADMIN)):
                raise c.UiNotFound()
            q.revoke_token(conn, token_id)
            audit.record(conn, me, "token.revoke", f"token:{token_id}", cx.now_ms)

    await run_in_threadpool(revoke)
    return c.redirect(c.PREFIX + "/tokens", done="revoked")


# --- audit log --------------------------------------------------------------------------------


@router.get("/audit")
def audit_page(request: Request) -> Response:
    s = c.session(request, auth.ADMIN)
    cx = c.ctx(request)
    action = request.query_params.get("action", "")[:64] or None
    page = _page_no(request)
    with cx.ro() as conn:
        items, total = audit.entries(conn, s.principal.org_id, 100, page * 100, action)
    return render(
        request, "audit.html",
        {"entries": items, "total": total, "action": action or "", "page": page,
         "pages": max(1, (total + 99) // 100)},
    )  # fmt: skip
