"""The module side of the RAK3172 AT interface, for emulators (hw_sim): parse the commands a host
sends and format the module's answers. Sans-I/O; the host side is protocols/rak3172.py.
"""

from collections import namedtuple

from protocols.rak3172 import MAX_LINE_BYTES, P2P_FIELDS, AtCommandError, check_p2p_value

# A parsed command. form: "run" (ATZ), "query" (AT+VER=?), "help" (AT+VER?) or "set"
# (AT+PRECV=0); args: tuple of strings.
Command = namedtuple("Command", ("name", "form", "args"))


def parse_command(line):
    """Command(name, form, args) of one line (str or bytes) sent to the module, e.g.
    b"AT+P2P=868000000:7:125:0:8:14" -> Command("AT+P2P", "set", ("868000000", "7", ...)).

    Arguments are split on ':' (RUI3), or on ',' if there is no ':'. AtCommandError otherwise."""
    raw = line.encode() if isinstance(line, str) else bytes(line)
    for b in raw:
        if b > 126 or (b < 32 and b not in (10, 13)):
            raise AtCommandError("command contains non-text bytes")
    text = raw.decode().strip()
    if len(text) > MAX_LINE_BYTES or text[:2].upper() != "AT":
        raise AtCommandError("%r is not an AT command" % text[:40])
    name, form, args = text, "run", ()
    if "=" in text:
        name, value = text.split("=", 1)
        if value == "?":
            form = "query"
        else:
            form = "set"
            args = tuple(value.split(":" if ":" in value else ","))
    elif text.endswith("?") and len(text) > 2:
        name, form = text[:-1], "help"
    name = name.strip().upper()
    rest = name[3:] if name[2:3] == "+" else name[2:]
    for c in rest:
        if not (c.isalpha() or c.isdigit() or c == "_"):
            rest = ""
    if name != "AT" and not rest:
        raise AtCommandError("%r is not a valid command name" % name)
    return Command(name, form, args)


def parse_p2p_args(args):
    """(frequency_hz, spreading_factor, bandwidth_khz, coding_rate, preamble, tx_power_dbm) of the
    arguments of AT+P2P=...; AtCommandError names the bad value. A 7th RUI3 flag is ignored."""
    if len(args) not in (6, 7):
        raise AtCommandError(
            "AT+P2P needs freq:sf:bw:cr:preamble:txpower, got %d values" % len(args)
        )
    out = []
    for i in range(6):
        a = args[i].strip()
        if not a.isdigit():
            raise AtCommandError("AT+P2P %s %r is not a whole number" % (P2P_FIELDS[i][1], a))
        out.append(check_p2p_value(i, int(a)))
    return tuple(out)


def format_line(text):
    """One line as the module prints it: a status ("OK", "AT_PARAM_ERROR"), a query answer
    ("AT+VER=4.0.6") or an event ("+EVT:TXP2P DONE")."""
    return text.encode() + b"\r\n"


def format_rx_p2p(rssi_dbm, snr_db, payload):
    """The RUI3 receive event: +EVT:RXP2P:<rssi>:<snr>:<HEX>."""
    return b"+EVT:RXP2P:%d:%d:%s\r\n" % (rssi_dbm, snr_db, bytes(payload).hex().upper().encode())
