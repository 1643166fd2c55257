"""LoRa sensor payloads: decoders and encoders for Cayenne LPP, Elsys and Milesight sensors.
Sans-I/O: bytes in, readings out; no radio, UART, clock or sleep here (the P2P frame envelope
is protocols/lora_p2p.py).

Decoding any bytes returns readings or raises LoraPayloadError, never another exception.
Byte layouts, sources and the meaning of `index` are documented in docs/lora.md.
"""

from collections import namedtuple

from protocols import quantities

# One decoded value in the catalogue unit of its quantity. `index` tells apart several values of
# one quantity from one sensor: the LPP channel byte; Elsys 0 = internal sensor, 1/2 = external
# input 1/2; Milesight always 0.
Reading = namedtuple("Reading", "quantity value index")

# Index in this list = the format's code in the P2P envelope. Only append, never reorder.
FORMATS = ("cayenne_lpp", "elsys", "milesight_am103", "milesight_am307", "milesight_em300_di")

# Quantities a pulse counter converts to (pulses_to_quantity).
PULSE_QUANTITIES = ("gas_volume", "water_volume", "heat_energy")


class LoraPayloadError(ValueError):
    """A payload (or P2P frame) that cannot be decoded: names the format, the byte offset and why."""

    def __init__(self, format_name, offset, reason):
        self.format_name = format_name
        self.offset = offset
        self.reason = reason
        super().__init__("%s payload, byte %d: %s" % (format_name, offset, reason))


class LoraEncodeError(ValueError):
    """Readings that the chosen format cannot carry (unknown quantity, value out of range)."""


# Field tables are byte strings (small on MicroPython), one row per field type:
#   key (1 byte; Milesight 2: channel id, channel type), size in bytes,
#   flags (0x80 signed; low bits: scale, see _SCALES), quantity wire code (0: none), index.
# value = raw * num / den in the catalogue unit (_SCALES: flat num, den pairs). Quantity code 0
# marks a documented field that is stepped over without a reading (no catalogue quantity).
# Codes: 64 temperature, 65 humidity, 66 co2, 67 battery, 68 pulse_count, 71 heat_energy,
# 72 illuminance, 73 pressure, 74 tvoc, 75 motion, 76 battery_level (protocols/quantities.py).
_SCALES = (1, 1, 1, 10, 1, 2, 1, 100, 1, 1000, 10, 1)

# Cayenne LPP, big-endian; the index of a reading is the channel byte. Sources: myDevices Cayenne
# LPP spec (types 0-3, 101-104, 113, 115, 134, 136); ElectronicCats CayenneLPP src/CayenneLPP.h
# (100, 116-133, 142); RAKwireless Standardized Payload README (125, 137, 138).
_LPP = (
    b"\x00\x01\x00\x00\x00"  # 0 digital input
    b"\x01\x01\x00\x00\x00"  # 1 digital output
    b"\x02\x02\x83\x00\x00"  # 2 analog input, 0.01 signed
    b"\x03\x02\x83\x00\x00"  # 3 analog output, 0.01 signed
    b"\x64\x04\x00\x44\x00"  # 100 generic sensor, uint32 -> pulse_count (our pulse counters)
    b"\x65\x02\x00\x48\x00"  # 101 illuminance, 1 lx -> illuminance
    b"\x66\x01\x00\x4b\x00"  # 102 presence 0/1 -> motion
    b"\x67\x02\x81\x40\x00"  # 103 temperature, 0.1 degC signed -> temperature
    b"\x68\x01\x02\x41\x00"  # 104 humidity, 0.5 % -> humidity
    b"\x71\x06\x80\x00\x00"  # 113 accelerometer, 3 x 0.001 G
    b"\x73\x02\x05\x49\x00"  # 115 barometer, 0.1 hPa = 10 Pa -> pressure
    b"\x74\x02\x03\x43\x00"  # 116 voltage, 0.01 V -> battery
    b"\x75\x02\x00\x00\x00"  # 117 current, 0.001 A
    b"\x76\x04\x00\x00\x00"  # 118 frequency, 1 Hz
    b"\x78\x01\x00\x00\x00"  # 120 percentage
    b"\x79\x02\x80\x00\x00"  # 121 altitude, 1 m signed
    b"\x7d\x02\x00\x42\x00"  # 125 concentration, 1 ppm (RAKwireless) -> co2
    b"\x80\x02\x00\x00\x00"  # 128 power, 1 W
    b"\x82\x04\x00\x00\x00"  # 130 distance, 0.001 m
    b"\x83\x04\x00\x47\x00"  # 131 energy, 0.001 kWh = 1 Wh -> heat_energy
    b"\x84\x02\x00\x00\x00"  # 132 direction, 1 degree
    b"\x85\x04\x00\x00\x00"  # 133 unix time
    b"\x86\x06\x80\x00\x00"  # 134 gyrometer, 3 x 0.01 deg/s
    b"\x88\x09\x80\x00\x00"  # 136 GPS, lat/lon 0.0001 deg, alt 0.01 m, 3 bytes each
    b"\x89\x0b\x80\x00\x00"  # 137 GNSS enhanced resolution (RAKwireless)
    b"\x8a\x02\x00\x00\x00"  # 138 VOC index (RAKwireless), not ppb
    b"\x8e\x01\x00\x00\x00"  # 142 switch 0/1
)

