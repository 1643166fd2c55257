"""First boot of a gateway that holds a provisioning file (written by `gatewayctl build`) and no
identity yet: exchange its claim token over MQTT for the gateway's identity and credentials
(docs/fleet.md, "Provisioning") and write the bootstrap settings file the app runs with.

Loaded only while a gateway has no identity, before the app; never polls meters. A refusal
(token used, expired, revoked) or an unreachable fleet is logged and retried with back-off: a
gateway in a cabinet must never crash-loop, and a technician can fix the file meanwhile.

provision.json:
  {"fleet": {"host", "port", "tls", "ca_file"}, "claim_token": "claim_...",
   "gateway_id": optional, "name": optional, "site": optional (text, for the records),
   "board": the board table of settings.json (network: wifi {ssid, password} or ethernet),
   "settings": optional extra settings.json keys (status_interval_s, ntp_host, ...),
   "retry_min_s": 5, "retry_max_s": 600, "answer_timeout_s": 30}"""

import asyncio
import gc
import json
import os

from firmware.version import FW_VERSION


class ProvisionError(Exception):
    """Provisioning cannot go on with what the gateway has; the message says what to fix."""


class ClaimRefused(ProvisionError):
    """The fleet (or its broker) refused the claim token."""


def pending(settings_path, provision_path):
    """True when there is no settings file yet but a provisioning file."""
    for path, want in ((settings_path, False), (provision_path, True)):
        try:
            os.stat(path)
            found = True
        except OSError:
            found = False
        if found != want:
            return False
    return True


def load(provision_path):
    """The provisioning document; ProvisionError naming what is wrong with it."""
    try:
        with open(provision_path) as f:
            prov = json.load(f)
    except OSError as e:
        raise ProvisionError("cannot read %s (%s)" % (provision_path, e))
    except ValueError as e:
        raise ProvisionError("%s is not valid JSON (%s): write it again" % (provision_path, e))
    fleet = prov.get("fleet") if isinstance(prov, dict) else None
    token = prov.get("claim_token") if isinstance(prov, dict) else None
    if not isinstance(fleet, dict) or not isinstance(fleet.get("host"), str):
        raise ProvisionError("%s: fleet.host (the fleet's MQTT broker) is missing" % provision_path)
    if not isinstance(token, str) or len(token) < 8:
        raise ProvisionError("%s: claim_token is missing" % provision_path)
    return prov


def claim_login(token):
    """(claim id, password) of a claim token: prov_ + the first 32 hex digits of its SHA-256,
    and the last 32 (docs/fleet.md)."""
    import hashlib
    from binascii import hexlify

    h = hexlify(hashlib.sha256(token.encode()).digest()).decode()
    return "prov_" + h[:32], h[32:]


def _ssl(fleet):
    if not fleet.get("tls"):
        return None
    from firmware.app import _tls  # the app's TLS context rules; unloaded with the rest

    return _tls(fleet)


