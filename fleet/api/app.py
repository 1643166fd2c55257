"""The FastAPI application of the fleet: create_app(settings) mounts every router under
/api/v1, the problem-document error handlers and the OpenAPI docs at /api/docs. It holds no
business logic (fleet/*.py) and no SQL (fleet/db, fleet/api/queries.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.routing import APIRoute

from fleet.api import errors
from fleet.api.deps import ApiSettings
from fleet.api.routers import alerts, config, identity, insight, provisioning, registry
from fleet.db.registry import NotFound, RegistryError

API_PREFIX = "/api/v1"
# Routes anyone may call: login takes a password, the claim exchange a claim token.
PUBLIC_ROUTES = {("POST", API_PREFIX + "/auth/login"), ("POST", API_PREFIX + "/provision/claim")}
ROUTERS = (
    identity.router, registry.router, provisioning.router, config.router, alerts.router,
    insight.router,
)  # fmt: skip


def api_routes() -> list[tuple[str, str, APIRoute]]:
    """(method, full path, route) of every API route (the route-audit test walks these; the
    app's own route list nests included routers in recent FastAPI versions)."""
    return [
        (method, API_PREFIX + route.path, route)
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in sorted(route.methods)
    ]


def _no_nul_in_query(request: Request) -> None:
    # PostgreSQL cannot store or compare text with NUL characters; refuse them up front.
    for key, value in request.query_params.multi_items():
        if "\x00" in key or "\x00" in value:
            raise errors.Invalid(
                f"query parameter {key!r}: must not contain NUL characters",
                errors=[{"path": f"query:{key}", "message": "must not contain NUL characters"}],
            )


def create_app(settings: ApiSettings) -> FastAPI:
    """The API app for one database (settings.engine, migrated) and broker URL."""
    app = FastAPI(
        title="Energy gateway fleet",
        version="1",
        description="Operators' API of the fleet server: see docs/api.md.",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.settings = settings
    errors.install(app)

    @app.exception_handler(RegistryError)
    async def _registry_error(_request: Request, exc: RegistryError) -> object:
        return errors.problem(422, "Invalid request", str(exc))

    @app.exception_handler(NotFound)
    async def _registry_not_found(_request: Request, exc: NotFound) -> object:
        return errors.problem(404, "Not found", str(exc))

    api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(_no_nul_in_query)])
    for router in ROUTERS:
        api.include_router(router)
    app.include_router(api)
    from fleet.ui import mount as mount_ui  # the web UI under /ui (docs/ui.md)

    mount_ui(app)
    return app