# Elsys, big-endian. Source: the Elsys payload document (elsys.se/en/elsys-payload) as encoded in
# Elsys' decoder elsys.js (TheThingsNetwork/lorawan-devices, vendor/elsys).
_ELSYS = (
    b"\x01\x02\x81\x40\x00"  # temperature, 0.1 degC signed
    b"\x02\x01\x00\x41\x00"  # humidity, 1 %
    b"\x03\x03\x80\x00\x00"  # acceleration X, Y, Z
    b"\x04\x02\x00\x48\x00"  # light, lux -> illuminance
    b"\x05\x01\x00\x4b\x00"  # PIR motion count -> motion
    b"\x06\x02\x00\x42\x00"  # CO2, ppm
    b"\x07\x02\x04\x43\x00"  # VDD, mV -> battery
    b"\x08\x02\x00\x00\x00"  # analog input 1, mV
    b"\x09\x06\x00\x00\x00"  # GPS
    b"\x0a\x02\x00\x00\x01"  # pulse input 1, relative count (not used: see docs/lora.md)
    b"\x0b\x04\x00\x44\x01"  # pulse input 1, absolute count -> pulse_count index 1
    b"\x0c\x02\x81\x40\x01"  # external temperature 1, 0.1 degC -> temperature index 1
    b"\x0d\x01\x00\x00\x00"  # external digital input
    b"\x0e\x02\x00\x00\x00"  # distance, mm
    b"\x0f\x01\x00\x00\x00"  # acceleration motion count
    b"\x10\x04\x80\x00\x00"  # IR temperature internal + external
    b"\x11\x01\x00\x00\x00"  # occupancy
    b"\x12\x01\x00\x00\x00"  # water leak
    b"\x13\x41\x00\x00\x00"  # Grid-EYE, 65 bytes
    b"\x14\x04\x01\x49\x00"  # pressure, 0.001 hPa = 0.1 Pa
    b"\x15\x02\x00\x00\x00"  # sound peak/average
    b"\x16\x02\x00\x00\x02"  # pulse input 2, relative count (not used)
    b"\x17\x04\x00\x44\x02"  # pulse input 2, absolute count -> pulse_count index 2
    b"\x18\x02\x00\x00\x00"  # analog input 2, mV
    b"\x19\x02\x81\x40\x02"  # external temperature 2, 0.1 degC -> temperature index 2
    b"\x1a\x01\x00\x00\x00"  # external digital input 2
    b"\x1b\x04\x80\x00\x00"  # load cell analog, uV
    b"\x1c\x02\x00\x4a\x00"  # TVOC, ppb
    b"\x3d\x04\x00\x00\x00"  # debug
)

