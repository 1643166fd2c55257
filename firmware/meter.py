"""One configured Modbus meter as the poller needs it, built from its config entry and profile,
and the loader that builds them all with as little heap as it can.

Kept apart from the poller so that profiles can be loaded (their validator takes the most heap)
before the Modbus and board modules are imported. No I/O here."""


class Meter:
    """One configured meter: its config entry (dict, checked by protocols.config) and what
    the poller needs of its profile to plan: item list, device limits and `quantities`, the
    profile's name -> QuantitySpec dict, shared by every meter of the model. The Profile
    itself is not kept, and the poller keeps none of it once its plans are made."""

    def __init__(self, entry, profile):
        # imported here, not by the module: the app unloads the planner once the buses are
        # planned, and a module-level name of it would keep it loaded as long as Meter lives
        from protocols.planner import device_for_profile, items_for_profile

        self.device_id = entry["id"]
        self.name = entry["name"]
        self.bus_id = entry.get("bus")
        self.unit = entry["unit"]
        self.interval_s = entry.get("interval_s", 10)
        names = entry.get("quantities") or list(profile.quantities)
        self.items = items_for_profile(profile, self.unit, names)  # PlanError: unknown name
        self.device = device_for_profile(profile)
        self.quantities = profile.quantities


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
        for m in entries:
            if m["profile"] == model:
                meters.append(Meter(m, profile))
        profile = None
        gc.collect()
    if validator:
        sys.modules["protocols.profiles"].release()
    forget("profiles", "profile_pack")
    return meters


def forget(*names):
    """Unload the named protocols modules: the next import loads them again."""
    import gc
    import sys

    import protocols

    for name in names:
        sys.modules.pop("protocols." + name, None)
        if hasattr(protocols, name):
            delattr(protocols, name)  # the package keeps a reference to its submodules
    gc.collect()
