"""Sign-in, sign-out, password change and the language switch of the web UI. Sessions are
fleet/auth.py's session tokens (auth.login), so they are revoked and audited like API tokens."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from fleet import audit, auth
from fleet.api import queries as q
from fleet.ui import common as c
from fleet.ui.security import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    checked_form,
    new_login_csrf,
    session_of,
    set_cookie,
)
from fleet.ui.web import LANG_COOKIE, LANGS, render, translate

router = APIRouter()


def _login_page(request: Request, error: str = "", status: int = 200, **values: str) -> Response:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or new_login_csrf()
    request.state.login_csrf = token
    page = render(
        request,
        "login.html",
        {
            "error": error,
            "next": c.safe_next(request.query_params.get("next") or values.get("next")),
            "email": values.get("email", ""),
            "organisation": values.get("organisation", request.cookies.get("fleet_org", "")),
        },
        status,
    )
    set_cookie(request, page, LOGIN_CSRF_COOKIE, token, None)
    return page


@router.get("/login")
def login_form(request: Request) -> Response:
    if session_of(request) is not None:
        return c.redirect(c.safe_next(request.query_params.get("next")))
    return _login_page(request)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await checked_form(request, None)
    email = c.form_str(form, "email", max_len=254)
    password = str(form.get("password", ""))[:1024]
    org = c.form_str(form, "organisation", max_len=64)
    nxt = c.form_str(form, "next", max_len=500)
    limiter = request.app.state.ui_login_limiter
    ip = request.client.host if request.client else "?"
    lang = request.cookies.get(LANG_COOKIE, "de")
    wait_s = limiter.retry_after_s(ip, email)
    if wait_s:
        page = _login_page(
            request,
            translate(lang if lang in LANGS else "de", "login.rate_limited", s=wait_s),
            429,
            email=email,
            organisation=org,
            next=nxt,
        )
        page.headers["Retry-After"] = str(wait_s)
        return page
    cx = c.ctx(request)

    def sign_in() -> str | None:
        with cx.tx() as conn:
            token = auth.login(conn, email, password, org, cx.now_ms)
            principal = auth.authenticate_token(conn, token, cx.now_ms) if token else None
            if principal is not None:
                audit.record(
                    conn, principal, "session.login", f"user:{principal.user_id}", cx.now_ms,
                    {"token_id": principal.token_id, "via": "ui"},
                )  # fmt: skip
        return token

    # argon2 takes tens of milliseconds: off the event loop the MQTT bridge shares
    token = await run_in_threadpool(sign_in) if email and password and org else None
    if token is None:
        limiter.failed(ip, email)
        return _login_page(
            request,
            translate(lang if lang in LANGS else "de", "login.failed"),
            401,
            email=email,
            organisation=org,
            next=nxt,
        )
    limiter.succeeded(email)
    response = c.redirect(c.safe_next(nxt))
    set_cookie(request, response, SESSION_COOKIE, token, auth.SESSION_TTL_MS // 1000)
    response.set_cookie(
        "fleet_org", org, max_age=365 * 86400, samesite="lax", path="/ui", httponly=True
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/ui")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    s, _ = await c.post_form(request, auth.VIEWER)
    cx = c.ctx(request)
    with cx.tx() as conn:
        if s.principal.token_id is not None:
            q.revoke_token(conn, s.principal.token_id)
            audit.record(
                conn, s.principal, "session.logout", f"token:{s.principal.token_id}", cx.now_ms
            )
    response = c.redirect(c.PREFIX + "/login", done="logout")
    response.delete_cookie(SESSION_COOKIE, path="/ui")
    return response


@router.get("/password")
def password_form(request: Request) -> Response:
    c.session(request)
    return render(
        request, "password.html", {"errors": {}, "done": request.query_params.get("done")}
    )


@router.post("/password")
async def change_password(request: Request) -> Response:
    s, form = await c.post_form(request, auth.VIEWER)
    current = str(form.get("current", ""))[:1024]
    new = str(form.get("new", ""))[:1024]
    repeat = str(form.get("repeat", ""))[:1024]
    errors: dict[str, str] = {}
    cx = c.ctx(request)

    def change() -> None:
        with cx.tx() as conn:
            user = q.user_by_email(conn, s.principal.email or "")
            if user is None or not auth.verify_password(user["password_hash"], current):
                errors["current"] = "password.wrong_current"
            if len(new) < 8:
                errors["new"] = "password.too_short"
            elif new != repeat:
                errors["repeat"] = "password.mismatch"
            if not errors and user is not None:
                q.patch_user(conn, user["id"], {"password_hash": auth.hash_password(new)})
                audit.record(conn, s.principal, "user.password", f"user:{user['id']}", cx.now_ms)

    await run_in_threadpool(change)
    if errors:
        return render(request, "password.html", {"errors": errors, "done": None}, 422)
    return c.redirect(c.PREFIX + "/password", done="password")


@router.get("/lang/{code}")
def switch_language(request: Request, code: str) -> Response:
    """Switching the language changes only a cookie, so a link (GET) is enough."""
    response = c.redirect(c.safe_next(request.query_params.get("next")))
    if code in LANGS:
        response.set_cookie(
            LANG_COOKIE, code, max_age=365 * 86400, samesite="lax", path="/", httponly=True
        )
    return response
