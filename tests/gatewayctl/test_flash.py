"""`gatewayctl flash` at its command-line boundary: the esptool and mpremote commands it runs
(arguments, offsets, order) are recorded by a Runner that stands in for the tools, since no chip
is attached here; and each clear error: no serial port, permission denied (a PTY with mode 000,
opened as an unprivileged user), firmware file missing or for another board or chip, wrong chip
reported by esptool, a verification that does not match."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import littlefs
import pytest
from conftest import ROOT, cli_json, run_cli

pytestmark = pytest.mark.timeout(60)

TOKEN = "claim_" + "f" * 40
PY = sys.executable


class Recorder:
    """The Runner seam: records (argv, cwd) and answers from a script of (status, output)."""

    def __init__(self, *answers: tuple[int, str]) -> None:
        self.calls: list[tuple[list[str], Path | None]] = []
        self.answers = list(answers)
        self.answer_for = None  # callable(argv) -> (status, output), if set

    def run(self, argv: list[str], cwd: Path | None = None) -> tuple[int, str]:
        self.calls.append((argv, cwd))
        if self.answer_for is not None:
            return self.answer_for(argv)  # type: ignore[no-any-return]
        return self.answers.pop(0) if self.answers else (0, "")


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One build per board flashed here (compiling is the slow part)."""
    root = tmp_path_factory.mktemp("builds")
    out = {}
    for board, extra in (("esp32", ["--wifi-ssid", "Depot", "--wifi-password", "pw"]),
                         ("pico-w", ["--wifi-ssid", "Depot", "--wifi-password", "pw"])):  # fmt: skip
        cli_json("build", "--board", board, "--out", str(root / board), "--offline",
                 "--fleet-mqtt", "mqtts://fleet.example.org", "--claim-token", TOKEN, *extra)  # fmt: skip
        out[board] = root / board
    return out


@pytest.fixture
def pty() -> Iterator[str]:
    master, slave = os.openpty()
    try:
        yield os.ttyname(slave)
    finally:
        os.close(slave)
        os.close(master)


def esp_bin(path: Path, chip_id: int = 0) -> Path:
    """A file with the header of an ESP image (magic 0xE9, chip id at byte 12)."""
    head = bytes([0xE9, 3, 2, 0x20]) + b"\x00" * 8 + chip_id.to_bytes(2, "little")
    path.write_bytes(head + b"\x00" * 2048)
    return path


def uf2(path: Path, family: int = 0xE48BFF56) -> Path:
    block = (0x0A324655).to_bytes(4, "little") + (0x9E5D5157).to_bytes(4, "little")
    block += (0x2000).to_bytes(4, "little") + b"\x00" * 16 + family.to_bytes(4, "little")
    path.write_bytes(block.ljust(512, b"\x00") * 4)
    return path


def test_esp32_firmware_and_image_go_in_one_esptool_run_then_are_read_back(
    builds: dict[str, Path], tmp_path: Path, pty: str
) -> None:
    fw = esp_bin(tmp_path / "ESP32_GENERIC-20260301-v1.29.0.bin")
    rec = Recorder()
    code, out, err = run_cli("flash", "--board", "esp32", "--build", str(builds["esp32"]),
                             "--port", pty, "--firmware", str(fw), "--json", runner=rec)  # fmt: skip
    assert code == 0, err
    image = str(builds["esp32"] / "fs.img")
    esptool = [PY, "-m", "esptool", "--chip", "esp32", "--port", pty, "--baud", "460800"]
    pairs = ["0x1000", str(fw), "0x200000", image]
    assert [argv for argv, _ in rec.calls] == [
        esptool + ["write-flash", *pairs],
        esptool + ["verify-flash", *pairs],
    ]
    assert json.loads(out)["verified"] == [str(fw), image]


def test_esptool_reporting_another_chip_is_a_wrong_chip_error(
    builds: dict[str, Path], pty: str
) -> None:
    rec = Recorder((2, "Connecting....\nA fatal error occurred: This chip is ESP32-S3, not ESP32. "
                       "Wrong --chip argument?\n"))  # fmt: skip
    code, _o, err = run_cli("flash", "--board", "esp32", "--build", str(builds["esp32"]),
                            "--port", pty, runner=rec)  # fmt: skip
    assert code == 1
    assert "wrong chip: the board on" in err and "is an ESP32-S3" in err, err
    assert len(rec.calls) == 1  # nothing verified after a failed write
    rec = Recorder((0, ""), (1, "Verifying 0x1000 ... verify FAILED (digest mismatch)\n"))
    code, _o, err = run_cli("flash", "--board", "esp32", "--build", str(builds["esp32"]),
                            "--port", pty, runner=rec)  # fmt: skip
    assert code == 1 and "verification failed" in err


