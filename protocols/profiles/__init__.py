"""Meter profiles: load the JSON files that describe one meter model each (registers, types,
units, scale, readable blocks, identification). Reads files only; never touches a bus.

A model is data, not code: protocols/profiles/<model>.json here, or a file of the same form
in a user folder (dirs=) or at an explicit path; docs/meters.md describes the format. The
validator lists every problem in one ProfileError, "<file>: <field>: <reason>"; it is split
in small modules (rules, checkq, check, checkid) so that each compiles in a board's heap.
"""

import json
import os
import sys
from collections import namedtuple

# Imported here, not first by the validator, so it compiles while the heap is still empty.
import protocols.quantities  # noqa: F401

# QuantitySpec: one quantity with every field filled (defined beside the packed form the
# firmware reads).
from protocols.profile_pack import QuantitySpec  # noqa: F401

# The value types of protocols/values.py, in its order, and the registers each occupies.
TYPE_NAMES = ("u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64")
TYPES = {"u16": 1, "i16": 1, "u32": 2, "i32": 2, "f32": 2, "u64": 4, "i64": 4, "f64": 4}
MAX_REGISTERS = 125

# One read a scanner makes to recognise a model; exactly one of equals, prefix, range is set.
# equals: the raw value (int, or the text of an "ascii" probe) is one of these; prefix: the
# text starts with one of these; range: (low, high) holds raw value * scale (plausibility).
Probe = namedtuple(
    "Probe",
    (
        "function",
        "address",
        "count",
        "type",
        "word_order",
        "byte_order",
        "equals",
        "prefix",
        "range",
        "scale",
    ),
)


