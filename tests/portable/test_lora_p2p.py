from binascii import unhexlify

from portable import raises

from protocols import lora_p2p as p2p
from protocols.lora import LoraEncodeError, LoraPayloadError


def h(text):
    return unhexlify(text.replace(" ", ""))


def test_crc16_check_value():
    # CRC-16/CCITT-FALSE check value from the CRC catalogue (reveng): "123456789" -> 0x29B1
    assert p2p.crc16_ccitt(b"123456789") == 0x29B1


def test_p2p_frame_layout_byte_by_byte():
    frame = p2p.build_p2p_frame("A1B2C3D4", 7, "elsys", h("0100E2"))
    assert frame[:10] == h("11 A1B2C3D4 0007 0100E2")
    assert frame[10:] == p2p.crc16_ccitt(frame[:10]).to_bytes(2, "big")
    assert p2p.parse_p2p_frame(frame) == ("A1B2C3D4", 7, "elsys", h("0100E2"))


def test_p2p_frame_round_trip_with_lowercase_address_and_max_payload():
    payload = bytes(range(241))
    f = p2p.parse_p2p_frame(p2p.build_p2p_frame("00ab00cd", 65535, "milesight_em300_di", payload))
    assert (f.address_hex, f.counter, f.format_name, f.payload) == (
        "00AB00CD",
        65535,
        "milesight_em300_di",
        payload,
    )
    raises(LoraEncodeError, p2p.build_p2p_frame, "00AB00CD", 1, "elsys", bytes(242))
    raises(LoraEncodeError, p2p.build_p2p_frame, "00AB00C", 1, "elsys", b"\x01")
    raises(LoraEncodeError, p2p.build_p2p_frame, "0x00AB00", 1, "elsys", b"\x01")
    raises(LoraEncodeError, p2p.build_p2p_frame, "00AB00CD", 65536, "elsys", b"\x01")


def test_p2p_frame_errors():
    good = p2p.build_p2p_frame("A1B2C3D4", 7, "cayenne_lpp", h("03670110"))
    corrupted = good[:8] + bytes((good[8] ^ 1,)) + good[9:]
    assert "CRC" in raises(LoraPayloadError, p2p.parse_p2p_frame, corrupted).reason
    assert "too short" in raises(LoraPayloadError, p2p.parse_p2p_frame, good[:9]).reason
    other_version = b"\x20" + good[1:-2]
    other_version += p2p.crc16_ccitt(other_version).to_bytes(2, "big")
    assert "version 2" in raises(LoraPayloadError, p2p.parse_p2p_frame, other_version).reason
    bad_format = b"\x1f" + good[1:-2]
    bad_format += p2p.crc16_ccitt(bad_format).to_bytes(2, "big")
    assert "format code 15" in raises(LoraPayloadError, p2p.parse_p2p_frame, bad_format).reason


def test_duplicate_filter_spots_repeats_gaps_and_restarts():
    f = p2p.DuplicateFilter()
    assert f.check("A1B2C3D4", 10) == (False, 0, False)
    assert f.check("A1B2C3D4", 10) == (True, 0, False)
    assert f.check("A1B2C3D4", 11) == (False, 0, False)
    assert f.check("A1B2C3D4", 14) == (False, 2, False)
    assert f.check("00000001", 14) == (False, 0, False)
    assert f.check("A1B2C3D4", 0) == (False, 0, True)
    assert f.check("A1B2C3D4", 65535) == (False, 0, True)
    assert f.check("A1B2C3D4", 1) == (False, 1, False)  # counter wrapped 65535 -> 0 -> 1


def test_duplicate_filter_memory_is_bounded():
    f = p2p.DuplicateFilter(max_devices=3)
    for a in ("00000001", "00000002", "00000003"):
        f.check(a, 5)
    f.check("00000001", 6)  # heard again: now the most recent
    f.check("00000004", 5)  # evicts 00000002, the least recently heard
    assert len(f) == 3
    assert f.check("00000001", 6).duplicate
    assert not f.check("00000002", 5).duplicate