def test_pico_w_update_copies_the_app_with_mpremote_and_checks_every_file(
    builds: dict[str, Path], pty: str
) -> None:
    manifest = json.loads((builds["pico-w"] / "manifest.json").read_text())
    app = sorted(f for f in manifest["files"] if f not in ("provision.json", "ca.pem"))

    def device(argv: list[str]) -> tuple[int, str]:
        if "sha256sum" in argv:
            return 0, "".join(
                manifest["files"][p[1:]] + "\n" for p in argv[argv.index("sha256sum") + 1 :]
            )
        return 0, ""

    rec = Recorder()
    rec.answer_for = device
    code, _o, err = run_cli("flash", "--board", "pico-w", "--build", str(builds["pico-w"]),
                            "--port", pty, "--update", runner=rec)  # fmt: skip
    assert code == 0, err
    mpremote = [PY, "-m", "mpremote", "connect", pty]
    (cp, cwd), (check, _), (reset, _) = rec.calls
    assert cp == mpremote + ["fs", "cp", "-r", "firmware", "main.py", "protocols", ":"]
    assert cwd == builds["pico-w"] / "files"
    assert check == mpremote + ["fs", "sha256sum", *(":" + f for f in app)]
    assert reset == mpremote + ["reset"]
    # the gateway keeps its identity: the provisioning file is not copied on an update
    assert "provision.json" not in cp

    def corrupt(argv: list[str]) -> tuple[int, str]:
        code, out = device(argv)
        return code, out.replace(manifest["files"]["main.py"], hashlib.sha256(b"x").hexdigest())

    rec.answer_for = corrupt
    code, _o, err = run_cli("flash", "--board", "pico-w", "--build", str(builds["pico-w"]),
                            "--port", pty, "--update", runner=rec)  # fmt: skip
    assert code == 1 and "verification failed" in err and "main.py" in err


@pytest.mark.parametrize(
    ("board", "name", "make", "message"),
    [
        ("esp32", "ESP32_GENERIC-20260301-v1.29.0.bin", None, "not found: download ESP32_GENERIC"),
        ("esp32", "ESP32_GENERIC_S3-20260301-v1.29.0.bin", "esp", "for board ESP32_GENERIC_S3, not for esp32"),
        ("esp32", "firmware.bin", "esp-s3", "built for ESP32-S3, but esp32 is an ESP32"),
        ("esp32", "firmware.bin", "uf2", "is a UF2 file (Pico): esp32 needs the .bin"),
        ("wt32-eth01", "RPI_PICO_W-20260301-v1.29.0.uf2", "uf2", "for board RPI_PICO_W, not for wt32-eth01"),
        ("pico-w", "RPI_PICO-20260301-v1.29.0.uf2", "uf2", "for board RPI_PICO, not for pico-w"),
        ("pico-w", "firmware.uf2", "uf2-rp2350", "is for RP2350 (Arm), not for the RP2040 of pico-w"),
        ("pico-w", "firmware.uf2", "esp", "is not a UF2 file"),
    ],
)  # fmt: skip
def test_firmware_file_missing_or_for_another_board_is_refused_before_flashing(
    builds: dict[str, Path], tmp_path: Path, pty: str, board: str, name: str,
    make: str | None, message: str,
) -> None:  # fmt: skip
    path = tmp_path / name
    if make == "esp":
        esp_bin(path)
    elif make == "esp-s3":
        esp_bin(path, chip_id=9)
    elif make == "uf2":
        uf2(path)
    elif make == "uf2-rp2350":
        uf2(path, family=0xE48BFF59)
    rec = Recorder()
    code, _o, err = run_cli("flash", "--board", board, "--build", str(builds["esp32"]),
                            "--port", pty, "--firmware", str(path), runner=rec)  # fmt: skip
    assert code == 1 and message in err, err
    assert rec.calls == []


def test_missing_serial_port_says_to_plug_the_board_in(builds: dict[str, Path]) -> None:
    rec = Recorder()
    code, _o, err = run_cli("flash", "--board", "esp32", "--build", str(builds["esp32"]),
                            "--port", "/dev/ttyUSB97", runner=rec)  # fmt: skip
    assert (
        code == 1
        and "no serial port /dev/ttyUSB97: is the board (or USB adapter) plugged in" in err
    )
    assert rec.calls == []


def test_permission_denied_on_the_port_names_the_dialout_group(
    builds: dict[str, Path], pty: str
) -> None:
    """As an unprivileged user (root opens anything): the PTY with mode 000."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user; CI runs as root")
    share = Path(tempfile.mkdtemp(prefix="gatewayctl-perm-"))
    try:
        share.chmod(0o755)
        shutil.copytree(builds["esp32"], share / "esp32")
        # The unprivileged user may not list the checkout or the virtualenv (a clone in a
        # private temporary folder, as in CI): give it a readable copy of what the command
        # imports (the project's packages and littlefs, the one third-party package).
        src = share / "src"
        skip = shutil.ignore_patterns("__pycache__")
        for package in ("gatewayctl", "firmware", "protocols"):
            shutil.copytree(ROOT / package, src / package, ignore=skip)
        shutil.copytree(Path(littlefs.__file__).parent, src / "littlefs", ignore=skip)
        subprocess.run(["chmod", "-R", "a+rX", str(share)], check=True)
        os.chmod(pty, 0o000)
        setpriv = shutil.which("setpriv")  # util-linux: drops root for the command
        assert setpriv, "setpriv (util-linux) is needed to test as an unprivileged user"
        proc = subprocess.run(
            [setpriv, "--reuid", "65534", "--regid", "65534", "--clear-groups",
             PY, "-m", "gatewayctl", "flash", "--board", "esp32", "--build",
             str(share / "esp32"), "--port", pty],
            cwd=str(share), env=dict(os.environ, PYTHONPATH=str(src), HOME=str(share)),
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    finally:
        shutil.rmtree(share, ignore_errors=True)
    assert proc.returncode == 1, proc.stderr
    assert f"permission denied on {pty}" in proc.stderr
    assert "sudo usermod -aG" in proc.stderr and "log out and in again" in proc.stderr
    assert "Traceback" not in proc.stderr
