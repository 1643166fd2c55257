"""The `gatewayctl` command: a technician's way from a gateway in its box to its first
readings at the fleet (docs/gatewayctl.md). Argument parsing and output only; the work is in
image, flash, fleetapi, claim, label and commission.

  gatewayctl provision --fleet https://fleet.example.org --site "Grundschule Süd" --out label/
  gatewayctl build --board esp32-poe --fleet-mqtt mqtts://fleet.example.org:8883 \\
                   --ca ca.pem --claim-token claim_... --gateway-id gs-sued-1 --out build/gs
  gatewayctl flash --board esp32-poe --build build/gs --firmware ESP32_GENERIC-v1.29.bin
  gatewayctl scan --port /dev/ttyUSB0
  gatewayctl commission --fleet https://fleet.example.org --gateway gs-sued-1 --config meters.json

Fleet address and API token also come from GATEWAYCTL_FLEET and GATEWAYCTL_API_TOKEN."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gatewayctl import board as boards
from gatewayctl.errors import GatewayctlError
from gatewayctl.flash import Runner

EXIT_USAGE = 2


def _progress(quiet: bool):  # type: ignore[no-untyped-def]
    """One updating line on a terminal; elsewhere (logs, scripts) a line per new stage."""
    tty = sys.stderr.isatty()
    last = [""]

    def show(message: str) -> None:
        if quiet:
            return
        if tty:
            sys.stderr.write("\r\033[K" + message)
            sys.stderr.flush()
            return
        stage = message.rsplit(" ... ", 1)[0]
        if stage != last[0]:
            last[0] = stage
            print(message, file=sys.stderr)

    return show


def _end_progress() -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")


def _out(args: argparse.Namespace, doc: dict[str, Any], text: str) -> None:
    print(json.dumps(doc, indent=2) if args.json else text)


def _api(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from gatewayctl.fleetapi import FleetApi

    if not args.fleet:
        raise GatewayctlError("no fleet address: give --fleet https://... or set GATEWAYCTL_FLEET")
    if not args.api_token:
        raise GatewayctlError(
            "no API token: give --api-token or set GATEWAYCTL_API_TOKEN (your own technician "
            "token; an operator makes one with `fleet create-token`)"
        )
    return FleetApi(args.fleet, args.api_token)


def _ttl_s(text: str) -> int:
    m = re.fullmatch(r"(\d+)([smhd]?)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: write e.g. 3600, 90m, 12h or 7d")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def _setting(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: write KEY=VALUE (VALUE as JSON, or text)")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


# -- commands -------------------------------------------------------------------------------


def cmd_build(args: argparse.Namespace) -> int:
    from gatewayctl import image

    board = boards.load(args.board)
    out = Path(args.out or f"build/{board.name}")
    prov = None
    extra: dict[str, bytes] = {}
    if not args.no_provision:
        if not args.fleet_mqtt:
            raise GatewayctlError(
                "give --fleet-mqtt (the fleet's MQTT broker, e.g. mqtts://fleet.example.org:8883) "
                "or build without a provisioning file (--no-provision)"
            )
        token = args.claim_token
        if not token:
            raise GatewayctlError(
                "give --claim-token (from `gatewayctl provision` or an operator), or build "
                "without a provisioning file (--no-provision)"
            )
        wifi = (args.wifi_ssid, args.wifi_password or "") if args.wifi_ssid else None
        prov, extra = image.provision_doc(
            board, args.fleet_mqtt, token, gateway_id=args.gateway_id, name=args.name,
            site=args.site, wifi=wifi, ca_file=Path(args.ca) if args.ca else None,
            settings=dict(args.setting or []) or None,
            retry_s=(args.retry_min_s, args.retry_max_s),
        )  # fmt: skip
        if not args.offline:  # the way the gateway will log in, without using the token up
            from gatewayctl.claim import check_token

            check_token(args.fleet_mqtt, token, Path(args.ca) if args.ca else None)
    manifest = image.build(board, out, prov, extra)
    _out(
        args,
        {**manifest, "out": str(out)},
        f"built {board.name} into {out}: fs.img {manifest['fs_size'] // 1024} KB for offset "
        f"{manifest['fs_offset']:#x}, {len(manifest['files'])} files, app "
        f"{manifest['app_bytes'] // 1024} KB"
        + (", with provisioning file" if prov else ", no provisioning file")
        + f"\nnext: gatewayctl flash --board {board.name} --build {out}"
        + (" --firmware <MicroPython .bin/.uf2>" if board.firmware else ""),
    )
    return 0


def cmd_flash(args: argparse.Namespace, runner: Runner) -> int:
    from gatewayctl import flash

    board = boards.load(args.board)
    if board.flash_tool is None:
        raise GatewayctlError(f"board {board.name} is not flashed: mount its fs.img instead")
    build = Path(args.build or f"build/{board.name}")
    firmware = Path(args.firmware) if args.firmware else None
    if firmware is not None:
        flash.check_firmware(board, firmware)
    from gatewayctl.image import read_manifest

    read_manifest(build)  # a clear error before touching the board
    if board.flash_tool == "esptool" and not args.update:
        port = flash.check_port(args.port)
        result = flash.flash_esp32(board, build, port, firmware, runner, args.baud, args.erase)
        what = "firmware and filesystem" if firmware else "filesystem"
    else:
        if firmware is not None:
            if board.firmware is None or board.firmware["format"] != "uf2":
                raise GatewayctlError("--update copies the app only: flash firmware without it")
            args.port = flash.install_uf2(firmware, Path(args.drive) if args.drive else None)
        port = flash.check_port(args.port)
        with_prov = args.with_provisioning or not args.update
        result = flash.copy_mpremote(board, build, port, runner, with_prov)
        what = f"{len(result.verified)} files"
    _out(
        args,
        {"port": result.port, "board": board.name, "verified": result.verified},
        f"flashed {what} to the {board.name} on {result.port} and verified it; the gateway "
        "restarts and provisions itself\nnext: gatewayctl commission --gateway <id>",
    )
    return 0


def cmd_provision(args: argparse.Namespace) -> int:
    from gatewayctl.claim import check_token, claim_login
    from gatewayctl.label import write_label

    info: dict[str, Any] = {"gateway_id": args.gateway_id, "site": args.site, "label": args.label}
    if args.token:
        token = args.token
        if args.fleet_mqtt:
            check_token(args.fleet_mqtt, token)
        info["claim_token_id"] = None
    else:
        with _api(args) as api:
            site_id = api.site_id(args.site) if args.site else None
            label = args.label or " ".join(x for x in (args.gateway_id, args.site) if x)
            created = api.create_claim_token(site_id, args.ttl, label, args.require_approval)
        token = created["token"]
        info.update(claim_token_id=created["id"], site_id=site_id,
                    expires_ts_ms=created["expires_ts_ms"])  # fmt: skip
    paths = write_label(Path(args.out), token, info, pdf=not args.no_pdf)
    claim_id = claim_login(token)[0]
    doc = {**info, "token": token, "mqtt_claim_id": claim_id,
           "label_files": {k: str(v) for k, v in paths.items()}}  # fmt: skip
    text = (
        f"claim token: {token}\n"
        + (
            f"claim token id: {info['claim_token_id']} (for commission --claim-id)\n"
            if info.get("claim_token_id")
            else ""
        )  # fmt: skip
        + f"label: {', '.join(str(p) for p in paths.values())}\n"
        "next: gatewayctl build --board ... --claim-token <token> (single use: keep it safe)"
    )
    _out(args, doc, text)
    return 0


def cmd_commission(args: argparse.Namespace) -> int:
    from gatewayctl.commission import commission, write_report

    if not args.gateway and args.claim_id is None:
        raise GatewayctlError("give --gateway ID or --claim-id N (from gatewayctl provision)")
    config = None
    if args.config:
        try:
            config = json.loads(Path(args.config).read_text())
        except (OSError, ValueError) as e:
            raise GatewayctlError(f"--config {args.config}: {e}") from None
    progress = _progress(args.quiet)
    with _api(args) as api:
        try:
            report = commission(
                api, args.gateway, claim_id=args.claim_id, config=config, site=args.site,
                technician=args.technician, contact_timeout_s=args.timeout,
                readings_timeout_s=args.readings_timeout, progress=progress,
                poll_s=args.poll_s,
            )  # fmt: skip
        finally:
            _end_progress()
    paths = write_report(report, Path(args.out), pdf=not args.no_pdf)
    _out(
        args,
        {**report.as_dict(), "report_files": {k: str(v) for k, v in paths.items()}},
        report.text() + f"\nreport: {', '.join(str(p) for p in paths.values())}",
    )
    return 0 if report.complete else 1


def cmd_scan(args: argparse.Namespace) -> int:
    from edge import cli as edge_cli
    from gatewayctl.flash import check_port

    rest = list(args.rest)
    if "-h" in rest or "--help" in rest:
        pass
    elif "--port" in rest[:-1]:
        i = rest.index("--port")
        rest[i + 1] = check_port(rest[i + 1])
    else:
        rest = ["--port", check_port(None), *rest]
    return int(edge_cli.main(["scan", *rest]))


def cmd_boards(args: argparse.Namespace) -> int:
    rows = [boards.load(n) for n in boards.names()]
    _out(
        args,
        {
            "boards": [
                {
                    "name": b.name,
                    "description": b.description,
                    "fs_offset": b.fs_offset,
                    "fs_size": b.fs_size,
                }
                for b in rows
            ]
        },  # fmt: skip
        "\n".join(f"{b.name:<11} {b.description}" for b in rows),
    )
    return 0


# -- parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gatewayctl",
        description="Build, flash, provision and commission energy gateways (docs/gatewayctl.md).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[1],
    )
    sub = p.add_subparsers(dest="command", required=True)
    board_names = boards.names()

    def common(sp: argparse.ArgumentParser, fleet: bool = False) -> None:
        sp.add_argument("--json", action="store_true", help="one JSON document on stdout")
        if fleet:
            sp.add_argument(
                "--fleet",
                default=os.environ.get("GATEWAYCTL_FLEET"),
                help="the fleet's web address (env GATEWAYCTL_FLEET)",
            )
            sp.add_argument("--api-token", default=os.environ.get("GATEWAYCTL_API_TOKEN"),
                            help="your API token (env GATEWAYCTL_API_TOKEN)")  # fmt: skip

    b = sub.add_parser("build", help="compile the firmware and make the filesystem image")
    b.add_argument("--board", required=True, choices=board_names)
    b.add_argument("--out", help="output folder (default build/<board>)")
    b.add_argument("--fleet-mqtt", help="the fleet's MQTT broker: mqtts://host:8883")
    b.add_argument("--claim-token", help="the single-use claim token (gatewayctl provision)")
    b.add_argument("--gateway-id", help="the id the gateway asks for (a-z, 0-9, -)")
    b.add_argument("--name", help="the gateway's display name")
    b.add_argument("--site", help="the site, for the records")
    b.add_argument("--wifi-ssid")
    b.add_argument("--wifi-password")
    b.add_argument("--ca", help="the CA certificate (PEM) the broker's certificate is checked by")
    b.add_argument("--setting", action="append", type=_setting, metavar="KEY=VALUE",
                   help="an extra settings.json entry, e.g. status_interval_s=30")  # fmt: skip
    b.add_argument("--retry-min-s", type=float, default=5, help="first provisioning retry wait")
    b.add_argument("--retry-max-s", type=float, default=600, help="longest retry wait")
    b.add_argument("--no-provision", action="store_true", help="app only, no provisioning file")
    b.add_argument("--offline", action="store_true",
                   help="do not check the claim token at the fleet's broker")  # fmt: skip
    common(b)

    f = sub.add_parser("flash", help="write firmware and filesystem to the board, then verify")
    f.add_argument("--board", required=True, choices=board_names)
    f.add_argument("--build", help="the build folder (default build/<board>)")
    f.add_argument("--port", help="serial port (default: the only /dev/ttyUSB*|ttyACM*)")
    f.add_argument("--firmware", help="MicroPython firmware: ESP32 .bin or Pico W .uf2")
    f.add_argument("--baud", type=int, default=460800, help="esptool baud rate (460800)")
    f.add_argument("--erase", action="store_true", help="erase the whole flash first (ESP32)")
    f.add_argument("--update", action="store_true",
                   help="copy the app with mpremote; identity and data stay")  # fmt: skip
    f.add_argument("--with-provisioning", action="store_true",
                   help="with --update: copy provision.json too")  # fmt: skip
    f.add_argument("--drive", help="Pico W: the RPI-RP2 drive folder (BOOTSEL mode)")
    common(f)

    pr = sub.add_parser("provision", help="get a claim token for a site and print its label")
    pr.add_argument("--site", help="site id or exact name the gateway belongs to")
    pr.add_argument("--gateway-id", help="the planned gateway id (printed on the label)")
    pr.add_argument("--label", help="label text stored with the token")
    pr.add_argument("--ttl", type=_ttl_s, default=7 * 86400, help="validity: 7d, 12h, 3600")
    pr.add_argument("--require-approval", action="store_true")
    pr.add_argument("--token", help="use this claim token instead of creating one")
    pr.add_argument("--fleet-mqtt", help="with --token: check it at this broker")
    pr.add_argument("--out", default="label", help="folder for label.png/.html/.pdf")
    pr.add_argument("--no-pdf", action="store_true")
    common(pr, fleet=True)

    c = sub.add_parser("commission", help="wait for first contact and readings, write report")
    c.add_argument("--gateway", help="gateway id")
    c.add_argument("--claim-id", type=int, help="or: the claim token's id (gatewayctl provision)")
    c.add_argument("--config", help="JSON configuration document (buses, meters) to give it; "
                   "needs an operator's API token (technicians: ask the operator, or leave it out)")  # fmt: skip
    c.add_argument("--site")
    c.add_argument("--technician", help="your name, for the report")
    c.add_argument("--timeout", type=float, default=600, help="s to wait for first contact")
    c.add_argument("--readings-timeout", type=float, default=120,
                   help="s to wait for every meter's first reading")  # fmt: skip
    c.add_argument("--poll-s", type=float, default=2.0, help=argparse.SUPPRESS)
    c.add_argument("--out", default=".", help="folder for the report files")
    c.add_argument("--no-pdf", action="store_true")
    c.add_argument("--quiet", action="store_true", help="no progress on stderr")
    common(c, fleet=True)

    s = sub.add_parser("scan", help="find meters on an RS-485 bus (edge scan; see edge scan -h)",
                       add_help=False)  # fmt: skip
    s.set_defaults(rest=[])

    bl = sub.add_parser("boards", help="list the boards gatewayctl knows")
    common(bl)
    return p


def main(argv: Sequence[str] | None = None, runner: Runner | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "scan":  # everything after `scan` is edge scan's
        args.rest = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        if args.command == "build":
            return cmd_build(args)
        if args.command == "flash":
            return cmd_flash(args, runner or Runner())
        if args.command == "provision":
            return cmd_provision(args)
        if args.command == "commission":
            return cmd_commission(args)
        if args.command == "scan":
            return cmd_scan(args)
        return cmd_boards(args)
    except GatewayctlError as e:
        print(f"gatewayctl: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("gatewayctl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
