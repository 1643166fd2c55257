"""One configured Modbus meter as the poller needs it, built from its config entry and profile,
and the loader that builds them all with as little heap as it can.

Kept apart from the poller so that profiles can be loaded (their validator takes the most heap)
before the Modbus and board modules are imported. No I/O here."""


class Meter:
    """One configured meter: its config entry (dict, checked by protocols.config) and what
    the poller needs of its profile to plan: the quantity names (None: all), device limits and
    `quantities`, the profile's name -> QuantitySpec dict, both shared by every meter of the
    model. The Profile itself is not kept, and the poller keeps none of it once its plans are
    made. `items`, the planner's Items, are built on each access: the poller plans one meter
    at a time, so the items of only one meter are in the heap at once."""

    def __init__(self, entry, profile, device=None):
        # imported here, not by the module: the app unloads the planner once the buses are
        # planned, and a module-level name of it would keep it loaded as long as Meter lives
        from protocols.planner import PlanError, device_for_profile

        self.device_id = entry["id"]
        self.name = entry["name"]
        self.bus_id = entry.get("bus")
        self.unit = entry["unit"]
        self.interval_s = entry.get("interval_s", 10)
        self.model = profile.model
        self.quantities = profile.quantities
        self.names = entry.get("quantities") or None
        for name in self.names or ():
            if name not in self.quantities:
                raise PlanError("meter model %s has no quantity %r" % (self.model, name))
        self.device = device or device_for_profile(profile)

    @property
    def items(self):
        from protocols.planner import items_for_profile

        return items_for_profile(self, self.unit, self.names)  # a Meter has what it reads


def load_meters(entries):
    """The Meter of every meter config entry, one model at a time. A model's profile comes
    from its packed form (protocols/profile_pack.py, made by the build): no JSON parser, no
    validator. Only a model without one (running from sources) loads the JSON profile, and its
    validator, the largest thing the gateway ever has in its heap, is unloaded afterwards."""
    import gc
    import sys

    from protocols.profile_pack import load_packed

    meters = []
    validator = False
    for model in set(m["profile"] for m in entries):
        profile = load_packed(model)
        if profile is None:
            from protocols.profiles import load_profile

            validator = True
            profile = load_profile(model)
        device = None  # one per model: meters alike share it, and so their plans
        for m in entries:
            if m["profile"] == model:
                meters.append(Meter(m, profile, device))
                device = meters[-1].device
        profile = device = None
        gc.collect()
    if validator:
        sys.modules["protocols.profiles"].release()
    forget("profiles", "profile_pack")
    return meters


def forget(*names):
    """Unload the named modules, protocols ones by their short name ("planner") and others by
    their full one ("firmware.meter"): the next import loads them again."""
    import gc
    import sys

    for name in names:
        if "." not in name:
            name = "protocols." + name
        sys.modules.pop(name, None)
        package, name = name.split(".")
        package = sys.modules.get(package)
        if package is not None and hasattr(package, name):
            delattr(package, name)  # the package keeps a reference to its submodules
    gc.collect()
