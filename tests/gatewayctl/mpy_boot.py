"""Runs on the MicroPython unix port and plays a board's boot for a gatewayctl image: mounts
fs.img at /flash (as an ESP32 mounts its vfs partition at /), then runs the firmware *from the
image*: firmware.run_unix with /flash as the data folder and /flash/settings.json.

    micropython -X heapsize=192K mpy_boot.py <fs.img> <block count> [provision-only]

MICROPYPATH must reach the repository's firmware/ sources: only the file block device is taken
from there; every firmware module the gateway runs is then imported from the image."""

import sys

import vfs

image, blocks = sys.argv[1], int(sys.argv[2])
only_provision = len(sys.argv) > 3 and sys.argv[3] == "provision-only"
from firmware.boards.unix_flash import FileBlockDevice  # noqa: E402

vfs.mount(vfs.VfsLfs2(FileBlockDevice(image, 4096, blocks)), "/flash")
for name in list(sys.modules):
    if name == "firmware" or name.startswith("firmware."):
        del sys.modules[name]
sys.path[:] = ["/flash", ".frozen"]
if only_provision:
    import gc

    from firmware.provision import boot

    gc.collect()
    base = gc.mem_alloc()
    print("boot: provisioned" if boot("/flash/settings.json") else "boot: nothing to do")
    gc.collect()
    print(f"boot: heap after provisioning {gc.mem_alloc()} bytes (base {base})")
else:
    sys.argv[:] = ["run_unix", "/flash", "/flash/settings.json"]
    import firmware.run_unix  # noqa: F401  (runs the gateway)
