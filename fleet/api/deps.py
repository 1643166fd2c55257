"""FastAPI dependencies: the settings and database of the app, the authenticated principal
and role checks. Every route declares require(<role>) (or is listed in PUBLIC_ROUTES)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection, Engine

from fleet import auth
from fleet.api.errors import Forbidden, Unauthorized
from fleet.auth import Principal
from fleet.db.engine import read, transaction

SESSION_COOKIE = "fleet_session"


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class ApiSettings:
    """What the API needs from the server: the database, the broker URL handed to gateways
    at provisioning, and a clock (tests replace it)."""

    engine: Engine
    broker_url: str = "mqtt://localhost:1883"
    clock: Callable[[], int] = field(default=wall_clock_ms)


class Ctx:
    """Per-request access to the database: tx() for a write transaction, ro() for reads."""

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self.now_ms = settings.clock()

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        with transaction(self.settings.engine) as conn:
            yield conn

    @contextmanager
    def ro(self) -> Iterator[Connection]:
        with read(self.settings.engine) as conn:
            yield conn


def get_ctx(request: Request) -> Ctx:
    return Ctx(request.app.state.settings)


_bearer = HTTPBearer(auto_error=False, description="An API token: Authorization: Bearer fleet_...")


def get_principal(
    request: Request,
    ctx: Annotated[Ctx, Depends(get_ctx)],
    cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    token = cred.credentials if cred is not None else request.cookies.get(SESSION_COOKIE)
    if not token:
        raise Unauthorized("send an API token: Authorization: Bearer <token>")
    with ctx.tx() as conn:
        principal = auth.authenticate_token(conn, token, ctx.now_ms)
    if principal is None:
        raise Unauthorized("the token is unknown, revoked or expired: create a new one")
    return principal


def require(role: str) -> Callable[..., Principal]:
    """A dependency that admits principals with at least `role` in their organisation."""
    auth.check_role(role)

    def dependency(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if not principal.may(role):
            raise Forbidden(f"this needs the role {role} (or higher); you are {principal.role}")
        return principal

    dependency.min_role = role  # type: ignore[attr-defined]  # read by the route-audit test
    return dependency


Viewer = Annotated[Principal, Depends(require(auth.VIEWER))]
Technician = Annotated[Principal, Depends(require(auth.TECHNICIAN))]
Operator = Annotated[Principal, Depends(require(auth.OPERATOR))]
Admin = Annotated[Principal, Depends(require(auth.ADMIN))]
CtxDep = Annotated[Ctx, Depends(get_ctx)]


@dataclass(frozen=True)
class Paging:
    limit: int
    offset: int


def get_paging(
    limit: Annotated[int, Query(ge=1, le=500, description="items per page")] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9, description="items to skip")] = 0,
) -> Paging:
    return Paging(limit, offset)


PagingDep = Annotated[Paging, Depends(get_paging)]
