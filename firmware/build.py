"""Build tool (CPython, never shipped; kept to syntax mpy-cross accepts, since test helpers
compile all of firmware/): compile firmware/ and protocols/ with mpy-cross for a
board, and report code size per module and the RAM the app takes on the unix port.

    python -m firmware.build --board esp32 --out build/esp32          # compile + size report
    python -m firmware.build --board unix --out build/unix --ram     # + RAM report
    python -m firmware.build --board esp32 --out build/esp32 --json  # one JSON line
    python -m firmware.build --board esp32 --out build/esp32 --romfs build/esp32.romfs
    python -m firmware.build --board esp32 --out - --typecheck STUBS  # mypy vs the stubs

Then copy the output to the board (`mpremote cp -r build/esp32/* :`, see docs/firmware.md).
Bytecode .mpy files are portable between boards of one MicroPython version (1.29 here); the
board only picks which files go in."""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOARDS = ("esp32", "rp2", "unix")
# Never on a gateway: host tools and simulators.
_NEVER = {
    "firmware/build.py",
    "firmware/romrun.py",
    "firmware/wasmrun.py",
    "firmware/run_wasm.mjs",
    "protocols/modbus_server.py",
    "protocols/rak3172_sim.py",
}
_ONLY = {  # files that go only to these boards
    "firmware/boards/unix.py": ("unix",),
    "firmware/boards/esp32.py": ("esp32",),
    "firmware/boards/rp2.py": ("rp2",),
    "firmware/run_unix.py": ("unix",),
    "firmware/boards/wasm.py": ("unix",),  # the unix tree also runs on the WebAssembly port
    "firmware/boards/host.py": ("unix",),
    "firmware/run_wasm.py": ("unix",),
    "firmware/hil.py": ("unix",),
    "firmware/main.py": ("esp32", "rp2"),
}
# What the running gateway imports (the RAM report loads these, in the app's order).
APP_MODULES = (
    "asyncio",
    "firmware.configmgr",
    "firmware.app",
    "firmware.flashlog",
    "firmware.timesync",
    "firmware.meter",
    "firmware.poller",
    "firmware.lora",
    "protocols.codec_encode",
    "firmware.mqtt",
    "firmware.uplink",
)


def tool(name):
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: pip install -e '.[dev]' (it provides {name})")
    return found


def sources(board):
    """(relative path, absolute path) of every file that goes to board."""
    out = []
    for pkg in ("protocols", "firmware"):
        for path in sorted((ROOT / pkg).rglob("*")):
            if path.is_dir() or "__pycache__" in path.parts:
                continue
            rel = path.relative_to(ROOT).as_posix()
            if rel in _NEVER or board not in _ONLY.get(rel, (board,)):
                continue
            out.append((rel, path))
    return out


def compile_board(board, out):
    """Compile for board into out (cleared first); returns {relative target: bytes}."""
    if board not in BOARDS:
        raise SystemExit(f"board {board!r}: use one of {', '.join(BOARDS)}")
    cross = tool("mpy-cross")
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    sizes = {}
    for rel, path in sources(board):
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".py":
            target = target.with_suffix(".mpy")
            subprocess.run([cross, "-o", str(target), "-s", rel, str(path)], check=True)
        else:
            shutil.copy2(path, target)
        sizes[target.relative_to(out).as_posix()] = target.stat().st_size
    sizes.update(pack_profiles(out / "protocols" / "profiles"))
    if board != "unix":  # what the board runs at boot
        (out / "main.py").write_text("import firmware.main\n")
        sizes["main.py"] = (out / "main.py").stat().st_size
    return sizes


def pack_profiles(folder):
    """Write the packed form (protocols/profile_pack.py) of every bundled meter profile into
    folder, validated here on CPython: the gateway then loads meters without the JSON parser
    and validator. Returns {relative target: bytes}."""
    from protocols import profile_pack, profiles

    sizes = {}
    for model in profiles.bundled_profiles():
        target = Path(folder) / (model + profile_pack.SUFFIX)
        target.write_text(profile_pack.pack(profiles.load_profile(model)))
        sizes["protocols/profiles/" + target.name] = target.stat().st_size
    return sizes


_RAM_PROBE = """
import gc, sys, json
gc.collect()
base = gc.mem_alloc()
steps = []
for m in sys.argv[1:]:
    try:
        __import__(m)
    except ImportError as e:
        steps.append([m, None, str(e)])
        continue
    gc.collect()
    steps.append([m, gc.mem_alloc() - base, None])
print(json.dumps({"base": base, "steps": steps, "free": gc.mem_free()}))
"""


