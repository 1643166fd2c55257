"""Entry for MicroPython's WebAssembly port (32-bit heap measurements on a PC), started by
firmware/run_wasm.mjs, which copies the settings file into the port's in-memory filesystem:

    node firmware/run_wasm.mjs --image app.romfs --put settings.json=/settings.json \\
        firmware.run_wasm /settings.json

Like firmware/run_unix.py, but this port's asyncio runs on Node's event loop (it has no
asyncio.run): importing this module schedules the gateway and returns. No provisioning here:
the settings must be complete. Exits the process on a fatal error."""

import asyncio
import gc
import json
import sys

import wasmhost


async def _main(settings_path):
    from firmware.boards.host import forget_app
    from firmware.boards.wasm import Board

    with open(settings_path) as f:
        settings = json.load(f)
    board = Board(settings.get("board") or {})
    while True:
        from firmware.app import App, Restart

        try:
            await App(board, settings).run()
        except Restart:
            print("run_wasm: restarting with the new configuration")
        del App, Restart
        forget_app()
        gc.collect()
        with open(settings_path) as f:
            settings = json.load(f)


async def _guarded(settings_path):
    try:
        await _main(settings_path)
    except BaseException as e:  # noqa: BLE001 - nothing above us: report and end the process
        sys.print_exception(e)
        wasmhost.exit(1)


if len(sys.argv) != 2:
    print("usage: node firmware/run_wasm.mjs ... firmware.run_wasm <settings.json>")
    wasmhost.exit(2)
else:
    asyncio.create_task(_guarded(sys.argv[1]))
