from portable import raises

from protocols import quantities as q


def test_codes_are_unique_and_fit_one_byte():
    codes = [v[0] for v in q.QUANTITIES.values()]
    assert len(codes) == len(set(codes))
    assert all(0 < c < 256 for c in codes)


def test_channel_id_round_trips():
    ch = q.channel_id(513, "energy_import")
    assert q.split_channel(ch) == (513, "energy_import")


def test_unknown_quantity_is_a_key_error():
    raises(KeyError, q.code_of, "flux_capacitance")
