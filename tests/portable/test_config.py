from portable import raises

from protocols import schema
from protocols.config import ConfigError, check_config, validate_config


def example():
    """The example document of docs/config.md."""
    return {
        "version": 7,
        "gateway": "grundschule-sued-1",
        "buses": [
            {
                "id": "rs485-1",
                "type": "rtu",
                "port": "/dev/ttyUSB0",
                "baud": 9600,
                "parity": "E",
                "stopbits": 1,
                "timeout_ms": 300,
                "retries": 1,
            },
            {"id": "plant-tcp", "type": "tcp", "host": "192.168.10.20", "port": 502},
        ],
        "meters": [
            {"id": 1, "name": "Hauptzaehler", "bus": "rs485-1", "unit": 1, "profile": "sdm630"},
            {
                "id": 2,
                "name": "Turnhalle",
                "bus": "rs485-1",
                "unit": 2,
                "profile": "sdm630",
                "interval_s": 60,
                "quantities": ["energy_import", "power_total"],
            },
            {"id": 3, "name": "Heizung", "bus": "plant-tcp", "unit": 255, "profile": "sdm630"},
        ],
        "lora": {"port": "spi1", "frequency_hz": 868100000, "spreading_factor": 9},
        "sensors": [
            {
                "id": 100,
                "name": "Klassenraum 1.04",
                "address": "A1B2C3D4",
                "format": "cayenne_lpp",
            }
        ],
        "uplink": {"batch_interval_s": 60},
        "rollback": {"contact_timeout_s": 900},
    }


def test_example_document_is_valid_and_gets_defaults():
    assert validate_config(example(), {"sdm630"}, {"cayenne_lpp"}) == []
    doc = check_config(example())
    assert doc["buses"][1]["timeout_ms"] == 1000
    assert doc["meters"][0]["interval_s"] == 10
    assert "quantities" not in doc["meters"][0]
    assert doc["lora"]["bandwidth_khz"] == 125 and doc["lora"]["spreading_factor"] == 9
    assert doc["uplink"] == {
        "batch_interval_s": 60,
        "max_batch_readings": 500,
        "backlog_readings_per_s": 2000,
    }
    assert doc["buffer"] == {"max_age_days": 90}
    assert doc["rollback"] == {"contact_timeout_s": 900, "all_polls_failing_s": 600}


def test_smallest_document():
    doc = check_config({"version": 1, "gateway": "gw-001"})
    assert doc["buses"] == [] and doc["meters"] == [] and doc["sensors"] == []
    assert "lora" not in doc


def test_errors_name_the_exact_path():
    doc = example()
    doc["meters"][2]["interval_s"] = 0
    doc["buses"][0]["parity"] = "X"
    errors = validate_config(doc)
    assert errors == [
        "buses[0].parity: must be one of N, E, O",
        "meters[2].interval_s: must be >= 1",
    ]


def test_all_errors_are_collected():
    doc = example()
    doc["version"] = 0
    doc["gateway"] = "Rathaus_1"
    doc["meters"][0]["intervall_s"] = 30  # typo
    del doc["meters"][1]["bus"]
    doc["buses"][1]["port"] = "502"
    doc["uplink"]["max_batch_readings"] = 10**9
    errors = validate_config(doc)
    assert errors == [
        "version: must be >= 1",
        "gateway: 'Rathaus_1' has 'R'; allowed: lowercase a-z, 0-9 and -",
        "buses[1].port: must be an integer",
        "meters[0].intervall_s: unknown key (check the spelling; allowed: id, name, bus, unit,"
        " profile, interval_s, quantities)",
        "meters[1].bus: missing (required)",
        "uplink.max_batch_readings: must be <= 100000",
    ]
    err = raises(ConfigError, check_config, doc)
    assert err.errors == errors
    assert "6 errors" in str(err) and "meters[1].bus: missing (required)" in str(err)


def test_types_are_strict():
    errors = validate_config(
        {
            "version": True,
            "gateway": 5,
            "buses": {},
            "meters": [["x"]],
            "uplink": {"batch_interval_s": 10.0},
        }
    )
    assert errors == [
        "version: must be an integer",
        "gateway: must be a string",
        "buses: must be a list",
        "meters[0]: must be an object",
        "uplink.batch_interval_s: must be an integer",
    ]


