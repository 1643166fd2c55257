"""The profile validator's third part: the identify probes a scanner reads to recognise the
model. Pure checks; no I/O."""

from protocols.profiles import MAX_REGISTERS, TYPE_NAMES, TYPES, Identify, Probe
from protocols.profiles.rules import is_int, is_num, is_text, object_of

_PROBE = ("address", "function", "type", "word_order", "byte_order", "count")
_PROBE += ("equals", "prefix", "range", "scale")


def identify(e, raw):
    ident = raw.get("identify") if isinstance(raw, dict) else None
    if ident is None:
        return None
    defaults = raw.get("defaults")
    defaults = defaults if isinstance(defaults, dict) else {}
    ident = object_of(e, {"identify": ident}, "identify", ("probes", "note"))
    probes = ident.get("probes")
    if not isinstance(probes, list) or not probes:
        e.add("identify.probes", "must be a non-empty list of probes")
        return None
    if not isinstance(ident.get("note", ""), str):
        e.add("identify.note", "must be a text")
    out = []
    for i in range(len(probes)):
        p = _probe(e, probes[i], defaults, "identify.probes[%d]" % i)
        if p is not None:
            out.append(p)
    strong = [p for p in out if p.equals is not None or p.prefix is not None]
    return Identify(tuple(out), ident.get("note", ""), len(strong) > 0)


def _probe(e, p, defaults, field):
    n = len(e.lines)
    p = object_of(e, {field: p}, field, _PROBE)
    field += "."
    text = p.get("type", defaults.get("type")) == "ascii"
    types = TYPE_NAMES + ("ascii",)
    function, typ, word_order, byte_order = e.read_fields(p, defaults, types, field)
    count = p.get("count") if text else TYPES.get(typ, 0)
    if ("count" in p) != text or not (is_int(count) and 1 <= count <= MAX_REGISTERS):
        e.add(field + "count", "ascii probes, and only they, give count: registers to read")
        count = 0
    e.address(p, count, field)
    tests = [k for k in ("equals", "prefix", "range") if k in p]
    if len(tests) != 1:
        e.add(field[:-1], "needs exactly one of equals, prefix or range")
    v = p.get(tests[0]) if tests else None
    kind = "range" if "range" in p else "text" if text else "integer"
    if isinstance(v, list) and v and tests != ["range"]:
        for x in v:
            if not (is_text(x) if text else is_int(x)):
                e.add(field + tests[0], "%r is not a %s" % (x, kind))
        if tests == ["prefix"] and not text:
            e.add(field + "prefix", "applies to ascii probes only")
    elif tests == ["range"] and not (
        isinstance(v, list) and len(v) == 2 and is_num(v[0]) and is_num(v[1]) and v[0] <= v[1]
    ):
        e.add(field + "range", "must be [low, high] with low <= high")
    elif tests and tests != ["range"]:
        e.add(field + tests[0], "must be a non-empty list")
    scale = e.number(p, "scale", 1, field, nonzero=True)
    if "scale" in p and "range" not in p:
        e.add(field + "scale", "applies to range probes only")
    if len(e.lines) != n or function is None:
        return None
    return Probe(
        function,
        p["address"],
        count,
        typ,
        word_order,
        byte_order,
        tuple(v) if tests[0] == "equals" else None,
        tuple(v) if tests[0] == "prefix" else None,
        (v[0], v[1]) if tests[0] == "range" else None,
        scale,
    )
