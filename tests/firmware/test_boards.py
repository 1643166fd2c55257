"""The esp32 and rp2 board shims against recording fakes of machine and network (no board
here): the RS-485 direction pin is high exactly while a frame is sent, UART settings and
default pins per board, the Ethernet PHY wiring of each Ethernet board, watchdog limits."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

LOG: list[Any] = []


class FakePin:
    OUT, IN = 1, 0

    def __init__(self, n: int, mode: int | None = None, value: int | None = None) -> None:
        self.n = n
        if value is not None:
            LOG.append(("pin", n, value))

    def value(self, v: int) -> None:
        LOG.append(("pin", self.n, v))


class FakeUart:
    def __init__(self, uart_id: int, **kw: Any) -> None:
        LOG.append(("uart", uart_id, {k: getattr(v, "n", v) for k, v in kw.items()}))

    def write(self, data: bytes) -> None:
        LOG.append(("write", bytes(data)))

    def flush(self) -> None:
        LOG.append(("flush",))

    def readinto(self, buf: bytearray) -> None:
        return None  # machine.UART with timeout 0 and nothing received


class FakeWdt:
    def __init__(self, timeout: int) -> None:
        LOG.append(("wdt", timeout))


@pytest.fixture
def boards(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    machine = types.ModuleType("machine")
    machine.Pin = FakePin  # type: ignore[attr-defined]
    machine.UART = FakeUart  # type: ignore[attr-defined]
    machine.WDT = FakeWdt  # type: ignore[attr-defined]
    machine.PWRON_RESET, machine.WDT_RESET = 1, 3  # type: ignore[attr-defined]
    machine.reset_cause = lambda: 3  # type: ignore[attr-defined]
    network = types.ModuleType("network")
    network.PHY_LAN8720 = 7  # type: ignore[attr-defined]

    class Lan:
        def __init__(self, **kw: Any) -> None:
            LOG.append(("lan", {k: getattr(v, "n", v) for k, v in kw.items()}))

        def active(self, on: bool) -> None:
            pass

    network.LAN = Lan  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "machine", machine)
    monkeypatch.setitem(sys.modules, "network", network)
    for name in ("firmware.boards.mcu", "firmware.boards.esp32", "firmware.boards.rp2"):
        sys.modules.pop(name, None)
    LOG.clear()
    yield importlib.import_module("firmware.boards")
    for name in ("firmware.boards.mcu", "firmware.boards.esp32", "firmware.boards.rp2"):
        sys.modules.pop(name, None)


def test_direction_pin_is_high_only_while_the_frame_is_sent(boards: Any) -> None:
    board = boards.load("rp2", {})
    uart = board.uart(1, 9600, "E", 1, de_pin=2)
    assert LOG[0] == ("uart", 1, {"baudrate": 9600, "bits": 8, "parity": 0, "stop": 1,
                                  "timeout": 0, "tx": 4, "rx": 5})  # fmt: skip
    assert uart.bits_per_char == 11 and "9600 baud 8E1" in uart.description
    LOG.clear()
    uart.write(b"\x01\x03\x00\x00\x00\x02\xc4\x0b")
    assert LOG == [("pin", 2, 1), ("write", b"\x01\x03\x00\x00\x00\x02\xc4\x0b"), ("flush",),
                   ("pin", 2, 0)]  # fmt: skip
    assert uart.readinto(bytearray(8)) == 0


def test_board_pin_maps_and_uart_names(boards: Any) -> None:
    boards.load("esp32", {"model": "olimex_esp32_poe"}).uart("uart1", 19200, "N", 2)
    assert LOG[-1][2]["tx"] == 4 and LOG[-1][2]["rx"] == 36 and LOG[-1][2]["parity"] is None
    boards.load("esp32", {"uarts": {"2": {"tx": 25, "rx": 26}}}).uart(2, 9600, "O")
    assert LOG[-1][1] == 2 and LOG[-1][2]["tx"] == 25 and LOG[-1][2]["parity"] == 1


@pytest.mark.parametrize(
    ("model", "power", "phy_addr", "clk"),
    [("olimex_esp32_poe", 12, 0, 17), ("wt32_eth01", 16, 1, 0)],
)
def test_ethernet_boards_start_their_lan8720(boards: Any, model: str, power: int,
                                            phy_addr: int, clk: int) -> None:  # fmt: skip
    board = boards.load("esp32", {"model": model, "ethernet": True})
    board._connect()
    lan = LOG[-1][1]
    assert (lan["mdc"], lan["mdio"], lan["power"], lan["phy_addr"], lan["ref_clk"]) == (
        23, 18, power, phy_addr, clk,
    )  # fmt: skip


def test_watchdog_and_reset_cause(boards: Any) -> None:
    board = boards.load("rp2", {})
    board.watchdog(30000)
    assert LOG[-1] == ("wdt", 8388)  # the RP2040's longest
    assert board.reset_cause() == "watchdog"
    with pytest.raises(OSError, match="no Ethernet pin map"):
        boards.load("esp32", {"model": "esp32", "ethernet": True})._connect()


def test_direction_pin_from_the_board_settings_unless_the_bus_names_one(boards: Any) -> None:
    board = boards.load("esp32", {"model": "olimex_esp32_poe", "uarts": {"1": {"de": 5}}})
    uart = board.uart(1, 9600, "E", 1)
    opened = [e for e in LOG if e[0] == "uart"][-1]
    assert opened[2]["tx"] == 4 and opened[2]["rx"] == 36  # the board's default pins kept
    LOG.clear()
    uart.write(b"\x01\x03")
    assert LOG[0] == ("pin", 5, 1) and LOG[-1] == ("pin", 5, 0)
    uart = board.uart(1, 9600, "E", 1, de_pin=2)  # the configuration's bus de_pin
    LOG.clear()
    uart.write(b"\x01\x03")
    assert LOG[0] == ("pin", 2, 1) and LOG[-1] == ("pin", 2, 0)
    uart = boards.load("esp32", {}).uart(1, 9600, "E", 1)  # automatic direction control
    LOG.clear()
    uart.write(b"\x01\x03")
    assert [e for e in LOG if e[0] == "pin"] == []


def test_bus_de_pin_is_optional_in_the_configuration() -> None:
    from protocols.config import check_config, validate_config

    bus = {"type": "rtu", "id": "b1", "port": "1"}
    doc = {"version": 1, "gateway": "gw-1", "buses": [bus]}
    assert "de_pin" not in check_config(doc)["buses"][0]  # older documents read as before
    doc["buses"] = [dict(bus, de_pin=4)]
    assert check_config(doc)["buses"][0]["de_pin"] == 4
    doc["buses"] = [dict(bus, de_pin=99)]
    assert any("de_pin" in e for e in validate_config(doc))
