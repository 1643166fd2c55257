"""Board support for ESP32 gateways: a generic module with Wi-Fi, and Ethernet boards
(Olimex ESP32-POE, WT32-ETH01, both with a LAN8720 PHY). settings "board": "esp32",
"olimex_esp32_poe" or "wt32_eth01" picks pins; "wifi" or "ethernet": true picks the link."""

import network
from machine import Pin

from firmware.boards.mcu import McuBoard

# LAN8720 wiring per board, from the vendors' schematics: (mdc, mdio, power, phy_addr,
# ref_clk pin, ref_clk_mode). Olimex ESP32-POE rev. C+: clock out on GPIO17, PHY power GPIO12.
# WT32-ETH01 v1.4: 50 MHz oscillator into GPIO0, enabled by GPIO16.
_ETH = {
    "olimex_esp32_poe": (23, 18, 12, 0, 17, Pin.OUT),
    "wt32_eth01": (23, 18, 16, 1, 0, Pin.IN),
}
# RS-485 UART pins (tx, rx) by default. Olimex ESP32-POE: UEXT TXD GPIO4, RXD GPIO36.
# WT32-ETH01: TX2 GPIO17, RX2 GPIO5. Generic ESP32: UART2 on GPIO17/16.
_UART = {
    "olimex_esp32_poe": {1: (4, 36)},
    "wt32_eth01": {1: (17, 5)},
    "esp32": {1: (17, 16), 2: (17, 16)},
}


class Board(McuBoard):
    name = "esp32"

    def __init__(self, settings):
        super().__init__(settings)
        self.model = settings.get("model", "esp32")
        self.UART_PINS = _UART.get(self.model, _UART["esp32"])
        self._lan = None

    def _connect(self):
        if not self.settings.get("ethernet"):
            return super()._connect()
        eth = _ETH.get(self.model)
        if eth is None:
            raise OSError(
                "board model %r has no Ethernet pin map: use olimex_esp32_poe or wt32_eth01, "
                "or Wi-Fi" % self.model
            )
        if self._lan is None:
            mdc, mdio, power, addr, clk, mode = eth
            self._lan = network.LAN(
                mdc=Pin(mdc), mdio=Pin(mdio), power=Pin(power), phy_addr=addr,
                phy_type=network.PHY_LAN8720, ref_clk=Pin(clk), ref_clk_mode=mode,
            )  # fmt: skip
            self._lan.active(True)
        return self._lan
