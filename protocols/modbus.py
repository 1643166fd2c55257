"""Modbus RTU and TCP for gateway and simulator: constants, errors, CRC, framing, wire timing;
parsers load on first use. Sans-I/O: never touches a UART, a socket or a clock.
"""

# Import protocols.modbus only: it hands out the names of its helper modules on first access,
# so a device compiles and keeps only the part it uses. For the master: modbus_client
# (request PDUs, parse_response_pdu), modbus_responses (RtuResponseParser). For a meter or
# simulator: modbus_requests (RtuRequestParser), modbus_server (handle_request, exception_pdu,
# read_response_pdu). Either side: modbus_tcp (TcpParser).
#
# Errors: RequestError (a ValueError) for arguments outside the spec; ModbusError subclasses
# for bytes off the wire, and nothing else for bad bytes.
#
# Sources: [APS] MODBUS Application Protocol Specification V1.1b3; [SL] MODBUS over Serial
# Line Specification and Implementation Guide V1.02; [TCP] MODBUS Messaging on TCP/IP
# Implementation Guide V1.0b (all modbus.org).

import struct

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


# Function codes [APS 6]
READ_COILS = const(1)
READ_DISCRETE_INPUTS = const(2)
READ_HOLDING_REGISTERS = const(3)
READ_INPUT_REGISTERS = const(4)
WRITE_SINGLE_COIL = const(5)
WRITE_SINGLE_REGISTER = const(6)
WRITE_MULTIPLE_COILS = const(15)
WRITE_MULTIPLE_REGISTERS = const(16)

# Exception codes [APS 7]
ILLEGAL_FUNCTION = const(1)
ILLEGAL_DATA_ADDRESS = const(2)
ILLEGAL_DATA_VALUE = const(3)
SERVER_DEVICE_FAILURE = const(4)
ACKNOWLEDGE = const(5)
SERVER_DEVICE_BUSY = const(6)
MEMORY_PARITY_ERROR = const(8)
GATEWAY_PATH_UNAVAILABLE = const(10)
GATEWAY_TARGET_FAILED = const(11)

# Quantities per request [APS 6.1-6.4, 6.11, 6.12]
MAX_READ_BITS = const(2000)
MAX_READ_REGISTERS = const(125)
MAX_WRITE_COILS = const(1968)
MAX_WRITE_REGISTERS = const(123)

MAX_PDU_LEN = const(253)  # [APS 4.1]
RTU_MAX_FRAME_LEN = const(256)  # unit, PDU, CRC [SL 2.5.1]
RTU_EXCEPTION_LEN = const(5)  # unit, function | 0x80, code, CRC
MAX_RTU_UNIT = const(247)  # 248..255 are reserved [SL 2.2]

_CRC_TABLE = None  # bytearray(512): 256 little-endian entries, built on first use

# The tables below are str constants, which stay in flash on a board running from ROMFS; as
# dicts and tuples built at import they took about 2 KB of its heap.

# "<code> <name>" per line [APS 6]
_FUNCTION_NAMES = (
    "\n1 read coils"
    "\n2 read discrete inputs"
    "\n3 read holding registers"
    "\n4 read input registers"
    "\n5 write single coil"
    "\n6 write single register"
    "\n15 write multiple coils"
    "\n16 write multiple registers"
    "\n"
)

# "<code> <name [APS 7]>: <what a technician can do>" per line
_EXCEPTIONS = (
    "\n1 ILLEGAL FUNCTION: check whether the profile should use holding (03) or input (04)"
    " registers"
    "\n2 ILLEGAL DATA ADDRESS: check the profile's addresses (0- or 1-based) and block sizes"
    "\n3 ILLEGAL DATA VALUE: check the register count and the value written"
    "\n4 SERVER DEVICE FAILURE: the device failed on this request: check the device"
    "\n5 ACKNOWLEDGE: the device is still busy with a long request: poll again later"
    "\n6 SERVER DEVICE BUSY: retry later or poll less often"
    "\n8 MEMORY PARITY ERROR: the device reports a memory fault: it needs service"
    "\n10 GATEWAY PATH UNAVAILABLE: check the Modbus gateway's routing to this unit"
    "\n11 GATEWAY TARGET DEVICE FAILED TO RESPOND: check wiring, power and unit id behind the"
    " gateway"
    "\n"
)


def _line(table, code):
    """The text after "<code> " on the line of code in table, or None."""
    i = table.find("\n%d " % code)
    if i < 0:
        return None
    i = table.find(" ", i) + 1
    return table[i : table.find("\n", i)]


