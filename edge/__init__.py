"""The Linux gateway agent (CPython): polls meters, buffers readings in SQLite and syncs them
to the fleet over MQTT. The sans-I/O logic it shares with the firmware lives in protocols/."""
