"""The MicroPython gateway (ESP32, Pico W; unix port for HIL tests), built on protocols/.

Board specifics live in firmware/boards/; nothing here may import CPython-only modules."""
