"""RAK3172 (RUI3 firmware) AT interface in LoRa P2P mode: command builders and a byte-fed line
parser that turns the module's UART output into events. Sans-I/O: no UART, clock or sleep here.
(protocols/rak3172_sim.py is the other side, for emulating the module.)

Facts from RAKwireless' RUI3 AT Command Manual and RAK3172 quick start guide (docs.rakwireless.com,
RUI3 v4) and the RUI3 sources (RAKWireless/RAK-STM32-RUI, atcmd.c); see docs/lora.md.
"""

from binascii import unhexlify
from collections import namedtuple

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


MAX_LINE_BYTES = const(600)  # longest legal line: "+EVT:RXP2P:<rssi>:<snr>:" + 500 hex digits
MAX_PAYLOAD_BYTES = const(250)  # AT+PSEND takes 2..500 hex digits

MODE_P2P_LORA = const(0)  # AT+NWM network working modes; changing the mode restarts the module
MODE_LORAWAN = const(1)
MODE_P2P_FSK = const(2)

RX_STOP = const(0)  # AT+PRECV windows. Leave receive mode (needed before AT+PSEND and AT+P2P=...)
RX_CONTINUOUS = const(65534)  # receive until AT+PRECV=0
RX_UNTIL_FIRST = const(65535)  # receive without timeout, stop after the first packet
# 1..65533: receive for that many ms, then "+EVT:RXP2P RECEIVE TIMEOUT" if nothing came

# Complete commands, CRLF included
ATTENTION = b"AT\r\n"
RESET = b"ATZ\r\n"  # answers with the boot banner, not OK
QUERY_VERSION = b"AT+VER=?\r\n"
QUERY_NETWORK_MODE = b"AT+NWM=?\r\n"
SET_P2P_MODE = b"AT+NWM=0\r\n"
QUERY_P2P = b"AT+P2P=?\r\n"
RECEIVE_CONTINUOUS = b"AT+PRECV=65534\r\n"
STOP_RECEIVE = b"AT+PRECV=0\r\n"

# Status codes that end a command (RUI3 atcmd.c error table; the pre-RUI3 firmware adds
# AT_DUTYCYLE_RESTRICTED, spelled as in its manual): "<code> <meaning>" per line, one str
# constant that stays in flash on a board; STATUS_MEANINGS is the dict of it, for the host.
_STATUS = (
    "\nAT_ERROR generic error or command not supported"
    "\nAT_PARAM_ERROR a parameter of the command is wrong or malformed"
    "\nAT_BUSY_ERROR module busy; in P2P receive mode send AT+PRECV=0 before sending or"
    " reconfiguring"
    "\nAT_TEST_PARAM_OVERFLOW a parameter is too long"
    "\nAT_NO_CLASSB_ENABLE LoRaWAN class B not enabled"
    "\nAT_NO_NETWORK_JOINED not joined to a LoRaWAN network"
    "\nAT_RX_ERROR error detected while receiving the command"
    "\nAT_MODE_NO_SUPPORT command not available in this network mode (check AT+NWM)"
    "\nAT_COMMAND_NOT_FOUND unknown command"
    "\nAT_DUTYCYLE_RESTRICTED duty cycle limit reached, cannot send now"
    "\n"
)


def _status_meaning(code):
    i = _STATUS.find("\n%s " % code) if " " not in code and "\n" not in code else -1
    if i < 0:
        return "unknown status code"
    return _STATUS[i + len(code) + 2 : _STATUS.find("\n", i + 1)]


# Parser events
AtOk = namedtuple("AtOk", "")
AtError = namedtuple("AtError", "code meaning detail")
AtValue = namedtuple("AtValue", "name value")  # "AT+VER=4.0.6" -> ("AT+VER", "4.0.6")
AtText = namedtuple("AtText", "text")  # any other line: boot banner, pre-RUI3 query values
AtEvent = namedtuple("AtEvent", "name")  # "+EVT:<name>" other than received data
RxP2P = namedtuple("RxP2P", "rssi_dbm snr_db payload")  # a received P2P packet
LineTooLong = namedtuple("LineTooLong", "limit_bytes")  # line discarded
MalformedLine = namedtuple("MalformedLine", "reason line")  # line not understood, skipped

