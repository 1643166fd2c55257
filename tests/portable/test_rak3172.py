from portable import raises

from protocols import rak3172 as rak
from protocols import rak3172_sim as sim


def feed_bytewise(parser, data):
    events = []
    for i in range(len(data)):
        events.extend(parser.feed(data[i : i + 1]))
    return events


def test_commands_are_the_manuals_strings():
    # RUI3 AT Command Manual / RAK3172 quick start: P2P set-up, receive, send
    assert rak.SET_P2P_MODE == b"AT+NWM=0\r\n"
    assert rak.set_network_mode(rak.MODE_LORAWAN) == b"AT+NWM=1\r\n"
    assert rak.set_p2p_params(868000000, 7, 125, 0, 10, 14) == b"AT+P2P=868000000:7:125:0:10:14\r\n"
    assert rak.RECEIVE_CONTINUOUS == rak.receive(rak.RX_CONTINUOUS) == b"AT+PRECV=65534\r\n"
    assert rak.STOP_RECEIVE == rak.receive(0) == b"AT+PRECV=0\r\n"
    assert rak.receive(rak.RX_UNTIL_FIRST) == b"AT+PRECV=65535\r\n"
    assert rak.send(b"\x03\xaa\x32") == b"AT+PSEND=03AA32\r\n"
    assert rak.set_p2p_param("AT+PBW", 250) == b"AT+PBW=250\r\n"
    assert rak.set_p2p_param("AT+PFREQ", 868100000) == b"AT+PFREQ=868100000\r\n"
    assert (rak.QUERY_VERSION, rak.RESET) == (b"AT+VER=?\r\n", b"ATZ\r\n")


def test_command_values_out_of_range_are_refused_with_the_name():
    assert "bandwidth_khz" in str(
        raises(rak.AtCommandError, rak.set_p2p_params, 868000000, 7, 100, 0, 8, 14)
    )
    assert "spreading_factor" in str(
        raises(rak.AtCommandError, rak.set_p2p_params, 868000000, 13, 125, 0, 8, 14)
    )
    raises(rak.AtCommandError, rak.set_p2p_params, 1000, 7, 125, 0, 8, 14)
    raises(rak.AtCommandError, rak.set_p2p_param, "AT+PTP", 30)
    raises(rak.AtCommandError, rak.set_p2p_param, "AT+FOO", 1)
    raises(rak.AtCommandError, rak.set_network_mode, 3)
    raises(rak.AtCommandError, rak.receive, 70000)
    raises(rak.AtCommandError, rak.send, b"")
    raises(rak.AtCommandError, rak.send, bytes(251))


def test_session_fed_byte_by_byte():
    uart = (
        b"AT+VER=4.0.6\r\nOK\r\n"  # RUI3 answers a query with the command name
        b"\r\nOK\r\n"
        b"+EVT:RXP2P:-60:9:0102AB\r\n"  # RAK3172 migration guide format
        b"+EVT:RXP2P:-112:-7:11A1B2C3D4\r\n"
        b"AT_BUSY_ERROR\r\n"
        b"+EVT:TXP2P DONE\r\n"
        b"+EVT:RXP2P RECEIVE TIMEOUT\r\n"
        b"Current Work Mode: LoRa P2P.\r\n"
    )
    events = feed_bytewise(rak.AtParser(), uart)
    assert events == [
        rak.AtValue("AT+VER", "4.0.6"),
        rak.OK,
        rak.OK,
        rak.RxP2P(-60, 9, b"\x01\x02\xab"),
        rak.RxP2P(-112, -7, b"\x11\xa1\xb2\xc3\xd4"),
        rak.AtError("AT_BUSY_ERROR", rak.STATUS_MEANINGS["AT_BUSY_ERROR"], ""),
        rak.TX_DONE,
        rak.RX_TIMEOUT,
        rak.AtText("Current Work Mode: LoRa P2P."),
    ]


def test_whole_buffer_gives_the_same_events_as_byte_by_byte():
    uart = b"OK\n+EVT:RXP2P:-60:9:AABB\r\nAT_PARAM_ERROR\n+EVT:JOINED\r\n"
    assert rak.AtParser().feed(uart) == feed_bytewise(rak.AtParser(), uart)
    assert rak.AtParser().feed(uart)[3] == rak.AtEvent("JOINED")


def test_pre_rui3_two_line_receive_event():
    # RAK3172 AT migration guide: old firmware sends the header, then the payload on its own line
    p = rak.AtParser()
    assert p.feed(b"+EVT:RXP2P, RSSI -60, SNR 11\r\n") == []
    assert p.feed(b"+EVT:AABBCCDD\r\n") == [rak.RxP2P(-60, 11, b"\xaa\xbb\xcc\xdd")]
    events = p.feed(b"+EVT:RXP2P, RSSI -60, SNR 11\r\nOK\r\n")
    assert isinstance(events[0], rak.MalformedLine) and events[1] == rak.OK


