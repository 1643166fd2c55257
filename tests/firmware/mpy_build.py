"""Helpers for the firmware tests: compile protocols/ and firmware/ with mpy-cross (as a board
runs them) and run the MicroPython unix port on that tree, with a heap like an ESP32's."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
HEAP = "96K"  # an ESP32 without PSRAM leaves about 100 KB to the application


def tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: install the dev extra (pip install -e '.[dev]')")
    return found


def compile_tree(out: Path, packages: tuple[str, ...] = ("protocols", "firmware")) -> Path:
    """out/<package>/... with every .py compiled to .mpy and data files copied."""
    cross = tool("mpy-cross")
    for pkg in packages:
        src_dir = ROOT / pkg
        for path in src_dir.rglob("*"):
            if "__pycache__" in path.parts or path.is_dir():
                continue
            rel = path.relative_to(ROOT)
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".py":
                subprocess.run(
                    [cross, "-o", str(target.with_suffix(".mpy")), "-s", rel.as_posix(), str(path)],
                    check=True,
                )
            else:
                shutil.copy2(path, target)
    if "protocols" in packages:  # as the build does: boards load meters from these
        from firmware.build import pack_profiles

        pack_profiles(out / "protocols" / "profiles")
    return out


_SHARED: list[Path] = []


def shared_tree() -> Path:
    """One compiled tree per test session (compiling takes seconds); removed at exit.
    Copies tests/firmware/mpy_*.py beside it, for checks that run on MicroPython."""
    if not _SHARED:
        import tempfile

        out = Path(tempfile.mkdtemp(prefix="fw-mpy-"))
        atexit.register(shutil.rmtree, out, True)
        compile_tree(out)
        for path in Path(__file__).resolve().parent.glob("mpy_*.py"):
            if path.name != "mpy_build.py":
                shutil.copy2(path, out / path.name)
        _SHARED.append(out)
    return _SHARED[0]


def micropython(
    tree: Path, module: str, *args: str, heap: str = HEAP, **popen: object
) -> subprocess.Popen[str]:
    """Start `micropython -X heapsize=HEAP -m module args` in tree (compiled modules)."""
    env = dict(os.environ, MICROPYPATH=f"{tree}:.frozen")
    return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
        [tool("micropython"), "-X", f"heapsize={heap}", "-m", module, *args],
        cwd=str(tree),
        env=env,
        text=True,
        **popen,
    )


def run_check(
    tree: Path, module: str, flash: Path, name: str, timeout_s: float, heap: str = HEAP
) -> str:
    """Run check `name` of a tests/firmware/mpy_*_checks.py module on MicroPython with flash as
    its storage; assert it exited 0 and printed `ok name`; return what it printed."""
    proc = micropython(tree, module, str(flash), name, heap=heap,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and f"ok {name}" in out, out
    return out
