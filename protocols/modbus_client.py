"""Modbus for the bus master: request PDUs, and response PDUs checked against their request.
Sans-I/O. Reached through protocols.modbus, which loads it on first use.

Sources as in protocols.modbus: [APS] Application Protocol V1.1b3, [SL] Serial Line V1.02.
"""

import struct

from protocols.modbus import (
    MAX_READ_BITS,
    MAX_READ_REGISTERS,
    MAX_WRITE_COILS,
    MAX_WRITE_REGISTERS,
    FrameError,
    ModbusExceptionResponse,
    RequestError,
    UnexpectedLengthError,
    WrongFunctionError,
    _error,
    _hex,
    _request_shape,
    _who,
    function_name,
    pack_bits,
    register_bytes,
    unpack_bits,
)

# Request PDUs [APS 6]


def _check_span(address, count, limit, what):
    if not 1 <= count <= limit:
        raise RequestError("%s count %r is outside 1..%d" % (what, count, limit))
    if not 0 <= address <= 0xFFFF:
        raise RequestError("address %r is outside 0..65535" % (address,))
    if address + count > 0x10000:
        raise RequestError("%d %ss from address %d run past 65535" % (count, what, address))


def read_request_pdu(function, address, count):
    """Read request: 01/02 for 1..2000 bits, 03/04 for 1..125 registers."""
    if function in (3, 4):
        _check_span(address, count, MAX_READ_REGISTERS, "register")
    elif function in (1, 2):
        _check_span(address, count, MAX_READ_BITS, "bit")
    else:
        raise RequestError("function %r is not a read function (1, 2, 3 or 4)" % (function,))
    return struct.pack(">BHH", function, address, count)


def write_single_coil_pdu(address, on):
    """Function 05: the coil becomes 0xFF00 if on, else 0x0000."""
    _check_span(address, 1, 1, "coil")
    return struct.pack(">BHH", 5, address, 0xFF00 if on else 0)


def write_single_register_pdu(address, value):
    """Function 06 with a raw register value 0..65535 (see values.encode)."""
    _check_span(address, 1, 1, "register")
    if not 0 <= value <= 0xFFFF:
        raise RequestError("register value %r is outside 0..65535" % (value,))
    return struct.pack(">BHH", 6, address, value)


def write_multiple_coils_pdu(address, bits):
    """Function 15: 1..1968 coils from truthy/falsy values."""
    _check_span(address, len(bits), MAX_WRITE_COILS, "coil")
    data = pack_bits(bits)
    return struct.pack(">BHHB", 15, address, len(bits), len(data)) + data


def write_multiple_registers_pdu(address, registers):
    """Function 16: 1..123 registers as raw ints or register bytes (see values.encode)."""
    data = register_bytes(registers)
    _check_span(address, len(data) >> 1, MAX_WRITE_REGISTERS, "register")
    return struct.pack(">BHHB", 16, address, len(data) >> 1, len(data)) + data


# Responses


# 01/02: list of bools; 03/04: list of register ints, or with raw=True the register bytes
# (2 per register, big-endian, for values.decode; for 01/02 the packed bits);
# 05: (address, bool); 06: (address, value); 15/16: (address, count).
# ModbusExceptionResponse for an exception answer, FrameError subclasses for a wrong one.
def parse_response_pdu(request_pdu, response_pdu, raw=False):
    """What a response PDU answers to its request."""
    _request_shape(request_pdu)
    if not response_pdu:
        raise FrameError("empty response PDU")
    return _parse(request_pdu, response_pdu, 0, len(response_pdu), raw, None)


def _parse(req, resp, start, end, raw, unit):
    # resp[start:end] is the answer's PDU to the checked request req
    function = req[0]
    got = resp[start]
    size = end - start
    if got != function:
        if got != function | 0x80:
            raise _error(
                WrongFunctionError,
                function,
                got,
                "%s answered %s to %s: a late answer to an earlier request or a second master"
                % (_who(unit), function_name(got), function_name(function)),
            )
        if size != 2:
            raise FrameError("exception answer of %d bytes, expected 2" % size)
        raise ModbusExceptionResponse(function, resp[start + 1], unit)
    if function <= 4:
        count = req[3] << 8 | req[4]
        want = 2 * count if function >= 3 else (count + 7) >> 3
        if size < 2:
            raise FrameError("answer to %s has no byte count" % function_name(function))
        got = resp[start + 1]
        if got != want:
            raise _error(
                UnexpectedLengthError,
                want,
                got,
                "%s sent %d data bytes but %d were asked for: check the profile's block sizes"
                % (_who(unit), got, want),
            )
        if size != got + 2:
            raise FrameError("answer announces %d data bytes but carries %d" % (got, size - 2))
        if raw:
            return bytes(resp[start + 2 : end])
        if function >= 3:
            return list(struct.unpack_from(">%dH" % count, resp, start + 2))
        return unpack_bits(resp, start + 2, count)
    # a write is confirmed by echoing address and value or quantity [APS 6.5, 6.6, 6.11, 6.12]
    for i in range(1, 5):
        if size != 5 or resp[start + i] != req[i]:
            raise FrameError(
                "%s confirmed a write with %s to the request %s: the write may not have "
                "happened as asked" % (_who(unit), _hex(resp[start:end]), _hex(req[:5]))
            )
    value = req[3] << 8 | req[4]
    return (req[1] << 8 | req[2], value == 0xFF00 if function == 5 else value)
