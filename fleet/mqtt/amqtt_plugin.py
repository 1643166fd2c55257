"""amqtt 0.12 plugins that make the in-process broker enforce fleet/mqtt/acl.py: logins checked
against the database (gateways, open claim tokens, the fleet's own account) and every publish,
subscribe and delivery checked per account. Must not do anything else (no ingest here).

amqtt 0.12 delivers a client's last will without any topic check, so a login whose will topic
the account may not publish on is refused here (see docs/fleet.md for amqtt's other limits)."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass

from amqtt.contexts import Action, BaseContext
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from fleet.mqtt import acl

log = logging.getLogger("fleet.mqtt.amqtt")

# login(username, password, client_id) -> bool, run in a worker thread (it reads the database)
LoginCheck = Callable[[str | None, str | None, str | None], bool]


@dataclass
class _Backend:
    fleet_password: str
    check_login: LoginCheck


_backends: dict[str, _Backend] = {}


def register(name: str, fleet_password: str, check_login: LoginCheck) -> None:
    """Make a backend known to the plugins of a broker configured with {"backend": name}."""
    _backends[name] = _Backend(fleet_password, check_login)


def unregister(name: str) -> None:
    _backends.pop(name, None)


def _text(value: object) -> str | None:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return value if isinstance(value, str) else None


class FleetAuthPlugin(BaseAuthPlugin):
    """Login check: the fleet account by its password, everyone else by check_login."""

    @dataclass
    class Config:
        backend: str = "default"

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self._backend_name = self.config.backend

    async def authenticate(self, *, session: Session) -> bool:
        backend = _backends.get(self._backend_name)
        if backend is None:
            log.error("no login backend %r registered: refusing everyone", self._backend_name)
            return False
        username, password = _text(session.username), _text(session.password)
        client_id = session.client_id
        if session.will_flag and not acl.allowed(
            username, client_id, session.will_topic or "", acl.Access.PUBLISH
        ):
            log.warning(
                "refused %s: its last will on %r is not one of its own topics",
                client_id,
                session.will_topic,
            )
            return False
        if username == acl.FLEET_USER:
            return password is not None and hmac.compare_digest(
                password.encode(), backend.fleet_password.encode()
            )
        ok = await asyncio.to_thread(backend.check_login, username, password, client_id)
        if not ok:
            log.info("refused login of %r (client id %r)", username, client_id)
        return ok


class FleetTopicPlugin(BaseTopicPlugin):
    """Publish, subscribe and receive checks by acl.allowed."""

    @dataclass
    class Config:
        backend: str = "default"

    async def topic_filtering(
        self,
        *,
        session: Session | None = None,
        topic: str | None = None,
        action: Action | None = None,
    ) -> bool:
        if session is None or not topic:
            return False
        access = acl.Access.PUBLISH if action == Action.PUBLISH else acl.Access.SUBSCRIBE
        return acl.allowed(_text(session.username), session.client_id, topic, access)
