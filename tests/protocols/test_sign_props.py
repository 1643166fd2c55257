"""HMAC-SHA256 of protocols/sign.py agrees with CPython's hmac module (CPython only)."""

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from protocols import sign


@given(st.binary(max_size=200), st.binary(max_size=300))
def test_hmac_matches_the_standard_library(key, msg):
    assert sign.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


@given(st.text(max_size=200), st.binary(min_size=1, max_size=64))
def test_any_document_text_survives_the_envelope(doc, key):
    assert sign.open_envelope(sign.make_envelope(doc, key), key) == doc