def test_bus_type_selects_the_fields():
    doc = {"version": 1, "gateway": "gw-1", "buses": [{"id": "b", "port": "/dev/ttyS0"}]}
    assert validate_config(doc) == ["buses[0].type: missing (required; one of rtu, tcp)"]
    doc["buses"][0]["type"] = "rs232"
    assert validate_config(doc) == ["buses[0].type: must be one of rtu, tcp"]
    doc["buses"][0]["type"] = "tcp"
    assert validate_config(doc) == [
        "buses[0].host: missing (required)",
        "buses[0].port: must be an integer",
    ]


def test_cross_references_and_uniqueness():
    doc = example()
    doc["buses"].append({"id": "rs485-1", "type": "rtu", "port": "/dev/ttyUSB0"})
    doc["meters"][1]["unit"] = 1  # same unit on the same bus as meters[0]
    doc["meters"][2]["bus"] = "rs485-9"
    doc["sensors"][0]["id"] = 2  # a meter has device id 2
    errors = validate_config(doc)
    assert errors == [
        "buses[2].id: 'rs485-1' is already used by buses[0]",
        "buses[2].port: /dev/ttyUSB0 is already used by buses[0]",
        "meters[1].unit: unit 1 on bus rs485-1 is already used by meters[0]",
        "meters[2].bus: no bus with id 'rs485-9' (buses: plant-tcp, rs485-1)",
        "sensors[0].id: device id 2 is already used by meters[1]",
    ]


def test_rtu_units_are_1_to_247():
    doc = example()
    doc["meters"][0]["unit"] = 0
    assert validate_config(doc) == [
        "meters[0].unit: must be 1..247 on RTU bus rs485-1 (0 and 248..255 only on TCP)"
    ]


def test_profiles_formats_and_quantities():
    doc = example()
    doc["meters"][0]["profile"] = "sdm63"
    doc["meters"][1]["quantities"] = ["energy_import", "voltage_l4", "energy_import"]
    doc["sensors"][0]["format"] = "elsys"
    errors = validate_config(doc, {"sdm630", "dds238"}, ["cayenne_lpp"])
    assert errors == [
        "meters[0].profile: unknown profile 'sdm63' (known: dds238, sdm630)",
        "meters[1].quantities[1]: unknown quantity 'voltage_l4'",
        "meters[1].quantities[2]: energy_import is listed twice",
        "sensors[0].format: unknown payload format 'elsys' (known: cayenne_lpp)",
    ]
    profiles = {"sdm630": ["energy_import", "voltage_l1"]}
    assert validate_config(example(), profiles) == [
        "meters[1].quantities[1]: profile sdm630 does not read power_total"
    ]


def test_sensors_need_the_lora_section_and_valid_addresses():
    doc = example()
    del doc["lora"]
    doc["sensors"][0]["address"] = "A1B2C3D4E5"
    assert validate_config(doc) == [
        "sensors[0].address: 'A1B2C3D4E5' must be 8 hex digits (P2P address) or 16 (EUI)",
        "lora: missing (required when sensors are configured)",
    ]


def test_one_sensor_can_feed_two_device_ids_by_reading_index():
    doc = example()
    probe = {"id": 101, "name": "Vorlauf", "address": "a1b2c3d4", "index": 1, "format": "elsys"}
    doc["sensors"] = [
        {"id": 100, "name": "Raum", "address": "A1B2C3D4", "format": "elsys"},
        probe,
    ]
    assert validate_config(doc) == []
    doc["sensors"].append(dict(probe, id=102))
    doc["sensors"].append(dict(probe, id=103, index=2.5))
    assert validate_config(doc) == [
        "sensors[3].index: must be an integer",
        "sensors[2].address: a1b2c3d4 index 1 is already used by sensors[1]",
        "sensors[3].address: a1b2c3d4 is already used by sensors[0]",
    ]


def test_garbage_gives_errors_not_exceptions():
    for doc in (None, [], "config", 3.5, {"version": float("nan")}, {1: 2}):
        assert validate_config(doc)
    assert validate_config(None) == ["(document): must be an object"]


def test_schema_language_null_num_and_open_objects():
    node = schema.Obj(
        ("a", schema.Null(schema.Num(0, 1))), ("b", schema.Bool(), False), allow_unknown=True
    )
    errors = []
    schema.validate({"a": None, "x": 1}, node, "m", errors)
    assert errors == []
    schema.validate({"a": 1.5, "b": 1}, node, "m", errors)
    assert errors == ["m.a: must be <= 1", "m.b: must be true or false"]
    assert schema.normalise({"a": 0.5, "x": 1}, node) == {"a": 0.5, "b": False, "x": 1}
    assert schema.is_gateway_id("gw-01") and not schema.is_gateway_id("gw")
    assert not schema.is_gateway_id("Gw-01") and not schema.is_gateway_id("a" * 65)
