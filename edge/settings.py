"""The local bootstrap file gateway.toml: who the gateway is, how it reaches the fleet, where it
keeps its data, the key that signs its configuration, and an optional initial configuration.
Only what the fleet cannot send lives here; meters, buses and intervals come from the
configuration document (protocols/config.py), remotely or from initial_config.

Reads and checks the file; it never opens a port or a connection.
"""

from __future__ import annotations

import binascii
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.uplink import MqttSettings
from protocols.schema import is_gateway_id

DEFAULT_CONFIG = "/etc/edge/gateway.toml"
DEFAULT_DATA_DIR = "/var/lib/edge"

EXAMPLE = """\
[gateway]
id = "gw-rathaus-01"                  # 3-64 characters a-z, 0-9, -
data_dir = "/var/lib/edge"            # buffer, running configuration, status
# initial_config = "/etc/edge/config.json"   # configuration until the fleet sends one
# profile_dirs = ["/etc/edge/profiles"]      # extra meter profiles

[mqtt]
host = "fleet.example.org"
port = 8883
tls = true
# ca_file = "/etc/edge/ca.crt"        # default: the system's CA store
# cert_file = "/etc/edge/client.crt"  # client certificate, with key_file
# key_file = "/etc/edge/client.key"
username = "gw-rathaus-01"
password_file = "/etc/edge/mqtt-password"   # or password = "..."

[signing]
key_file = "/etc/edge/config-key"     # hex key the fleet signs configurations with
"""


class SettingsError(ValueError):
    """The bootstrap file is missing, unreadable or wrong; the message names file and field."""


@dataclass(frozen=True)
class Settings:
    path: Path
    gateway_id: str
    data_dir: Path
    mqtt: MqttSettings
    signing_keys: tuple[bytes, ...]  # current first; more during a key rotation
    initial_config: Path | None = None
    profile_dirs: tuple[str, ...] = ()
    store_synchronous: str = "FULL"  # "NORMAL" trades the last commits on power loss for speed
    live_window_s: float = 120.0
    status_interval_s: float = 60.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def buffer_path(self) -> Path:
        return self.data_dir / "buffer.sqlite"

    @property
    def status_path(self) -> Path:
        return self.data_dir / "status.json"

    @property
    def config_dir(self) -> Path:
        return self.data_dir / "config"


_SECTIONS = {
    "gateway": {"id", "data_dir", "initial_config", "profile_dirs"},
    "mqtt": {
        "host",
        "port",
        "tls",
        "ca_file",
        "cert_file",
        "key_file",
        "username",
        "password",
        "password_file",
        "client_id",
        "keepalive_s",
    },  # fmt: skip
    "signing": {"key", "key_file", "previous_keys"},
    "store": {"synchronous", "live_window_s"},
    "status": {"interval_s"},
}


def _read_secret(where: str, path: str, base: Path) -> str:
    p = _path(path, base)
    try:
        return p.read_text().strip()
    except OSError as exc:
        raise SettingsError(
            f"{where}: cannot read {p} ({exc.strerror}): check the path and that the edge "
            "user may read it"
        ) from exc


def _path(value: str, base: Path) -> Path:
    p = Path(value)
    return p if p.is_absolute() else base / p


def _key(where: str, text: str) -> bytes:
    text = text.strip()
    try:
        key = binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        raise SettingsError(
            f"{where}: the signing key must be hex digits (e.g. 64 of them)"
        ) from None
    if len(key) < 16:
        raise SettingsError(f"{where}: the signing key is {len(key)} bytes; use at least 16")
    return key