# Milesight, little-endian, key = channel id + channel type. Sources: Milesight-IoT/SensorDecoders,
# README and decoder of AM_Series/AM103, AM_Series/AM300 (AM307) and EM_Series/.../EM300-DI.
_MS_COMMON = (
    b"\xff\x01\x01\x00\x00\x00"  # protocol version
    b"\xff\x09\x02\x00\x00\x00"  # hardware version
    b"\xff\x0a\x02\x00\x00\x00"  # firmware version
    b"\xff\x0b\x01\x00\x00\x00"  # power on
    b"\xff\x0f\x01\x00\x00\x00"  # LoRaWAN class
    b"\xff\x16\x08\x00\x00\x00"  # serial number
    b"\xff\xfe\x01\x00\x00\x00"  # reset event
    b"\xff\xff\x02\x00\x00\x00"  # TSL version
    b"\x01\x75\x01\x00\x4c\x00"  # battery, % -> battery_level
    b"\x03\x67\x02\x81\x40\x00"  # temperature, 0.1 degC signed
    b"\x04\x68\x01\x02\x41\x00"  # humidity, 0.5 %
)
_MS_AM103 = (
    b"\x07\x7d\x02\x00\x42\x00"  # CO2, ppm
    b"\x20\xce\x09\x00\x00\x00"  # history record with device timestamp (not imported)
)
_MS_AM307 = (
    b"\x05\x00\x01\x00\x4b\x00"  # PIR, 0 idle / 1 trigger -> motion
    b"\x06\xcb\x01\x00\x00\x00"  # light level 0-5, not lux
    b"\x07\x7d\x02\x00\x42\x00"  # CO2, ppm
    b"\x08\x7d\x02\x00\x00\x00"  # tVOC IAQ level x0.01, not ppb
    b"\x08\xe6\x02\x00\x00\x00"  # tVOC ug/m3, not ppb
    b"\x09\x73\x02\x05\x49\x00"  # pressure, 0.1 hPa = 10 Pa
    b"\x0a\x7d\x02\x00\x00\x00"  # HCHO
    b"\x0b\x7d\x02\x00\x00\x00"  # PM2.5
    b"\x0c\x7d\x02\x00\x00\x00"  # PM10
    b"\x0d\x7d\x02\x00\x00\x00"  # O3
    b"\x0e\x01\x01\x00\x00\x00"  # beep
    b"\x20\xce\x10\x00\x00\x00"  # history record (not imported)
)
_MS_EM300_DI = (
    b"\x05\x00\x01\x00\x00\x00"  # GPIO level (digital mode)
    b"\x05\xc8\x04\x00\x44\x00"  # pulse counter -> pulse_count
    b"\x85\x00\x02\x00\x00\x00"  # GPIO alarm
    b"\x20\xce\x0d\x00\x00\x00"  # history record (not imported)
    b"\x21\xce\x12\x00\x00\x00"  # history record v2 (not imported)
)


def _layout(fmt):
    """(tables searched in order, key length, header length) of a format's fields."""
    if fmt == "cayenne_lpp":
        return (_LPP,), 1, 2  # channel byte, type byte
    if fmt == "elsys":
        return (_ELSYS,), 1, 1
    return ((_MS_AM103, _MS_AM307, _MS_EM300_DI)[FORMATS.index(fmt) - 2], _MS_COMMON), 2, 2


def _find(table, key_len, b0, b1):
    """Offset of the size byte of the row whose key is b0 (b0 b1 for 2-byte keys), or -1."""
    for off in range(0, len(table), key_len + 4):
        if table[off] == b0 and (key_len == 1 or table[off + 1] == b1):
            return off + key_len
    return -1


def _reading(fmt, data, offset, table, at, index, little):
    size = table[at]
    if offset + size > len(data):
        raise LoraPayloadError(
            fmt, offset, "truncated: field needs %d bytes, %d left" % (size, len(data) - offset)
        )
    code = table[at + 2]
    if code == 0:
        return None
    raw = int.from_bytes(bytes(data[offset : offset + size]), "little" if little else "big")
    if table[at + 1] & 0x80 and raw >= 1 << (8 * size - 1):
        raw -= 1 << (8 * size)
    k = (table[at + 1] & 0x07) << 1
    num, den = _SCALES[k], _SCALES[k + 1]
    value = raw * num if den == 1 else raw * num / den
    return Reading(quantities.name_of(code), value, table[at + 3] if index is None else index)


def _unknown(fmt, data, i):
    if fmt == "cayenne_lpp":
        return LoraPayloadError(fmt, i + 1, "unknown LPP data type 0x%02X" % data[i + 1])
    if fmt == "elsys":
        return LoraPayloadError(fmt, i, "unknown Elsys data type 0x%02X" % data[i])
    if data[i + 1] == 0xE1:
        # 0xE1 carries a count the sensor already converted (float, unit set on the sensor):
        # refused so that no conversion happens twice or in an unknown unit.
        reason = (
            "pulse conversion is on in the sensor (channel type 0xE1): switch it off so it sends "
            "raw pulses (05 C8); the gateway applies the per-pulse factor"
        )
    else:
        reason = "unknown channel %02X %02X for %s" % (data[i], data[i + 1], fmt)
    return LoraPayloadError(fmt, i, reason)


