from binascii import unhexlify

from portable import approx, raises

from protocols import lora


def h(text):
    return unhexlify(text.replace(" ", ""))


def values(readings):
    return [(r.quantity, r.value, r.index) for r in readings]


def test_lpp_spec_example_two_temperature_sensors():
    # Cayenne LPP spec (myDevices), example "Device with 2 temperature sensors"
    assert values(lora.decode("cayenne_lpp", h("03 67 01 10 05 67 00 FF"))) == [
        ("temperature", 27.2, 3),
        ("temperature", 25.5, 5),
    ]


def test_lpp_spec_example_accelerometer_is_stepped_over():
    # Cayenne LPP spec example "Device with temperature and acceleration sensors"
    assert values(lora.decode("cayenne_lpp", h("01 67 FF D7 06 71 04 D2 FB 2E 00 00"))) == [
        ("temperature", -4.1, 1)
    ]


def test_lpp_gps_of_spec_example_is_stepped_over_to_the_next_field():
    # Cayenne LPP spec GPS example (42.3519, -87.9094, 10 m), then humidity 48 % on channel 2
    assert values(lora.decode("cayenne_lpp", h("01 88 06 76 5F F2 96 0A 00 03 E8 02 68 60"))) == [
        ("humidity", 48.0, 2)
    ]


def test_lpp_extended_types_map_to_catalogue_units():
    # barometer 1014.1 hPa, voltage 3.31 V, RAKwireless concentration 800 ppm, generic 123456, energy 99.999 kWh
    got = values(
        lora.decode(
            "cayenne_lpp",
            h("04 73 27 9D 01 74 01 4B 23 7D 03 20 07 64 00 01 E2 40 09 83 00 01 86 9F"),
        )
    )
    assert got == [
        ("pressure", 101410, 4),
        ("battery", 3.31, 1),
        ("co2", 800, 35),
        ("pulse_count", 123456, 7),
        ("heat_energy", 99999, 9),
    ]


def test_lpp_unknown_type_is_named_with_its_offset():
    e = raises(lora.LoraPayloadError, lora.decode, "cayenne_lpp", h("03 67 01 10 05 99 00"))
    assert e.offset == 5 and "0x99" in str(e) and "cayenne_lpp" in str(e)


def test_lpp_truncated_field_is_an_error():
    e = raises(lora.LoraPayloadError, lora.decode, "cayenne_lpp", h("03 67 01"))
    assert e.offset == 2 and "truncated" in e.reason
    assert (
        raises(lora.LoraPayloadError, lora.decode, "cayenne_lpp", h("03 67 01 10 05")).offset == 4
    )


def test_elsys_ers_co2_vendor_example():
    # Elsys ERS CO2 example of vendor/elsys/ers-co2-codec.yaml (TTN device repository)
    got = values(lora.decode("elsys", h("0100E2 0229 040027 0506 060308")))
    assert got == [
        ("temperature", 22.6, 0),
        ("humidity", 41, 0),
        ("illuminance", 39, 0),
        ("motion", 6, 0),
        ("co2", 776, 0),
    ]


def test_elsys_pulse_inputs_external_probe_battery_and_pressure():
    # built from the Elsys type table: VDD 3600 mV, pulse1 abs 1234, pulse2 abs 5,
    # ext temp 1 -5.5 degC, pressure 1007.291 hPa
    got = values(lora.decode("elsys", h("07 0E10 0B 000004D2 17 00000005 0C FFC9 14 000F5EBB")))
    assert got[0] == ("battery", 3.6, 0)
    assert got[1:4] == [("pulse_count", 1234, 1), ("pulse_count", 5, 2), ("temperature", -5.5, 1)]
    assert got[4][0] == "pressure" and approx(got[4][1], 100729.1)


def test_elsys_relative_pulse_count_gives_no_reading():
    assert values(lora.decode("elsys", h("0A 0010 0100E2"))) == [("temperature", 22.6, 0)]


def test_elsys_unknown_type():
    e = raises(lora.LoraPayloadError, lora.decode, "elsys", h("0100E2 3F 00"))
    assert e.offset == 3 and "0x3F" in e.reason


def test_milesight_am103_vendor_example():
    # Milesight-IoT SensorDecoders AM_Series/AM103 README example
    got = values(lora.decode("milesight_am103", h("017564 03671801 04686D 077DC501")))
    assert got == [
        ("battery_level", 100, 0),
        ("temperature", 28.0, 0),
        ("humidity", 54.5, 0),
        ("co2", 453, 0),
    ]


