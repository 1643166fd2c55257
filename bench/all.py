"""Every benchmark in one command: runs bench.poll, codec, edge, fleet and firmware one after
the other, each in its own process, collects the JSON object each prints last, and writes the
figures, the machine and the date into docs/benchmarks.md, between the markers
<!-- bench.all:begin --> and <!-- bench.all:end --> (the prose around them is left alone).

    python -m bench.all --json            # full runs (long: an hour or more), writes the docs
    python -m bench.all --json --quick    # smoke runs; writes the docs only with --out

Each benchmark's table goes to stderr as it runs; the last line of stdout is one JSON object
with every result. A benchmark that fails or prints no JSON is reported with its error and the
others still run; the exit status is then 1."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench._common import utc_now

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ("bench.poll", "bench.codec", "bench.edge", "bench.fleet", "bench.firmware")
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN = "<!-- bench.all:begin -->"
END = "<!-- bench.all:end -->"
_META = {"benchmark", "date_utc", "quick", "machine", "targets", "baseline", "elapsed_s"}
_MAX_CELL = 90  # longer values (lists, nested figures) stay in the JSON only


class DocError(RuntimeError):
    """The benchmarks page cannot be updated; the message says why."""


def machine() -> dict[str, Any]:
    """CPU model, cores and RAM from /proc (Linux), kernel and Python: what the figures mean."""
    info: dict[str, Any] = {
        "cpu_model": None,
        "cores": os.cpu_count(),
        "ram_gib": None,
        "kernel": platform.release(),
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                info["cpu_model"] = value.strip()
                break
    except OSError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["ram_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except (OSError, ValueError, IndexError):
        pass
    return info


def run_one(module: str, quick: bool, timeout_s: float) -> dict[str, Any]:
    """Run `python -m module --json [--quick]`; its result, or {"error": ...}. The table it
    prints goes to our stderr as it comes."""
    argv = [sys.executable, "-m", module, "--json"] + (["--quick"] if quick else [])
    started = time.monotonic()
    try:
        proc = subprocess.run(
            argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {timeout_s:.0f} s (--timeout)"}
    elapsed = round(time.monotonic() - started, 1)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    try:
        result = json.loads(last)
    except ValueError:
        result = None
    if proc.returncode != 0 or not isinstance(result, dict):
        why = f"exit status {proc.returncode}" if proc.returncode else "no JSON on the last line"
        return {"error": f"{why}; last output: {last[-300:]!r}", "elapsed_s": elapsed}
    result["elapsed_s"] = elapsed
    return result


def _cell(value: Any) -> str | None:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= _MAX_CELL else None


def figure_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, value, baseline in the same run, target) for each figure of a result. A
    baseline is a `baseline_<figure>` key or an entry of a `baseline` object; targets come
    from a `targets` object."""
    targets = result.get("targets") if isinstance(result.get("targets"), dict) else {}
    nested = result.get("baseline") if isinstance(result.get("baseline"), dict) else {}
    baselines = {k.removeprefix("baseline_"): v for k, v in result.items()
                 if k.startswith("baseline_")}  # fmt: skip
    baselines.update(nested)
    rows = []
    shown: set[str] = set()
    for key, value in result.items():
        if key in _META or key.startswith("baseline_") or key == "error":
            continue
        cell = _cell(value)
        if cell is None:
            continue
        base = _cell(baselines[key]) if key in baselines else ""
        target = _cell(targets[key]) if key in targets else ""
        rows.append((f"`{key}`", cell, base or "", target or ""))
        shown.add(key)
    for key, value in baselines.items():  # baselines without a figure of the same name
        cell = _cell(value)
        if key not in shown and cell is not None:
            rows.append((f"`baseline_{key}`", "", cell, ""))
    return rows


