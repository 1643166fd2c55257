"""One configured Modbus meter as the poller needs it, built from its config entry and profile,
and the loader that builds them all with as little heap as it can.

Kept apart from the poller so that profiles can be loaded (their validator takes the most heap)
before the Modbus and board modules are imported. No I/O here."""

from protocols.planner import device_for_profile, items_for_profile


class Meter:
    """One configured meter: its config entry (dict, checked by protocols.config) and what
    the poller needs of its profile: item list and device limits (for planning; the poller
    drops them once its plans are made) and `quantities`, the profile's name -> QuantitySpec
    dict, shared by every meter of the model. The Profile itself is not kept."""

    def __init__(self, entry, profile):
        self.device_id = entry["id"]
        self.name = entry["name"]
        self.bus_id = entry.get("bus")
        self.unit = entry["unit"]
        self.interval_s = entry.get("interval_s", 10)
        names = entry.get("quantities") or list(profile.quantities)
        self.items = items_for_profile(profile, self.unit, names)  # PlanError: unknown name
        self.device = device_for_profile(profile)
        self.quantities = profile.quantities
        # channel = channel_base | the quantity's code, as protocols.quantities.channel_id
        self.channel_base = self.device_id << 8


def load_meters(entries):
    """The Meter of every meter config entry, one model at a time. A model's profile comes
    from its packed form (protocols/profile_pack.py, made by the build): no JSON parser, no
    validator. Only a model without one (running from sources) loads the JSON profile, and its
    validator, the largest thing the gateway ever has in its heap, is unloaded afterwards."""
    import gc
    import sys

    import protocols
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
    for name in ("profiles", "profile_pack"):
        sys.modules.pop("protocols." + name, None)
        if hasattr(protocols, name):
            delattr(protocols, name)
    gc.collect()
    return meters