async def exchange(board, prov):
    """The fleet's answer to our claim: {"ok": true, "gateway_id", "mqtt_username",
    "mqtt_password", "signing_key", "broker_url", "status", "next_seq"}. ClaimRefused if the
    fleet said no; firmware.mqtt.MQTTError if it could not be reached or did not answer."""
    from firmware.mqtt import ConnectRefused, MQTTClient, MQTTError

    if not await board.network_up(30):
        raise ProvisionError("no network within 30 s: check the Wi-Fi or Ethernet settings")
    token = prov["claim_token"]
    claim_id, password = claim_login(token)
    fleet = prov["fleet"]
    tls = _ssl(fleet)
    port = fleet.get("port", 8883 if tls else 1883)
    answers = []

    def on_message(topic, payload, retained):
        answers.append(bytes(payload))

    client = MQTTClient(
        claim_id, fleet["host"], port, claim_id, password, 30, ssl=tls,
        timeout_s=fleet.get("timeout_s", 10), on_message=on_message,
    )  # fmt: skip
    try:
        try:
            await client.connect()
        except ConnectRefused:
            raise ClaimRefused(
                "the fleet's broker at %s:%d does not accept this claim token: it is used, "
                "expired, revoked or from another fleet; get a new one (gatewayctl provision) "
                "and write it to the provisioning file" % (fleet["host"], port)
            )
        await client.subscribe("prov/%s/response" % claim_id)
        req = {"token": token, "fw_version": FW_VERSION}
        for k in ("gateway_id", "name"):
            if prov.get(k):
                req[k] = prov[k]
        await client.publish("prov/%s/request" % claim_id, json.dumps(req))
        waited_ms = 0
        limit_ms = int(prov.get("answer_timeout_s", 30) * 1000)
        while not answers:
            if not client.isconnected():
                raise MQTTError("the broker dropped the connection before the fleet answered")
            if waited_ms >= limit_ms:
                raise MQTTError("the fleet did not answer within %d s" % (limit_ms // 1000))
            await asyncio.sleep_ms(100)
            waited_ms += 100
    finally:
        await client.disconnect()
    try:
        answer = json.loads(answers[0])
    except ValueError:
        raise ProvisionError("the fleet's answer is not JSON: %r" % answers[0][:80])
    if not answer.get("ok"):
        raise ClaimRefused("the fleet refused the claim token: %s" % answer.get("error"))
    return answer


def settings_from(prov, ident):
    """The bootstrap settings (firmware/app.py) of a provisioned gateway. The gateway keeps the
    broker address it provisioned through (it is known to work from this site); the fleet's
    broker_url is recorded beside it."""
    fleet = prov["fleet"]
    mqtt = {"host": fleet["host"], "user": ident["mqtt_username"]}
    mqtt["password"] = ident["mqtt_password"]
    for k in ("port", "tls", "ca_file", "keepalive_s", "timeout_s"):
        if k in fleet:
            mqtt[k] = fleet[k]
    s = {
        "gateway": ident["gateway_id"],
        "board": prov.get("board") or {},
        "mqtt": mqtt,
        "keys": [],
        "keys_hex": [ident["signing_key"]],  # the fleet signs with the key's bytes
        "provisioned": {
            "site": prov.get("site"),
            "status": ident.get("status"),
            "broker_url": ident.get("broker_url"),
        },
    }
    extra = prov.get("settings") or {}
    for k in extra:
        if k not in s:
            s[k] = extra[k]
    return s


def write_json(path, data):
    """Replace path with data as JSON: a power cut leaves no file or the whole new one."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.rename(tmp, path)


async def run(board, settings_path, provision_path):
    """Provision until it succeeds: returns the settings written to settings_path."""
    from firmware.mqtt import MQTTError, backoff_ms

    failures = 0
    while True:
        min_s, max_s = 5, 600
        try:
            prov = load(provision_path)
            min_s = prov.get("retry_min_s", min_s)
            max_s = prov.get("retry_max_s", max_s)
            print("provision: claiming an identity at %s" % prov["fleet"]["host"])
            ident = await exchange(board, prov)
            settings = settings_from(prov, ident)
            write_json(settings_path, settings)
            print(
                "provision: this gateway is %s (%s); settings written to %s"
                % (ident["gateway_id"], ident.get("status"), settings_path)
            )
            return settings
        except ProvisionError as e:
            print("provision: %s" % e)
        except (MQTTError, OSError) as e:
            print("provision: the fleet is unreachable (%s); check the network and fleet.host" % e)
        except (KeyError, TypeError, ValueError) as e:  # a malformed answer or file
            print("provision: unexpected data (%r)" % e)
        except MemoryError:  # a fragmented heap may do better after a collection
            print("provision: out of memory during the exchange")
        failures += 1
        wait_ms = backoff_ms(failures - 1, int(min_s * 1000), int(max_s * 1000))
        print(
            "provision: attempt %d failed; next in %d.%d s"
            % (failures, wait_ms // 1000, wait_ms % 1000 // 100)
        )
        gc.collect()
        await asyncio.sleep_ms(wait_ms)


def boot(settings_path, board=None):
    """At boot, before the app: when the flash holds provision.json beside settings_path and
    no settings_path, provision (blocking until it succeeded) and return True; otherwise
    return False at once. Either way this module is unloaded afterwards, so the running
    gateway never carries it. board: a Board, or None to load the one named in the
    provisioning file's board table."""
    cut = settings_path.rfind("/") + 1
    provision_path = settings_path[:cut] + "provision.json"
    ran = pending(settings_path, provision_path)
    if ran:
        if board is None:
            import sys

            from firmware.boards import load as load_board

            try:
                table = load(provision_path).get("board") or {}
            except ProvisionError:
                table = {}  # run() reports the problem and waits for a fixed file
            port = "unix" if sys.platform in ("linux", "darwin") else sys.platform
            board = load_board(table.get("name", port), table)
        asyncio.run(run(board, settings_path, provision_path))
    _unload(ran)
    return ran


def _unload(ran):
    """Forget the modules provisioning loaded: the app starts with the heap it always has."""
    import sys

    import firmware

    for name in ("provision", "mqtt", "app", "configmgr") if ran else ("provision",):
        sys.modules.pop("firmware." + name, None)
        if name in firmware.__dict__:
            delattr(firmware, name)
    if ran:
        asyncio.new_event_loop()
    gc.collect()