_SUBMODULES = {}  # name: loaded module
# The names __getattr__ hands out: "<module> <name> <name> ... " per line
_LAZY = (
    "modbus_client read_request_pdu write_single_coil_pdu write_single_register_pdu"
    " write_multiple_coils_pdu write_multiple_registers_pdu parse_response_pdu \n"
    "modbus_server handle_request exception_pdu read_response_pdu \n"
    "modbus_requests RtuRequestParser \n"
    "modbus_responses RtuResponseParser \n"
    "modbus_tcp TcpParser \n"
)


def __getattr__(name):
    i = _LAZY.find(" %s " % name) if " " not in name else -1
    if i < 0:
        raise AttributeError("module protocols.modbus has no attribute %r" % name)
    start = _LAZY.rfind("\n", 0, i) + 1
    where = "protocols." + _LAZY[start : _LAZY.find(" ", start)]
    module = _SUBMODULES.get(where)
    if module is None:
        module = _SUBMODULES[where] = __import__(where, None, None, (name,))
    return getattr(module, name)


def function_name(function):
    # for messages: "function 0x03 (read holding registers)"
    name = _line(_FUNCTION_NAMES, function & 0x7F)
    if name is None:
        return "function 0x%02X" % function
    return "function 0x%02X (%s%s)" % (function, "exception to " if function & 0x80 else "", name)


def _who(unit):
    return "the device" if unit is None else "unit %d" % unit


def _hex(data):
    return " ".join("%02X" % b for b in data)


# ---------------------------------------------------------------------------------------------
# Errors. The frame errors carry `expected` and `received` (CRCs, units, function codes or
# byte counts); their CRC is checked first, so garbage is a CrcError, never a wrong unit.


# A request cannot be built as asked: an argument is outside the spec's ranges.
class RequestError(ValueError):
    pass


# Base of everything that can go wrong with bytes from the bus or the network.
class ModbusError(Exception):
    pass


# The device answered with exception `code` (`name` per [APS 7]) to `function`. A
# handle_request() callback raises it to answer with that code.
class ModbusExceptionResponse(ModbusError):
    def __init__(self, function, code, unit=None):
        self.function = function & 0x7F
        self.code = code
        self.unit = unit
        entry = _line(_EXCEPTIONS, code) or "UNKNOWN EXCEPTION: the code is not in the spec"
        self.name = entry[: entry.find(":")]
        super().__init__(
            "%s answered %s with exception %02X %s"
            % (_who(unit), function_name(self.function), code, entry)
        )


# A frame is malformed or does not answer the request; base of the errors below.
class FrameError(ModbusError):
    pass


# CRC mismatch (expected: computed from the content, received: carried in the frame).
class CrcError(FrameError):
    pass


# A valid frame came from another unit than the one asked.
class WrongUnitError(FrameError):
    pass


# A valid frame carries another function code than the request.
class WrongFunctionError(FrameError):
    pass


# A valid frame's byte count disagrees with the quantity asked for.
class UnexpectedLengthError(FrameError):
    pass


# The line went silent before the frame was complete (received of expected bytes).
class TruncatedFrameError(FrameError):
    pass


def _error(cls, expected, received, message):
    e = cls(message)
    e.expected = expected
    e.received = received
    return e


def _crc_error(frame):
    n = len(frame)
    computed = crc16(frame[: n - 2])
    carried = frame[n - 2] | frame[n - 1] << 8
    return _error(
        CrcError,
        computed,
        carried,
        "CRC error: computed %04X, frame carries %04X (%s): check wiring, termination, baud "
        "rate and parity, and that no two devices share a unit id"
        % (computed, carried, _hex(frame)),
    )


def _truncated(received, expected, unit):
    return _error(
        TruncatedFrameError,
        expected,
        received,
        "frame from %s ended after %d of %d bytes: check wiring, baud rate and parity"
        % (_who(unit), received, expected),
    )


# ---------------------------------------------------------------------------------------------
# CRC-16/MODBUS [SL 6.2.2]: reflected polynomial 0xA001, initial value 0xFFFF


def _crc_table():
    global _CRC_TABLE
    table = bytearray(512)
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table[2 * i] = crc & 0xFF
        table[2 * i + 1] = crc >> 8
    _CRC_TABLE = table
    return table


# On the wire the CRC goes low byte first, so the CRC of a whole frame including it is 0.
def crc16(data, crc=0xFFFF):
    """Modbus CRC of data, continuing from crc."""
    table = _CRC_TABLE or _crc_table()
    for b in data:
        i = ((crc ^ b) & 0xFF) << 1
        crc = (crc >> 8) ^ table[i] ^ (table[i + 1] << 8)
    return crc


# ---------------------------------------------------------------------------------------------
# Register and bit data [APS 6]


