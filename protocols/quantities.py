"""The catalogue of physical quantities a channel can carry: name, wire code, SI unit and
the default resolution at which readings are kept (the uplink codec is lossless at it).

Codes are part of the wire format (a channel id is device_id * 256 + code): never renumber
or reuse one, only add. Profiles may declare a finer or coarser resolution per quantity.
"""

# name: (code, unit, resolution)
QUANTITIES = {
    "voltage_l1": (1, "V", 0.1),
    "voltage_l2": (2, "V", 0.1),
    "voltage_l3": (3, "V", 0.1),
    "voltage_l1_l2": (4, "V", 0.1),
    "voltage_l2_l3": (5, "V", 0.1),
    "voltage_l3_l1": (6, "V", 0.1),
    "current_l1": (7, "A", 0.001),
    "current_l2": (8, "A", 0.001),
    "current_l3": (9, "A", 0.001),
    "current_n": (10, "A", 0.001),
    "power_l1": (11, "W", 1),
    "power_l2": (12, "W", 1),
    "power_l3": (13, "W", 1),
    "power_total": (14, "W", 1),
    "reactive_power_l1": (15, "var", 1),
    "reactive_power_l2": (16, "var", 1),
    "reactive_power_l3": (17, "var", 1),
    "reactive_power_total": (18, "var", 1),
    "apparent_power_l1": (19, "VA", 1),
    "apparent_power_l2": (20, "VA", 1),
    "apparent_power_l3": (21, "VA", 1),
    "apparent_power_total": (22, "VA", 1),
    "power_factor_l1": (23, "", 0.001),
    "power_factor_l2": (24, "", 0.001),
    "power_factor_l3": (25, "", 0.001),
    "power_factor_total": (26, "", 0.001),
    "frequency": (27, "Hz", 0.01),
    "energy_import": (28, "Wh", 1),
    "energy_export": (29, "Wh", 1),
    "reactive_energy_import": (30, "varh", 1),
    "reactive_energy_export": (31, "varh", 1),
    "energy_import_l1": (32, "Wh", 1),
    "energy_import_l2": (33, "Wh", 1),
    "energy_import_l3": (34, "Wh", 1),
    "power_demand_total": (35, "W", 1),
    # LoRa room climate and pulse counters
    "temperature": (64, "°C", 0.1),
    "humidity": (65, "%", 0.5),
    "co2": (66, "ppm", 1),
    "battery": (67, "V", 0.001),
    "pulse_count": (68, "", 1),
    "gas_volume": (69, "m³", 0.001),
    "water_volume": (70, "m³", 0.001),
    "heat_energy": (71, "Wh", 1),
    "illuminance": (72, "lx", 1),
    "pressure": (73, "Pa", 10),
    "tvoc": (74, "ppb", 1),
    "motion": (75, "", 1),
    "rssi": (96, "dBm", 1),
    "snr": (97, "dB", 0.1),
    # appended for LoRa sensors that report their battery as a percentage (Milesight)
    "battery_level": (76, "%", 1),
}

_BY_CODE = None


def code_of(name):
    """Wire code of a quantity name; KeyError with the name if unknown."""
    return QUANTITIES[name][0]


def unit_of(name):
    return QUANTITIES[name][1]


def resolution_of(name):
    return QUANTITIES[name][2]


def name_of(code):
    """Quantity name for a wire code; KeyError if the code is unknown."""
    global _BY_CODE
    if _BY_CODE is None:
        _BY_CODE = {}
        for name in QUANTITIES:
            _BY_CODE[QUANTITIES[name][0]] = name
    return _BY_CODE[code]


def channel_id(device_id, name):
    """The channel number of one quantity of one device (meter or sensor) of a gateway.

    device_id is the numeric id the gateway configuration gives the device (1..65535)."""
    return (device_id << 8) | QUANTITIES[name][0]


def split_channel(channel):
    """Inverse of channel_id: (device_id, quantity name)."""
    return channel >> 8, name_of(channel & 0xFF)