OK = AtOk()
TX_DONE = AtEvent("TXP2P DONE")  # after AT+PSEND's OK, once the packet is on air
RX_TIMEOUT = AtEvent("RXP2P RECEIVE TIMEOUT")
RX_ERROR = AtEvent("RXP2P RECEIVE ERROR")

# AT+P2P=<freq>:<sf>:<bw>:<cr>:<preamble>:<txp> fields: "<command> <name> <min> <max>" per
# line, P2P_FIELDS the tuple of (command, name, min, max) of them, for the host.
_P2P = (
    "AT+PFREQ frequency_hz 150000000 960000000\n"
    "AT+PSF spreading_factor 5 12\n"
    "AT+PBW bandwidth_khz 125 500\n"  # 125, 250 or 500
    "AT+PCR coding_rate 0 3\n"  # 0 = 4/5, 1 = 4/6, 2 = 4/7, 3 = 4/8
    "AT+PPL preamble 5 65535\n"
    "AT+PTP tx_power_dbm 5 22"
)


def _p2p_field(i):
    f = _P2P.split("\n")[i].split()
    return f[0], f[1], int(f[2]), int(f[3])


def __getattr__(name):
    global STATUS_MEANINGS, P2P_FIELDS
    # Built on first use and kept (later lookups find the global); the parser does without.
    if name == "STATUS_MEANINGS":
        table = {}
        for line in _STATUS.split("\n")[1:-1]:
            code, meaning = line.split(" ", 1)
            table[code] = meaning
        STATUS_MEANINGS = table
        return table
    if name == "P2P_FIELDS":
        fields = ()
        for i in range(6):
            fields += (_p2p_field(i),)
        P2P_FIELDS = fields
        return fields
    raise AttributeError("module protocols.rak3172 has no attribute %r" % (name,))


class AtCommandError(ValueError):
    """A command that cannot be built or parsed; the message says which value is wrong."""


def check_p2p_value(field, value):
    """value if it is valid for field number `field` of P2P_FIELDS, else AtCommandError."""
    _, name, lo, hi = _p2p_field(field)
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not lo <= value <= hi
        or (field == 2 and value not in (125, 250, 500))
    ):
        allowed = "125, 250 or 500" if field == 2 else "%d..%d" % (lo, hi)
        raise AtCommandError("%s %r must be %s" % (name, value, allowed))
    return value


def _is_hex(text):
    if not text or len(text) % 2:
        return False
    for c in text:
        if c not in "0123456789abcdefABCDEF":
            return False
    return True


def set_network_mode(mode):
    """AT+NWM=<mode>: MODE_P2P_LORA, MODE_LORAWAN or MODE_P2P_FSK. The module then restarts."""
    if mode not in (0, 1, 2):
        raise AtCommandError(
            "network mode %r must be 0 (P2P LoRa), 1 (LoRaWAN) or 2 (P2P FSK)" % (mode,)
        )
    return b"AT+NWM=%d\r\n" % mode


def set_p2p_params(
    frequency_hz, spreading_factor, bandwidth_khz, coding_rate, preamble, tx_power_dbm
):
    """AT+P2P=<Hz>:<SF 5..12>:<kHz 125|250|500>:<CR 0..3>:<preamble 5..65535>:<dBm 5..22>.

    Rejected with AT_BUSY_ERROR while the module is in receive mode: send STOP_RECEIVE first."""
    values = (frequency_hz, spreading_factor, bandwidth_khz, coding_rate, preamble, tx_power_dbm)
    for i in range(6):
        check_p2p_value(i, values[i])
    return b"AT+P2P=%d:%d:%d:%d:%d:%d\r\n" % values


def set_p2p_param(command, value):
    """One P2P parameter with its own command: AT+PFREQ, AT+PSF, AT+PBW, AT+PCR, AT+PPL, AT+PTP."""
    for i in range(6):
        if _p2p_field(i)[0] == command:
            return b"%s=%d\r\n" % (command.encode(), check_p2p_value(i, value))
    raise AtCommandError(
        "%r is not one of AT+PFREQ, AT+PSF, AT+PBW, AT+PCR, AT+PPL, AT+PTP" % (command,)
    )


