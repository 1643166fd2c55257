"""The gateway configuration document: its schema, the cross-field checks and the defaults
(every field is described in docs/config.md). Runs on MicroPython; it checks documents, it
never reads files or talks to a device."""

from protocols import config_checks
from protocols.schema import (
    OPTIONAL,
    Enum,
    GatewayId,
    Int,
    List,
    Obj,
    Str,
    Union,
    normalise,
    validate,
)

MAX_DEVICE_ID = 4095  # device ids of meters and sensors: 1..4095 (channel = id << 8 | code)
BAUD_RATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)

# Spelled out rather than concatenated at import: literals stay in flash on a board.
_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-_."
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"
_HOST_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:"
_HEX_CHARS = "0123456789abcdefABCDEF"


class ConfigError(ValueError):
    """An invalid configuration document; .errors lists every problem with its path."""

    def __init__(self, errors):
        self.errors = errors
        super().__init__(
            "invalid configuration (%d error%s):\n  %s"
            % (len(errors), "" if len(errors) == 1 else "s", "\n  ".join(errors)),
        )


def config_schema():
    """The schema of the configuration document (built on demand, to keep it out of RAM)."""
    device_id = Int(1, MAX_DEVICE_ID)
    name = Str(1, 64)
    ref_id = Str(1, 32, _ID_CHARS, "lowercase a-z, 0-9, -, _ and .")
    quantity_list = List(Str(1, 32, _NAME_CHARS, "lowercase a-z, 0-9 and _"), 1, 255)
    rtu = Obj(
        ("id", ref_id),
        ("port", Str(1, 128)),
        ("baud", Enum(*BAUD_RATES), 9600),
        ("parity", Enum("N", "E", "O"), "E"),
        ("stopbits", Enum(1, 2), 1),
        ("timeout_ms", Int(10, 10000), 300),
        ("retries", Int(0, 5), 1),
        # GPIO of the transceiver's DE/RE pins on ESP32 / Pico W gateways (absent: the board
        # settings' pin, or a transceiver with automatic direction control); edge ignores it
        ("de_pin", Int(0, 48), OPTIONAL),
    )
    tcp = Obj(
        ("id", ref_id),
        ("host", Str(1, 253, _HOST_CHARS, "a host name or IP address")),
        ("port", Int(1, 65535), 502),
        ("timeout_ms", Int(10, 60000), 1000),
        ("retries", Int(0, 5), 1),
    )
    meter = Obj(
        ("id", device_id),
        ("name", name),
        ("bus", ref_id),
        ("unit", Int(0, 255)),
        ("profile", Str(1, 32, _NAME_CHARS, "lowercase a-z, 0-9 and _")),
        ("interval_s", Int(1, 86400), 10),
        ("quantities", quantity_list, OPTIONAL),
    )
    lora = Obj(
        ("port", Str(1, 128)),
        ("frequency_hz", Int(150000000, 960000000)),
        ("spreading_factor", Int(7, 12), 7),
        ("bandwidth_khz", Enum(125, 250, 500), 125),
        ("coding_rate", Int(5, 8), 5),
        ("preamble", Int(5, 65535), 8),
        ("tx_power_dbm", Int(5, 22), 14),
    )
    sensor = Obj(
        ("id", device_id),
        ("name", name),
        ("address", Str(8, 16, _HEX_CHARS, "hex digits")),
        ("index", Int(0, 255), OPTIONAL),
        ("format", Str(1, 32, _NAME_CHARS, "lowercase a-z, 0-9 and _")),
        ("quantities", quantity_list, OPTIONAL),
    )
    return Obj(
        ("version", Int(1, 2147483647)),
        ("gateway", GatewayId()),
        ("buses", List(Union("type", ("rtu", rtu), ("tcp", tcp)), 0, 16), []),
        ("meters", List(meter, 0, 128), []),
        ("lora", lora, OPTIONAL),
        ("sensors", List(sensor, 0, 256), []),
        (
            "uplink",
            Obj(
                ("batch_interval_s", Int(1, 3600), 10),
                ("max_batch_readings", Int(1, 100000), 500),
                ("backlog_readings_per_s", Int(1, 100000), 2000),
            ),
            {},
        ),
        (
            "buffer",
            Obj(
                ("max_readings", Int(1000, 1000000000), OPTIONAL),
                ("max_age_days", Int(1, 3650), 90),
            ),
            {},
        ),
        (
            "rollback",
            Obj(
                ("contact_timeout_s", Int(60, 86400), 600),
                ("all_polls_failing_s", Int(60, 86400), 600),
            ),
            {},
        ),
    )


def validate_config(doc, known_profiles=None, known_formats=None):
    """Every problem of a configuration document as "path: problem" strings ([] if valid).

    known_profiles: names of the meter profiles this gateway has (a set or list), or a dict
    name -> the quantity names the profile reads; known_formats: LoRa payload format names.
    Without them, profile and format names are only checked for their spelling."""
    errors = []
    validate(doc, config_schema(), "", errors)
    if isinstance(doc, dict):
        config_checks.check(doc, known_profiles, known_formats, errors)
    return errors


def check_config(doc, known_profiles=None, known_formats=None):
    """The document with defaults filled in, or ConfigError listing every problem."""
    errors = validate_config(doc, known_profiles, known_formats)
    if errors:
        raise ConfigError(errors)
    return normalise(doc, config_schema())