# From register ints 0..65535, or bytes-like passed through after a check.
def register_bytes(registers):
    """Register data as bytes: 2 per register, big-endian."""
    if isinstance(registers, (bytes, bytearray, memoryview)):
        if len(registers) & 1:
            raise RequestError("register data has an odd number of bytes (%d)" % len(registers))
        return bytes(registers)
    for v in registers:
        if not 0 <= v <= 0xFFFF:
            raise RequestError("register value %r is outside 0..65535" % (v,))
    return struct.pack(">%dH" % len(registers), *registers)


# The first bit goes into the LSB of the first byte [APS 6.1].
def pack_bits(bits):
    """Truthy/falsy values packed as Modbus sends bits."""
    out = bytearray((len(bits) + 7) >> 3)
    for i, bit in enumerate(bits):
        if bit:
            out[i >> 3] |= 1 << (i & 7)
    return bytes(out)


def unpack_bits(data, start, count):
    """count bools from the bits packed in data from byte start."""
    return [bool(data[start + (i >> 3)] >> (i & 7) & 1) for i in range(count)]


# ---------------------------------------------------------------------------------------------
# Framing


# 1..247, or 0 (broadcast) for writes only [SL 2.1, 2.2]
def check_rtu_unit(unit, pdu):
    """RequestError unless unit may receive pdu on Modbus RTU."""
    if not 0 <= unit <= MAX_RTU_UNIT:
        raise RequestError(
            "unit id %r is not usable on Modbus RTU (248..255 are reserved): use 1..247" % (unit,)
        )
    if unit == 0 and (not pdu or pdu[0] not in (5, 6, 15, 16)):
        raise RequestError(
            "unit 0 is broadcast: only writes (05, 06, 15, 16) may be broadcast and nobody "
            "answers; address the device by its own unit id 1..247"
        )


def _check_pdu(pdu):
    if not 1 <= len(pdu) <= MAX_PDU_LEN:
        raise RequestError("PDU length %d is outside 1..253 bytes" % len(pdu))


def rtu_frame(unit, pdu):
    """RTU frame: unit, PDU, CRC low byte, CRC high byte [SL 2.5.1]."""
    _check_pdu(pdu)
    check_rtu_unit(unit, pdu)
    frame = bytearray(len(pdu) + 3)
    frame[0] = unit
    frame[1:-2] = pdu
    crc = crc16(memoryview(frame)[:-2])
    frame[-2] = crc & 0xFF
    frame[-1] = crc >> 8
    return bytes(frame)


# MBAP header: transaction id, protocol id 0, length, unit id [TCP 3.1.3]. Any unit 0..255
# is allowed: over TCP, 0 and 255 address the device itself.
def tcp_frame(transaction_id, unit, pdu):
    """Modbus TCP frame: MBAP header and PDU."""
    _check_pdu(pdu)
    if not (0 <= transaction_id <= 0xFFFF and 0 <= unit <= 255):
        raise RequestError("transaction id %r or unit id %r out of range" % (transaction_id, unit))
    return struct.pack(">HHHB", transaction_id, 0, len(pdu) + 1, unit) + bytes(pdu)


# Not when broadcast to unit 0 [SL 2.1]; RequestError for a request that may not go to that
# unit at all. (Over TCP every request is answered.)
def expects_response(unit, pdu):
    """Whether an RTU request is answered."""
    check_rtu_unit(unit, pdu)
    return unit != 0


def rtu_request_len(pdu):
    """Bytes on the wire of an RTU request with this PDU."""
    return len(pdu) + 3


def rtu_response_len(request_pdu):
    """Bytes on the wire of the normal RTU answer (an exception has RTU_EXCEPTION_LEN)."""
    function, count = _request_shape(request_pdu)
    if function <= 2:
        return 5 + ((count + 7) >> 3)
    if function <= 4:
        return 5 + 2 * count
    return 8


def _request_shape(pdu):
    if len(pdu) < 5 or _line(_FUNCTION_NAMES, pdu[0]) is None:
        raise RequestError("%s is not a request of function 1-6, 15 or 16" % _hex(pdu))
    return pdu[0], pdu[3] << 8 | pdu[4]


# ---------------------------------------------------------------------------------------------
# Wire timing [SL 2.5.1.1], for the poll planner and the simulator


# 11 bits: start, 8 data, parity (or a second stop bit), stop
def char_time_s(baud, bits_per_char=11):
    """Time on the wire of one character."""
    if baud <= 0:
        raise ValueError("baud rate must be positive, not %r" % (baud,))
    return bits_per_char / baud


def silence_s(baud, bits_per_char=11):
    """Inter-frame silence t3.5: 3.5 characters, 1.75 ms above 19200 baud."""
    return 0.00175 if baud > 19200 else 3.5 * char_time_s(baud, bits_per_char)


def t15_s(baud, bits_per_char=11):
    """Longest gap inside a frame t1.5: 1.5 characters, 0.75 ms above 19200 baud."""
    return 0.00075 if baud > 19200 else 1.5 * char_time_s(baud, bits_per_char)
