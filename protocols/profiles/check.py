"""The profile validator's second part: header fields, defaults, limits, serial line and
readable blocks. Pure checks; no I/O."""

from protocols.profiles import MAX_REGISTERS, TYPE_NAMES
from protocols.profiles.rules import FUNCTIONS, ORDERS, is_int, is_text, object_of

_TOP = ("model", "manufacturer", "name", "phases", "source", "notes", "defaults")
_TOP += ("limits", "readable", "serial", "quantities", "identify")
_SERIAL = ("baud", "parity", "stopbits", "turnaround_ms")


def header(e, raw, path):
    """(readable, serial) of raw after checking all but quantities and identify into e."""
    if not isinstance(raw, dict):
        e.add("(top level)", "expected a JSON object {...}")
        return {}, {}
    e.keys(raw, _TOP, "")
    for k in ("model", "manufacturer", "name", "phases", "source", "quantities"):
        if k not in raw:
            e.add(k, "required field is missing")
        elif k != "phases" and k != "quantities" and not is_text(raw[k]):
            e.add(k, "must be a non-empty text")
    model = raw.get("model")
    if is_text(model):
        if [c for c in model if not ("a" <= c <= "z" or "0" <= c <= "9" or c == "_")]:
            e.add("model", "%r is not a model id (lowercase letters, digits and _)" % model)
        stem = path.rsplit("/", 1)[-1]
        if stem.endswith(".json") and stem[:-5] != model:
            e.add("model", "%r does not match the file name %s" % (model, stem))
    e.choice(raw, "phases", (1, 3), "")
    notes = raw.get("notes", [])
    if not isinstance(notes, list) or [n for n in notes if not is_text(n)]:
        e.add("notes", "must be a list of texts")
    defaults = object_of(e, raw, "defaults", ("function", "type", "word_order", "byte_order"))
    e.choice(defaults, "function", FUNCTIONS, "defaults.")
    e.choice(defaults, "type", TYPE_NAMES, "defaults.")
    for k in ("word_order", "byte_order"):
        e.choice(defaults, k, ORDERS, "defaults.")
    limits = object_of(e, raw, "limits", ("max_registers",))
    m = limits.get("max_registers", MAX_REGISTERS)
    if not is_int(m) or not 1 <= m <= MAX_REGISTERS:
        e.add("limits.max_registers", "%r is outside 1..125" % (m,))
    serial = object_of(e, raw, "serial", _SERIAL)
    b = serial.get("baud")
    if b is not None and not (is_int(b) and 300 <= b <= 921600):
        e.add("serial.baud", "%r is not a baud rate 300..921600" % (b,))
    e.choice(serial, "parity", ("N", "E", "O"), "serial.")
    e.choice(serial, "stopbits", (1, 2), "serial.")
    if "turnaround_ms" in serial:
        e.number(serial, "turnaround_ms", 0, "serial.", low=0)
    serial = {k: serial.get(k) for k in _SERIAL}
    return _readable(e, raw.get("readable", []), defaults.get("function")), serial


def _readable(e, readable, function):
    out = {}
    if not isinstance(readable, list):
        e.add("readable", "must be a list of [start, count] or [start, count, function]")
        return out
    for i in range(len(readable)):
        b = readable[i]
        field = "readable[%d]" % i
        if not isinstance(b, list) or len(b) not in (2, 3):
            e.add(field, "%r is not [start, count] or [start, count, function]" % (b,))
            continue
        f = b[2] if len(b) == 3 else function
        if f not in FUNCTIONS or isinstance(f, bool):
            e.add(field, "function %r is not 3 or 4 (give it third, or in defaults)" % (f,))
        elif not (is_int(b[0]) and is_int(b[1]) and b[0] >= 0 and b[1] > 0):
            e.add(field, "%r is not a start address and a count >= 1" % (b,))
        elif b[0] + b[1] > 65536:
            e.add(field, "%r runs past register 65535" % (b,))
        else:
            out.setdefault(f, []).append((b[0], b[1]))
    for f in out:
        merged = []
        for s, n in sorted(out[f]):
            if merged and s <= merged[-1][0] + merged[-1][1]:
                s0, n0 = merged[-1]
                merged[-1] = (s0, max(s0 + n0, s + n) - s0)
            else:
                merged.append((s, n))
        out[f] = merged
    return out
