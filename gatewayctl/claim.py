"""Checks of a claim token at the fleet's MQTT broker, the way the gateway will use it: the
token's login (claim id and password derived from its SHA-256, docs/fleet.md) is accepted
only while the token is open. A CONNECT without a request never uses the token up."""

from __future__ import annotations

import hashlib
import ssl
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho

from gatewayctl.errors import GatewayctlError
from gatewayctl.image import parse_mqtt_url


def claim_login(token: str) -> tuple[str, str]:
    """(claim id, password): prov_ + the first 32 hex digits of SHA-256(token), the last 32."""
    h = hashlib.sha256(token.encode()).hexdigest()
    return "prov_" + h[:32], h[32:]


def check_token(
    mqtt_url: str,
    token: str,
    ca_file: Path | None = None,
    timeout_s: float = 10,
    settle_s: float = 2,
) -> None:
    """Returns if the broker accepts the token's login; GatewayctlError otherwise. A refusal
    is retried for settle_s: the fleet lists a new token in the broker's accounts within a
    second of making it."""
    deadline = time.monotonic() + settle_s
    while True:
        try:
            _try_login(mqtt_url, token, ca_file, timeout_s)
            return
        except TokenRefused:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


class TokenRefused(GatewayctlError):
    """The broker refused the claim token's login."""


def _try_login(mqtt_url: str, token: str, ca_file: Path | None, timeout_s: float) -> None:
    fleet = parse_mqtt_url(mqtt_url)
    where = f"{fleet['host']}:{fleet['port']}"
    claim_id, password = claim_login(token)
    done = threading.Event()
    result: dict[str, object] = {}

    def on_connect(
        client: paho.Client, userdata: object, flags: object, rc: object, props: object = None
    ) -> None:  # noqa: E501
        result["rc"] = rc
        done.set()

    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=claim_id)
    client.username_pw_set(claim_id, password)
    client.on_connect = on_connect
    if fleet["tls"]:
        ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        client.tls_set_context(ctx)
    try:
        client.connect(fleet["host"], fleet["port"], keepalive=10)
    except (OSError, ssl.SSLError) as e:
        raise GatewayctlError(
            f"fleet unreachable: its MQTT broker {where} does not accept connections "
            f"({e.strerror if isinstance(e, OSError) and e.strerror else e}): check "
            "--fleet-mqtt and the network"
        ) from None
    client.loop_start()
    try:
        if not done.wait(timeout_s):
            raise GatewayctlError(f"fleet unreachable: no answer from the MQTT broker {where}")
    finally:
        client.disconnect()
        client.loop_stop()
    rc = result["rc"]
    if getattr(rc, "is_failure", bool(rc)):
        raise TokenRefused(
            "claim token refused by the fleet's broker: it is used, expired or revoked "
            f"({rc}); get a new one with `gatewayctl provision` and build again"
        )
