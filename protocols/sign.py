"""HMAC-SHA256 (RFC 2104, on hashlib.sha256 alone, since MicroPython has no hmac module) and
the signed envelope that carries a configuration document. The signature covers the exact
UTF-8 bytes of the document text; nothing here re-serialises JSON or does any I/O."""

import binascii
import hashlib
import json

ALG = "HMAC-SHA256"
_BLOCK = 64  # SHA-256 block size in bytes
MAX_ENVELOPE_BYTES = 65536


class SignatureError(ValueError):
    """An envelope that is malformed or whose signature does not match: do not apply it."""


def hmac_sha256(key, msg):
    """The 32-byte HMAC-SHA256 of msg under key (both bytes), per RFC 2104."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    ipad = bytearray(_BLOCK)
    opad = bytearray(_BLOCK)
    for i in range(_BLOCK):
        k = key[i] if i < len(key) else 0
        ipad[i] = k ^ 0x36
        opad[i] = k ^ 0x5C
    inner = hashlib.sha256(ipad)
    inner.update(msg)
    outer = hashlib.sha256(opad)
    outer.update(inner.digest())
    return outer.digest()


def equal(a, b):
    """Compare two byte strings in time that depends only on their length, not their content."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0


def _text_bytes(doc):
    if isinstance(doc, str):
        return doc.encode("utf-8")
    raise SignatureError("the signed document must be text (a JSON document as a string)")


def make_envelope(doc, key):
    """The envelope JSON text {"alg", "doc", "sig"} for document text doc under key (bytes).

    Non-ASCII characters are written as UTF-8, not as \\u escapes: MicroPython decodes
    escaped surrogate pairs to other bytes than CPython, which would break the signature."""
    sig = binascii.hexlify(hmac_sha256(key, _text_bytes(doc))).decode()
    env = {"alg": ALG, "doc": doc, "sig": sig}
    try:
        return json.dumps(env, ensure_ascii=False)
    except TypeError:  # MicroPython: no ensure_ascii, and it never escapes
        return json.dumps(env)


def open_envelope(envelope, keys):
    """The document text of an envelope whose signature matches one of keys; else
    SignatureError. keys: one key (bytes) or a list of keys (during a key rotation)."""
    if isinstance(envelope, (bytes, bytearray)):
        if len(envelope) > MAX_ENVELOPE_BYTES:
            raise SignatureError("envelope of %d bytes is too large" % len(envelope))
        try:
            envelope = str(envelope, "utf-8")
        except UnicodeError:
            raise SignatureError("envelope is not UTF-8 text")
    if not isinstance(envelope, str) or len(envelope) > MAX_ENVELOPE_BYTES:
        raise SignatureError("envelope must be JSON text of at most %d bytes" % MAX_ENVELOPE_BYTES)
    try:
        env = json.loads(envelope)
    except MemoryError:  # no verdict on the document: the caller may try again
        raise
    except Exception as e:  # ValueError; RecursionError/RuntimeError on deep nesting
        raise SignatureError("envelope is not valid JSON (%s)" % e)
    if not isinstance(env, dict):
        raise SignatureError("envelope must be a JSON object")
    for k in env:
        if k not in ("alg", "doc", "sig"):
            raise SignatureError("envelope has unknown field %r" % (k,))
    if env.get("alg") != ALG:
        raise SignatureError("envelope alg %r: only %s is accepted" % (env.get("alg"), ALG))
    doc = env.get("doc")
    sig = env.get("sig")
    if not isinstance(doc, str):
        raise SignatureError("envelope doc must be the document as a JSON string")
    if not isinstance(sig, str) or len(sig) != 64:
        raise SignatureError("envelope sig must be 64 hex digits")
    try:
        want = binascii.unhexlify(sig)
    except ValueError:
        raise SignatureError("envelope sig must be 64 hex digits")
    msg = doc.encode("utf-8")
    if isinstance(keys, (bytes, bytearray)):
        keys = (keys,)
    ok = False
    for key in keys:
        if equal(hmac_sha256(key, msg), want):
            ok = True
    if not ok:
        raise SignatureError(
            "signature does not match: the document was changed or signed with another key"
        )
    return doc
