"""Provisioning over MQTT: a gateway holding a claim token asks on prov/<claim id>/request and
gets its identity, credentials and signing key on prov/<claim id>/response. The exchange
itself is fleet.auth.exchange_claim (the same as over HTTPS); this module only speaks JSON.

Request  {"token": "claim_...", "gateway_id": optional, "name": optional, "fw_version": optional}
Response {"ok": true, "gateway_id", "mqtt_username", "mqtt_password", "signing_key",
          "broker_url", "status", "next_seq"}   or   {"ok": false, "error": "..."}"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import Engine

from fleet import audit, auth
from fleet.db.engine import transaction
from fleet.mqtt import store
from protocols import messages
from protocols.codec import CodecError

log = logging.getLogger("fleet.mqtt.provisioning")

_OPTIONAL = {"gateway_id": 64, "name": 200, "fw_version": 32}


class ProvisioningRequestError(ValueError):
    """A malformed provisioning request; the message names the field."""


def parse_request(payload: bytes) -> dict[str, Any]:
    try:
        doc = messages.load_json(payload, "provisioning request")
    except CodecError as e:
        raise ProvisioningRequestError(str(e)) from e
    if not isinstance(doc, dict):
        raise ProvisioningRequestError("provisioning request: must be a JSON object")
    token = doc.get("token")
    if not isinstance(token, str) or not 8 <= len(token) <= 200:
        raise ProvisioningRequestError("provisioning request: token must be the claim token text")
    out: dict[str, Any] = {"token": token}
    for name, max_len in _OPTIONAL.items():
        value = doc.get(name)
        if value is not None and (not isinstance(value, str) or not 1 <= len(value) <= max_len):
            raise ProvisioningRequestError(
                f"provisioning request: {name} must be text of 1 to {max_len} characters"
            )
        out[name] = value
    return out


def encode_response(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode()


def handle_request(engine: Engine, claim_id: str, payload: bytes, broker_url: str) -> bytes:
    """The response to one request on prov/<claim_id>/request (never raises for bad input)."""
    try:
        req = parse_request(payload)
    except ProvisioningRequestError as e:
        return encode_response({"ok": False, "error": str(e)})
    if store.claim_login(req["token"]).username != claim_id:
        return encode_response(
            {
                "ok": False,
                "error": "this claim token belongs to another claim id: connect as "
                "prov_<first 32 hex digits of the token's SHA-256> (docs/fleet.md)",
            }
        )
    now = store.now_ms()
    try:
        with transaction(engine) as conn:
            claimed = auth.exchange_claim(
                conn, req["token"], now, req["gateway_id"], req["name"], req["fw_version"]
            )
            actor = auth.Principal(
                org_id=claimed.org_id, role=auth.VIEWER, gateway_id=claimed.gateway_id
            )
            audit.record(
                conn,
                actor,
                "gateway.claim",
                f"gateway:{claimed.gateway_id}",
                now,
                details={"via": "mqtt", "status": claimed.status},
            )
    except auth.ClaimError as e:
        return encode_response({"ok": False, "error": str(e)})
    log.info("gateway %s claimed over MQTT (%s)", claimed.gateway_id, claimed.status)
    return encode_response({"ok": True, **claimed.as_json(broker_url)})
