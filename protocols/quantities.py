"""The catalogue of physical quantities a channel can carry: name, wire code, SI unit and
the default resolution at which readings are kept (the uplink codec is lossless at it).

Codes are part of the wire format (a channel id is device_id * 256 + code): never renumber
or reuse one, only add. Profiles may declare a finer or coarser resolution per quantity.
"""

import sys

# One quantity per line: name, code, unit ("-": none), resolution. A single str constant, so
# a gateway running from ROMFS keeps it in flash and looks names up in it; a dict of tuples
# built at import took about 9 KB of heap. QUANTITIES (name: (code, unit, resolution)) is
# built from it on first use, for the host tools.
_CATALOGUE = (
    "\n"
    "voltage_l1               1  V     0.1\n"
    "voltage_l2               2  V     0.1\n"
    "voltage_l3               3  V     0.1\n"
    "voltage_l1_l2            4  V     0.1\n"
    "voltage_l2_l3            5  V     0.1\n"
    "voltage_l3_l1            6  V     0.1\n"
    "current_l1               7  A     0.001\n"
    "current_l2               8  A     0.001\n"
    "current_l3               9  A     0.001\n"
    "current_n               10  A     0.001\n"
    "power_l1                11  W     1\n"
    "power_l2                12  W     1\n"
    "power_l3                13  W     1\n"
    "power_total             14  W     1\n"
    "reactive_power_l1       15  var   1\n"
    "reactive_power_l2       16  var   1\n"
    "reactive_power_l3       17  var   1\n"
    "reactive_power_total    18  var   1\n"
    "apparent_power_l1       19  VA    1\n"
    "apparent_power_l2       20  VA    1\n"
    "apparent_power_l3       21  VA    1\n"
    "apparent_power_total    22  VA    1\n"
    "power_factor_l1         23  -     0.001\n"
    "power_factor_l2         24  -     0.001\n"
    "power_factor_l3         25  -     0.001\n"
    "power_factor_total      26  -     0.001\n"
    "frequency               27  Hz    0.01\n"
    "energy_import           28  Wh    1\n"
    "energy_export           29  Wh    1\n"
    "reactive_energy_import  30  varh  1\n"
    "reactive_energy_export  31  varh  1\n"
    "energy_import_l1        32  Wh    1\n"
    "energy_import_l2        33  Wh    1\n"
    "energy_import_l3        34  Wh    1\n"
    "power_demand_total      35  W     1\n"
    # LoRa room climate and pulse counters
    "temperature             64  °C    0.1\n"
    "humidity                65  %     0.5\n"
    "co2                     66  ppm   1\n"
    "battery                 67  V     0.001\n"
    "pulse_count             68  -     1\n"
    "gas_volume              69  m³    0.001\n"
    "water_volume            70  m³    0.001\n"
    "heat_energy             71  Wh    1\n"
    "illuminance             72  lx    1\n"
    "pressure                73  Pa    10\n"
    "tvoc                    74  ppb   1\n"
    "motion                  75  -     1\n"
    "rssi                    96  dBm   1\n"
    "snr                     97  dB    0.1\n"
    # appended for LoRa sensors that report their battery as a percentage (Milesight)
    "battery_level           76  %     1\n"
)


def __getattr__(name):
    if name != "QUANTITIES":
        raise AttributeError("module protocols.quantities has no attribute %r" % (name,))
    table = {}
    start = 1
    while start < len(_CATALOGUE):
        table[_CATALOGUE[start : _CATALOGUE.find(" ", start)]] = _entry_at(start)
        start = _CATALOGUE.find("\n", start) + 1
    # Kept on the host (edge, fleet, tools). A board's one user is the profile checker, which
    # holds it only while it is loaded: kept here, the dict would pin about 9 KB of heap.
    if sys.implementation.name != "micropython":
        globals()["QUANTITIES"] = table
    return table


def _entry_at(start):
    """(code, unit, resolution) of the catalogue line that starts at index start."""
    f = _CATALOGUE[start : _CATALOGUE.find("\n", start)].split()
    return (
        int(f[1]),
        "" if f[2] == "-" else f[2],
        float(f[3]) if "." in f[3] else int(f[3]),
    )


def entry_of(name):
    """(code, unit, resolution) of a quantity name, as QUANTITIES[name]; KeyError if unknown."""
    i = -1
    if isinstance(name, str) and name and " " not in name and "\n" not in name:
        i = _CATALOGUE.find("\n" + name + " ")
    if i < 0:
        raise KeyError(name)
    return _entry_at(i + 1)


def is_quantity(name):
    """Whether name is in the catalogue (what `name in QUANTITIES` says, without the dict)."""
    try:
        entry_of(name)
    except KeyError:
        return False
    return True


def code_of(name):
    """Wire code of a quantity name; KeyError with the name if unknown."""
    return entry_of(name)[0]


def unit_of(name):
    return entry_of(name)[1]


def resolution_of(name):
    return entry_of(name)[2]


def name_of(code):
    """Quantity name for a wire code; KeyError if the code is unknown."""
    if isinstance(code, int):
        key = " %d " % code
        i = _CATALOGUE.find(key)
        while i >= 0:
            start = _CATALOGUE.rfind("\n", 0, i) + 1
            if _entry_at(start)[0] == code:
                return _CATALOGUE[start : _CATALOGUE.find(" ", start)]
            i = _CATALOGUE.find(key, i + 1)
    raise KeyError(code)


def channel_id(device_id, name):
    """The channel number of one quantity of one device (meter or sensor) of a gateway.

    device_id is the numeric id the gateway configuration gives the device (1..65535)."""
    return (device_id << 8) | entry_of(name)[0]


def split_channel(channel):
    """Inverse of channel_id: (device_id, quantity name)."""
    return channel >> 8, name_of(channel & 0xFF)


if sys.implementation.name != "micropython":  # hosts look names up per channel: remember them
    from functools import lru_cache

    entry_of = lru_cache(maxsize=None, typed=True)(entry_of)
    name_of = lru_cache(maxsize=None, typed=True)(name_of)
