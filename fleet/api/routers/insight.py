"""Routes of the energy insight (docs/insight.md): energy per period of a site or the whole
organisation, 15-minute load profiles (JSON, CSV), base load, CO2, benchmarks, monthly
reports (HTML, PDF), emission factors and insight settings. Computation: fleet/insight."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from fleet import audit
from fleet.api import schemas as s
from fleet.api.deps import Admin, Ctx, CtxDep, Operator, Viewer
from fleet.api.errors import Invalid, not_found
from fleet.insight import calendar as cal
from fleet.insight import co2, queries, reports, service, watch
from fleet.insight.energy import QuarterHour
from fleet.insight.export import load_profile_csv

router = APIRouter(prefix="/insight", tags=["insight"])
SiteId = Annotated[int, Path(ge=1, le=s.MAX_ID)]
Period = Literal["day", "week", "month", "year"]
Carrier = Literal["electricity", "natural_gas", "district_heating", "water"]
Start = Annotated[dt.date | None, Query(description="first local day (default: see route)")]
End = Annotated[dt.date | None, Query(description="last local day, inclusive (default: today)")]
Meter = Annotated[
    str | None,
    Query(pattern=r"^[a-z0-9-]{3,64}:\d{1,10}$", description="one meter: gateway_id:channel"),
]
Month = Annotated[
    str | None,
    Query(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="YYYY-MM (default: last month)"),
]
Lang = Annotated[Literal["de", "en"], Query(description="language of the report")]


def _invalid(exc: ValueError, path: str = "query") -> Invalid:
    return Invalid(str(exc), errors=[{"path": path, "message": str(exc)}])


def _today(now_ms: int) -> dt.date:
    return cal.local(now_ms).date()


def _site(conn: object, org_id: int, site_id: int) -> dict:
    site = queries.get_site(conn, org_id, site_id)  # type: ignore[arg-type]
    if site is None:
        raise not_found("site", site_id)
    return site


def _span(
    start: dt.date | None, end: dt.date | None, now_ms: int, default_days: int | None
) -> tuple[dt.date, dt.date]:
    """Default: the current year up to today, or the last `default_days` complete days."""
    today = _today(now_ms)
    if default_days is None:
        last = end or today
        first = start or last.replace(month=1, day=1)
    else:
        last = end or today - dt.timedelta(days=1)
        first = start or last - dt.timedelta(days=default_days - 1)
    try:
        service.check_span(first, last)
    except service.InsightError as exc:
        raise _invalid(exc) from None
    return first, last


# --- energy ---------------------------------------------------------------------------------


@router.get("/sites/{site_id}/energy")
def site_energy(
    site_id: SiteId,
    me: Viewer,
    ctx: CtxDep,
    period: Period = "month",
    start: Start = None,
    end: End = None,
) -> dict:
    """Consumption per period and carrier of a building (sub-meters left out) and of each of
    its meters, from the meters' registers, with the share of each period the data covers and
    the missing ranges. Default: the current year."""
    first, last = _span(start, end, ctx.now_ms, None)
    with ctx.ro() as conn:
        site = _site(conn, me.org_id, site_id)
        return service.site_energy(conn, site, period, first, last, ctx.now_ms)


@router.get("/organisation/energy")
def org_energy(
    me: Viewer, ctx: CtxDep, period: Period = "month", start: Start = None, end: End = None
) -> dict:
    """Consumption per period and carrier of the whole organisation, with each site's."""
    first, last = _span(start, end, ctx.now_ms, None)
    with ctx.ro() as conn:
        return service.org_energy(conn, me.org_id, period, first, last, ctx.now_ms)


# --- load profile and base load --------------------------------------------------------------


def _profile(
    ctx: CtxDep, me: Viewer, site_id: int, start: dt.date | None, end: dt.date | None,
    carrier: str, meter: str | None,
) -> list[QuarterHour]:  # fmt: skip
    first, last = _span(start, end, ctx.now_ms, 1)
    if (last - first).days >= 31:
        raise Invalid("a load profile covers at most 31 days: ask for a shorter span")
    with ctx.ro() as conn:
        _site(conn, me.org_id, site_id)
        try:
            return service.quarter_hours(conn, site_id, first, last, ctx.now_ms, carrier, meter)
        except service.InsightError as exc:
            raise _invalid(exc, "query:meter") from None


