"""Board definitions as data (gatewayctl/boards/<name>.json): which firmware build, which chip,
where the MicroPython firmware and the filesystem go in flash and where those figures come
from. Adding a board means adding a file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatewayctl.errors import GatewayctlError

BOARDS_DIR = Path(__file__).resolve().parent / "boards"


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    build: str  # the firmware.build board: esp32, rp2, unix
    chip: str | None  # esptool's --chip, or rp2040
    link: str  # wifi, ethernet, host
    settings_board: dict[str, Any]  # the "board" table of the gateway's settings.json
    root: str  # where the board's filesystem appears to the firmware ("/" on boards)
    firmware: dict[str, Any] | None  # the MicroPython image: format, offset, names
    fs_offset: int
    fs_size: int
    fs_block_size: int
    flash_tool: str | None  # esptool, mpremote, or None (unix)

    @property
    def fs_block_count(self) -> int:
        return self.fs_size // self.fs_block_size


def names() -> list[str]:
    return sorted(p.stem for p in BOARDS_DIR.glob("*.json"))


def load(name: str) -> Board:
    path = BOARDS_DIR / f"{name}.json"
    if not path.is_file():
        raise GatewayctlError(f"board {name!r} unknown: use one of {', '.join(names())}")
    d = json.loads(path.read_text())
    fs = d["filesystem"]
    if fs["size"] % fs["block_size"]:
        raise GatewayctlError(f"{path}: filesystem size is not a multiple of its block size")
    return Board(
        name=d["name"],
        description=d["description"],
        build=d["build"],
        chip=d["chip"],
        link=d["link"],
        settings_board=d["settings_board"],
        root=d["root"],
        firmware=d["firmware"],
        fs_offset=fs["offset"],
        fs_size=fs["size"],
        fs_block_size=fs["block_size"],
        flash_tool=d["flash_tool"],
    )
