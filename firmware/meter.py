"""One configured Modbus meter as the poller needs it, built from its config entry and profile.

Kept apart from the poller so that profiles can be loaded (their validator takes the most heap)
before the Modbus and board modules are imported. No I/O here."""

from protocols.planner import device_for_profile, items_for_profile
from protocols.quantities import channel_id


class Meter:
    """One configured meter: its config entry (dict, checked by protocols.config) and what
    the poller needs of its profile (item list, device limits, the specs of the quantities it
    reads). The Profile itself is not kept: a full one holds ~12 KB on a 64-bit heap."""

    def __init__(self, entry, profile):
        self.device_id = entry["id"]
        self.name = entry["name"]
        self.bus_id = entry.get("bus")
        self.unit = entry["unit"]
        self.interval_s = entry.get("interval_s", 10)
        names = entry.get("quantities") or list(profile.quantities)
        self.items = items_for_profile(profile, self.unit, names)  # PlanError: unknown name
        self.device = device_for_profile(profile)
        specs = {}  # name -> (channel, QuantitySpec)
        for n in names:
            specs[n] = (channel_id(self.device_id, n), profile.quantities[n])
        self.specs = specs
