"""The profile validator's first part: quantities (catalogue names and units, registers,
scale, sentinels, no register mapped twice). Pure checks; no I/O."""

from protocols.profiles import MAX_REGISTERS, TYPE_NAMES, TYPES, QuantitySpec
from protocols.profiles.rules import is_int, is_num, is_text
from protocols.quantities import entry_of, is_quantity

_KEYS = ("address", "unit", "function", "type", "word_order", "byte_order")
_KEYS += ("scale", "offset", "resolution", "na", "note")


def quantities(e, raw, consume):
    """name -> QuantitySpec of the valid quantities of raw; problems go to Errors e."""
    out = {}
    qs = raw.get("quantities") if isinstance(raw, dict) else None
    if not isinstance(qs, dict) or not qs:
        if qs is not None:
            e.add("quantities", "must be a non-empty object: quantity name -> register")
        return out
    defaults = raw.get("defaults")
    defaults = defaults if isinstance(defaults, dict) else {}
    limit = raw.get("limits", {})
    limit = limit.get("max_registers", MAX_REGISTERS) if isinstance(limit, dict) else 0
    # consume: each spec replaces its entry in the parsed dict, which has the right size
    # already; a growing new dict would need ever larger free blocks on a small board.
    out = qs if consume else {}
    for name in list(qs):
        spec = _one(e, name, qs[name], defaults, raw, limit)
        if spec is not None:
            out[name] = spec
        elif consume:
            del qs[name]
    # In order of function and address, a spec overlaps an earlier one if it starts before the
    # furthest end so far. (The sort key is a small int: no tuples to cut up a small heap.)
    specs = list(out.values())
    specs.sort(key=lambda s: s.function << 16 | s.address)
    reach = None  # the earlier spec of this function that ends last
    for b in specs:
        a = reach
        if a is not None and a.function == b.function and b.address < a.address + a.count:
            e.add(
                "quantities." + b.name,
                "registers %d..%d (function %d) overlap quantities.%s at %d..%d"
                % (
                    b.address,
                    b.address + b.count - 1,
                    b.function,
                    a.name,
                    a.address,
                    a.address + a.count - 1,
                ),
            )
        if a is None or a.function != b.function or b.address + b.count > a.address + a.count:
            reach = b
    return out


def _one(e, name, q, defaults, raw, limit):
    field = "quantities." + name
    if not is_quantity(name):
        e.add(field, "unknown quantity: use a name of protocols/quantities.py")
        return None
    code, unit, resolution = entry_of(name)
    if not isinstance(q, dict):
        e.add(field, 'must be an object such as {"address": 0, "unit": "%s"}' % unit)
        return None
    n = len(e.lines)
    if raw.get("phases") == 1 and ("_l2" in name or "_l3" in name):
        e.add(field, "a single-phase meter (phases 1) has no L2 or L3 quantities")
    field += "."
    e.keys(q, _KEYS, field)
    function, typ, word_order, byte_order = e.read_fields(q, defaults, TYPE_NAMES, field)
    count = TYPES.get(typ, 0)
    if is_int(limit) and count > limit:
        e.add(field + "type", "%s needs %d registers, over limits.max_registers" % (typ, count))
    e.address(q, count, field)
    if "unit" not in q:
        e.add(field + "unit", "required: %r, the catalogue unit the scale converts to" % unit)
    elif q["unit"] != unit:
        e.add(
            field + "unit",
            "%r is not the catalogue unit %r of %s: give that unit and set scale so the "
            "register converts to it (e.g. scale 1000 for kWh -> Wh)" % (q["unit"], unit, name),
        )
    scale = e.number(q, "scale", 1, field, nonzero=True)
    offset = e.number(q, "offset", 0, field)
    resolution = e.number(q, "resolution", resolution, field, low=0, nonzero=True)
    na = q.get("na")
    if na is not None and not isinstance(na, list):
        e.add(field + "na", "%r is not a list of raw values" % (na,))
    elif na is not None:
        # Raw values as values.py takes them: any number for floats; for integers a value of
        # the type's range, signed types as the signed value or its bit pattern.
        bits = 16 * count or 16
        low = -(1 << (bits - 1)) if typ[:1] == "i" else 0
        for v in na:
            if not (is_int(v) and low <= v < (1 << bits) or typ[:1] == "f" and is_num(v)):
                e.add(field + "na", "%r is not a raw %s value" % (v, typ))
        na = tuple(na)
    if "note" in q and not is_text(q["note"]):
        e.add(field + "note", "must be a non-empty text")
    if len(e.lines) != n or function is None or not count:
        return None
    return QuantitySpec(
        name,
        code,
        function,
        q["address"],
        count,
        typ,
        word_order,
        byte_order,
        scale,
        offset,
        unit,
        resolution,
        na,
    )
