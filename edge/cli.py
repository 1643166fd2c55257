"""The `edge` command: run the gateway agent, scan a bus, read one meter, show the agent's
status. Argument parsing and output only; the work is in agent, scan and store modules.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran but found nothing / got no answer
EXIT_USAGE = 2  # bad arguments or configuration

_EPILOG_SCAN = """\
examples:
  edge scan --port /dev/ttyUSB0
  edge scan --port /dev/ttyUSB0 --bauds 9600 --parities N --units 1-20 --json

Tries units 1-10 at each setting first (most common settings first), then the rest; once a
unit answers, that setting is kept and only the remaining units are tried. Progress goes to
stderr, the table (or JSON) to stdout."""

_EPILOG_READ = """\
examples:
  edge read --port /dev/ttyUSB0 --unit 3 --profile sdm630
  edge read --port /dev/ttyUSB0 --unit 3 --profile sdm630 --baud 9600 --parity N --json
  edge read --host 192.168.1.50 --unit 1 --profile umg96rm

Baud, parity and stop bits default to the profile's factory settings (else 9600 8E1)."""

_EPILOG_STATUS = """\
Reads the agent's data directory (default /var/lib/edge, or the one in --config); the agent
need not be running. Exit status 1 if the buffer holds readings older than one hour."""


def _print_table(rows: Sequence[Sequence[str]], header: Sequence[str], out: Any = None) -> None:
    out = out or sys.stdout
    widths = [len(h) for h in header]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print(line.rstrip(), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), file=out)


def format_value(value: float | int, resolution: float | None) -> str:
    """A value with as many decimals as its resolution has (0.1 -> 1, 0.001 -> 3)."""
    if isinstance(value, int) or not resolution or resolution >= 1:
        return str(round(value)) if isinstance(value, float) else str(value)
    decimals = max(0, -math.floor(math.log10(resolution) + 1e-9))
    return f"{value:.{decimals}f}"


