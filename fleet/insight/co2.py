"""CO2 emissions from energy: factors per energy carrier and year (defaults from
data/emission_factors.json, an organisation's own ones override them), applied to the energy
of each calendar year. Pure apart from reading the packaged data file once."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

# carrier -> unit of its consumption figures; water is counted but emits nothing here.
CARRIERS = {
    "electricity": "kWh",
    "natural_gas": "kWh",
    "district_heating": "kWh",
    "water": "m³",
}
ENERGY_CARRIERS = ("electricity", "natural_gas", "district_heating")
HEAT_CARRIERS = ("natural_gas", "district_heating")


@dataclass(frozen=True)
class Factor:
    kg_per_kwh: float
    year: int  # the year the factor is for (may differ from the year it is applied to)
    source: str
    default: bool  # from the packaged defaults, not the organisation's table


@functools.cache
def default_factors() -> dict[str, dict[int, Factor]]:
    """carrier -> year -> Factor from fleet/insight/data/emission_factors.json."""
    text = (
        resources.files("fleet.insight").joinpath("data/emission_factors.json").read_text("utf-8")
    )
    doc = json.loads(text)
    out: dict[str, dict[int, Factor]] = {}
    for carrier, spec in doc["carriers"].items():
        out[carrier] = {
            int(y): Factor(v["kg_per_kwh"], int(y), f"{spec['source']} ({v['note']})", True)
            for y, v in spec["years"].items()
        }
    return out


def merged_factors(
    own: Mapping[str, Mapping[int, tuple[float, str]]],
) -> dict[str, dict[int, Factor]]:
    """The defaults with an organisation's own factors (carrier -> year -> (kg, source)) on
    top: an own factor replaces the default of its year only."""
    out = {c: dict(years) for c, years in default_factors().items()}
    for carrier, years in own.items():
        for year, (kg, source) in years.items():
            out.setdefault(carrier, {})[year] = Factor(kg, year, source, False)
    return out


def factor_for(factors: Mapping[int, Factor], year: int) -> Factor | None:
    """The factor of `year`, else of the newest year before it, else of the oldest after."""
    if year in factors:
        return factors[year]
    before = [y for y in factors if y < year]
    if before:
        return factors[max(before)]
    after = [y for y in factors if y > year]
    return factors[min(after)] if after else None


@dataclass(frozen=True)
class Emission:
    carrier: str
    year: int
    energy_kwh: float
    kg_co2: float | None  # None: no factor for this carrier
    factor: Factor | None


def emissions(
    energy_by_carrier_year: Mapping[str, Mapping[int, float]],
    factors: Mapping[str, Mapping[int, Factor]],
) -> list[Emission]:
    """kg CO2 of each carrier's energy in each calendar year, with the factor used."""
    out = []
    for carrier, years in sorted(energy_by_carrier_year.items()):
        if carrier not in ENERGY_CARRIERS and carrier not in factors:
            continue
        for year, kwh in sorted(years.items()):
            f = factor_for(factors.get(carrier, {}), year)
            out.append(Emission(carrier, year, kwh, None if f is None else kwh * f.kg_per_kwh, f))
    return out