class ProfileError(ValueError):
    """A profile is missing, unreadable or invalid. `errors` lists each problem as
    "<file>: <field path>: <reason>"; the message is those lines, one per line."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


class ProfileNotFound(ProfileError):
    """No profile file of that model id or path exists."""


# How a scanner recognises the model: every probe must pass. strong is True when a probe
# checks a model code or name; plausibility checks alone (a value in a range) pass for any
# meter with the same register layout, so a scanner should try strong ones first.
Identify = namedtuple("Identify", ("probes", "note", "strong"))


class Profile:
    """One validated meter model; built by load_profile() or validate()."""

    def __init__(self, raw, quantities, readable, serial, identify, path):
        self.model = raw["model"]
        self.manufacturer = raw["manufacturer"]
        self.name = raw["name"]
        self.phases = raw["phases"]
        self.source = raw["source"]
        self.notes = tuple(raw.get("notes", ()))
        self.path = path
        self.max_registers = raw.get("limits", {}).get("max_registers", MAX_REGISTERS)
        self.quantities = quantities  # name -> QuantitySpec
        self.serial = serial  # baud, parity, stopbits, turnaround_ms; None where not stated
        self.turnaround_ms = serial["turnaround_ms"]
        self.identify = identify  # Identify or None
        self._readable = readable  # function -> [(start, count)], sorted and merged

    def quantity(self, name):
        """The QuantitySpec of one quantity; KeyError naming the quantities the meter has."""
        spec = self.quantities.get(name)
        if spec is None:
            raise KeyError(
                "meter model %s has no quantity %r; it has: %s"
                % (self.model, name, ", ".join(sorted(self.quantities)))
            )
        return spec

    def functions(self):
        """The read function codes the quantities use, ascending."""
        found = []
        for spec in self.quantities.values():
            if spec.function not in found:
                found.append(spec.function)
        found.sort()
        return found

    def readable_blocks(self, function):
        """Sorted, merged (start, count) blocks of `function` the meter answers in one request,
        unmapped registers inside included. Empty: read only mapped registers."""
        return list(self._readable.get(function, ()))


def _here():
    f = __file__
    i = f.rfind("/")
    return f[:i] if i >= 0 else "."


def profiles_dir():
    """The folder of the bundled profile files (this package's folder)."""
    return _here()


def _models(folder):
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    found = [n[:-5] for n in names if n.endswith(".json") and not n.startswith(".")]
    found.sort()
    return found


def bundled_profiles():
    """Model ids of the profiles shipped with the package, sorted."""
    return _models(profiles_dir())


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _resolve(name, dirs):
    if "/" in name or name.endswith(".json"):
        if _exists(name):
            return name
        raise ProfileNotFound([name + ": no such profile file: check the path"])
    folders = list(dirs or ()) + [profiles_dir()]
    for folder in folders:
        path = folder.rstrip("/") + "/" + name + ".json"
        if _exists(path):
            return path
    known = []
    for folder in folders:
        for m in _models(folder):
            if m not in known:
                known.append(m)
    known.sort()
    raise ProfileNotFound(
        [
            "%s: no profile of that model in %s; known models: %s"
            % (name, ", ".join(folders), ", ".join(known) or "none")
        ]
    )


def load_profile(name_or_path, dirs=None):
    """Load and validate one profile, by model id or file path; ProfileError if invalid.

    A model id is looked up as <id>.json in each folder of `dirs` in order, then among the
    bundled profiles, so a user file overrides a bundled one of the same id. A path (it holds
    "/" or ends in ".json") is read as given. ProfileNotFound if there is no such file.
    The validator stays loaded for the next call; release() drops it (on a board, once the
    profiles it needs are loaded)."""
    path = _resolve(name_or_path, dirs)
    # Compile the validator before the file is parsed, on a heap not yet cut up by it.
    from protocols.profiles import check, checkid, checkq  # noqa: F401

    try:
        with open(path) as f:
            raw = json.load(f)
    except ValueError as e:
        from protocols.profiles import jsonpos

        raise ProfileError([path + ": " + jsonpos.describe(path, e)])
    except OSError as e:
        raise ProfileError(["%s: cannot read the file (%s)" % (path, e)])
    return validate(raw, path, True)


def validate(raw, path="<profile>", consume=False):
    """A Profile from a parsed profile (a dict), or ProfileError listing every problem.
    consume=True builds the quantities in raw["quantities"] itself, replacing its entries."""
    from protocols.profiles import check, checkid, checkq, rules

    errors = rules.Errors(path)
    quantities = checkq.quantities(errors, raw, consume)
    readable, serial = check.header(errors, raw, path)
    identify = checkid.identify(errors, raw)
    if errors.lines:
        raise ProfileError(errors.lines)
    return Profile(raw, quantities, readable, serial, identify, path)


def release():
    """Drop the validator's modules (about 14 kB on a board); the next load compiles them
    again. Profiles already loaded are unaffected."""
    pkg = sys.modules.get(__name__)
    for n in ("check", "checkid", "checkq", "rules", "jsonpos"):
        sys.modules.pop(__name__ + "." + n, None)
        if pkg is not None and n in pkg.__dict__:
            delattr(pkg, n)


def load_all(dirs=None):
    """Every profile of `dirs` and the bundled folder (user files override bundled ones),
    sorted by model id. All are held at once: on a small board load one at a time."""
    models = []
    for folder in list(dirs or ()) + [profiles_dir()]:
        for m in _models(folder):
            if m not in models:
                models.append(m)
    models.sort()
    return [load_profile(m, dirs) for m in models]


def probe_text(data):
    """The text of an "ascii" probe's register bytes: printable ASCII up to the first NUL,
    surrounding spaces stripped (a garbled reply gives a text that matches nothing)."""
    out = []
    for b in data:
        if b == 0:
            break
        if 32 <= b < 127:
            out.append(chr(b))
    return "".join(out).strip()


def probe_matches(probe, value):
    """Whether a probe passes for its decoded raw value: an int or float (before scale) for
    the numeric types, the probe_text() of the registers for "ascii". None never passes."""
    if value is None:
        return False
    if probe.equals is not None:
        return value in probe.equals
    if probe.prefix is not None:
        for p in probe.prefix:
            if isinstance(value, str) and value.startswith(p):
                return True
        return False
    if isinstance(value, str) or value != value:  # text or NaN
        return False
    v = value * probe.scale
    return probe.range[0] <= v <= probe.range[1]
