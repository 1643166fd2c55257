"""The shared core of gateway and fleet: Modbus framing and value decoding, meter profiles,
the poll planner, LoRa payload decoders, the uplink codec and the configuration schema.

Everything here runs unchanged on CPython and MicroPython: sans-I/O (bytes in, bytes or
values out; no sockets, UARTs or clocks), no CPython-only modules, no work at import time.
"""
