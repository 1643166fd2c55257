"""Test vectors of the telemetry codec shared by the portable codec tests: the worked
examples of docs/protocol.md ("A small batch, byte by byte")."""

from protocols import quantities as q

T0 = 1700000000000  # 2023-11-14T22:13:20Z
V1 = q.channel_id(1, "voltage_l1")  # 0x101, resolution 0.1 V
E1 = q.channel_id(1, "energy_import")  # 0x11c, resolution 1 Wh
T2 = q.channel_id(2, "temperature")  # 0x240, resolution 0.1 degC

# The worked example of docs/protocol.md ("A small batch, byte by byte").
DOC_READINGS = [
    (V1, T0, 230.1),
    (E1, T0, 1234),
    (V1, T0 + 10000, 230.4),
    (E1, T0 + 10000, 1240),
    (V1, T0 + 20000, 229.9),
    (E1, T0 + 20000, 1246),
    (T2, T0 + 5000, 21.5),
]
DOC_BYTES = bytes.fromhex(
    "b1 00 05 80d095ffbc31 02"  # header: format, flags, seq, base ts_ms, 2 groups
    "01 04 03 011b 1c1e 00 904e 00 fa230609 a4130c0c"  # device 1
    "02 02 01 409b 8827 ae03".replace(" ", "")  # device 2
)
DOC_GAP_BYTES = bytes.fromhex(
    "b1 01 06 80d095ffbc31 01 01 05 03 011b 1c1e 00 904e 64 2f fa230609 a41318".replace(" ", "")
)
