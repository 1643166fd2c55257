"""What the demo shows: three simulated municipalities, their buildings (hw_sim scenarios) and
the kind of gateway in each building's cabinet. Data only; demo/__main__.py runs it."""

from __future__ import annotations

from dataclasses import dataclass

EDGE = "edge"  # the Linux agent (edge/), as on a Raspberry Pi
FIRMWARE = "firmware"  # the MicroPython firmware on the unix port, as on an ESP32


@dataclass(frozen=True)
class Site:
    gateway: str  # gateway id, also what `python -m demo ctl` takes
    scenario: str  # hw_sim scenario (hw_sim/scenarios/<name>.toml)
    name: str  # the building's name in the fleet and in hw_sim
    kind: str  # EDGE or FIRMWARE
    seed: int  # hw_sim seed: two buildings of one scenario still differ
    building_type: str  # the site's type in the fleet


@dataclass(frozen=True)
class Municipality:
    slug: str
    name: str
    sites: tuple[Site, ...]


# The firmware reads Modbus RTU only (boards have no Modbus TCP), so firmware gateways sit in
# buildings without a [[tcp]] endpoint: school, indoor_pool, depot.
MUNICIPALITIES: tuple[Municipality, ...] = (
    Municipality(
        "musterstadt",
        "Stadt Musterstadt",
        (
            Site("ms-grundschule", "school", "Grundschule am Park", EDGE, 1, "school"),
            Site("ms-rathaus", "town_hall", "Rathaus Musterstadt", EDGE, 2, "town_hall"),
            Site("ms-bauhof", "depot", "Bauhof Musterstadt", FIRMWARE, 3, "depot"),
        ),
    ),
    Municipality(
        "beispielhausen",
        "Gemeinde Beispielhausen",
        (
            Site("bh-grundschule", "school", "Grundschule Beispielhausen", FIRMWARE, 4, "school"),
            Site("bh-hallenbad", "indoor_pool", "Hallenbad Beispielhausen", EDGE, 5, "pool"),
        ),
    ),
    Municipality(
        "probedorf",
        "Gemeinde Probedorf",
        (
            Site("pd-rathaus", "town_hall", "Rathaus Probedorf", EDGE, 6, "town_hall"),
            Site("pd-bauhof", "depot", "Bauhof Probedorf", FIRMWARE, 7, "depot"),
        ),
    ),
)

# One demo operator, admin in every municipality (the UI lets them switch).
USER = ("demo@demo.example", "demo-password-123")


def all_sites() -> list[tuple[Municipality, Site]]:
    return [(m, s) for m in MUNICIPALITIES for s in m.sites]