class _Progress:
    """One updating line on stderr when it is a terminal, else a line per message."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, message: str) -> None:
        if self.quiet:
            return
        if self.tty:
            sys.stderr.write("\r\033[K" + message)
            sys.stderr.flush()
        elif "answers" in message or "identifying" in message:
            print(message, file=sys.stderr)

    def done(self) -> None:
        if self.tty and not self.quiet:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"edge: {message}", file=sys.stderr)
    return code


# ---------------------------------------------------------------------------------------------


def cmd_scan(args: argparse.Namespace) -> int:
    from edge import scan

    try:
        units = scan.parse_units(args.units)
        bauds = [int(b) for b in args.bauds.split(",")] if args.bauds else scan.DEFAULT_BAUDS
        parities = [p.strip().upper() for p in args.parities.split(",")]
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    for p in parities:
        if p not in ("N", "E", "O"):
            return _fail(f"parity {p!r}: use N, E or O", EXIT_USAGE)
    progress = _Progress(args.quiet)
    try:
        result = asyncio.run(
            scan.scan(
                args.port,
                bauds,
                parities,
                units,
                args.stopbits,
                args.timeout_ms / 1000,
                not args.no_identify,
                progress,
            )
        )
    except scan.ScanError as exc:
        progress.done()
        return _fail(str(exc))
    except KeyboardInterrupt:
        progress.done()
        return _fail("interrupted")
    progress.done()
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    elif not result.units:
        print(
            f"No meter answered on {args.port} (units {args.units}, bauds "
            f"{','.join(map(str, bauds))}, parities {','.join(parities)}). Check: A/B wiring "
            "(swap them if unsure), termination, that the meters are powered, and their "
            "configured baud rate and parity."
        )
    else:
        print(
            f"{args.port}: {len(result.units)} meter(s) at {result.baud} baud "
            f"8{result.parity}{result.stopbits} ({result.seconds:.1f} s)"
        )
        rows = []
        for u in result.units:
            model = u.model or ("/".join(u.candidates) if u.candidates else "?")
            desc = f"{u.manufacturer} {u.name}" if u.manufacturer else ""
            rows.append((str(u.unit), model, desc, u.note or ""))
        _print_table(rows, ("unit", "profile", "meter", "note"))
    return EXIT_OK if result.units else EXIT_FAILED


def cmd_read(args: argparse.Namespace) -> int:
    from edge import scan
    from edge.poller import ModbusMaster, RtuMaster, TcpMaster
    from protocols.profiles import ProfileError, load_profile

    try:
        profile = load_profile(args.profile, args.profile_dir or None)
    except ProfileError as exc:
        return _fail(str(exc), EXIT_USAGE)
    serial = profile.serial or {}
    master: ModbusMaster
    if args.host:
        master = TcpMaster(args.host, args.tcp_port, args.timeout_ms / 1000)
        where = f"{args.host}:{args.tcp_port}"
    else:
        if not args.port:
            return _fail(
                "give --port /dev/ttyUSB0 (RTU) or --host ADDRESS (Modbus TCP)", EXIT_USAGE
            )
        baud = args.baud or serial.get("baud") or 9600
        parity = (args.parity or serial.get("parity") or "E").upper()
        stopbits = args.stopbits or serial.get("stopbits") or 1
        master = RtuMaster(args.port, baud, parity, stopbits)
        where = f"{args.port} at {baud} baud 8{parity}{stopbits}"

    async def go() -> scan.ReadResult:
        try:
            return await scan.read_meter(
                master, args.unit, profile, args.timeout_ms / 1000, args.retries
            )
        finally:
            master.close()

    try:
        result = asyncio.run(go())
    except scan.ScanError as exc:
        return _fail(str(exc))
    except OSError as exc:  # SerialPortError: port missing, permission, busy
        return _fail(str(exc))
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(result.ts_ms / 1000))
        print(
            f"{profile.manufacturer} {profile.name} ({profile.model}), unit {args.unit} on {where}, {stamp}"
        )
        rows = []
        for name, value in result.values.items():
            q = profile.quantities[name]
            rows.append((name, format_value(value, q.resolution), q.unit))
        for name in result.missing:
            rows.append((name, "n/a", profile.quantities[name].unit))
        _print_table(rows, ("quantity", "value", "unit"))
        for e in result.errors:
            print(f"warning: {e}", file=sys.stderr)
    return EXIT_OK if result.values else EXIT_FAILED


def cmd_status(args: argparse.Namespace) -> int:
    from edge.agent import StatusError, print_report, read_status
    from edge.settings import DEFAULT_DATA_DIR

    data_dir = args.data_dir
    if data_dir is None and args.config:
        from edge.settings import SettingsError, load_settings

        try:
            data_dir = str(load_settings(args.config).data_dir)
        except SettingsError as exc:
            return _fail(str(exc), EXIT_USAGE)
    try:
        report = read_status(data_dir or DEFAULT_DATA_DIR)
    except StatusError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return EXIT_OK if report.get("healthy", True) else EXIT_FAILED


def cmd_run(args: argparse.Namespace) -> int:
    from edge.agent import run_agent
    from edge.settings import SettingsError, load_settings

    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        return _fail(str(exc), EXIT_USAGE)
    return run_agent(settings, log_level=args.log_level)


# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge",
        description="Energy gateway agent for Linux: reads Modbus and LoRa meters, buffers "
        "readings safely and sends them to the fleet server.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "run", help="run the gateway agent (what the systemd service does)",
        description="Run the agent: poll meters, buffer readings, sync with the fleet.",
    )  # fmt: skip
    p.add_argument(
        "--config", default="/etc/edge/gateway.toml", help="bootstrap file (default: %(default)s)"
    )
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    p.set_defaults(func=cmd_run)

    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "scan", help="find baud rate, parity, unit ids and meter models on a bus",
        description="Find the meters on an RS-485 bus.", epilog=_EPILOG_SCAN, formatter_class=fmt,
    )  # fmt: skip
    p.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0")
    p.add_argument(
        "--bauds",
        help="comma-separated baud rates to try (default: 9600,19200,2400,4800,38400,57600,115200,1200)",
    )
    p.add_argument(
        "--parities", default="E,N,O", help="parities to try, in order (default: %(default)s)"
    )
    p.add_argument("--stopbits", type=int, default=1, choices=(1, 2))
    p.add_argument(
        "--units", default="1-247", help="unit ids, e.g. 1-247 or 1,3,10-20 (default: %(default)s)"
    )
    p.add_argument(
        "--timeout-ms",
        type=float,
        default=80,
        help="how long a meter may take to start answering (default: %(default)s)",
    )
    p.add_argument(
        "--no-identify", action="store_true", help="only list units, do not read model registers"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_scan)

    p = sub.add_parser(
        "read", help="read every quantity of one meter once",
        description="Read all quantities of one meter and print them with units.",
        epilog=_EPILOG_READ, formatter_class=fmt,
    )  # fmt: skip
    p.add_argument("--port", help="serial port of an RTU bus, e.g. /dev/ttyUSB0")
    p.add_argument("--host", help="address of a Modbus TCP meter or gateway (instead of --port)")
    p.add_argument(
        "--tcp-port", type=int, default=502, help="Modbus TCP port (default: %(default)s)"
    )
    p.add_argument("--unit", type=int, required=True, help="unit id (slave address) 1..247")
    p.add_argument(
        "--profile", required=True, help="meter profile, e.g. sdm630 (see protocols/profiles/)"
    )
    p.add_argument("--profile-dir", action="append", help="folder with extra profile files")
    p.add_argument("--baud", type=int, help="baud rate (default: the profile's)")
    p.add_argument(
        "--parity", choices=("N", "E", "O", "n", "e", "o"), help="parity (default: the profile's)"
    )
    p.add_argument("--stopbits", type=int, choices=(1, 2))
    p.add_argument(
        "--timeout-ms", type=float, default=500, help="answer timeout (default: %(default)s)"
    )
    p.add_argument(
        "--retries", type=int, default=1, help="retries per request (default: %(default)s)"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_read)

    p = sub.add_parser(
        "status", help="buffer depth, oldest unsent reading, last ack, errors per meter",
        description="Show the agent's buffer and meter health.", epilog=_EPILOG_STATUS,
        formatter_class=fmt,
    )  # fmt: skip
    p.add_argument("--data-dir", help="agent data directory (default: /var/lib/edge)")
    p.add_argument("--config", help="bootstrap file to take the data directory from")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (
        getattr(args, "unit", None) is not None
        and not 1 <= args.unit <= 247
        and not getattr(args, "host", None)
    ):
        return _fail(f"unit {args.unit}: RTU unit ids are 1..247", EXIT_USAGE)
    try:
        result: int = args.func(args)
    except BrokenPipeError:  # output piped into head or less, which quit early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    return result


if __name__ == "__main__":
    sys.exit(main())
