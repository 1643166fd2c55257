"""Host tool (CPython, never shipped; kept to syntax mpy-cross accepts): run the firmware on the MicroPython unix port the way a
board with ROMFS runs it. The compiled app is packed into a ROMFS image (MicroPython >= 1.25,
the format of `mpremote romfs build`), mapped into memory outside MicroPython's heap (on an
ESP32 or Pico W: the memory-mapped flash partition), mounted at /rom and imported from there,
so bytecode executes in place and the heap holds only the app's objects.

    python -m firmware.romrun --tree build/unix [--heap 96K] MODULE [ARGS...]

runs `import MODULE` with sys.argv[1:] == ARGS, e.g. `firmware.run_unix <data dir>
<settings.json>`. The unix port has no ROM of its own, so this launcher maps the image and
hands its address to the interpreter (environment variable FW_ROMFS); the interpreter is the
same one `micropython` runs (the micropython_unix module), started in this process."""

import argparse
import ctypes
import mmap
import os
import sys
from pathlib import Path

ENV = "FW_ROMFS"

# Runs first in the interpreter: mounts the image and imports the entry module from it. The
# packages must come from /rom, so /rom goes first on sys.path and the tree is not on it.
_BOOT = """
import os, sys, uctypes, vfs
addr, size = [int(x) for x in os.getenv("FW_ROMFS").split(":")]
vfs.mount(vfs.VfsRom(uctypes.bytearray_at(addr, size)), "/rom")
sys.path.insert(0, "/rom")
del addr, size
__import__(sys.argv.pop(1))
"""


def build_image(tree):
    """A ROMFS image (bytes) of every file under tree: folders as folders, .mpy as they are."""
    from mpremote.romfs import VfsRomWriter

    writer = VfsRomWriter()

    def add(folder):
        for path in sorted(folder.iterdir()):
            if path.is_dir():
                writer.opendir(path.name)
                add(path)
                writer.closedir()
            else:
                writer.mkfile(path.name, path.read_bytes())

    add(Path(tree))
    return writer.finalise()


def command(image, heap, module, *args):
    """The argv that runs `module` of ROMFS image (a file) with the given heap."""
    base = [sys.executable, "-m", "firmware.romrun", "--image", str(image), "--heap", heap]
    return base + [module] + list(args)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--tree", help="a compiled unix tree (python -m firmware.build --board unix)")
    src.add_argument("--image", help="a ROMFS image built before (build_image)")
    p.add_argument("--heap", default="96K", help="MicroPython heap (default 96K)")
    p.add_argument("module", help="the module to import, e.g. firmware.run_unix")
    p.add_argument("args", nargs=argparse.REMAINDER, help="its sys.argv[1:]")
    a = p.parse_args(argv)
    if a.tree:
        data = build_image(a.tree)
    else:
        data = Path(a.image).read_bytes()
    # An anonymous private mapping: page-aligned, outside both heaps, alive until exit.
    rom = mmap.mmap(-1, len(data))
    rom.write(data)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(rom))
    os.environ[ENV] = "%d:%d" % (addr, len(data))
    os.environ["MICROPYPATH"] = ".frozen"  # asyncio and friends are frozen into the binary
    from micropython_run import run_main

    argv = ["micropython", "-X", "heapsize=" + a.heap, "-c", _BOOT, a.module] + a.args
    code = run_main(argv)
    sys.stdout.flush()
    os._exit(code)  # the mapping must outlive the interpreter's last access


if __name__ == "__main__":
    main()
