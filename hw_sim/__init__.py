"""hw_sim: simulated energy meters, RS-485 buses with wire timing and faults, LoRa sensors
and whole buildings, for hardware-in-the-loop tests of gateways. Runs on CPython only.

Not a test helper but a product: ``hw-sim meter --port /dev/ttyUSB1`` turns a USB-RS485
adapter into a meter. See docs/hw_sim.md.
"""
