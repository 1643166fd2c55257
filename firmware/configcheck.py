"""The heavy half of firmware/configmgr.py, imported only while a desired configuration is
checked and unloaded afterwards: signature, schema validation, the decision to apply or
reject. Never imported by anything but ConfigManager."""

import gc
import json

from firmware.configmgr import APPLIED, REJECTED, ApplyError, unload, version_of


def validate(mgr, doc):
    """The document with defaults, or protocols.config.ConfigError (a ValueError) listing
    every problem."""
    gc.collect()
    from protocols.config import ConfigError, check_config

    if isinstance(doc, dict) and doc.get("gateway") not in (None, mgr.gateway_id):
        raise ConfigError(
            ["gateway: the document is for %r, this is %r" % (doc.get("gateway"), mgr.gateway_id)]
        )
    return check_config(doc, mgr.known_profiles, mgr.known_formats)


async def _reject(mgr, version, reason, desired=0):
    mgr.rejections += 1
    desired = version or desired
    reason = reason[:2000]
    if version:
        mgr._verdict(version, REJECTED, reason)
    print("config: desired version %s rejected: %s" % (desired or "?", reason))
    await mgr._report(version_of(mgr.running), desired, REJECTED, reason)
    return REJECTED


async def handle(mgr, payload):
    """Verify, validate and apply one desired envelope for ConfigManager mgr; returns the
    reported status."""
    running = version_of(mgr.running)
    gc.collect()
    from protocols.sign import SignatureError, open_envelope

    try:
        text = open_envelope(payload, mgr.keys)
    except SignatureError as e:  # a MemoryError passes through: no verdict on the document
        return await _reject(mgr, None, "signature: %s" % e)
    try:
        doc = json.loads(text)
    except ValueError as e:
        return await _reject(mgr, None, "the signed document is not JSON: %s" % e)
    desired = doc.get("version") if isinstance(doc, dict) else None
    if not isinstance(desired, int) or desired is True or desired is False:
        desired = 0
    if desired and desired == running:
        await mgr._report(running, desired, APPLIED, None)
        return APPLIED
    if desired and desired < running:
        return await _reject(
            mgr,
            None,
            "version %d is older than the running version %d: a new configuration needs "
            "a higher version" % (desired, running),
            desired,
        )
    verdict = mgr.verdicts.get(str(desired))
    if verdict is not None:  # delivered again: repeat the answer, do not retry
        await mgr._report(running, desired, verdict[0], verdict[1])
        return verdict[0]
    try:
        new = validate(mgr, doc)
    except ValueError as e:  # ConfigError
        return await _reject(mgr, desired or None, str(e))
    doc = text = None
    unload()
    if mgr.last_good is None:
        mgr.last_good = mgr.running
        mgr._save_last_good()
    old = mgr.running
    mgr.running = new
    mgr.trial = True
    mgr.trial_since_ms = mgr.now_ms()
    report = [desired, desired, APPLIED, None]
    mgr._save_running(0, report)
    try:
        if await mgr._apply(new):
            return APPLIED  # reported after the restart
    except ApplyError as e:
        mgr.running = old
        mgr.trial = False
        mgr._save_running()
        return await _reject(mgr, desired, "could not be applied: %s" % e)
    mgr._save_running()
    await mgr._report(*report)
    return APPLIED
