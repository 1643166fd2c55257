"""Coverage-guided fuzzing of the Modbus parsers with atheris (not part of the test run).

    pip install atheris && python fuzz/fuzz_modbus.py -max_total_time=600

The first input byte picks a request and a chunk size; the rest is fed to every parser. Any
exception that is not a ModbusError is a finding. Without atheris, pass files to replay them.
"""

import sys

from protocols import modbus as m

REQUESTS = (
    bytes.fromhex("03006B0003"),
    bytes.fromhex("0100130013"),
    bytes.fromhex("0600010003"),
    bytes.fromhex("100001000204000A0102"),
)


def _chunks(data, size):
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def one_input(data: bytes) -> None:
    if not data:
        return
    request = REQUESTS[data[0] & 3]
    size = (data[0] >> 2) + 1
    body = data[1:]
    response = m.RtuResponseParser(1 + (data[0] & 0x7F), request)
    requests = m.RtuRequestParser()
    tcp = m.TcpParser()
    for i, chunk in enumerate(_chunks(body, size)):
        try:
            response.feed(chunk)
        except m.ModbusError:
            pass
        requests.feed(chunk)
        if i % 3 == 2:
            requests.end_of_frame()
        try:
            tcp.feed(chunk)
        except m.ModbusError:
            pass
        for parser in (requests, tcp):
            while True:
                try:
                    frame = parser.next_frame()
                except m.ModbusError:
                    continue
                if frame is None:
                    break
                m.handle_request(frame[-1], lambda f, a, n: [0] * n, lambda f, a, v: None)
    try:
        response.end_of_frame()
    except m.ModbusError:
        pass
    try:
        m.parse_response_pdu(request, body)
    except m.ModbusError:
        pass


def main() -> None:
    try:
        import atheris
    except ImportError:
        for path in sys.argv[1:]:
            with open(path, "rb") as f:
                one_input(f.read())
        return
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