def _typed(where: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise SettingsError(f"{where}: must be {what}, not {value!r}")
    return value


def load_settings(path: str | Path = DEFAULT_CONFIG) -> Settings:
    """The settings of a gateway.toml; SettingsError says what is wrong and where."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise SettingsError(
            f"{path}: no such file; create it (docs/edge.md shows an example) or pass --config PATH"
        ) from None
    except PermissionError:
        raise SettingsError(
            f"{path}: permission denied; the edge user must be able to read it"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    return settings_from_dict(raw, path)


def settings_from_dict(raw: dict[str, Any], path: Path) -> Settings:
    base = path.parent
    for section, value in raw.items():
        if section not in _SECTIONS:
            raise SettingsError(
                f"{path}: unknown section [{section}] (known: {', '.join(_SECTIONS)})"
            )
        if not isinstance(value, dict):
            raise SettingsError(f"{path}: {section} must be a section [{section}]")
        unknown = set(value) - _SECTIONS[section]
        if unknown:
            raise SettingsError(
                f"{path}: [{section}] has unknown key(s) {', '.join(sorted(unknown))} "
                f"(known: {', '.join(sorted(_SECTIONS[section]))})"
            )
    gw = raw.get("gateway", {})
    gateway_id = gw.get("id")
    if not isinstance(gateway_id, str) or not is_gateway_id(gateway_id):
        raise SettingsError(
            f"{path}: [gateway] id {gateway_id!r} must be 3-64 characters a-z, 0-9 or - "
            "(the fleet's name for this gateway)"
        )
    data_dir = _path(
        _typed(f"{path}: [gateway] data_dir", gw.get("data_dir", DEFAULT_DATA_DIR), str, "a path"),
        base,
    )
    initial = gw.get("initial_config")
    initial_path = (
        _path(_typed(f"{path}: [gateway] initial_config", initial, str, "a path"), base)
        if initial
        else None
    )
    dirs = gw.get("profile_dirs", [])
    if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
        raise SettingsError(f"{path}: [gateway] profile_dirs must be a list of folder paths")

    m = raw.get("mqtt")
    if not isinstance(m, dict) or not m.get("host"):
        raise SettingsError(f"{path}: [mqtt] host is missing: the address of the fleet's broker")
    where = f"{path}: [mqtt]"
    password = m.get("password")
    if "password_file" in m:
        if password is not None:
            raise SettingsError(f"{where}: give password or password_file, not both")
        password = _read_secret(f"{where} password_file", m["password_file"], base)
    tls = _typed(f"{where} tls", m.get("tls", True), bool, "true or false")
    files = {}
    for k in ("ca_file", "cert_file", "key_file"):
        if m.get(k):
            p = _path(_typed(f"{where} {k}", m[k], str, "a path"), base)
            if not p.exists():
                raise SettingsError(f"{where} {k}: {p} does not exist")
            files[k] = str(p)
    if ("cert_file" in files) != ("key_file" in files):
        raise SettingsError(f"{where}: a client certificate needs both cert_file and key_file")
    port = _typed(f"{where} port", m.get("port", 8883 if tls else 1883), int, "a port number")
    if not 1 <= port <= 65535:
        raise SettingsError(f"{where} port: {port} is not a port number 1..65535")
    mqtt = MqttSettings(
        host=_typed(f"{where} host", m["host"], str, "a host name or address"),
        port=port,
        tls=tls,
        ca_file=files.get("ca_file"),
        cert_file=files.get("cert_file"),
        key_file=files.get("key_file"),
        username=m.get("username"),
        password=password,
        client_id=m.get("client_id"),
        keepalive_s=_typed(f"{where} keepalive_s", m.get("keepalive_s", 30), int, "seconds"),
    )
    try:
        mqtt.tls_context()
    except ValueError as exc:
        raise SettingsError(f"{where}: {exc}") from None

    s = raw.get("signing", {})
    where = f"{path}: [signing]"
    if "key" in s and "key_file" in s:
        raise SettingsError(f"{where}: give key or key_file, not both")
    if "key_file" in s:
        text = _read_secret(f"{where} key_file", s["key_file"], base)
    elif "key" in s:
        text = _typed(f"{where} key", s["key"], str, "hex digits")
    else:
        raise SettingsError(
            f"{where}: key_file (or key) is missing: the key the fleet signs this gateway's "
            "configuration with"
        )
    keys = [_key(f"{where} key", text)]
    for i, k in enumerate(s.get("previous_keys", [])):
        keys.append(_key(f"{where} previous_keys[{i}]", _typed(where, k, str, "hex digits")))

    st = raw.get("store", {})
    sync = str(st.get("synchronous", "FULL")).upper()
    if sync not in ("FULL", "NORMAL"):
        raise SettingsError(f"{path}: [store] synchronous must be FULL or NORMAL")
    live = float(
        _typed(
            f"{path}: [store] live_window_s",
            st.get("live_window_s", 120.0),
            (int, float),
            "seconds",
        )
    )
    interval = float(
        _typed(
            f"{path}: [status] interval_s",
            raw.get("status", {}).get("interval_s", 60.0),
            (int, float),
            "seconds",
        )
    )
    return Settings(
        path=path,
        gateway_id=gateway_id,
        data_dir=data_dir,
        mqtt=mqtt,
        signing_keys=tuple(keys),
        initial_config=initial_path,
        profile_dirs=tuple(str(_path(d, base)) for d in dirs),
        store_synchronous=sync,
        live_window_s=live,
        status_interval_s=interval,
    )
