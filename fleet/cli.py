"""The `fleet` command: serve, migrate, status and the admin commands (create-org, create-user,
create-token, claim-tokens, export, import, mosquitto-config). Parses arguments and prints
results (for people, or JSON with --json); the work is done by fleet.serve, fleet.db.migrate
and fleet.admin (imported lazily, so `fleet --help` is fast). Exit status: 0 done, 1 refused
or failed with a message saying what to do (no traceback), 2 wrong arguments."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_DATA_DIR = "fleet-data"


class CliError(Exception):
    """A problem the user can fix; printed without a traceback."""


def _engine(args: argparse.Namespace, create: bool = False) -> Any:
    """The database of --database / --data-dir; a SQLite file must exist unless create."""
    from fleet.db.engine import make_engine

    database = args.database or os.path.join(args.data_dir, "fleet.db")
    if "://" not in database:
        folder = os.path.dirname(os.path.abspath(database))
        if not os.path.isdir(folder) or not (create or os.path.exists(database)):
            raise CliError(f"no database at {database}: run `fleet migrate` or `fleet serve` first")
    return make_engine(database)


def _expected_error(exc: BaseException, args: argparse.Namespace) -> str | None:
    """The message for an error the user can act on (a refused admin request, a database that
    cannot be reached or is not migrated), or None for a fault (shown with its traceback)."""
    from fleet.admin import AdminError
    from fleet.auth import UnknownRoleError
    from fleet.db.registry import RegistryError

    if isinstance(exc, AdminError | RegistryError | UnknownRoleError):
        return str(exc)
    import sqlalchemy.exc as sa_exc

    if not isinstance(exc, sa_exc.DBAPIError):
        return None
    database = args.database or os.path.join(args.data_dir, "fleet.db")
    detail = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
    if isinstance(exc, sa_exc.IntegrityError):
        return f"the database refused the change ({detail}): it conflicts with data stored there"
    if "no such table" in detail or ("relation" in detail and "does not exist" in detail):
        return f"the database {database} has no fleet tables ({detail}): run `fleet migrate` first"
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        return (
            f"cannot use the database {_hide_password(database)}: {detail}; check --database "
            "(host, port, user, database name) and that the database server is running"
        )
    return None


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if "://" not in url:
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _admin(name: str) -> Callable[..., Any]:
    """A function of fleet/admin.py, or a clear error if that is missing."""
    try:
        from fleet import admin
    except ImportError as e:
        raise CliError(f"fleet/admin.py cannot be imported ({e}): this command is not ready") from e
    fn = getattr(admin, name, None)
    if fn is None:
        raise CliError(f"fleet.admin.{name} does not exist yet: this command is not ready")
    return fn  # type: ignore[no-any-return]


def _print(args: argparse.Namespace, data: Any, text: str | None = None) -> None:
    if args.json or text is None:
        print(json.dumps(data, indent=None if args.json else 2, ensure_ascii=False, default=str))
    else:
        print(text)


# --- commands ---------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> None:
    from fleet.alerts import AlertSettings
    from fleet.serve import Running, ServeError, ServeOptions, serve

    opts = ServeOptions(
        data_dir=Path(args.data_dir),
        database=args.database,
        mqtt=args.mqtt,
        broker=args.broker,
        mqtt_port=args.mqtt_port,
        mqtt_bind=args.mqtt_bind,
        http_host=args.host,
        http_port=args.port,
        public_broker_url=args.public_broker_url,
        ca_file=args.ca_file,
        mosquitto_dir=Path(args.mosquitto_dir) if args.mosquitto_dir else None,
        mosquitto_pid_file=Path(args.mosquitto_pid_file) if args.mosquitto_pid_file else None,
        alert_settings=AlertSettings(
            offline_missed_intervals=args.offline_missed_intervals, offline_min_s=args.offline_min_s
        ),
    )

    def ready(r: Running) -> None:
        info = {
            "http_port": r.http_port,
            "mqtt_host": r.mqtt_host,
            "mqtt_port": r.mqtt_port,
            "broker": r.broker_kind,
            "database": r.engine.url.render_as_string(hide_password=True),
        }
        text = (
            f"fleet: API on http://{args.host}:{r.http_port}/api/docs, MQTT broker "
            f"({r.broker_kind}) on {r.mqtt_host}:{r.mqtt_port}, database {info['database']}"
        )
        _print(args, {"ready": info}, text)
        sys.stdout.flush()

    try:
        asyncio.run(serve(opts, on_ready=ready))
    except ServeError as e:
        raise CliError(str(e)) from e


def cmd_migrate(args: argparse.Namespace) -> None:
    from fleet.db.migrate import upgrade

    if not args.database:
        Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    engine = _engine(args, create=True)
    revision = upgrade(engine)
    _print(args, {"revision": revision}, f"database at revision {revision}")


def cmd_status(args: argparse.Namespace) -> None:
    data = _admin("status")(_engine(args))
    _print(args, data)


def cmd_create_org(args: argparse.Namespace) -> None:
    org_id = _admin("create_org")(_engine(args), args.slug, args.name or args.slug)
    _print(
        args, {"id": org_id, "slug": args.slug}, f"organisation {args.slug} created (id {org_id})"
    )


def cmd_create_user(args: argparse.Namespace) -> None:
    password = args.password or os.environ.get("FLEET_PASSWORD")
    if not password:
        import getpass

        password = getpass.getpass(f"password for {args.email}: ")
    user_id = _admin("create_user")(
        _engine(args), args.email, password, args.org, args.role, name=args.name or ""
    )
    _print(args, {"id": user_id, "email": args.email}, f"user {args.email} created (id {user_id})")


def cmd_create_token(args: argparse.Namespace) -> None:
    token = _admin("create_token")(
        _engine(args), args.email, args.org, args.name, role=args.role, ttl_s=args.ttl_s
    )
    _print(args, {"token": token}, f"{token}\n(shown only now: store it safely)")


def cmd_claim_tokens(args: argparse.Namespace) -> None:
    tokens = _admin("create_claim_tokens")(
        _engine(args),
        args.org,
        count=args.count,
        ttl_s=args.ttl_s,
        site_id=args.site,
        require_approval=args.require_approval,
        label=args.label,
    )
    text = "\n".join(t["token"] for t in tokens) + "\n(shown only now)"
    _print(args, {"claim_tokens": tokens}, text)


def cmd_export(args: argparse.Namespace) -> None:
    data = _admin("export_json")(_engine(args), args.org)
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    if args.output and args.output != "-":
        Path(args.output).write_text(text + "\n")
    else:
        print(text)


def cmd_import(args: argparse.Namespace) -> None:
    try:
        data = json.loads(Path(args.file).read_text())
    except (OSError, ValueError) as e:
        raise CliError(f"cannot read {args.file}: {e}") from e
    try:
        counts = _admin("import_json")(_engine(args), data)
    except (KeyError, TypeError, AttributeError) as e:
        raise CliError(
            f"{args.file} is not a complete fleet export ({e!r} is missing or wrong)"
        ) from e
    _print(args, {"imported": counts})


def cmd_mosquitto_config(args: argparse.Namespace) -> None:
    """Write password_file + acl_file for an external Mosquitto (one-off; `fleet serve
    --mosquitto-dir` keeps them up to date)."""
    from fleet.db.engine import read
    from fleet.mqtt import mosquitto_conf, store

    if not args.fleet_password:
        raise CliError("--fleet-password: the password the fleet instances use (--mqtt URL)")
    engine = _engine(args)
    with read(engine) as conn:
        accounts = store.broker_accounts(conn, store.now_ms())
    service = mosquitto_conf.service_account(args.fleet_password)
    pw, acl_path = mosquitto_conf.write_auth_files(Path(args.output_dir), accounts, service)
    _print(
        args,
        {"password_file": str(pw), "acl_file": str(acl_path), "gateways": len(accounts.gateways)},
        f"wrote {pw} ({len(accounts.gateways)} gateways, {len(accounts.claims)} open claims) "
        f"and {acl_path}",
    )


# --- parser ---------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fleet",
        description="The fleet server of the energy gateways: API, MQTT bridge and admin tools.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir", default=DEFAULT_DATA_DIR, help="folder of the SQLite file and broker files"
    )
    common.add_argument(
        "--database",
        help="SQLite file or postgresql://user:password@host:5432/db (default: DATA_DIR/fleet.db)",
    )
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    common.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", parents=[common], help="run the API, broker and MQTT bridge")
    s.add_argument("--host", default="0.0.0.0", help="HTTP address (default 0.0.0.0)")
    s.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080; 0: free)")
    s.add_argument(
        "--mqtt", help="external broker mqtt(s)://user:password@host:port (default: embedded)"
    )
    s.add_argument(
        "--broker",
        choices=["auto", "mosquitto", "amqtt"],
        default="auto",
        help="embedded broker (auto: Mosquitto if installed, else amqtt)",
    )
    s.add_argument("--mqtt-port", type=int, default=1883, help="embedded broker port (0: free)")
    s.add_argument("--mqtt-bind", default="0.0.0.0", help="embedded broker address")
    s.add_argument("--public-broker-url", help="broker URL given to provisioned gateways")
    s.add_argument("--ca-file", help="CA file for mqtts:// to an external broker")
    s.add_argument(
        "--mosquitto-dir", help="external Mosquitto: keep its password_file and acl_file here"
    )
    s.add_argument("--mosquitto-pid-file", help="external Mosquitto's pid_file, to SIGHUP it")
    s.add_argument(
        "--offline-missed-intervals",
        type=_positive_int,
        default=3,
        help="offline alert after this many batch intervals without contact (default 3)",
    )
    s.add_argument(
        "--offline-min-s",
        type=_positive_int,
        default=120,
        help="... but never sooner than this many seconds (default 120)",
    )
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("migrate", parents=[common], help="create or upgrade the database schema")
    s.set_defaults(func=cmd_migrate)

    s = sub.add_parser("status", parents=[common], help="show gateways, alerts and rollouts")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("create-org", parents=[common], help="create an organisation")
    s.add_argument("slug", help="short name, a-z 0-9 -")
    s.add_argument("--name", help="display name (default: the slug)")
    s.set_defaults(func=cmd_create_org)

    s = sub.add_parser("create-user", parents=[common], help="create a user")
    s.add_argument("email")
    s.add_argument("--password", help="(default: $FLEET_PASSWORD, or asked)")
    s.add_argument("--org", help="organisation slug to join")
    s.add_argument("--role", choices=["admin", "operator", "technician", "viewer"])
    s.add_argument("--name")
    s.set_defaults(func=cmd_create_user)

    s = sub.add_parser("create-token", parents=[common], help="create an API token for a user")
    s.add_argument("email")
    s.add_argument("--org", required=True)
    s.add_argument("--name", default="cli")
    s.add_argument("--role", choices=["admin", "operator", "technician", "viewer"])
    s.add_argument("--ttl-s", type=int, help="lifetime in seconds (default: no expiry)")
    s.set_defaults(func=cmd_create_token)

    s = sub.add_parser("claim-tokens", parents=[common], help="create claim tokens in bulk")
    s.add_argument("--org", required=True)
    s.add_argument("--count", type=int, default=1)
    s.add_argument("--ttl-s", type=int, default=7 * 86400, help="validity (default 7 days)")
    s.add_argument("--site", type=int, help="bind the gateways to this site id")
    s.add_argument("--require-approval", action="store_true", help="gateways start pending")
    s.add_argument("--label", default="")
    s.set_defaults(func=cmd_claim_tokens)

    s = sub.add_parser("export", parents=[common], help="export an organisation as JSON")
    s.add_argument("--org", required=True)
    s.add_argument("-o", "--output", help="file (default: standard output)")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("import", parents=[common], help="import an organisation from JSON")
    s.add_argument("file")
    s.set_defaults(func=cmd_import)

    s = sub.add_parser(
        "mosquitto-config",
        parents=[common],
        help="write password_file and acl_file for an external Mosquitto",
    )
    s.add_argument("--output-dir", required=True)
    s.add_argument("--fleet-password", help="the fleet instances' broker password")
    s.set_defaults(func=cmd_mosquitto_config)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:  # alembic tells every step of a migration at INFO
        logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        args.func(args)
    except CliError as e:
        print(f"fleet {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        message = _expected_error(e, args)
        if message is None:
            raise
        print(f"fleet {args.command}: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
