"""Security of the web UI: the session cookie (a session token of fleet/auth.py, stored like
every API token), CSRF tokens on every state-changing form, login rate limiting and the
security headers (a CSP without inline scripts or styles). Roles and organisation checks are
fleet/auth.py's Principal, as in the API; nothing here decides what a role may do."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from starlette.datastructures import FormData
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleet import auth

SESSION_COOKIE = "fleet_ui"  # not the API's fleet_session: the UI's cookie only works here
LOGIN_CSRF_COOKIE = "fleet_login_csrf"
CSRF_FIELD = "csrf"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)


class LoginRequired(Exception):
    """No valid session: pages redirect to the sign-in form."""


class CsrfError(Exception):
    """A state-changing request without the form's CSRF token (or with a wrong one)."""


class UiForbidden(Exception):
    """Signed in, but the role is too weak for this action."""

    def __init__(self, role: str) -> None:
        super().__init__(role)
        self.role = role


class UiNotFound(Exception):
    """No such thing in the user's organisation (another organisation's ids look the same)."""


@dataclass(frozen=True)
class Session:
    principal: auth.Principal
    token: str

    @property
    def csrf(self) -> str:
        return csrf_token(self.token)


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: derived from the secret session token, so it cannot be
    guessed by another site and needs no storage."""
    return hmac.new(session_token.encode(), b"fleet-ui-csrf", hashlib.sha256).hexdigest()


def secure_cookies(request: Request) -> bool:
    return request.url.scheme == "https"


def set_cookie(request: Any, response: Any, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request),
        path="/ui",
    )


def session_of(request: Request) -> Session | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token or not token.startswith(auth.SESSION_TOKEN_PREFIX) or len(token) > 200:
        return None
    settings = request.app.state.settings
    from fleet.db.engine import transaction

    with transaction(settings.engine) as conn:
        principal = auth.authenticate_token(conn, token, settings.clock())
    return Session(principal, token) if principal is not None else None


def require_session(request: Request, role: str = auth.VIEWER) -> Session:
    """The request's session (LoginRequired without one, UiForbidden below role)."""
    session = getattr(request.state, "session", None)
    if session is None:
        session = session_of(request)
        if session is None:
            raise LoginRequired()
        request.state.session = session
    if not session.principal.may(role):
        raise UiForbidden(role)
    return session


async def checked_form(request: Request, session: Session | None) -> FormData:
    """The posted form after the CSRF check: the session's token, or before sign-in the
    double-submit cookie set with the sign-in form."""
    form = await request.form()
    sent = str(form.get(CSRF_FIELD, ""))
    want = session.csrf if session is not None else request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not sent or not want or not hmac.compare_digest(sent, want):
        raise CsrfError()
    return form


def new_login_csrf() -> str:
    return secrets.token_urlsafe(32)


@dataclass
class LoginLimiter:
    """At most max_failures failed sign-ins per window_s for one client address and for one
    email; a success clears the email's count. Kept in memory: with several fleet instances
    behind a balancer each counts its own (see docs/ui.md)."""

    max_failures: int = 5
    window_s: float = 300.0
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def _recent(self, key: str) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        now = self.clock()
        while q and now - q[0] > self.window_s:
            q.popleft()
        return q

    def retry_after_s(self, ip: str, email: str) -> int:
        """Seconds until another attempt is allowed; 0 when it is allowed now."""
        worst = 0.0
        for key in (f"ip:{ip}", f"email:{email.strip().lower()}"):
            q = self._recent(key)
            if len(q) >= self.max_failures:
                worst = max(worst, self.window_s - (self.clock() - q[0]))
        return int(worst) + 1 if worst > 0 else 0

    def failed(self, ip: str, email: str) -> None:
        for key in (f"ip:{ip}", f"email:{email.strip().lower()}"):
            self._recent(key).append(self.clock())
        if len(self._failures) > 10_000:  # forget idle keys so memory stays bounded
            for key in [k for k, q in self._failures.items() if not self._recent(k)]:
                del self._failures[key]

    def succeeded(self, email: str) -> None:
        self._failures.pop(f"email:{email.strip().lower()}", None)


class SecurityHeaders:
    """ASGI middleware: security headers on every answer under /ui (the API's /api/docs page
    loads Swagger UI with inline scripts, so the strict CSP is limited to the UI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == "/" or path.startswith("/ui")):
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"
        static = path.startswith("/ui/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                extra = {
                    b"content-security-policy": CSP.encode(),
                    b"x-content-type-options": b"nosniff",
                    b"x-frame-options": b"DENY",
                    b"referrer-policy": b"same-origin",
                    b"permissions-policy": b"camera=(), microphone=(), geolocation=()",
                    b"cross-origin-opener-policy": b"same-origin",
                }
                if not static:
                    extra[b"cache-control"] = b"no-store"
                if https:
                    extra[b"strict-transport-security"] = b"max-age=31536000"
                names = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in extra.items() if k not in names]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
