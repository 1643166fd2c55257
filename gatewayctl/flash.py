"""`gatewayctl flash`: write the MicroPython firmware and the built filesystem to a gateway and
verify them. ESP32: one esptool run writes both (firmware at the board's offset, the littlefs
image at the partition offset), a second reads them back (verify-flash). Pico W and updates:
mpremote copies the files, then their SHA-256 on the device is compared with the build's.

Every external command goes through a Runner (argv in, exit status and output back): the one
seam tests replace, since no chip is attached there. Checks before anything runs: the port
exists and can be opened, the firmware file exists and is MicroPython for this board's chip."""

from __future__ import annotations

import glob
import grp
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatewayctl.board import Board
from gatewayctl.errors import GatewayctlError
from gatewayctl.image import CA_FILE, PROVISION_FILE, read_manifest

PORT_PATTERNS = ("/dev/ttyUSB*", "/dev/ttyACM*")
ESP_MAGIC = 0xE9
# esptool's image format: chip id (little-endian u16) at byte 12 of the extended header.
ESP_CHIP_IDS = {0: "ESP32", 2: "ESP32-S2", 5: "ESP32-C3", 9: "ESP32-S3", 12: "ESP32-C2",
                13: "ESP32-C6", 16: "ESP32-H2", 18: "ESP32-P4"}  # fmt: skip
UF2_MAGIC = (0x0A324655, 0x9E5D5157)
UF2_FAMILIES = {0xE48BFF56: "RP2040", 0xE48BFF59: "RP2350 (Arm)", 0xE48BFF5A: "RP2350 (RISC-V)",
                0xE48BFF5B: "RP2350 (Arm, non-secure)"}  # fmt: skip
ESPTOOL_BAUD = 460800