def test_milesight_am307_vendor_example():
    # Milesight-IoT SensorDecoders AM_Series/AM300 README example (AM307/AM319 family)
    payload = h(
        "0367EE00 04687C 050001 06CB02 077DA803 087D2500 09736627 0A7D0400 0B7D2000 0C7D3000"
    )
    assert values(lora.decode("milesight_am307", payload)) == [
        ("temperature", 23.8, 0),
        ("humidity", 62.0, 0),
        ("motion", 1, 0),
        ("co2", 936, 0),
        ("pressure", 100860, 0),
    ]


def test_milesight_em300_di_vendor_examples():
    # TTN device repository vendor/milesight-iot/em300-di-codec.yaml: battery 92, pulse 256
    assert values(lora.decode("milesight_em300_di", h("01755C 05C800010000"))) == [
        ("battery_level", 92, 0),
        ("pulse_count", 256, 0),
    ]
    # SensorDecoders EM300-DI README: the history record (device timestamp) is stepped over
    got = values(
        lora.decode(
            "milesight_em300_di", h("01755C 03673401 046865 20CE9E74466310015D020000010000")
        )
    )
    assert got == [("battery_level", 92, 0), ("temperature", 30.8, 0), ("humidity", 50.5, 0)]


def test_milesight_converted_pulses_are_refused_with_a_hint():
    e = raises(
        lora.LoraPayloadError,
        lora.decode,
        "milesight_em300_di",
        h("01755C 05E1 0A00 0A00 0000803F"),
    )
    assert e.offset == 3 and "switch it off" in e.reason


def test_milesight_channel_of_another_product_is_unknown():
    e = raises(lora.LoraPayloadError, lora.decode, "milesight_am103", h("017564 05C800010000"))
    assert e.offset == 3 and "05 C8" in e.reason


def test_empty_payload_and_unknown_format():
    assert "empty" in raises(lora.LoraPayloadError, lora.decode, "elsys", b"").reason
    e = raises(lora.LoraPayloadError, lora.decode, "lorawan_magic", b"\x01")
    assert "known formats" in e.reason and "elsys" in e.reason


def test_encode_then_decode_gives_the_readings_back():
    cases = {
        "cayenne_lpp": [
            ("temperature", -4.1, 1),
            ("humidity", 54.5, 2),
            ("pressure", 101410, 4),
            ("co2", 800, 35),
        ],
        "elsys": [
            ("temperature", 22.6, 0),
            ("battery", 3.6, 0),
            ("pulse_count", 70000, 1),
            ("tvoc", 120, 0),
        ],
        "milesight_am103": [("battery_level", 100, 0), ("temperature", -12.3, 0), ("co2", 453, 0)],
        "milesight_am307": [("humidity", 62.0, 0), ("motion", 1, 0), ("pressure", 100860, 0)],
        "milesight_em300_di": [("battery_level", 92, 0), ("pulse_count", 4000000000, 0)],
    }
    for fmt in lora.FORMATS:
        got = values(lora.decode(fmt, lora.encode(fmt, cases[fmt])))
        assert [(q, i) for q, _, i in got] == [(q, i) for q, _, i in cases[fmt]], fmt
        assert all(approx(a[1], b[1]) for a, b in zip(got, cases[fmt])), fmt


def test_encode_rejects_what_the_format_cannot_carry():
    assert "out of range" in str(
        raises(lora.LoraEncodeError, lora.encode, "cayenne_lpp", [("temperature", 4000, 1)])
    )
    assert "index 0" in str(
        raises(lora.LoraEncodeError, lora.encode, "elsys", [("pulse_count", 5)])
    )
    raises(lora.LoraEncodeError, lora.encode, "milesight_am103", [("pressure", 100000)])
    raises(lora.LoraEncodeError, lora.encode, "cayenne_lpp", [("temperature", "warm", 1)])


def test_pulses_to_quantity():
    # 10 L per pulse gas meter that read 1234.5 m3 when the counter was 0
    assert approx(lora.pulses_to_quantity("gas_volume", 1000, 0.01, 1234.5), 1244.5)
    assert lora.pulses_to_quantity("heat_energy", 25, 1000) == 25000
    raises(ValueError, lora.pulses_to_quantity, "temperature", 1, 1)
    raises(ValueError, lora.pulses_to_quantity, "water_volume", -1, 1)
