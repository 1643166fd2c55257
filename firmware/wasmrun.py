"""Host tool (CPython, never shipped; kept to syntax mpy-cross accepts): run the app on
MicroPython's WebAssembly port under Node.js, a 32-bit interpreter. The unix port is 64-bit,
where objects take about twice the bytes they take on an ESP32 or Pico W; this port has their
object layout, so its heap figures are the boards' (within the port's own modules: its asyncio
runs on Node's event loop). The app runs from a ROMFS image, as with firmware/romrun.py.

    python -m firmware.wasmrun --tree build/unix [--put HOST=PATH]... MODULE [ARGS...]

Needs node (Debian's nodejs) and the npm package @micropython/micropython-webassembly-pyscript
at PACKAGE_VERSION in .cache/mpwasm (scripts/bootstrap.sh installs both) or MPWASM_PACKAGE."""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "firmware" / "run_wasm.mjs"
PACKAGE = "@micropython/micropython-webassembly-pyscript"
PACKAGE_VERSION = "1.29.0-6"  # MicroPython 1.29, the version of the unix port and the boards


def package_dir():
    env = os.environ.get("MPWASM_PACKAGE")
    if env:
        return Path(env)
    return ROOT / ".cache" / "mpwasm" / "node_modules" / PACKAGE


def missing():
    """Why the 32-bit interpreter cannot run here (a sentence saying what to do), or None."""
    if not shutil.which("node"):
        return (
            "node not found: install Node.js (apt-get install nodejs) or run scripts/bootstrap.sh"
        )
    meta = package_dir() / "package.json"
    if not meta.exists():
        return "%s not found in %s: run scripts/bootstrap.sh" % (PACKAGE, package_dir())
    version = json.loads(meta.read_text()).get("version")
    if version != PACKAGE_VERSION:
        return "%s is %s, not %s: run scripts/bootstrap.sh" % (PACKAGE, version, PACKAGE_VERSION)
    return None


def command(image, module, *args, puts=(), heap="512K", ram=False):
    """The argv that runs `module` of ROMFS image (a file) on the WebAssembly port; puts:
    (host path, path in the port's in-memory filesystem) pairs copied in first. ram: import
    module and args one after the other instead and print the heap report (ram_report)."""
    cmd = ["node", str(LAUNCHER), "--image", str(image), "--heap", heap]
    for host, path in puts:
        cmd += ["--put", "%s=%s" % (host, path)]
    if ram:
        cmd.append("--ram")
    return cmd + [module] + list(args)


def ram_report(tree, modules=None):
    """firmware.build.ram_report(tree, rom=True) on the 32-bit interpreter: heap bytes held
    after importing the app's modules one after the other from a ROMFS image of tree, each
    step cumulative over the interpreter's own heap (base)."""
    from firmware import romrun
    from firmware.build import APP_MODULES

    tree = Path(tree)
    image = tree.parent / (tree.name + ".wasm.romfs")
    image.write_bytes(romrun.build_image(tree))
    try:
        cmd = command(image, *(modules or APP_MODULES), ram=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    finally:
        image.unlink()
    if proc.returncode != 0:
        raise RuntimeError(
            "RAM probe on the WebAssembly port failed:\n" + proc.stdout + proc.stderr
        )
    return json.loads(proc.stdout.splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--tree", required=True, help="a compiled unix tree (firmware.build --board unix)"
    )
    p.add_argument("--heap", default="512K", help="initial heap (it grows on demand)")
    p.add_argument("--put", action="append", default=[], metavar="HOST=PATH")
    p.add_argument("module", help="the module to import, e.g. firmware.run_wasm")
    p.add_argument("args", nargs=argparse.REMAINDER, help="its sys.argv[1:]")
    a = p.parse_args(argv)
    why = missing()
    if why:
        raise SystemExit(why)
    from firmware import romrun

    image = Path(a.tree).resolve().parent / (Path(a.tree).name + ".wasm.romfs")
    image.write_bytes(romrun.build_image(a.tree))
    puts = [tuple(s.split("=", 1)) for s in a.put]
    try:
        code = subprocess.run(command(image, a.module, *a.args, puts=puts, heap=a.heap)).returncode
    finally:
        image.unlink()
    sys.exit(code)


if __name__ == "__main__":
    main()