def ram_report(tree, heap="512K", modules=APP_MODULES, rom=False):
    """Heap bytes held after importing the app's modules one after the other (unix port,
    64-bit: objects are larger than on the 32-bit boards), each step cumulative. rom: import
    them from a ROMFS image of tree (firmware/romrun.py), bytecode in place as on a board
    with ROMFS; otherwise from the .mpy files, which load their bytecode into the heap."""
    probe = Path(tree) / "_ram_probe.py"
    probe.write_text(_RAM_PROBE)
    try:
        if rom:
            from firmware import romrun

            image = Path(tree).parent / (Path(tree).name + ".romfs")
            image.write_bytes(romrun.build_image(tree))
            cmd = romrun.command(image, heap, "_ram_probe", *modules)
            env = dict(os.environ)
        else:
            cmd = [tool("micropython"), "-X", "heapsize=" + heap, str(probe)] + list(modules)
            env = dict(os.environ, MICROPYPATH=f"{tree}:.frozen")
        proc = subprocess.run(
            cmd, cwd=str(tree), env=env, capture_output=True, text=True, timeout=60
        )
    finally:
        probe.unlink()
        if rom:
            image.unlink()
    if proc.returncode != 0:
        raise SystemExit(f"RAM probe failed:\n{proc.stdout}{proc.stderr}")
    return json.loads(proc.stdout.splitlines()[-1])


_MYPY_INI = """[mypy]
custom_typeshed_dir = {stubs}
mypy_path = {root}
follow_imports = silent
ignore_missing_imports = True
check_untyped_defs = True
strict_optional = False
"""


def typecheck(board, stubs, mypy="mypy"):
    """Type-check the board's firmware modules with mypy against MicroPython stubs installed
    in folder stubs (pip install --target STUBS micropython-esp32-stubs, or -rp2-): the
    stubs replace the standard library. None-initialised attributes are the firmware's idiom
    (no typing module on the boards), so strict Optional checks are off. Returns mypy's
    exit status; its report goes to stdout."""
    import tempfile

    files = [
        rel
        for rel, _ in sources(board)
        if rel.startswith("firmware/") and rel.endswith(".py") and rel != "firmware/build.py"
    ]
    with tempfile.TemporaryDirectory() as tmp:
        ini = Path(tmp) / "mypy.ini"
        ini.write_text(_MYPY_INI.format(stubs=Path(stubs).resolve(), root=ROOT))
        cmd = [mypy, "--config-file", str(ini), "--no-incremental", "--cache-dir", tmp]
        return subprocess.run(cmd + files, cwd=str(ROOT)).returncode


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--board", choices=BOARDS, required=True)
    p.add_argument("--out", required=True, help="output folder (replaced)")
    p.add_argument("--ram", action="store_true", help="also report heap use (unix port)")
    p.add_argument("--heap", default="512K", help="heap for the RAM report (default 512K)")
    p.add_argument(
        "--rom",
        action="store_true",
        help="RAM report with the app imported from a ROMFS image (code runs in place)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument(
        "--romfs",
        metavar="FILE",
        help="also write a ROMFS image of the app (mpremote romfs deploy FILE puts it on a "
        "board with a ROMFS partition; main.py stays on the board's filesystem)",
    )
    p.add_argument(
        "--typecheck",
        metavar="STUBS",
        help="instead of building: mypy against the MicroPython stubs installed in STUBS",
    )
    p.add_argument("--mypy", default="mypy", help="the mypy to run (default: mypy on PATH)")
    args = p.parse_args(argv)
    if args.typecheck:
        raise SystemExit(typecheck(args.board, args.typecheck, args.mypy))
    sizes = compile_board(args.board, args.out)
    mpy = {k: v for k, v in sizes.items() if k.endswith(".mpy")}
    result = {"board": args.board, "out": args.out, "mpy_bytes": sum(mpy.values())}
    result["files"] = sizes
    if args.romfs:
        from firmware.romrun import build_image

        boot = Path(args.out) / "main.py"
        kept = boot.read_bytes() if boot.exists() else None
        if kept is not None:
            boot.unlink()  # runs from the board's filesystem, not from ROM
        try:
            image = build_image(args.out)
        finally:
            if kept is not None:
                boot.write_bytes(kept)
        Path(args.romfs).write_bytes(image)
        result["romfs_bytes"] = len(image)
    if args.ram:
        tree = args.out
        if args.board != "unix":  # the probe needs the unix board's files
            tree = str(Path(args.out).with_name(Path(args.out).name + "-unix-ram"))
            compile_board("unix", tree)
        result["ram"] = ram_report(tree, args.heap, rom=args.rom)
    if args.json:
        print(json.dumps(result))
        return
    width = max(len(k) for k in sizes)
    for k in sorted(sizes):
        print(f"{k.ljust(width)}  {sizes[k]:7d}")
    print(f"{'total .mpy'.ljust(width)}  {result['mpy_bytes']:7d}")
    if args.romfs:
        print(f"{('ROMFS image ' + args.romfs).ljust(width)}  {result['romfs_bytes']:7d}")
    if args.ram:
        r = result["ram"]
        print(f"\nheap after import (unix port, 64-bit), base {r['base']} bytes:")
        for m, n, err in r["steps"]:
            print(f"  {m.ljust(28)} {'-' if n is None else n:>8}  {err or ''}")


if __name__ == "__main__":
    main()
