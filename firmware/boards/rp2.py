"""Board support for the Raspberry Pi Pico W: RS-485 on UART0 (GP0/GP1) or UART1 (GP4/GP5)
with a DE/RE pin, Wi-Fi (CYW43). The watchdog of the RP2040 lasts at most 8.3 s."""

from firmware.boards.mcu import McuBoard

_WDT_MAX_MS = 8388


class Board(McuBoard):
    name = "rp2"
    UART_PINS = {0: (0, 1), 1: (4, 5)}

    def watchdog(self, timeout_ms):
        return super().watchdog(min(timeout_ms, _WDT_MAX_MS))
