"""Benchmarks between buildings: specific consumption (kWh per m² of floor area and year) by
building type, ranked lowest first. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class SiteYear:
    org_id: int
    org_name: str
    site_id: int
    site_name: str
    building_type: str
    floor_area_m2: float | None
    electricity_kwh: float
    heat_kwh: float  # natural gas + district heating
    measured_share: float | None  # the lower of the two carriers' coverage
    electricity_kwh_per_m2: float | None = None
    heat_kwh_per_m2: float | None = None
    total_kwh_per_m2: float | None = None
    rank: int | None = None  # within its building type, 1 = lowest total per m²
    of: int | None = None


def rank(sites: Sequence[SiteYear]) -> list[SiteYear]:
    """Per-m² figures and the rank within each building type (sites without floor area or
    consumption are listed without a rank). Ordered by type, then rank."""
    with_area = []
    for s in sites:
        if s.floor_area_m2 and s.floor_area_m2 > 0:
            a = s.floor_area_m2
            s = replace(
                s,
                electricity_kwh_per_m2=s.electricity_kwh / a,
                heat_kwh_per_m2=s.heat_kwh / a,
                total_kwh_per_m2=(s.electricity_kwh + s.heat_kwh) / a,
            )
        with_area.append(s)
    out: list[SiteYear] = []
    for btype in sorted({s.building_type for s in with_area}):
        group = [s for s in with_area if s.building_type == btype]
        ranked = sorted(
            (s for s in group if s.total_kwh_per_m2),
            key=lambda s: (s.total_kwh_per_m2, s.org_id, s.site_id),
        )
        out.extend(replace(s, rank=i + 1, of=len(ranked)) for i, s in enumerate(ranked))
        out.extend(s for s in group if not s.total_kwh_per_m2)
    return out
