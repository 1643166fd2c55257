"""`fleet serve`: the HTTP API, the broker (embedded, or an external one) and the MQTT bridge in
one process, plus the periodic work (rollout ticks, telemetry compaction, offline alerts, broker
accounts). Wires things together and shuts them down cleanly on SIGINT/SIGTERM; holds no
business logic."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import uvicorn
from sqlalchemy import Engine

from fleet.alerts import AlertSettings
from fleet.db.engine import is_sqlite, make_engine
from fleet.db.migrate import is_current, upgrade
from fleet.mqtt import acl
from fleet.mqtt.bridge import Bridge, BridgeSettings
from fleet.mqtt.broker import (
    AmqttBroker,
    BrokerError,
    ExternalMosquittoFiles,
    ManagedMosquitto,
    find_mosquitto,
    free_port,
    keep_accounts_in_step,
)

log = logging.getLogger("fleet.serve")


class ServeError(RuntimeError):
    """The server cannot start as asked; the message says what to change."""


@dataclass
class ServeOptions:
    data_dir: Path = Path("fleet-data")
    database: str | None = None  # default: <data_dir>/fleet.db (SQLite)
    mqtt: str | None = None  # external broker mqtt(s)://user:password@host:port
    broker: str = "auto"  # embedded broker: auto (Mosquitto if installed), mosquitto, amqtt
    mqtt_port: int = 1883  # embedded broker's port; 0 = a free one
    mqtt_bind: str = "0.0.0.0"
    http_host: str = "0.0.0.0"
    http_port: int = 8080  # 0 = a free one
    public_broker_url: str | None = None  # what provisioned gateways are told
    ca_file: str | None = None  # for mqtts:// to an external broker
    mosquitto_dir: Path | None = None  # external Mosquitto: keep its password/acl files here
    mosquitto_pid_file: Path | None = None  # ... and SIGHUP it on change
    rollout_tick_s: float = 2.0
    compaction_interval_s: float = 60.0
    presence_interval_s: float = 10.0  # offline alerts (fleet.alerts.check_presence)
    base_load_interval_s: float = 3600.0  # base-load rise alerts (fleet.insight.watch)
    alert_settings: AlertSettings = field(default_factory=AlertSettings)
    accounts_interval_s: float = 1.0


@dataclass(frozen=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None


def parse_broker_url(url: str) -> BrokerUrl:
    """mqtt://user:password@host:1883 or mqtts://...:8883 (user defaults to the fleet's)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ServeError(
            f"--mqtt {url!r}: use mqtt://user:password@host:1883 or mqtts://user:password@host:8883"
        )
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as e:
        raise ServeError(f"--mqtt {url!r}: {e}") from e
    user = unquote(parts.username) if parts.username else acl.FLEET_USER
    password = unquote(parts.password) if parts.password else None
    return BrokerUrl(parts.hostname, port, tls, user, password)


def open_database(opts: ServeOptions) -> Engine:
    """The engine; SQLite is migrated on start, PostgreSQL must be (`fleet migrate`)."""
    opts.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(opts.database or str(opts.data_dir / "fleet.db"))
    if is_sqlite(engine):
        upgrade(engine)
    elif not is_current(engine):
        raise ServeError(
            "the PostgreSQL schema is not at the newest revision: run `fleet migrate --database "
            "...` once (from one instance) before `fleet serve`"
        )
    return engine


def make_embedded_broker(opts: ServeOptions, engine: Engine) -> ManagedMosquitto | AmqttBroker:
    folder = opts.data_dir / "broker"
    port = opts.mqtt_port or free_port()
    kind = opts.broker
    if kind == "auto":
        kind = "mosquitto" if find_mosquitto() else "amqtt"
        if kind == "amqtt":
            log.warning(
                "mosquitto is not installed: using amqtt, which any client can disturb "
                "(docs/fleet.md); apt-get install mosquitto for production"
            )
    if kind == "mosquitto":
        return ManagedMosquitto(folder, port, bind=opts.mqtt_bind)
    if kind == "amqtt":
        return AmqttBroker(engine, folder, port, bind=opts.mqtt_bind)
    raise ServeError(f"--broker {opts.broker!r}: auto, mosquitto or amqtt")


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: serve() owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _every(interval_s: float, what: str, fn: Callable[[], object]) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await asyncio.to_thread(fn)
        except Exception:
            log.exception("%s failed; trying again in %.0f s", what, interval_s)