def render(results: dict[str, dict[str, Any]], info: dict[str, Any], date: str,
           quick: bool) -> str:  # fmt: skip
    """The generated section (without the markers): machine, date, a table per benchmark."""
    cpu = info.get("cpu_model") or "unknown CPU"
    ram = f"{info['ram_gib']} GiB RAM" if info.get("ram_gib") else "RAM unknown"
    lines = [
        "## Figures of the last `python -m bench.all` run",
        "",
        "Generated by `python -m bench.all`; do not edit by hand (the text above and below is "
        "kept).",
        "",
        f"- date: {date} (UTC)",
        f"- machine: {cpu}, {info.get('cores')} cores, {ram}, Linux {info.get('kernel')}, "
        f"Python {info.get('python')}",
        f"- mode: {'quick (smoke figures, not for comparison)' if quick else 'full runs'}",
        "",
    ]
    for module, result in results.items():
        lines.append(f"### {module}")
        lines.append("")
        if "error" in result:
            lines += [f"Failed: {result['error']}", ""]
            continue
        lines.append(f"Ran {result.get('elapsed_s', '?')} s.")
        lines.append("")
        lines.append("| figure | value | baseline (same run) | target |")
        lines.append("|---|---|---|---|")
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in figure_rows(result)]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace what lies between the markers in path with section (markers appended at the
    end if the page has none yet); written atomically."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise DocError(f"cannot read {path}: {exc.strerror}") from exc
    begin, end = text.find(BEGIN), text.find(END)
    if begin == -1 and end == -1:
        text = text.rstrip("\n") + f"\n\n{BEGIN}\n{END}\n"
        begin, end = text.find(BEGIN), text.find(END)
    if begin == -1 or end == -1 or end < begin:
        raise DocError(
            f"{path}: the markers {BEGIN} and {END} must both be there, in this order; "
            "fix them by hand, the generated figures go between them"
        )
    new = text[: begin + len(BEGIN)] + "\n" + section + text[end:]
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(new)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.all",
        description="Run every benchmark (each in its own process) and write their figures "
        "into docs/benchmarks.md.",
    )
    p.add_argument("--quick", action="store_true",
                   help="each benchmark's quick run (same keys, under a minute each)")  # fmt: skip
    p.add_argument("--json", action="store_true",
                   help="print one JSON object with every result as the last line of stdout")  # fmt: skip
    p.add_argument("--modules", default=",".join(BENCHMARKS),
                   help="comma-separated benchmark modules to run (default: all five)")  # fmt: skip
    p.add_argument("--out", type=Path, default=None,
                   help=f"page to write the figures into (default {DOC.relative_to(ROOT)} for "
                   "full runs; quick runs write only when this is given)")  # fmt: skip
    p.add_argument("--no-write", action="store_true", help="write no page, only print")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds per benchmark before it counts as failed (7200; quick 600)")  # fmt: skip
    args = p.parse_args(argv)
    modules = [m.strip() for m in args.modules.split(",") if m.strip()]
    timeout_s = args.timeout or (600.0 if args.quick else 7200.0)
    out = None if args.no_write else (args.out or (None if args.quick else DOC))
    info = machine()
    date = utc_now()
    results: dict[str, dict[str, Any]] = {}
    for i, module in enumerate(modules, 1):
        print(f"bench.all: {module} ({i}/{len(modules)}) ...", file=sys.stderr, flush=True)
        results[module] = run_one(module, args.quick, timeout_s)
        state = results[module].get("error") or f"done in {results[module]['elapsed_s']} s"
        print(f"bench.all: {module}: {state}", file=sys.stderr, flush=True)
    failed = [m for m, r in results.items() if "error" in r]
    written = None
    if out is not None:
        try:
            write_section(out, render(results, info, date, args.quick))
            written = str(out)
        except DocError as exc:
            print(f"bench.all: {exc}", file=sys.stderr)
            failed.append(str(out))
    summary = {"benchmark": "all", "date_utc": date, "quick": args.quick, "machine": info,
               "results": results, "failed": failed, "written": written}  # fmt: skip
    table = sys.stderr if args.json else sys.stdout
    for module, result in results.items():
        print(f"{module:<16} {result.get('error') or 'ok'}", file=table)
    if written:
        print(f"figures written to {written}", file=table)
    if args.json:
        sys.stdout.flush()
        print(json.dumps(summary, sort_keys=True))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
