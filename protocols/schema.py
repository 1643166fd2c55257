"""A small schema language for JSON-like documents (nested tuples, built with the functions
below) and its validator, which reports every problem with its path ("meters[2].bus: ...").
Used by the configuration schema and the uplink messages; runs on MicroPython, no I/O."""

REQUIRED = "<required>"
OPTIONAL = "<optional>"

_GATEWAY_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-"


def Int(lo, hi):
    """An integer (not a bool) in lo..hi; None means unbounded."""
    return ("int", lo, hi)


def Num(lo, hi):
    """A finite int or float in lo..hi."""
    return ("num", lo, hi)


def Bool():
    return ("bool",)


def Str(lo, hi, chars=None, what=None):
    """A string of lo..hi characters, all from chars if given; what describes them in errors."""
    return ("str", lo, hi, chars, what)


def Enum(*values):
    """One of the given values (compared with their type: 1 is not True, "1" is not 1)."""
    return ("enum", values)


def List(item, lo, hi):
    return ("list", item, lo, hi)


def Obj(*fields, allow_unknown=False):
    """An object; each field is (name, schema) for required, (name, schema, OPTIONAL), or
    (name, schema, default). Unknown keys are errors unless allow_unknown."""
    return ("obj", fields, allow_unknown)


def Union(tag, *variants):
    """An object whose tag field picks the schema: variants are (tag value, Obj(...))."""
    return ("union", tag, variants)


def Null(node):
    """None, or what node accepts."""
    return ("null", node)


def is_int(x):
    """An int that is not a bool (bool is an int on CPython but not on MicroPython)."""
    return isinstance(x, int) and x is not True and x is not False


def _join(path, key):
    return path + "." + key if path else key


def _fmt(v):
    return v if isinstance(v, str) else repr(v)


def validate(value, node, path, errors):
    """Append "path: problem" for every way value breaks node to errors. Never raises."""
    kind = node[0]
    where = path or "(document)"
    if kind == "null":
        if value is None:
            return
        node = node[1]
        kind = node[0]
    if kind == "int" or kind == "num":
        if kind == "int" and not is_int(value):
            errors.append(where + ": must be an integer")
            return
        if kind == "num":
            if not (is_int(value) or isinstance(value, float)):
                errors.append(where + ": must be a number")
                return
            if value - value != 0:
                errors.append(where + ": must be a finite number")
                return
        if node[1] is not None and value < node[1]:
            errors.append("%s: must be >= %s" % (where, node[1]))
        elif node[2] is not None and value > node[2]:
            errors.append("%s: must be <= %s" % (where, node[2]))
    elif kind == "bool":
        if value is not True and value is not False:
            errors.append(where + ": must be true or false")
    elif kind == "str":
        if not isinstance(value, str):
            errors.append(where + ": must be a string")
            return
        lo, hi, chars, what = node[1], node[2], node[3], node[4]
        if len(value) < lo or len(value) > hi:
            if lo == hi:
                errors.append("%s: must be %d characters long" % (where, lo))
            elif len(value) < lo:
                errors.append(
                    "%s: must be at least %d character%s" % (where, lo, "" if lo == 1 else "s")
                )
            else:
                errors.append("%s: must be at most %d characters" % (where, hi))
            return
        if chars is not None:
            for ch in value:
                if ch not in chars:
                    errors.append("%s: %r has %r; allowed: %s" % (where, value, ch, what or chars))
                    return
    elif kind == "enum":
        for v in node[1]:
            if type(v) is type(value) and v == value:
                return
        errors.append("%s: must be one of %s" % (where, ", ".join([_fmt(v) for v in node[1]])))
    elif kind == "list":
        if not isinstance(value, list):
            errors.append(where + ": must be a list")
            return
        if len(value) < node[2]:
            errors.append(
                "%s: must have at least %d entr%s"
                % (where, node[2], "y" if node[2] == 1 else "ies")
            )
        elif node[3] is not None and len(value) > node[3]:
            errors.append("%s: must have at most %d entries" % (where, node[3]))
            return  # do not walk a list that is too long
        for i in range(len(value)):
            validate(value[i], node[1], "%s[%d]" % (path, i), errors)
    elif kind == "obj":
        _validate_obj(value, node, path, errors, None)
    elif kind == "union":
        if not isinstance(value, dict):
            errors.append(where + ": must be an object")
            return
        tag = node[1]
        tags = [v[0] for v in node[2]]
        if tag not in value:
            errors.append("%s: missing (required; one of %s)" % (_join(path, tag), ", ".join(tags)))
            return
        for t, variant in node[2]:
            if type(t) is type(value[tag]) and t == value[tag]:
                _validate_obj(value, variant, path, errors, tag)
                return
        errors.append("%s: must be one of %s" % (_join(path, tag), ", ".join(tags)))
    else:
        errors.append("%s: schema error, unknown kind %r" % (where, kind))


def _validate_obj(value, node, path, errors, tag):
    if not isinstance(value, dict):
        errors.append((path or "(document)") + ": must be an object")
        return
    names = [f[0] for f in node[1]]
    for f in node[1]:
        name = f[0]
        if name in value:
            validate(value[name], f[1], _join(path, name), errors)
        elif len(f) == 2 or f[2] == REQUIRED:
            errors.append(_join(path, name) + ": missing (required)")
    if node[2]:
        return
    unknown = [k for k in value if k not in names and k != tag]
    for k in sorted(unknown, key=str):
        errors.append(
            "%s: unknown key (check the spelling; allowed: %s)"
            % (_join(path, str(k)), ", ".join(([tag] if tag else []) + names))
        )


def normalise(value, node):
    """A copy of a valid value with every absent field that has a default filled in."""
    kind = node[0]
    if kind == "null":
        return None if value is None else normalise(value, node[1])
    if kind == "list":
        return [normalise(v, node[1]) for v in value]
    if kind == "union":
        for t, variant in node[2]:
            if t == value[node[1]]:
                out = normalise(value, variant)
                out[node[1]] = t
                return out
    if kind == "obj":
        out = {}
        if node[2]:
            for k in value:
                out[k] = value[k]
        for f in node[1]:
            name = f[0]
            if name in value:
                out[name] = normalise(value[name], f[1])
            elif len(f) == 3 and f[2] != REQUIRED and f[2] != OPTIONAL:
                default = f[2]
                if isinstance(default, dict):
                    default = {}
                elif isinstance(default, list):
                    default = []
                out[name] = normalise(default, f[1])
        return out
    return value


def is_gateway_id(text):
    """Gateway ids: 3..64 characters, lowercase a-z, digits and -."""
    if not isinstance(text, str) or len(text) < 3 or len(text) > 64:
        return False
    for ch in text:
        if ch not in _GATEWAY_CHARS:
            return False
    return True


def GatewayId():
    return Str(3, 64, _GATEWAY_CHARS, "lowercase a-z, 0-9 and -")