def test_status_with_an_explanation_in_front():
    # RUI3 v4 prints a reason before the code when P2P receive blocks a setting
    e = rak.AtParser().feed(
        b"P2P_RX_ON already, please disable P2P RX before setting. AT_BUSY_ERROR\r\n"
    )[0]
    assert e.code == "AT_BUSY_ERROR" and e.detail.startswith("P2P_RX_ON")
    assert rak.AtParser().feed(b"AT_SOMETHING_NEW\r\n")[0] == rak.AtError(
        "AT_SOMETHING_NEW", "unknown status code", ""
    )


def test_malformed_receive_events_are_reported_and_parsing_goes_on():
    p = rak.AtParser()
    events = p.feed(
        b"+EVT:RXP2P:-60:9:ABC\r\n+EVT:RXP2P:-60:9:XY\r\n+EVT:RXP2P:loud:9:AB\r\n+EVT:RXP2P:-60\r\nOK\r\n"
    )
    assert [type(e) for e in events[:4]] == [rak.MalformedLine] * 4
    assert events[4] == rak.OK


def test_long_line_is_discarded_once_and_parsing_recovers():
    p = rak.AtParser(max_line_bytes=40)
    events = p.feed(b"+EVT:RXP2P:-60:9:" + b"AB" * 30)
    events += p.feed(b"CD" * 500)
    assert events == [rak.LineTooLong(40)]
    assert len(p._buf) == 0
    assert p.feed(b"EF\r\nOK\r\n") == [rak.OK]


def test_garbage_and_bare_lf_lines():
    p = rak.AtParser()
    events = p.feed(b"\xff\xfe\x00garbage\nOK\n\n\r\nAT_ERROR\n")
    assert isinstance(events[0], rak.MalformedLine)
    assert events[1:] == [rak.OK, rak.AtError("AT_ERROR", rak.STATUS_MEANINGS["AT_ERROR"], "")]


def test_emulator_parses_what_the_host_builds():
    assert sim.parse_command(rak.set_p2p_params(868000000, 7, 125, 0, 8, 14)) == (
        "AT+P2P",
        "set",
        ("868000000", "7", "125", "0", "8", "14"),
    )
    assert sim.parse_command(rak.QUERY_VERSION) == ("AT+VER", "query", ())
    assert sim.parse_command("AT+PRECV?") == ("AT+PRECV", "help", ())
    assert sim.parse_command(rak.RESET) == ("ATZ", "run", ())
    assert sim.parse_command(b"at\r\n") == ("AT", "run", ())
    assert sim.parse_command(rak.send(b"\x01\x02")).args == ("0102",)
    assert sim.parse_command("AT+P2P=868500000,12,0,0,10,22").args[1] == "12"
    for bad in (b"HELLO", b"AT+P\xffX", "AT+", "AT+P 2P=1", b""):
        raises(rak.AtCommandError, sim.parse_command, bad)


def test_emulator_checks_p2p_arguments():
    assert sim.parse_p2p_args(("868000000", "7", "125", "0", "8", "14")) == (
        868000000,
        7,
        125,
        0,
        8,
        14,
    )
    assert sim.parse_p2p_args(("868000000", "7", "125", "0", "8", "14", "1"))[5] == 14
    assert "bandwidth_khz" in str(
        raises(rak.AtCommandError, sim.parse_p2p_args, ("868000000", "7", "0", "0", "8", "14"))
    )
    raises(rak.AtCommandError, sim.parse_p2p_args, ("868000000", "7", "125"))
    raises(rak.AtCommandError, sim.parse_p2p_args, ("868e6", "7", "125", "0", "8", "14"))


def test_emulator_answers_parse_back_on_the_host():
    p = rak.AtParser()
    uart = (
        sim.format_line("AT+VER=4.0.6")
        + sim.format_line("OK")
        + sim.format_rx_p2p(-71, -3, b"\x00\xff")
    )
    uart += sim.format_line("+EVT:TXP2P DONE") + sim.format_line("AT_PARAM_ERROR")
    events = p.feed(uart)
    assert events[:4] == [
        rak.AtValue("AT+VER", "4.0.6"),
        rak.OK,
        rak.RxP2P(-71, -3, b"\x00\xff"),
        rak.TX_DONE,
    ]
    assert events[4].code == "AT_PARAM_ERROR"