def receive(window):
    """AT+PRECV=<window>: RX_STOP, a window of 1..65533 ms, RX_CONTINUOUS or RX_UNTIL_FIRST."""
    if not isinstance(window, int) or not 0 <= window <= 65535:
        raise AtCommandError("receive window %r must be 0..65535" % (window,))
    return b"AT+PRECV=%d\r\n" % window


def send(payload):
    """AT+PSEND=<hex> for 1..250 bytes. The module answers OK, then TX_DONE when sent."""
    if not 1 <= len(payload) <= MAX_PAYLOAD_BYTES:
        raise AtCommandError(
            "P2P payload of %d bytes: AT+PSEND sends 1..%d" % (len(payload), MAX_PAYLOAD_BYTES)
        )
    return b"AT+PSEND=" + bytes(payload).hex().upper().encode() + b"\r\n"


class AtParser:
    """Feed it UART bytes in any chunks; it returns the events of every line completed.

    Lines end with LF (CR is dropped, blank lines skipped). A line longer than max_line_bytes is
    discarded with one LineTooLong event, so garbage cannot grow memory. Never raises on input."""

    def __init__(self, max_line_bytes=MAX_LINE_BYTES):
        self._max = max_line_bytes
        self._buf = bytearray()
        self._discarding = False
        self._legacy_rx = None  # (rssi, snr) of a pre-RUI3 "+EVT:RXP2P, RSSI n, SNR n" line

    def feed(self, data):
        data = bytes(data)
        events = []
        start = 0
        while start < len(data):
            end = data.find(b"\n", start)
            stop = len(data) if end < 0 else end
            if not self._discarding:
                if len(self._buf) + stop - start > self._max:
                    self._discarding = True
                    self._buf = bytearray()
                    events.append(LineTooLong(self._max))
                else:
                    self._buf.extend(data[start:stop])
            if end < 0:
                break
            if not self._discarding:
                self._line(bytes(self._buf), events)
                self._buf = bytearray()
            self._discarding = False
            start = end + 1
        return events

    def _line(self, raw, events):
        for b in raw:
            if b > 126 or (b < 32 and b not in (9, 13)):
                self._legacy_rx = None
                events.append(MalformedLine("not text (wrong baud rate or line noise)", raw))
                return
        line = raw.decode().strip()
        if not line:
            return
        legacy, self._legacy_rx = self._legacy_rx, None
        if legacy is not None:
            if line.startswith("+EVT:") and _is_hex(line[5:]):
                events.append(RxP2P(legacy[0], legacy[1], unhexlify(line[5:])))
                return
            events.append(MalformedLine("RXP2P header without its payload line", line))
        if line == "OK":
            events.append(OK)
        elif line.startswith("+EVT:RXP2P:"):
            parts = line[11:].split(":")
            try:
                rssi, snr = int(parts[0]), int(parts[1])
                ok = len(parts) == 3 and _is_hex(parts[2])
            except (ValueError, IndexError):
                ok = False
            if ok:
                events.append(RxP2P(rssi, snr, unhexlify(parts[2])))
            else:
                events.append(MalformedLine("expected +EVT:RXP2P:<rssi>:<snr>:<hex payload>", line))
        elif line.startswith("+EVT:RXP2P,"):
            # pre-RUI3 firmware: "+EVT:RXP2P, RSSI -60, SNR 11", then "+EVT:<hex payload>"
            p = line.replace(",", " ").split()
            try:
                if len(p) != 5 or p[1] != "RSSI" or p[3] != "SNR":
                    raise ValueError
                self._legacy_rx = (int(p[2]), int(p[4]))
            except ValueError:
                events.append(MalformedLine("expected +EVT:RXP2P, RSSI <n>, SNR <n>", line))
        elif line.startswith("+EVT:"):
            events.append(AtEvent(line[5:]))
        else:
            code = line.rsplit(" ", 1)[-1]
            if (
                len(code) > 3
                and code.startswith("AT_")
                and code.replace("_", "").isalpha()
                and code.isupper()
            ):
                events.append(
                    AtError(
                        code,
                        _status_meaning(code),
                        line[: -len(code)].strip(),
                    )
                )
            elif line.startswith("AT") and "=" in line:
                name, value = line.split("=", 1)
                events.append(AtValue(name, value))
            else:
                events.append(AtText(line))