@router.get("/sites/{site_id}/load-profile")
def load_profile(
    site_id: SiteId, me: Viewer, ctx: CtxDep, start: Start = None, end: End = None,
    carrier: Carrier = "electricity", meter: Meter = None,
) -> dict:  # fmt: skip
    """Average power per quarter hour (kW) of the building's carrier or of one meter, at most
    31 days (default: yesterday). status: measured, interpolated or missing."""
    qhs = _profile(ctx, me, site_id, start, end, carrier, meter)
    return {
        "site_id": site_id,
        "carrier": carrier,
        "meter": meter,
        "quarter_hours": [
            {
                "ts_ms": q.ts_ms,
                "start": cal.local(q.ts_ms).isoformat(timespec="minutes"),
                "power_kw": None if q.energy_kwh is None else q.energy_kwh * 4,
                "energy_kwh": q.energy_kwh,
                "status": q.status,
            }
            for q in qhs
        ],
    }


@router.get(
    "/sites/{site_id}/load-profile.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
)
def load_profile_csv_route(
    site_id: SiteId, me: Viewer, ctx: CtxDep, start: Start = None, end: End = None,
    carrier: Carrier = "electricity", meter: Meter = None,
    format: Literal["rfc4180", "de"] = "rfc4180",  # noqa: A002 - the query parameter's name
) -> Response:  # fmt: skip
    """The load profile as CSV: RFC 4180 (comma, decimal point) or ?format=de for German
    spreadsheets (semicolon, decimal comma); layout in docs/insight.md."""
    qhs = _profile(ctx, me, site_id, start, end, carrier, meter)
    name = f"load-profile-site{site_id}-{carrier}.csv"
    return Response(
        load_profile_csv(qhs, format),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/sites/{site_id}/base-load")
def base_load(
    site_id: SiteId,
    me: Viewer,
    ctx: CtxDep,
    start: Start = None,
    end: End = None,
    meter: Meter = None,
) -> dict:
    """Night and weekend base load (kW), its share of consumption, peak demand and the
    consumption on public holidays of Lower Saxony, of the building's electricity or one
    meter. Default: the last 7 complete days."""
    first, last = _span(start, end, ctx.now_ms, 7)
    with ctx.ro() as conn:
        _site(conn, me.org_id, site_id)
        try:
            return service.site_base_load(conn, me.org_id, site_id, first, last, ctx.now_ms, meter)
        except service.InsightError as exc:
            raise _invalid(exc, "query:meter") from None


@router.post("/base-load/check")
def base_load_check(me: Operator, ctx: CtxDep) -> dict:
    """Run the base-load watch for the organisation now (it also runs periodically): opens or
    closes base_load_rise alerts; returns each meter's verdict."""
    with ctx.tx() as conn:
        meters = watch.check_org(conn, me.org_id, ctx.now_ms)
        audit.record(conn, me, "insight.base_load_check", "insight", ctx.now_ms,
                     {"meters": len(meters)})  # fmt: skip
        return {"meters": meters}


# --- CO2 and benchmarks ----------------------------------------------------------------------


@router.get("/sites/{site_id}/co2")
def site_co2(
    site_id: SiteId, me: Viewer, ctx: CtxDep, period: Literal["month", "year"] = "year",
    start: Start = None, end: End = None,
) -> dict:  # fmt: skip
    """CO2 (kg) per carrier and period of a building, with the factor used and its source."""
    first, last = _span(start, end, ctx.now_ms, None)
    with ctx.ro() as conn:
        site = _site(conn, me.org_id, site_id)
        energy = service.site_energy(conn, site, period, first, last, ctx.now_ms)
        return {"site_id": site_id, **service.co2_of(conn, me.org_id, energy)}


@router.get("/organisation/co2")
def org_co2(
    me: Viewer,
    ctx: CtxDep,
    period: Literal["month", "year"] = "year",
    start: Start = None,
    end: End = None,
) -> dict:
    """CO2 (kg) per carrier and period of the whole organisation."""
    first, last = _span(start, end, ctx.now_ms, None)
    with ctx.ro() as conn:
        energy = service.org_energy(conn, me.org_id, period, first, last, ctx.now_ms)
        return service.co2_of(conn, me.org_id, energy)


@router.get("/benchmarks")
def benchmarks(
    me: Viewer,
    ctx: CtxDep,
    year: Annotated[
        int | None, Query(ge=cal.MIN_YEAR, le=cal.MAX_YEAR, description="default: last year")
    ] = None,
    scope: Annotated[
        Literal["own", "shared"], Query(description="shared: every organisation that shares")
    ] = "own",
) -> dict:
    """kWh per m² of floor area in a year (electricity, heat, total) per building, ranked
    within each building type; scope=shared adds the buildings of every organisation that
    shares its benchmarks (only for an organisation that shares its own)."""
    with ctx.ro() as conn:
        try:
            return service.benchmarks(
                conn, me.org_id, year or _today(ctx.now_ms).year - 1, ctx.now_ms, scope == "shared"
            )
        except service.InsightError as exc:
            raise _invalid(exc, "query:scope") from None


# --- reports ---------------------------------------------------------------------------------


def _month(month: str | None, now_ms: int) -> dt.date:
    try:
        return reports.parse_month(month, now_ms)
    except service.InsightError as exc:
        raise _invalid(exc, "query:month") from None


def _site_report(ctx: Ctx, org_id: int, site_id: int, month: str | None, lang: str) -> dict:
    """What the HTML and the PDF report of a building show."""
    with ctx.ro() as conn:
        site = _site(conn, org_id, site_id)
        return reports.report_site(conn, org_id, site, _month(month, ctx.now_ms), ctx.now_ms, lang)


@router.get("/sites/{site_id}/report.html", response_class=HTMLResponse)
def site_report_html(
    site_id: SiteId, me: Viewer, ctx: CtxDep, month: Month = None, lang: Lang = "de"
) -> HTMLResponse:
    """The monthly report of a building as HTML (charts as inline SVG)."""
    data = _site_report(ctx, me.org_id, site_id, month, lang)
    return HTMLResponse(reports.render_html(data))


@router.get(
    "/sites/{site_id}/report.pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}},
)
def site_report_pdf(
    site_id: SiteId, me: Viewer, ctx: CtxDep, month: Month = None, lang: Lang = "de"
) -> Response:
    """The monthly report of a building as PDF."""
    data = _site_report(ctx, me.org_id, site_id, month, lang)
    return Response(reports.render_pdf(data), media_type="application/pdf")


@router.get("/organisation/report.html", response_class=HTMLResponse)
def org_report_html(
    me: Viewer, ctx: CtxDep, month: Month = None, lang: Lang = "de"
) -> HTMLResponse:
    """The monthly report of the organisation (all its buildings) as HTML."""
    with ctx.ro() as conn:
        data = reports.report_org(conn, me.org_id, _month(month, ctx.now_ms), ctx.now_ms, lang)
    return HTMLResponse(reports.render_html(data))


@router.get(
    "/organisation/report.pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}},
)
def org_report_pdf(me: Viewer, ctx: CtxDep, month: Month = None, lang: Lang = "de") -> Response:
    """The monthly report of the organisation as PDF."""
    with ctx.ro() as conn:
        data = reports.report_org(conn, me.org_id, _month(month, ctx.now_ms), ctx.now_ms, lang)
    return Response(reports.render_pdf(data), media_type="application/pdf")


# --- emission factors, settings, channel roles -----------------------------------------------


class FactorIn(BaseModel):
    carrier: Carrier
    year: int = Field(ge=cal.MIN_YEAR, le=cal.MAX_YEAR)
    kg_per_kwh: float = Field(
        ge=0, le=5, allow_inf_nan=False, description="kg CO2 (or CO2e) per kWh"
    )
    source: str = Field("", max_length=500, description="where the figure comes from")


@router.get("/emission-factors")
def list_factors(me: Viewer, ctx: CtxDep) -> dict:
    """The organisation's own factors and the packaged defaults (UBA, with sources)."""
    with ctx.ro() as conn:
        own = queries.own_factors(conn, me.org_id)
    defaults = [
        {"carrier": c, "year": y, "kg_per_kwh": f.kg_per_kwh, "source": f.source}
        for c, years in co2.default_factors().items()
        for y, f in sorted(years.items())
    ]
    return {"own": own, "defaults": defaults}


@router.put("/emission-factors")
def put_factor(body: FactorIn, me: Admin, ctx: CtxDep) -> dict:
    """Set the organisation's factor of a carrier and year (replaces the default for it)."""
    if body.carrier == "water":
        raise Invalid(
            "water has no emission factor here",
            errors=[{"path": "carrier", "message": "an energy carrier"}],
        )
    with ctx.tx() as conn:
        queries.put_factor(
            conn, me.org_id, body.carrier, body.year, body.kg_per_kwh, body.source, ctx.now_ms
        )
        audit.record(
            conn,
            me,
            "insight.factor.set",
            f"factor:{body.carrier}:{body.year}",
            ctx.now_ms,
            body.model_dump(),
        )
        return {"own": queries.own_factors(conn, me.org_id)}


@router.delete("/emission-factors/{carrier}/{year}", status_code=204)
def delete_factor(
    carrier: Annotated[Carrier, Path()], year: Annotated[int, Path(ge=cal.MIN_YEAR, le=cal.MAX_YEAR)],
    me: Admin, ctx: CtxDep,
) -> None:  # fmt: skip
    """Remove the organisation's own factor; the default applies again."""
    with ctx.tx() as conn:
        if not queries.delete_factor(conn, me.org_id, carrier, year):
            raise not_found("emission factor", f"{carrier}/{year}")
        audit.record(conn, me, "insight.factor.delete", f"factor:{carrier}:{year}", ctx.now_ms, {})


class SettingsIn(BaseModel):
    night_start_hour: int | None = Field(None, ge=0, le=23, description="local hour, inclusive")
    night_end_hour: int | None = Field(None, ge=0, le=24, description="local hour, exclusive")
    base_load_rise_share: float | None = Field(None, gt=0, le=10, description="0.2: alert at +20 %")
    baseline_weeks: int | None = Field(None, ge=2, le=52)
    shares_benchmarks: bool | None = Field(
        None, description="show this organisation's benchmarks to others that share"
    )


@router.get("/settings")
def get_settings(me: Viewer, ctx: CtxDep) -> dict:
    with ctx.ro() as conn:
        return queries.get_settings(conn, me.org_id)


@router.put("/settings")
def put_settings(body: SettingsIn, me: Admin, ctx: CtxDep) -> dict:
    """Night window of the base load, the base-load alert threshold and baseline, and whether
    the organisation shares its benchmarks."""
    values = body.model_dump(exclude_none=True)
    with ctx.tx() as conn:
        current = queries.get_settings(conn, me.org_id)
        if {**current, **values}["night_start_hour"] == {**current, **values}["night_end_hour"]:
            raise Invalid("the night window needs different start and end hours",
                          errors=[{"path": "night_end_hour", "message": "equals night_start_hour"}])  # fmt: skip
        queries.put_settings(conn, me.org_id, dict(values), ctx.now_ms)
        audit.record(conn, me, "insight.settings", "insight", ctx.now_ms, values)
        return queries.get_settings(conn, me.org_id)


class ChannelSettingsIn(BaseModel):
    gateway_id: str = Field(pattern=s.GATEWAY_ID)
    channel: int = Field(ge=0, lt=2**32)
    carrier: Carrier | None = Field(None, description="null: from the quantity")
    kwh_per_unit: float | None = Field(None, gt=0, le=1000, description="e.g. kWh per m³ of gas")
    submeter: bool = Field(False, description="left out of the building's totals")


@router.put("/sites/{site_id}/channel-settings")
def put_channel_settings(
    site_id: SiteId, body: ChannelSettingsIn, me: Operator, ctx: CtxDep
) -> dict:
    """What a meter channel measures (carrier), its unit's energy content and whether it is a
    sub-meter."""
    with ctx.tx() as conn:
        _site(conn, me.org_id, site_id)
        pk = queries.channel_in_site(conn, site_id, body.gateway_id, body.channel)
        if pk is None:
            raise Invalid(
                f"channel {body.channel} of gateway {body.gateway_id!r} is not in site {site_id}",
                errors=[{"path": "channel", "message": "not a channel of this site's gateways"}],
            )
        queries.put_channel_settings(conn, pk, body.carrier, body.kwh_per_unit, body.submeter)
        audit.record(conn, me, "insight.channel", f"site:{site_id}", ctx.now_ms, body.model_dump())
    return body.model_dump()