def _decode(fmt, data):
    tables, key_len, head = _layout(fmt)
    lpp = fmt == "cayenne_lpp"
    out = []
    i = 0
    n = len(data)
    while i < n:
        if i + head > n:
            raise LoraPayloadError(
                fmt, i, "truncated: byte 0x%02X starts a field but nothing follows" % data[i]
            )
        b0 = data[i + 1] if lpp else data[i]
        b1 = data[i + 1] if key_len == 2 else 0
        for table in tables:
            at = _find(table, key_len, b0, b1)
            if at >= 0:
                break
        if at < 0:
            raise _unknown(fmt, data, i)
        r = _reading(fmt, data, i + head, table, at, data[i] if lpp else None, key_len == 2)
        if r is not None:
            out.append(r)
        i += head + table[at]
    return out


def decode(format_name, payload):
    """Readings of one sensor payload: a list of Reading(quantity, value, index).

    Raises LoraPayloadError for anything that is not a complete, valid payload of that format
    (including an empty payload and an unknown format name)."""
    if format_name not in FORMATS:
        raise LoraPayloadError(
            str(format_name), 0, "unknown format; known formats: %s" % ", ".join(FORMATS)
        )
    if not payload:
        raise LoraPayloadError(format_name, 0, "empty payload")
    return _decode(format_name, payload)


def _encode_one(fmt, reading):
    quantity = reading[0]
    value = reading[1]
    index = reading[2] if len(reading) > 2 else 0
    lpp = fmt == "cayenne_lpp"
    if lpp and (not isinstance(index, int) or not 0 <= index <= 255):
        raise LoraEncodeError("cayenne_lpp channel %r must be 0..255" % (index,))
    code = quantities.code_of(quantity) if quantities.is_quantity(quantity) else 0
    tables, key_len, _ = _layout(fmt)
    at = -1
    for table in tables:
        for off in range(0, len(table), key_len + 4):
            if (
                code
                and table[off + key_len + 2] == code
                and (lpp or table[off + key_len + 3] == index)
            ):
                at = off + key_len
                break
        if at >= 0:
            break
    if at < 0:
        raise LoraEncodeError("%s cannot carry %s with index %r" % (fmt, quantity, index))
    size = table[at]
    k = (table[at + 1] & 0x07) << 1
    num, den = _SCALES[k], _SCALES[k + 1]
    try:
        raw = int(round(value * den / num))
    except (TypeError, ValueError, OverflowError):
        raise LoraEncodeError("%s: %s value %r is not a finite number" % (fmt, quantity, value))
    top = 1 << (8 * size)
    lo, hi = (-(top >> 1), (top >> 1) - 1) if table[at + 1] & 0x80 else (0, top - 1)
    if not lo <= raw <= hi:
        raise LoraEncodeError(
            "%s: %s %r out of range %r..%r" % (fmt, quantity, value, lo * num / den, hi * num / den)
        )
    head = bytes((index, table[at - 1])) if lpp else bytes(table[at - key_len : at])
    return head + (raw % top).to_bytes(size, "little" if key_len == 2 else "big")


def encode(format_name, readings):
    """The payload bytes carrying `readings` (for the simulator and tests).

    readings: Reading or (quantity, value[, index]) tuples; index defaults to 0 and is the
    channel byte for LPP. Raises LoraEncodeError if the format cannot carry a reading."""
    if format_name not in FORMATS:
        raise LoraEncodeError(
            "unknown format %r; known formats: %s" % (format_name, ", ".join(FORMATS))
        )
    out = b""
    for reading in readings:
        out += _encode_one(format_name, reading)
    return out


def pulses_to_quantity(quantity, pulse_count, per_pulse, reading_at_zero=0):
    """Meter reading from a pulse counter: reading_at_zero + pulse_count * per_pulse.

    quantity is gas_volume or water_volume (per_pulse in m3: 10 L/pulse is 0.01) or heat_energy
    (per_pulse in Wh). reading_at_zero is the meter's reading when the counter was 0."""
    if quantity not in PULSE_QUANTITIES:
        raise ValueError(
            "pulse counters convert to %s, not %r" % (", ".join(PULSE_QUANTITIES), quantity)
        )
    if pulse_count < 0:
        raise ValueError("pulse count %r is negative" % (pulse_count,))
    return reading_at_zero + pulse_count * per_pulse
