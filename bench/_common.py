"""Helpers every benchmark shares: --quick/--json arguments, machine info, output.

A benchmark prints a table for people and, with --json, one JSON object as the last line of
stdout (the table then goes to stderr). It measures; it never changes files or settings."""

import argparse
import datetime
import json
import os
import platform
import sys


def parse_args(description, argv=None, parents=()):
    """The common command line: --quick (same keys, smaller run) and --json, plus the options
    of `parents` (argparse parsers made with add_help=False)."""
    p = argparse.ArgumentParser(description=description, parents=list(parents))
    p.add_argument(
        "--quick", action="store_true", help="smaller run with the same output keys, under a minute"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object as the last line of stdout (the table goes to stderr)",
    )
    return p.parse_args(argv)


def machine_info():
    """What the numbers were measured on."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }


def utc_now():
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def table_stream(args):
    """Where the human-readable table goes: stderr under --json, stdout otherwise."""
    return sys.stderr if args.json else sys.stdout


def print_table(headers, rows, file):
    """Rows of values as left-aligned text columns, headers underlined."""
    cells = [[str(h) for h in headers]] + [[str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    print("\n".join(lines), file=file)


def emit(args, name, result):
    """Add the benchmark name, date, machine and mode to `result`; print it under --json."""
    full = {"benchmark": name, "date_utc": utc_now(), "quick": args.quick}
    full["machine"] = machine_info()
    full.update(result)
    if args.json:
        sys.stdout.flush()
        print(json.dumps(full, sort_keys=True))
    return full
