"""The hw-sim command line: run a building scenario, turn a serial port into a meter, list
meter models, scenarios and faults. Output for people, or JSON for scripts (--json).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from typing import Any

from hw_sim import scenario
from hw_sim.faults import LORA_FAULTS, MODBUS_FAULTS
from hw_sim.loadshape import SHAPES
from protocols import profiles

_STATE_SAVE_S = 10.0
_KEEP = 1000  # records kept in memory by long runs; the --truth file gets all

DESCRIPTION = """\
Simulated energy meters (Modbus RTU on virtual or real serial ports, Modbus TCP), LoRa
sensors behind an emulated RAK3172 module, and whole buildings, for testing gateways.
Every value served and every fault injected is written to a ground-truth log.
"""

EPILOG = """\
examples:
  hw-sim run school                      start the bundled school; prints what to connect to
  hw-sim run my-building.toml --json     the same for scripts (one JSON line, then runs)
  hw-sim run depot --speed 60 --truth t.jsonl --duration 300
  hw-sim meter --profile sdm630 --unit 3 --port /dev/ttyUSB1
                                         a USB-RS485 adapter answers as an SDM630 at unit 3
  hw-sim meter --profile sdm630 --unit 1 --tcp 127.0.0.1:5020
  hw-sim profiles                        meter models you can simulate
  hw-sim scenarios                       the bundled example buildings
  hw-sim faults                          fault kinds and their parameters

