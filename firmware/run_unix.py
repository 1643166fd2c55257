"""Entry for the unix port (HIL tests, benchmarks, trying the firmware on a PC):

    micropython -X heapsize=96K -m firmware.run_unix <data dir> <settings.json>

<data dir> holds the "flash" (a host folder, or a littlefs image when the settings' board
table names flash_image); settings.json is the bootstrap file of firmware/app.py. Exits only
on a fatal error (the message says what to fix) or when killed."""

import asyncio
import gc
import json
import sys


def main(argv):
    if len(argv) != 3:
        print("usage: micropython -m firmware.run_unix <data dir> <settings.json>")
        sys.exit(2)
    import firmware.provision  # unloads itself: no name here keeps it in the heap

    firmware.provision.boot(argv[2])  # provision.json beside, no settings yet: claim identity
    with open(argv[2]) as f:
        settings = json.load(f)
    from firmware.boards import load

    board_settings = settings.get("board") or {}
    if not board_settings.get("flash_image"):
        board_settings["flash_dir"] = argv[1]
    elif not board_settings["flash_image"].startswith("/"):
        board_settings["flash_image"] = argv[1] + "/" + board_settings["flash_image"]
    board = load(board_settings.get("name", "unix"), board_settings)
    from firmware.boards.host import forget_app

    while True:
        from firmware.app import App, Restart

        try:
            asyncio.run(App(board, settings).run())
        except Restart:
            print("run_unix: restarting with the new configuration")
        # What a board's soft reset does: forget the loaded modules and the event loop.
        forget_app()
        del App, Restart
        asyncio.new_event_loop()
        gc.collect()
        with open(argv[2]) as f:
            settings = json.load(f)


main(sys.argv)
