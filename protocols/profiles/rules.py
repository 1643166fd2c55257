"""The profile validator's shared parts: the error list and the value rules. Pure; no I/O."""

FUNCTIONS = (3, 4)
ORDERS = ("big", "little")


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v):
    return (isinstance(v, int) or isinstance(v, float)) and not isinstance(v, bool)


def is_text(v):
    return isinstance(v, str) and v.strip() != ""


class Errors:
    """Collects problems as "<file>: <field>: <reason>" lines."""

    def __init__(self, path):
        self.path = path
        self.lines = []

    def add(self, field, reason):
        self.lines.append("%s: %s: %s" % (self.path, field, reason))

    def keys(self, obj, allowed, field):
        for k in obj:
            if k not in allowed:
                self.add(field + k, "unknown key (allowed: %s)" % ", ".join(allowed))

    def choice(self, obj, key, allowed, field):
        # obj[key] if it is one of allowed (or absent: None); records the problem otherwise.
        v = obj.get(key)
        if v is None or (v in allowed and not isinstance(v, bool)):
            return v
        self.add(field + key, "%r is not one of %s" % (v, ", ".join([str(a) for a in allowed])))
        return None

    def number(self, obj, key, default, field, low=None, nonzero=False):
        v = obj.get(key, default)
        if not is_num(v) or (nonzero and v == 0) or (low is not None and v < low):
            self.add(field + key, "%r is not a%s number" % (v, " non-zero" if nonzero else ""))
        return v

    def address(self, obj, count, field):
        # obj["address"] and the count registers from it must lie in 0..65535.
        a = obj.get("address")
        if a is None:
            self.add(field + "address", "required field is missing")
        elif not is_int(a) or not 0 <= a <= 65535:
            self.add(
                field + "address",
                "%r is not the 0-based address sent on the wire, 0..65535 (datasheet "
                "register 30001 or 40001 is address 0)" % (a,),
            )
        elif a + count > 65536:
            self.add(field + "address", "%d + %d registers runs past 65535" % (a, count))

    def read_fields(self, obj, defaults, types, field):
        # function, type, word and byte order, each given here or in defaults (whose own
        # problems the header check reports): None where missing or invalid, orders "big".
        r = []
        for key, allowed in (
            ("function", FUNCTIONS),
            ("type", types),
            ("word_order", ORDERS),
            ("byte_order", ORDERS),
        ):
            if key in obj:
                v = self.choice(obj, key, allowed, field)
            else:
                v = defaults.get(key)
                if v is None and key in ("function", "type"):
                    self.add(field + key, "missing: set it here or in defaults")
            if v not in allowed or isinstance(v, bool):
                v = None if key in ("function", "type") else "big"
            r.append(v)
        return r


def object_of(e, raw, key, allowed):
    # raw[key] (default {}) if it is an object with only allowed keys; {} otherwise.
    v = raw.get(key, {})
    if not isinstance(v, dict):
        e.add(key, "must be an object {...}")
        return {}
    e.keys(v, allowed, key + ".")
    return v