class Runner:
    """Runs one external command, streaming its output (esptool's progress) to stderr; returns
    (exit status, output). Tests substitute one that records argv instead."""

    def run(self, argv: list[str], cwd: Path | None = None) -> tuple[int, str]:
        try:
            proc = subprocess.Popen(
                argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        except OSError as e:
            raise GatewayctlError(f"cannot start {argv[0]}: {e.strerror}") from None
        out = []
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stderr.write(line)
            out.append(line)
        return proc.wait(), "".join(out)


# -- checks -----------------------------------------------------------------------------------


def serial_ports() -> list[str]:
    return sorted(p for pattern in PORT_PATTERNS for p in glob.glob(pattern))


def check_port(port: str | None) -> str:
    """The serial port to use (found when port is None); GatewayctlError saying what to do."""
    if port is None:
        found = serial_ports()
        if not found:
            raise GatewayctlError(
                "no serial port found (no /dev/ttyUSB* or /dev/ttyACM*): plug the board in with "
                "a USB cable that carries data, or name the port with --port"
            )
        if len(found) > 1:
            raise GatewayctlError(f"several serial ports: {', '.join(found)}; pick one with --port")
        port = found[0]
    if not os.path.exists(port):
        others = serial_ports()
        hint = f"ports present: {', '.join(others)}" if others else "no USB serial port present"
        raise GatewayctlError(
            f"no serial port {port}: is the board (or USB adapter) plugged in and powered? ({hint})"
        )
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except PermissionError:
        st = os.stat(port)
        try:
            group = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            group = str(st.st_gid)
        if group == "root" or st.st_mode & 0o060 == 0:
            group = "dialout"
        raise GatewayctlError(
            f"permission denied on {port}: your user may not use serial ports. Add it to the "
            f"{group} group (sudo usermod -aG {group} $USER), then log out and in again"
        ) from None
    except OSError as e:
        raise GatewayctlError(
            f"cannot open {port} ({e.strerror}): close other programs using it (serial "
            "monitor, mpremote, screen) and retry"
        ) from None
    os.close(fd)
    return port


def check_firmware(board: Board, path: Path) -> None:
    """GatewayctlError if path is missing or is not MicroPython firmware for board."""
    fw = board.firmware
    if fw is None:
        raise GatewayctlError(f"board {board.name} takes no firmware file")
    want = fw["names"][0]
    if not path.is_file():
        raise GatewayctlError(
            f"MicroPython firmware {path} not found: download {want} (MicroPython 1.29) "
            f"from {fw['download']}"
        )
    # Release files are named <BOARD>-<date>-v<version>.<ext>: the board is in the name.
    m = re.match(r"([A-Z][A-Z0-9_]+)-(\d{8}|v\d)", path.name)
    if m and m.group(1) not in fw["names"]:
        raise GatewayctlError(
            f"{path.name} is MicroPython for board {m.group(1)}, not for {board.name}: "
            f"download {want} from {fw['download']}"
        )
    with path.open("rb") as f:
        head = f.read(512)
    if fw["format"] == "esp-image":
        if not head or head[0] != ESP_MAGIC:
            kind = "a UF2 file (Pico)" if head[:4] == b"UF2\n" else "no ESP32 firmware image"
            raise GatewayctlError(
                f"{path.name} is {kind}: {board.name} needs the .bin of {want} ({fw['download']})"
            )
        chip = int.from_bytes(head[12:14], "little")
        if chip != fw["esp_chip_id"]:
            raise GatewayctlError(
                f"{path.name} is built for {ESP_CHIP_IDS.get(chip, f'chip id {chip}')}, but "
                f"{board.name} is an {ESP_CHIP_IDS[fw['esp_chip_id']]}: download {want} from "
                f"{fw['download']}"
            )
    elif fw["format"] == "uf2":
        magic = (int.from_bytes(head[0:4], "little"), int.from_bytes(head[4:8], "little"))
        if len(head) < 512 or magic != UF2_MAGIC:
            raise GatewayctlError(
                f"{path.name} is not a UF2 file: {board.name} needs the .uf2 of {want} "
                f"({fw['download']})"
            )
        flags = int.from_bytes(head[8:12], "little")
        family = int.from_bytes(head[28:32], "little")
        if flags & 0x2000 and family != fw["uf2_family"]:
            raise GatewayctlError(
                f"{path.name} is for {UF2_FAMILIES.get(family, hex(family))}, not for the "
                f"{UF2_FAMILIES[fw['uf2_family']]} of {board.name}: download {want} from "
                f"{fw['download']}"
            )


def _failed(tool: str, code: int, output: str) -> GatewayctlError:
    """A failure no known message explains: the tool's exit status and last lines."""
    tail = "\n".join(output.strip().splitlines()[-5:])
    return GatewayctlError(f"{tool} failed (exit status {code}):\n{tail}")


def _esptool_error(board: Board, port: str, code: int, output: str) -> GatewayctlError:
    m = re.search(r"This chip is (ESP[\w-]+),? not (ESP[\w-]+)", output)
    if m or "Wrong --chip" in output:
        found = m.group(1) if m else "another chip"
        return GatewayctlError(
            f"wrong chip: the board on {port} is an {found}, but --board {board.name} is an "
            f"{(board.chip or '').upper()}; pick the --board that matches the hardware"
        )
    if "Permission denied" in output:
        return GatewayctlError(
            f"permission denied on {port}: add your user to the dialout group "
            "(sudo usermod -aG dialout $USER), then log out and in again"
        )
    if "Failed to connect" in output or "No serial data received" in output:
        return GatewayctlError(
            f"the chip on {port} did not answer: hold BOOT (IO0) while pressing EN/RESET to "
            "enter the bootloader, check the USB cable, then retry"
        )
    return _failed("esptool", code, output)


# -- plans ------------------------------------------------------------------------------------


@dataclass
class FlashResult:
    port: str
    commands: int
    verified: list[str]


def _esptool(board: Board, port: str, baud: int) -> list[str]:
    return [sys.executable, "-m", "esptool", "--chip", str(board.chip), "--port", port,
            "--baud", str(baud)]  # fmt: skip


def _manifest_for(board: Board, build: Path) -> dict[str, Any]:
    """The build's manifest; an error if the build is for another board."""
    manifest = read_manifest(build)
    if manifest["board"] != board.name:
        raise GatewayctlError(
            f"{build} was built for {manifest['board']}, not {board.name}: build again"
        )
    return manifest


def flash_esp32(
    board: Board,
    build: Path,
    port: str,
    firmware: Path | None,
    runner: Runner,
    baud: int = ESPTOOL_BAUD,
    erase: bool = False,
) -> FlashResult:
    """One esptool run writing the firmware (if given) and the filesystem image, then one
    reading both back (verify-flash)."""
    _manifest_for(board, build)
    image = Path(build) / "fs.img"
    pairs: list[str] = []
    if firmware is not None:
        assert board.firmware is not None
        pairs += [hex(board.firmware["offset"]), str(firmware)]
    pairs += [hex(board.fs_offset), str(image)]
    write = _esptool(board, port, baud) + ["write-flash"] + (["--erase-all"] if erase else [])
    code, out = runner.run(write + pairs)
    if code != 0:
        raise _esptool_error(board, port, code, out)
    code, out = runner.run(_esptool(board, port, baud) + ["verify-flash"] + pairs)
    if code != 0:
        if "verify FAILED" in out or "digest mismatch" in out.lower():
            raise GatewayctlError(
                f"verification failed: the flash of the board on {port} does not hold what was "
                "written; try a shorter USB cable or --baud 115200, then flash again"
            )
        raise _esptool_error(board, port, code, out)
    return FlashResult(port, 2, pairs[1::2])


def app_files(manifest: dict[str, object], with_provisioning: bool) -> list[str]:
    files = sorted(manifest["files"])  # type: ignore[call-overload]
    if with_provisioning:
        return files
    return [f for f in files if f not in (PROVISION_FILE, CA_FILE)]


def _mpremote(port: str) -> list[str]:
    return [sys.executable, "-m", "mpremote", "connect", port]


def copy_mpremote(
    board: Board, build: Path, port: str, runner: Runner, with_provisioning: bool
) -> FlashResult:
    """Copy the build's files with mpremote (a board running MicroPython), verify their
    SHA-256 on the device, reset. Without with_provisioning the gateway keeps its identity
    and data: only the app (firmware/, protocols/, main.py) is replaced."""
    manifest = _manifest_for(board, build)
    files = app_files(manifest, with_provisioning)
    tops = sorted({f.split("/")[0] for f in files})
    tree = Path(build) / "files"
    code, out = runner.run(_mpremote(port) + ["fs", "cp", "-r", *tops, ":"], cwd=tree)
    if code != 0:
        raise _mpremote_error(port, code, out)
    code, out = runner.run(_mpremote(port) + ["fs", "sha256sum", *(":" + f for f in files)])
    if code != 0:
        raise _mpremote_error(port, code, out)
    digests = [ln.strip() for ln in out.splitlines() if re.fullmatch(r"[0-9a-f]{64}", ln.strip())]
    want = [manifest["files"][f] for f in files]  # type: ignore[index]
    if digests != want:
        bad = [f for f, d, w in zip(files, digests, want, strict=False) if d != w]
        raise GatewayctlError(
            f"verification failed on {port}: {len(bad) or 'some'} file(s) differ from the build "
            f"({', '.join(bad[:3]) or 'no checksums read back'}); copy again"
        )
    code, out = runner.run(_mpremote(port) + ["reset"])
    if code != 0:
        raise _mpremote_error(port, code, out)
    return FlashResult(port, 3, files)


def _mpremote_error(port: str, code: int, output: str) -> GatewayctlError:
    if "could not enter raw repl" in output or "failed to access" in output:
        return GatewayctlError(
            f"the board on {port} does not answer as MicroPython: is the MicroPython firmware "
            "installed (gatewayctl flash --firmware ...) and no other program on the port?"
        )
    return _failed("mpremote", code, output)


def find_uf2_drive() -> Path | None:
    """The mounted RPI-RP2 drive of a Pico held in BOOTSEL mode, if exactly one."""
    found = [Path(p) for p in glob.glob("/media/*/RPI-RP2") + glob.glob("/run/media/*/RPI-RP2")]
    return found[0] if len(found) == 1 else None


def install_uf2(firmware: Path, drive: Path | None, wait_port_s: float = 30) -> str:
    """Copy the UF2 onto the BOOTSEL drive (the Pico writes and restarts itself), then wait
    for its serial port; returns the port."""
    drive = drive or find_uf2_drive()
    if drive is None or not drive.is_dir():
        raise GatewayctlError(
            "no RPI-RP2 drive found: hold BOOTSEL while plugging the Pico W in, wait for the "
            "drive to appear, then retry (or give its folder with --drive)"
        )
    before = set(serial_ports())
    print(f"copying {firmware.name} to {drive} ...", file=sys.stderr)
    shutil.copyfile(firmware, drive / firmware.name)
    deadline = time.monotonic() + wait_port_s
    while time.monotonic() < deadline:
        new = [p for p in serial_ports() if p not in before]
        if new:
            return new[0]
        time.sleep(0.5)
    raise GatewayctlError(
        f"the Pico W did not come back as a serial port within {wait_port_s:.0f} s after the "
        "firmware copy: unplug and plug it in again (without BOOTSEL), then run flash without "
        "--firmware"
    )