connect a gateway: give it the PTY path printed for a bus (e.g. /dev/pts/5) as its serial
port, with the bus's baud rate; on a PTY configure parity N (Linux PTYs cannot carry
parity; docs/hw_sim.md, "Limits"). Full guide: docs/hw_sim.md.
"""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # output piped into head & co.
        return 0
    except (scenario.ScenarioError, profiles.ProfileError, ValueError, OSError) as exc:
        print(f"hw-sim: error: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="hw-sim", description=DESCRIPTION, epilog=EPILOG, formatter_class=fmt
    )
    sub = p.add_subparsers(title="commands", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        formatter_class=fmt,
        help="run a building scenario until Ctrl-C",
        description="Start every bus, TCP endpoint and LoRa radio a scenario file describes, "
        "print what to connect to, and serve until Ctrl-C (or --duration).",
        epilog="A scenario is a TOML file (reference: docs/hw_sim.md) or the name of a bundled "
        "one: " + ", ".join(scenario.bundled_scenarios()) + ".",
    )
    run.add_argument("scenario", help="scenario file, or name of a bundled scenario")
    _sim_options(run)
    run.add_argument(
        "--duration",
        type=float,
        metavar="S",
        help="stop after S real seconds (default: run until Ctrl-C)",
    )
    run.add_argument(
        "--json",
        action="store_true",
        help="print endpoints as one JSON object on one line (for scripts)",
    )
    run.set_defaults(func=cmd_run)

    meter = sub.add_parser(
        "meter",
        formatter_class=fmt,
        help="one simulated meter on a serial port, PTY or TCP",
        description="Answer as one meter model at one unit id. With --port, on a serial port "
        "(a USB-RS485 adapter: the UART does the wire timing; a PTY path works "
        "the same); without --port and --tcp, on a new PTY whose path is printed.",
        epilog="example: hw-sim meter --profile sdm630 --unit 3 --port /dev/ttyUSB1 --baud 9600 "
        "--parity E",
    )
    meter.add_argument("--profile", required=True, help="meter model (see: hw-sim profiles)")
    meter.add_argument("--unit", type=int, required=True, help="Modbus unit id (1..247)")
    where = meter.add_mutually_exclusive_group()
    where.add_argument("--port", help="serial port to answer on, e.g. /dev/ttyUSB1")
    where.add_argument("--tcp", metavar="HOST:PORT", help="serve Modbus TCP instead")
    meter.add_argument("--baud", type=int, help="baud rate (default: the profile's, else 9600)")
    meter.add_argument(
        "--parity", choices=("N", "E", "O"), help="parity (default: the profile's, else E)"
    )
    meter.add_argument(
        "--stopbits", type=int, choices=(1, 2), help="stop bits (default: the profile's, else 1)"
    )
    meter.add_argument(
        "--turnaround-ms",
        type=float,
        help="delay between request and answer (default: the profile's, else 20)",
    )
    meter.add_argument(
        "--load",
        choices=sorted(SHAPES),
        default="office",
        help="daily load shape (default: office)",
    )
    meter.add_argument(
        "--peak-power-w",
        type=float,
        default=20000.0,
        help="power at full load in W (default: 20000)",
    )
    meter.add_argument(
        "--base-power-w", type=float, default=2000.0, help="power at no load in W (default: 2000)"
    )
    meter.add_argument("--name", default="meter", help="name in the ground truth (default: meter)")
    _sim_options(meter)
    meter.add_argument("--json", action="store_true", help="print the endpoint as JSON")
    meter.add_argument("--duration", type=float, metavar="S", help="stop after S real seconds")
    meter.set_defaults(func=cmd_meter)

    prof = sub.add_parser(
        "profiles",
        help="list the meter models (profiles) you can simulate",
        description="List the bundled meter profiles (protocols/profiles).",
    )
    prof.add_argument("--json", action="store_true", help="JSON list for scripts")
    prof.set_defaults(func=cmd_profiles)

    scen = sub.add_parser(
        "scenarios",
        help="list the bundled example buildings",
        description="List the bundled scenarios, or print one to copy from.",
    )
    scen.add_argument("name", nargs="?", help="print this scenario's file")
    scen.add_argument("--json", action="store_true", help="JSON list for scripts")
    scen.set_defaults(func=cmd_scenarios)

    flt = sub.add_parser(
        "faults",
        help="list the fault kinds a scenario can inject",
        description="Fault kinds, where they apply, their parameters.",
    )
    flt.add_argument("--json", action="store_true", help="JSON list for scripts")
    flt.set_defaults(func=cmd_faults)
    return p


def _sim_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("simulation")
    g.add_argument(
        "--speed",
        type=float,
        help="simulated seconds per real second (e.g. 60: a minute per second)",
    )
    g.add_argument("--seed", type=int, help="random seed: same seed, same noise and faults")
    g.add_argument("--start", help="simulated start time, ISO 8601 with offset (default: now)")
    g.add_argument("--truth", metavar="FILE", help="write the ground truth (JSON lines) to FILE")
    g.add_argument(
        "--state", metavar="FILE", help="keep energy and pulse counters in FILE across restarts"
    )


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "speed": args.speed,
        "seed": args.seed,
        "start": args.start,
        "ground_truth": args.truth,
        "state_file": args.state,
    }


# -- run ------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    building = scenario.load(args.scenario, keep_records=_KEEP, **_overrides(args))
    return _serve(building, args)


def cmd_meter(args: argparse.Namespace) -> int:
    profile = profiles.load_profile(args.profile)
    serial = profile.serial or {}
    meter: dict[str, Any] = {
        "name": args.name,
        "profile": args.profile,
        "unit": args.unit,
        "load": args.load,
        "peak_power_w": args.peak_power_w,
        "base_power_w": args.base_power_w,
    }
    if args.turnaround_ms is not None:
        meter["turnaround_ms"] = args.turnaround_ms
    config: dict[str, Any] = {
        "building": {"name": f"{profile.model} at unit {args.unit}"},
        "sim": {k: v for k, v in _overrides(args).items() if v is not None},
    }
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        config["tcp"] = [
            {"name": "tcp", "host": host or "127.0.0.1", "port": int(port), "meter": [meter]}
        ]
    else:
        bus: dict[str, Any] = {
            "name": "bus",
            "baud": args.baud or serial.get("baud") or 9600,
            "parity": args.parity or serial.get("parity") or "E",
            "stopbits": args.stopbits or serial.get("stopbits") or 1,
            "meter": [meter],
        }
        if args.port:
            bus["port"] = args.port
        config["bus"] = [bus]
    building = scenario.Building(config, source="hw-sim meter", keep_records=_KEEP)
    return _serve(building, args)


def _serve(building: scenario.Building, args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        building.start()
        try:
            info = {
                "building": building.name,
                "source": building.source,
                "seed": building.seed,
                "speed": building.clock.speed,
                "start_ms": building.clock.start_ms,
                "ground_truth": str(building.truth.path) if building.truth.path else None,
                "state_file": str(building.state_file) if building.state_file else None,
                "endpoints": building.endpoints(),
            }
            if args.json:
                print(json.dumps(info), flush=True)
            else:
                print(describe(info), flush=True)
            deadline = time.monotonic() + args.duration if args.duration else None
            next_save = time.monotonic() + _STATE_SAVE_S
            while not stop.is_set():
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                stop.wait(0.2 if deadline is None else min(0.2, max(0.0, deadline - now)))
                if time.monotonic() >= next_save:
                    building.save_state()
                    building.truth.flush()
                    next_save = time.monotonic() + _STATE_SAVE_S
        finally:
            building.stop()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if not args.json:
        print("hw-sim: stopped", flush=True)
    return 0


def describe(info: dict[str, Any]) -> str:
    """The endpoint list for people."""
    from datetime import UTC, datetime

    start = datetime.fromtimestamp(info["start_ms"] / 1000, UTC).isoformat(timespec="seconds")
    lines = [
        f"hw-sim: {info['building']} ({info['source']}), seed {info['seed']}, "
        f"time x{info['speed']:g} from {start}"
    ]
    for ep in info["endpoints"]:
        if ep["kind"] == "rtu":
            where = ep["path"]
            if ep["pty"] and ep["pty"] != ep["path"]:
                where += f" -> {ep['pty']}"
            lines.append(f"Modbus RTU bus {ep['name']}: {where}  {ep['framing']}")
            for m in ep["meters"]:
                lines.append(
                    f"    unit {m['unit']:>3}  {m['name']:<16} {m['profile']:<14} "
                    f"turnaround {m['turnaround_ms']:g} ms"
                )
        elif ep["kind"] == "tcp":
            lines.append(f"Modbus TCP {ep['name']}: {ep['host']}:{ep['port']}")
            for m in ep["meters"]:
                lines.append(f"    unit {m['unit']:>3}  {m['name']:<16} {m['profile']}")
        else:
            lines.append(
                f"LoRa radio {ep['name']}: {ep['path']}  {ep['module']}, UART "
                f"{ep['uart']}; sensors send on AT+P2P={ep['p2p']}"
            )
            for s in ep["sensors"]:
                extra = f", {s['per_pulse']:g} {s['measures']}/pulse" if "per_pulse" in s else ""
                lines.append(
                    f"    {s['name']:<18} {s['kind']:<13} {s['format']:<19} "
                    f"{s['address']}  every {s['interval_s']:g} s{extra}"
                )
    if info["ground_truth"]:
        lines.append(f"Ground truth: {info['ground_truth']}")
    if info["state_file"]:
        lines.append(f"State: {info['state_file']}")
    lines.append("Ctrl-C stops.")
    return "\n".join(lines)


# -- listings -------------------------------------------------------------------------------
def cmd_profiles(args: argparse.Namespace) -> int:
    rows = []
    for p in profiles.load_all():
        serial = p.serial or {}
        rows.append(
            {
                "model": p.model,
                "manufacturer": p.manufacturer,
                "name": p.name,
                "phases": p.phases,
                "quantities": sorted(p.quantities),
                "baud": serial.get("baud"),
                "parity": serial.get("parity"),
                "stopbits": serial.get("stopbits"),
                "max_registers": p.max_registers,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'model':<16}{'manufacturer':<22}{'name':<28}{'phases':>6}{'values':>8}  serial")
    for r in rows:
        serial = f"{r['baud']} 8{r['parity'] or '?'}{r['stopbits'] or '?'}" if r["baud"] else "-"
        print(
            f"{r['model']:<16}{r['manufacturer'][:21]:<22}{r['name'][:27]:<28}"
            f"{r['phases']:>6}{len(r['quantities']):>8}  {serial}"
        )
    return 0


def cmd_scenarios(args: argparse.Namespace) -> int:
    if args.name:
        print(scenario.resolve(args.name).read_text(), end="")
        return 0
    rows = []
    for name in scenario.bundled_scenarios():
        b = scenario.load(name)
        rows.append(
            {
                "name": name,
                "building": b.name,
                "path": b.source,
                "meters": len(b.meters),
                "sensors": len(b.sensors),
                "buses": len(b.buses),
                "tcp": len(b.tcps),
                "radios": len(b.radios),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        print(
            f"{r['name']:<14}{r['building']:<24}{r['buses']} RS-485 bus(es), {r['tcp']} TCP, "
            f"{r['meters']} meters, {r['sensors']} LoRa sensors"
        )
    print("\nhw-sim scenarios NAME prints one; hw-sim run NAME starts it.")
    return 0


def cmd_faults(args: argparse.Namespace) -> int:
    rows = [
        {"kind": k, "applies_to": v[0], "parameters": v[1], "effect": v[2]}
        for k, v in {**MODBUS_FAULTS, **LORA_FAULTS}.items()
    ]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in r["parameters"].items())
        print(f"{r['kind']:<14}{r['applies_to']:<9}{r['effect']}")
        if params:
            print(f"{'':<23}parameters (defaults): {params}")
    print(
        '\nIn a scenario: faults = [{ kind = "crc_error", rate = 0.01 }] on a meter or '
        "sensor;\nrate is the share of requests (or uplinks) hit; every injected fault is "
        "logged."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
