"""Helpers of the UI's page modules: the per-request database context (the API's Ctx), the
signed-in session by role, redirects after a POST, and form field parsing. No SQL here."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from fleet.api.deps import Ctx
from fleet.ui.security import Session, UiNotFound, checked_form, require_session

PREFIX = "/ui"


def ctx(request: Request) -> Ctx:
    return Ctx(request.app.state.settings)


def session(request: Request, role: str = "viewer") -> Session:
    return require_session(request, role)


async def post_form(request: Request, role: str) -> tuple[Session, FormData]:
    """The session (at least role) and the CSRF-checked form of a state-changing request."""
    s = await run_in_threadpool(require_session, request, role)  # a database lookup
    return s, await checked_form(request, s)


def redirect(path: str, **params: Any) -> RedirectResponse:
    """303 See Other to path (a POST's answer, so a reload does not post again)."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return RedirectResponse(path + ("?" + query if query else ""), status_code=303)


def safe_next(value: str | None) -> str:
    """A redirect target after sign-in: only a path of this UI, never another site."""
    if (
        value
        and value.startswith(PREFIX + "/")
        and not value.startswith("//")
        and "\\" not in value
    ):
        return value
    return PREFIX + "/"


def found(row: Any) -> Any:
    if row is None:
        raise UiNotFound()
    return row


def form_str(form: FormData, name: str, default: str = "", max_len: int = 500) -> str:
    value = form.get(name, default)
    text = value if isinstance(value, str) else default
    return text.replace("\x00", "").strip()[:max_len]


def form_int(form: FormData, name: str, default: int | None = None) -> int | None:
    text = form_str(form, name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        return default
    return value if 0 <= value <= 2147483647 else default


def split_tags(text: str) -> list[str]:
    return [t for t in (x.strip() for x in text.replace(";", ",").split(",")) if t]
