"""Boot entry on a board (ESP32, Pico W): reads /settings.json (the bootstrap file written at
provisioning), brings the network up and runs the app; on a fatal error it waits and resets,
so a gateway in a cabinet always comes back. Never used on the unix port (run_unix.py)."""

import asyncio
import json
import sys

import machine


def main():
    import firmware.provision  # unloads itself: no name here keeps it in the heap

    if firmware.provision.boot("/settings.json"):  # /provision.json, no identity yet: claim
        machine.soft_reset()  # then start the app with a clean heap
    with open("/settings.json") as f:
        settings = json.load(f)
    from firmware.boards import load

    board = load(settings.get("board", {}).get("name", sys.platform), settings.get("board"))

    async def start():
        from firmware.app import App

        if not await board.network_up(30):
            print("main: no network within 30 s; the uplink keeps retrying")
        await App(board, settings).run()

    from firmware.app import Restart

    try:
        asyncio.run(start())
    except Restart:  # a new configuration: start afresh with an empty heap
        machine.soft_reset()
    except Exception as e:  # noqa: BLE001 - last line of defence: log and reset
        sys.print_exception(e)
        import time

        time.sleep(10)
        machine.reset()


main()
