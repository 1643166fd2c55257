"""Modbus server side (meter, simulator): answers request PDUs from a register map. Sans-I/O.
Reach it through protocols.modbus, which loads it on first use.

Sources as in protocols.modbus: [APS] Application Protocol V1.1b3, [SL] Serial Line V1.02.
"""

from protocols.modbus import (
    ILLEGAL_DATA_ADDRESS,
    ILLEGAL_DATA_VALUE,
    ILLEGAL_FUNCTION,
    MAX_PDU_LEN,
    MAX_READ_BITS,
    MAX_READ_REGISTERS,
    MAX_WRITE_COILS,
    MAX_WRITE_REGISTERS,
    FrameError,
    ModbusExceptionResponse,
    RequestError,
    pack_bits,
    register_bytes,
    unpack_bits,
)


def exception_pdu(function, code):
    """Exception answer: function | 0x80, code [APS 7]."""
    return bytes(((function & 0x7F) | 0x80, code))


def read_response_pdu(function, values):
    """Answer to a read: bools for 01/02, register ints or register bytes for 03/04."""
    if function in (1, 2):
        data = pack_bits(values)
    elif function in (3, 4):
        data = register_bytes(values)
    else:
        raise RequestError("function %r is not a read function (1, 2, 3 or 4)" % (function,))
    if len(data) > MAX_PDU_LEN - 2:
        raise RequestError("%d data bytes do not fit one answer" % len(data))
    return bytes((function, len(data))) + data


# Checked as [APS 6] prescribes: unsupported function 01, wrong quantity or structure 03,
# range past 65535 02. read(function, address, count) returns bools (01/02) or register ints
# or bytes (03/04); write(function, address, values) gets bools (05, 15) or register bytes
# (06, 16). A callback raises ModbusExceptionResponse(function, code) to answer with that
# exception (e.g. ILLEGAL_DATA_ADDRESS for an unmapped register); a missing callback makes its
# functions ILLEGAL FUNCTION. Never send the answer to a broadcast (unit 0).
def handle_request(pdu, read=None, write=None):
    """The answer PDU, normal or exception, to a request PDU."""
    if not pdu:
        raise FrameError("empty request PDU")
    function = pdu[0]
    code = ILLEGAL_FUNCTION
    try:
        if 1 <= function <= 6 or function in (15, 16):
            code = _serve(function, pdu, read, write)
            if not isinstance(code, int):
                return code
    except ModbusExceptionResponse as e:
        code = e.code
    return exception_pdu(function, code)


def _serve(function, pdu, read, write):
    # the answer PDU, or the exception code to answer with
    handler = read if function <= 4 else write
    if handler is None:
        return ILLEGAL_FUNCTION
    if len(pdu) < 5:
        return ILLEGAL_DATA_VALUE
    address = pdu[1] << 8 | pdu[2]
    count = pdu[3] << 8 | pdu[4]
    if function in (5, 6):
        if len(pdu) != 5 or (function == 5 and count not in (0, 0xFF00)):
            return ILLEGAL_DATA_VALUE
        write(function, address, [count == 0xFF00] if function == 5 else bytes(pdu[3:5]))
        return bytes(pdu)
    if function <= 4:
        limit = MAX_READ_BITS if function <= 2 else MAX_READ_REGISTERS
        size = 5
    else:
        limit = MAX_WRITE_COILS if function == 15 else MAX_WRITE_REGISTERS
        size = 6 + ((count + 7) >> 3 if function == 15 else 2 * count)
        if len(pdu) > 5 and pdu[5] != size - 6:
            return ILLEGAL_DATA_VALUE
    if not 1 <= count <= limit or len(pdu) != size:
        return ILLEGAL_DATA_VALUE
    if address + count > 0x10000:
        return ILLEGAL_DATA_ADDRESS
    if function > 4:
        write(function, address, unpack_bits(pdu, 6, count) if function == 15 else bytes(pdu[6:]))
        return bytes(pdu[:5])
    values = read(function, address, count)
    got = len(values) >> 1 if isinstance(values, (bytes, bytearray, memoryview)) else len(values)
    if got != count:
        raise ValueError("read callback gave %d values for %d at %d" % (got, count, address))
    return read_response_pdu(function, values)
