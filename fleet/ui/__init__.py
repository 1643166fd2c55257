"""The fleet's web UI: server-rendered pages under /ui (German by default, English), local
static assets, live updates by server-sent events. mount(app) adds it to the API's FastAPI
app (fleet/api/app.py). Business rules stay in fleet/*.py; see docs/ui.md."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from fleet.ui.security import (
    CsrfError,
    LoginLimiter,
    LoginRequired,
    SecurityHeaders,
    UiForbidden,
    UiNotFound,
)
from fleet.ui.web import HERE, render


def mount(app: FastAPI, limiter: LoginLimiter | None = None) -> None:
    """Add the UI's routes, static files, security headers and error pages to app."""
    from fleet.ui import (
        live,
        pages_admin,
        pages_auth,
        pages_config,
        pages_energy,
        pages_fleet,
        pages_provisioning,
    )

    app.state.ui_login_limiter = limiter or LoginLimiter()
    for module in (pages_auth, pages_fleet, pages_provisioning, pages_config, pages_admin,
                   pages_energy, live):  # fmt: skip
        app.include_router(module.router, prefix="/ui", include_in_schema=False)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")
    app.add_middleware(SecurityHeaders)

    @app.get("/", include_in_schema=False)
    def _root() -> Response:
        return RedirectResponse("/ui/", status_code=307)

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, _exc: LoginRequired) -> Response:
        if request.url.path == "/ui/live" or request.method != "GET":
            return Response("sign in first", status_code=401, media_type="text/plain")
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        from urllib.parse import quote

        return RedirectResponse(f"/ui/login?next={quote(target, safe='/')}", status_code=303)

    @app.exception_handler(CsrfError)
    async def _csrf(request: Request, _exc: CsrfError) -> Response:
        return render(
            request, "error.html", {"title": "error.csrf_title", "text": "error.csrf"}, 403
        )

    @app.exception_handler(UiForbidden)
    async def _forbidden(request: Request, exc: UiForbidden) -> Response:
        return render(
            request, "error.html",
            {"title": "error.forbidden_title", "text": "error.role", "role": exc.role}, 403,
        )  # fmt: skip

    # Unknown /ui paths and malformed ids get the UI's own page; the API keeps its problem
    # documents (the handlers errors.install registered are called for every other path).
    api_http = app.exception_handlers.get(StarletteHTTPException)
    api_invalid = app.exception_handlers.get(RequestValidationError)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/ui/") and exc.status_code == 404:
            return await _not_found(request, UiNotFound())
        if api_http is None:
            raise exc
        return await api_http(request, exc)  # type: ignore[misc]

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        if request.url.path.startswith("/ui/"):
            return await _not_found(request, UiNotFound())  # e.g. a device id that is not a number
        if api_invalid is None:
            raise exc
        return await api_invalid(request, exc)  # type: ignore[misc]

    @app.exception_handler(UiNotFound)
    async def _not_found(request: Request, _exc: UiNotFound) -> Response:
        return render(
            request,
            "error.html",
            {"title": "error.not_found_title", "text": "error.not_found"},
            404,
        )
