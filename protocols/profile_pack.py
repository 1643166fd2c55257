"""Meter profiles in a packed text form for the gateway firmware: what the poller needs of a
profile (quantities, readable blocks, limits), one line per item, made from a validated profile
at build time (firmware/build.py) and read on the board without the JSON parser and validator
of protocols.profiles, which take more heap than the rest of the gateway's start-up together.

Format (ASCII, fields separated by one space; "-" is None or an empty unit):
    M <model> <max_registers> <turnaround_ms>
    R <function> <start> <count>                            one per readable block
    Q <name> <code> <function> <address> <count> <type> <word_order> <byte_order>
      <scale> <offset> <unit> <resolution> <na>                one line per quantity
na is "-" (the type's defaults) or the raw values in brackets, "[]" for none. Numbers keep their
type: a float is written with a "." or an exponent. No imports beyond collections: cheap to load.
"""

from collections import namedtuple

# A quantity with every field filled: code is the catalogue's wire code, count the registers
# of the type, na the raw "not available" values (None: the type's defaults in values.py).
# Field names as one string: one str constant (in flash), not a tuple built in the heap.
QuantitySpec = namedtuple(
    "QuantitySpec",
    "name code function address count type word_order byte_order scale offset unit resolution na",
)

SUFFIX = ".pq"


class PackError(ValueError):
    """A packed profile that cannot be read (names the line and why)."""


class PackedProfile:
    """The parts of a protocols.profiles.Profile the firmware's Meter and planner use."""

    def __init__(self, model, max_registers, turnaround_ms, readable, quantities):
        self.model = model
        self.max_registers = max_registers
        self.turnaround_ms = turnaround_ms
        self.quantities = quantities  # name -> QuantitySpec, in the profile's order
        self._readable = readable  # function -> [(start, count)]

    def readable_blocks(self, function):
        return list(self._readable.get(function, ()))


def _text(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        t = repr(value)
        if "." not in t and "e" not in t and "n" not in t:  # 1e+16 has an "e", inf/nan an "n"
            t += ".0"
        return t
    t = str(value)
    if not t or " " in t or "\n" in t:
        if t == "":
            return "-"
        raise PackError("cannot pack %r: spaces or line breaks" % (t,))
    return t


def _na_text(na):
    if na is None:
        return "-"
    return "[" + ",".join(str(v) for v in na) + "]"


def pack_lines(profile):
    """The lines (each ending in a newline) of a validated profile's packed form."""
    yield "M %s %d %s\n" % (profile.model, profile.max_registers, _text(profile.turnaround_ms))
    functions = []
    for q in profile.quantities.values():
        if q.function not in functions:
            functions.append(q.function)
    functions.sort()
    for f in functions:
        for start, count in profile.readable_blocks(f):
            yield "R %d %d %d\n" % (f, start, count)
    for q in profile.quantities.values():
        fields = (q.name, q.code, q.function, q.address, q.count, q.type, q.word_order,
                  q.byte_order, q.scale, q.offset, q.unit, q.resolution)  # fmt: skip
        yield "Q " + " ".join(_text(v) for v in fields) + " " + _na_text(q.na) + "\n"


def pack(profile):
    """The packed text of a validated profile (protocols.profiles.Profile)."""
    return "".join(pack_lines(profile))


def _num(t):
    if t == "-":
        return None
    if "." in t or "e" in t or "n" in t:
        return float(t)
    return int(t)


def unpack(lines):
    """A PackedProfile from packed text or its lines (a file read line by line: no copy of the
    whole text in the heap); PackError naming the line if it is malformed."""
    if isinstance(lines, str):
        lines = lines.split("\n")
    model = None
    max_registers = turnaround_ms = None
    readable = {}
    quantities = {}
    same = {}  # one str object per distinct type, order and unit, not one per quantity
    n = 0
    for line in lines:
        n += 1
        if line[-1:] == "\n":
            line = line[:-1]
        if not line:
            continue
        f = line.split(" ")
        try:
            kind = f[0]
            if kind == "Q" and len(f) == 14:
                for i in (6, 7, 8, 11):
                    f[i] = same.setdefault(f[i], f[i])
                na = f[13]
                if na == "-":
                    na = None
                elif na == "[]":
                    na = ()
                else:
                    na = tuple(int(v) for v in na[1:-1].split(","))
                unit = "" if f[11] == "-" else f[11]
                quantities[f[1]] = QuantitySpec(f[1], int(f[2]), int(f[3]), int(f[4]), int(f[5]),
                                                f[6], f[7], f[8], _num(f[9]), _num(f[10]), unit,
                                                _num(f[12]), na)  # fmt: skip
            elif kind == "R" and len(f) == 4:
                fn = int(f[1])
                blocks = readable.get(fn)
                if blocks is None:
                    blocks = readable[fn] = []
                blocks.append((int(f[2]), int(f[3])))
            elif kind == "M" and len(f) == 4 and model is None:
                model, max_registers, turnaround_ms = f[1], int(f[2]), _num(f[3])
            else:
                raise ValueError("unknown line or wrong number of fields")
        except (ValueError, IndexError) as e:
            raise PackError("packed profile line %d: %s: %r" % (n, e, line[:60]))
    if model is None or not quantities:
        raise PackError("packed profile: no M line or no quantities")
    return PackedProfile(model, max_registers, turnaround_ms, readable, quantities)


def _here():
    f = __file__
    i = f.rfind("/")
    return (f[:i] if i >= 0 else ".") + "/profiles"


def load_packed(model, folder=None):
    """The PackedProfile of a bundled model from <protocols>/profiles/<model>.pq, or None when
    there is no packed file (running from sources: use protocols.profiles.load_profile)."""
    path = (folder or _here()) + "/" + model + SUFFIX
    try:
        f = open(path)
    except OSError:
        return None
    with f:
        return unpack(f)