@dataclass
class Running:
    """What serve() started, for callers that wait on ready (tests, `fleet serve --json`)."""

    engine: Engine
    http_port: int
    mqtt_host: str
    mqtt_port: int
    broker_kind: str
    bridge: Bridge


async def serve(
    opts: ServeOptions,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[Running], Awaitable[None] | None] | None = None,
) -> None:
    """Run until stop is set or SIGINT/SIGTERM arrives; then shut everything down."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    engine = await asyncio.to_thread(open_database, opts)
    broker: ManagedMosquitto | AmqttBroker | None = None
    background: list[asyncio.Task[None]] = []
    try:
        if opts.mqtt is None:
            broker = make_embedded_broker(opts, engine)
            await broker.refresh(engine)
            await broker.start()
            host, port, tls = "127.0.0.1", broker.port, None
            username, password = acl.FLEET_USER, broker.fleet_password
            shared = broker.supports_shared_subscriptions
            public = opts.public_broker_url or f"mqtt://localhost:{broker.port}"
            background.append(
                asyncio.create_task(keep_accounts_in_step(broker, engine, opts.accounts_interval_s))
            )
        else:
            url = parse_broker_url(opts.mqtt)
            host, port, username, password = url.host, url.port, url.username, url.password
            tls = ssl.create_default_context(cafile=opts.ca_file) if url.tls else None
            shared = True
            scheme = "mqtts" if url.tls else "mqtt"
            public = opts.public_broker_url or f"{scheme}://{url.host}:{url.port}"
            if opts.mosquitto_dir is not None:
                if password is None:
                    raise ServeError("--mosquitto-dir needs the fleet's password in --mqtt")
                files = ExternalMosquittoFiles(
                    opts.mosquitto_dir, password, opts.mosquitto_pid_file
                )
                background.append(
                    asyncio.create_task(
                        keep_accounts_in_step(files, engine, opts.accounts_interval_s)
                    )
                )
        bridge = Bridge(
            engine,
            BridgeSettings(
                host,
                port,
                username=username,
                password=password,
                tls_context=tls,
                shared_subscriptions=shared,
                public_broker_url=public,
            ),
        )
        background.append(asyncio.create_task(bridge.run(), name="bridge"))
        background += _periodic(opts, engine)

        from fleet.api.app import create_app
        from fleet.api.deps import ApiSettings

        app = create_app(ApiSettings(engine=engine, broker_url=public))
        http_port = opts.http_port or free_port()
        server = _Uvicorn(
            uvicorn.Config(
                app, host=opts.http_host, port=http_port, log_level="warning", lifespan="off"
            )
        )
        http = asyncio.create_task(server.serve(), name="http")
        while not server.started and not http.done():
            await asyncio.sleep(0.05)
        if http.done():
            http.result()
            raise ServeError(f"the HTTP server did not start on port {http_port}")
        log.info(
            "fleet serving HTTP on %s:%d, MQTT via %s:%d", opts.http_host, http_port, host, port
        )
        if on_ready is not None:
            result = on_ready(
                Running(
                    engine, http_port, host, port, broker.kind if broker else "external", bridge
                )
            )
            if asyncio.iscoroutine(result):
                await result
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([http, stopper, *background], return_when=asyncio.FIRST_COMPLETED)
        for task in background:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("%s stopped: %s", task.get_name(), task.exception())
        server.should_exit = True
        stopper.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(http, 10)
    except BrokerError as e:
        raise ServeError(str(e)) from e
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if broker is not None:
            await broker.stop()
        engine.dispose()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


def _periodic(opts: ServeOptions, engine: Engine) -> list[asyncio.Task[None]]:
    from fleet import alerts, rollouts
    from fleet.db.registry import now_ms
    from fleet.insight import watch
    from fleet.telemetry import storage

    return [
        asyncio.create_task(
            _every(opts.rollout_tick_s, "rollout tick", lambda: rollouts.tick(engine, now_ms())),
            name="rollouts",
        ),
        asyncio.create_task(
            _every(opts.compaction_interval_s, "compaction", lambda: storage.compact(engine)),
            name="compaction",
        ),
        asyncio.create_task(
            _every(
                opts.presence_interval_s,
                "presence check",
                lambda: alerts.run_presence_check(engine, now_ms(), opts.alert_settings),
            ),
            name="presence",
        ),
        asyncio.create_task(
            _every(
                opts.base_load_interval_s,
                "base-load check",
                lambda: watch.run_base_load_check(engine, now_ms()),
            ),
            name="base-load",
        ),
    ]
