import json

from portable import raises

from protocols import sign
from protocols.sign import SignatureError

# RFC 4231 section 4, HMAC-SHA-256 test cases 1-7: (key, data, mac as hex).
_LONG_KEY = b"\xaa" * 131
RFC4231 = [
    (b"\x0b" * 20, b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (
        b"Jefe",
        b"what do ya want for nothing?",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    ),
    (
        b"\xaa" * 20,
        b"\xdd" * 50,
        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
    ),
    (
        bytes(range(1, 26)),
        b"\xcd" * 50,
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
    ),
    # test case 5 is truncated to 128 bits in the RFC
    (b"\x0c" * 20, b"Test With Truncation", "a3b6167473100ee06e0c796c2955552b"),
    (
        _LONG_KEY,
        b"Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    ),
    (
        _LONG_KEY,
        b"This is a test using a larger than block-size key and a larger than block-size data."
        b" The key needs to be hashed before being used by the HMAC algorithm.",
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
    ),
]

KEY = b"gateway-key-0123456789abcdef"
DOC = '{"version": 3, "gateway": "rathaus-1", "meters": [{"name": "Grundschule S\u00fcd \U0001f600"}]}'


def test_hmac_sha256_matches_rfc4231():
    for key, data, mac in RFC4231:
        got = sign.hmac_sha256(key, data)
        assert got.hex()[: len(mac)] == mac, (key[:4], data[:8])


def test_envelope_round_trip_keeps_the_exact_text():
    env = sign.make_envelope(DOC, KEY)
    parsed = json.loads(env)
    assert sorted(parsed) == ["alg", "doc", "sig"]
    assert parsed["alg"] == "HMAC-SHA256"
    assert sign.open_envelope(env, KEY) == DOC
    assert sign.open_envelope(env.encode("utf-8"), KEY) == DOC
    assert "\\u" not in env  # non-ASCII travels as UTF-8, see make_envelope


def test_envelope_signed_by_cpython_opens_with_escaped_bmp_characters():
    # The fleet may send \u escapes for characters of the basic plane: same bytes either way.
    doc = '{"name": "Stra\u00dfe"}'
    sig = sign.hmac_sha256(KEY, doc.encode("utf-8")).hex()
    env = '{"alg": "HMAC-SHA256", "doc": "{\\"name\\": \\"Stra\\u00dfe\\"}", "sig": "%s"}' % sig
    assert sign.open_envelope(env, KEY) == doc


def test_tampered_envelopes_are_rejected():
    env = json.loads(sign.make_envelope(DOC, KEY))
    changed = dict(env)
    changed["doc"] = env["doc"].replace('"version": 3', '"version": 4')
    assert "does not match" in str(
        raises(SignatureError, sign.open_envelope, json.dumps(changed), KEY)
    )
    flipped = dict(env)
    flipped["sig"] = ("0" if env["sig"][0] != "0" else "1") + env["sig"][1:]
    raises(SignatureError, sign.open_envelope, json.dumps(flipped), KEY)
    raises(SignatureError, sign.open_envelope, sign.make_envelope(DOC, KEY), b"another key")


def test_malformed_envelopes_are_rejected_with_reasons():
    good = json.loads(sign.make_envelope(DOC, KEY))
    cases = [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({"alg": "none", "doc": DOC, "sig": good["sig"]}), "alg"),
        (json.dumps({"alg": "HMAC-SHA256", "doc": {"version": 3}, "sig": good["sig"]}), "doc"),
        (json.dumps({"alg": "HMAC-SHA256", "doc": DOC, "sig": "abc"}), "64 hex"),
        (json.dumps({"alg": "HMAC-SHA256", "doc": DOC, "sig": "zz" * 32}), "64 hex"),
        (
            json.dumps({"alg": "HMAC-SHA256", "doc": DOC, "sig": good["sig"], "x": 1}),
            "unknown field",
        ),
        (b"\xff\xfe", "UTF-8"),
        (5, "JSON text"),
    ]
    for env, words in cases:
        err = raises(SignatureError, sign.open_envelope, env, KEY)
        assert words in str(err), str(err)


def test_any_of_several_keys_opens_during_rotation():
    env = sign.make_envelope(DOC, b"new key")
    assert sign.open_envelope(env, [b"old key", b"new key"]) == DOC
    raises(SignatureError, sign.open_envelope, env, [b"old key"])


def test_constant_time_equal():
    assert sign.equal(b"abc", b"abc")
    assert not sign.equal(b"abc", b"abd")
    assert not sign.equal(b"abc", b"ab")


class _NoMemoryJson:
    """A json module whose parser runs out of memory, as on a fragmented board heap."""

    @staticmethod
    def loads(_text):
        raise MemoryError("memory allocation failed, allocating 40 bytes")

    dumps = staticmethod(json.dumps)


def test_out_of_memory_while_parsing_is_no_verdict_on_the_envelope():
    # A MemoryError must reach the caller as such (it may collect and retry), never become
    # "not valid JSON", which would reject a good document for good.
    env = sign.make_envelope(DOC, KEY)
    real = sign.json
    sign.json = _NoMemoryJson
    try:
        raises(MemoryError, sign.open_envelope, env, KEY)
    finally:
        sign.json = real
    assert sign.open_envelope(env, KEY) == DOC
