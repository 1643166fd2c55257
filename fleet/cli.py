"""The `fleet` command: serve, migrate, status and the admin commands (create-org, create-user,
create-token, claim-tokens, export, import, mosquitto-config). Parses arguments and prints
results (for people, or JSON with --json); the work is done by fleet.serve, fleet.db.migrate
and fleet.admin (imported lazily, so `fleet --help` is fast)."""

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


def _engine(args: argparse.Namespace) -> Any:
    from fleet.db.engine import make_engine

    database = args.database or os.path.join(args.data_dir, "fleet.db")
    if "://" not in database:
        folder = os.path.dirname(os.path.abspath(database))
        if not os.path.isdir(folder):
            raise CliError(f"no database at {database}: run `fleet migrate` or `fleet serve` first")
    return make_engine(database)


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
    engine = _engine(args)
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
    counts = _admin("import_json")(_engine(args), data)
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
    try:
        args.func(args)
    except CliError as e:
        print(f"fleet {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
