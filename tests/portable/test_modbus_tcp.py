# Modbus TCP stream framing on CPython and MicroPython ([TCP] MODBUS Messaging on TCP/IP
# Implementation Guide V1.0b, 3.1.3: the MBAP header).
from portable import raises

from protocols import modbus as m

H = bytes.fromhex
READ = H("03006B0003")


def test_tcp_parser_frames_a_stream():
    a = m.tcp_frame(1, 17, READ)
    b = m.tcp_frame(2, 17, H("8302"))
    parser = m.TcpParser()
    parser.feed(a + b[:3])
    assert parser.next_frame() == (1, 17, READ)
    assert parser.next_frame() is None
    for x in b[3:]:
        parser.feed(bytes((x,)))
    assert parser.next_frame() == (2, 17, H("8302"))
    parser.feed(H("0001000100060103"))  # protocol id 1
    assert "protocol id 1" in str(raises(m.FrameError, parser.next_frame))
    raises(m.FrameError, parser.feed, a)  # the stream is out of step until reset()
    parser.reset()
    parser.feed(H("000100000001FF"))  # length 1: no PDU
    raises(m.FrameError, parser.next_frame)
