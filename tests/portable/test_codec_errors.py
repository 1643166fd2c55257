"""Bad input to the telemetry codec: what the encoder refuses and how the decoder rejects
malformed, truncated and hostile batches (always with CodecError)."""

from codec_vectors import DOC_BYTES, DOC_GAP_BYTES, T0, V1
from portable import raises

from protocols.codec import CodecError, decode_batch, encode_batch


def test_encoder_rejects_what_it_cannot_send():
    nan = float("nan")
    cases = [
        ([(V1, T0, 1.0), (V1, T0, 2.0)], "two readings"),
        ([(V1, T0, nan)], "not a finite number"),
        ([(V1, T0, float("inf"))], "not a finite number"),
        ([(V1, T0, "230")], "not a number"),
        ([(V1, -1, 230.0)], "ts_ms"),
        ([(V1, 1.5, 230.0)], "ts_ms"),
        ([(-1, T0, 230.0)], "channel"),
        ([(V1, T0, 1e30)], "too large"),
    ]
    for readings, words in cases:
        err = raises(CodecError, encode_batch, 1, readings)
        assert words in str(err), str(err)
    assert "seq" in str(raises(CodecError, encode_batch, -1, []))
    assert "seq" in str(raises(CodecError, encode_batch, 2**53, []))
    err = raises(CodecError, encode_batch, 1, [(V1, T0, 1.0)], resolution={V1: 0.3})
    assert "1, 2 or 5" in str(err)


def test_decoder_rejects_malformed_batches_with_codec_errors():
    raises(CodecError, decode_batch, b"")
    raises(CodecError, decode_batch, "b1000500")
    assert "first byte" in str(raises(CodecError, decode_batch, b"\x7b" + DOC_BYTES[1:]))
    assert "flags" in str(raises(CodecError, decode_batch, b"\xb1\x80" + DOC_BYTES[2:]))
    assert "unexpected bytes" in str(raises(CodecError, decode_batch, DOC_BYTES + b"\x00"))
    for cut in range(len(DOC_BYTES)):
        raises(CodecError, decode_batch, DOC_BYTES[:cut])
    for cut in range(len(DOC_GAP_BYTES)):
        raises(CodecError, decode_batch, DOC_GAP_BYTES[:cut])
    long_varint = b"\xb1\x00" + b"\xff" * 11 + b"\x01" + b"\x00" * 8
    assert "longer than 10 bytes" in str(raises(CodecError, decode_batch, long_varint))


def test_decoder_checks_claims_before_allocating():
    # one group claiming a billion timestamps in a few bytes
    huge = b"\xb1\x00\x01\x00\x01\x01\x02\x80\x94\xeb\xdc\x03\x01\x1e\x00\x00"
    assert "timestamps" in str(raises(CodecError, decode_batch, huge))
    # a constant column is one byte however many cells it fills: the reading limit holds
    many = encode_batch(1, [(V1, T0 + i, 230.0) for i in range(50)])
    assert len(decode_batch(many).readings) == 50
    assert "more than 49" in str(raises(CodecError, decode_batch, many, 49))


def test_decoder_rejects_non_canonical_groups():
    # device ids must ascend: swap the two groups of the documented example
    g1 = DOC_BYTES[10:29]
    g2 = DOC_BYTES[29:]
    assert "device id" in str(raises(CodecError, decode_batch, DOC_BYTES[:10] + g2 + g1))
    # a presence bitmap in which a channel has no value at all
    bad = bytearray(DOC_GAP_BYTES)
    assert bad[21] == 0x2F
    bad[21] = 0x07
    assert "no values" in str(raises(CodecError, decode_batch, bytes(bad)))


def test_memoryview_input():
    assert decode_batch(memoryview(DOC_BYTES)).readings == decode_batch(DOC_BYTES).readings
