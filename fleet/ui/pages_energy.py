"""Energy pages of the UI (docs/ui.md, docs/insight.md): the municipality's energy and CO2 per
building for a day, week, month or year with its data coverage and the kWh/m² ranking; one
building's energy, 15-minute load profile (CSV), base load and CO2; the monthly reports; the
emission factors (admins set the organisation's own); the insight settings (night window,
base-load alert, benchmark sharing; admins change them). Every figure comes from
fleet/insight/service.py and reports.py, as the API's do: no SQL and no computation here."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import math
import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from fleet import audit, auth
from fleet.api import schemas
from fleet.api.routers.insight import SettingsIn
from fleet.insight import calendar as cal
from fleet.insight import co2, export, queries, reports, service
from fleet.insight.energy import MISSING, QuarterHour, missing_ranges
from fleet.ui import charts
from fleet.ui import common as c
from fleet.ui.energy_charts import category_bars
from fleet.ui.web import fmt_num, lang_of, render, translate

router = APIRouter()
SiteId = Annotated[int, Path(ge=1, le=schemas.MAX_ID)]
SUB_PERIOD = {"year": "month", "month": "day", "week": "day"}  # the bars of a period's chart
PROFILE_SPANS = ("day", "week")
PROFILE_MAX_DAYS = 31  # as the API's load profile
MAX_MISSING = 6  # missing ranges listed per period; more are counted
DONE = ("factor_set", "factor_cleared", "settings_saved")
REPORT_CSP = (
    "default-src 'none'; style-src {style}; img-src 'self' data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


# --- request arguments ------------------------------------------------------------------------


def _today(now_ms: int) -> dt.date:
    return cal.local(now_ms).date()


def _date(text: str | None, default: dt.date) -> dt.date:
    """A YYYY-MM-DD date of the years the insight covers, else default (a bad link shows the
    current period rather than an error)."""
    try:
        day = dt.date.fromisoformat(text or "")
    except ValueError:
        return default
    # a year inside the range, so a week or year around the day stays inside it too
    return day if cal.MIN_YEAR < day.year < cal.MAX_YEAR else default


def _choice(request: Request, name: str, allowed: tuple[str, ...], default: str) -> str:
    value = request.query_params.get(name, default)
    return value if value in allowed else default


def _span(period: str, day: dt.date) -> tuple[dt.date, dt.date]:
    """First and last day of the period (day, week, month, year) holding day."""
    first = cal.period_start(day, period)
    return first, cal.next_start(first, period) - dt.timedelta(days=1)


def _period_args(request: Request, now_ms: int) -> dict[str, Any]:
    today = _today(now_ms)
    period = _choice(request, "period", cal.PERIODS, "month")
    day = _date(request.query_params.get("date"), today)
    first, last = _span(period, day)
    after = last + dt.timedelta(days=1)
    prev_month = (day.replace(day=1) - dt.timedelta(days=1)).replace(day=1)
    return {
        "period": period,
        "periods": cal.PERIODS,
        "day": day,
        "date": day.isoformat(),
        "first": first,
        "last": last,
        "label": cal.label(first, period),
        "prev_date": (first - dt.timedelta(days=1)).isoformat(),
        "next_date": after.isoformat() if after <= today else None,
        "report_months": [
            f"{m.year}-{m.month:02d}" for m in (day.replace(day=1), prev_month)
        ],
    }  # fmt: skip


# --- formatting -------------------------------------------------------------------------------


def _when(lang: str, ts_ms: int) -> str:
    return cal.local(ts_ms).strftime("%d.%m.%Y %H:%M" if lang == "de" else "%Y-%m-%d %H:%M")


def _day(lang: str, day: dt.date) -> str:
    return day.strftime("%d.%m.%Y") if lang == "de" else day.isoformat()


def _pct(lang: str, share: float | None) -> str:
    return "–" if share is None else fmt_num(lang, share * 100, 1) + " %"


def _known(p: dict[str, Any]) -> float | None:
    """A period's energy; None when no quarter hour of it has data (shown as "–", not 0)."""
    return p["energy"] if p["measured_share"] or p["interpolated_share"] else None


def _coverage(lang: str, p: dict[str, Any]) -> dict[str, Any]:
    """How much of a period the data covers, to be said in words (never by colour alone)."""
    ranges = [(a["from_ts_ms"], a["to_ts_ms"]) for a in p["missing"]]
    return _coverage_of(lang, p["measured_share"], p.get("interpolated_share"), ranges)


def _coverage_of(
    lang: str, measured: float | None, interpolated: float | None, ranges: list[tuple[int, int]]
) -> dict[str, Any]:
    if measured is None:
        state = "future"
    elif ranges:
        state = "gaps"
    elif interpolated:
        state = "interpolated"
    else:
        state = "complete"
    return {
        "state": state,
        "measured": _pct(lang, measured),
        "interpolated": _pct(lang, interpolated) if interpolated else None,
        "missing": [f"{_when(lang, a)} – {_when(lang, b)}" for a, b in ranges[:MAX_MISSING]],
        "more": max(0, len(ranges) - MAX_MISSING),
    }


# --- the municipality -------------------------------------------------------------------------


def _benchmark_year(request: Request, now_ms: int) -> int:
    text = request.query_params.get("year", "")
    default = _today(now_ms).year - 1
    if not text.isdigit():
        return default
    return int(text) if cal.MIN_YEAR <= int(text) <= cal.MAX_YEAR else default


@router.get("/energy")
def energy(request: Request) -> Response:
    s = c.session(request)
    cx = c.ctx(request)
    lang = lang_of(request)
    org_id = s.principal.org_id
    args = _period_args(request, cx.now_ms)
    year = _benchmark_year(request, cx.now_ms)
    with cx.ro() as conn:
        org = queries.get_org(conn, org_id)
        sites = {st["id"]: st for st in queries.sites_of(conn, [org_id])}
        total = service.org_energy(conn, org_id, args["period"], args["first"], args["last"],
                                   cx.now_ms)  # fmt: skip
        fs = service.factors(conn, org_id)
        total_co2 = service.co2_of(conn, org_id, total)
        ranking = service.benchmarks(conn, org_id, year, cx.now_ms, False)["sites"]
        shared = (
            service.benchmarks(conn, org_id, year, cx.now_ms, True)["sites"]
            if org["shares_benchmarks"]
            else None
        )
    rows = []
    for one in total["sites"]:
        kg = {r["carrier"]: r["kg_co2"] for r in service.co2_rows(one["carriers"], fs)}
        carriers = [
            {"carrier": k, "unit": v["unit"], "energy": _known(p), "kg_co2": kg.get(k),
             "coverage": _coverage(lang, p)}
            for k, v in one["carriers"].items()
            for p in v["periods"][:1]
        ]  # fmt: skip
        kgs = [x["kg_co2"] for x in carriers if x["kg_co2"] is not None]
        rows.append({"site": sites[one["site_id"]], "carriers": carriers,
                     "kg_co2": sum(kgs) if kgs else None})  # fmt: skip
    totals = []
    for k, v in total["carriers"].items():
        p = v["periods"][0]
        totals.append({
            "carrier": k, "unit": v["unit"], "energy": p["energy"],
            "kg_co2": next((r["kg_co2"] for r in total_co2["rows"] if r["carrier"] == k), None),
            "measured": _pct(lang, p["measured_share"]),
            "incomplete": [sites[i]["name"] for i in p["sites_incomplete"] if i in sites],
        })  # fmt: skip
    electricity = [
        next((x for x in r["carriers"] if x["carrier"] == "electricity"), None) for r in rows
    ]
    chart = category_bars(
        [r["site"]["name"][:16] for r in rows],
        [None if e is None else e["energy"] for e in electricity],
        "kWh",
        translate(lang, "energy.chart_sites", label=args["label"]),
        translate(lang, "energy.chart_sites_desc", n=len(rows)),
        lang,
        notes=[
            translate(lang, "energy.measured_pct", pct=e["coverage"]["measured"]) if e else ""
            for e in electricity
        ],
        partial=[e is not None and e["coverage"]["state"] != "complete" for e in electricity],
    )  # fmt: skip
    return render(
        request,
        "energy.html",
        {**args, "organisation": org, "rows": rows, "totals": totals,
         "co2_total": total_co2["total_kg_by_period"].get(args["label"]), "chart": chart,
         "first_text": _day(lang, args["first"]), "last_text": _day(lang, args["last"]),
         "year": year, "ranking": ranking, "shared": shared,
         "years": list(range(_today(cx.now_ms).year, _today(cx.now_ms).year - 6, -1))},
    )  # fmt: skip


# --- one building -----------------------------------------------------------------------------


def _period_bars(lang: str, sub: str, carrier: str, data: dict[str, Any]) -> dict[str, Any]:
    """The chart of one carrier's consumption per sub-period (days of a month, months of a
    year) and the same figures as a table."""
    periods = data["periods"]

    def short(p: dict[str, Any]) -> str:
        start = cal.local(p["start_ts_ms"]).date()
        if sub == "month":
            return start.strftime("%m/%Y" if lang == "de" else "%Y-%m")
        return start.strftime("%d.%m." if lang == "de" else "%m-%d")

    cov = [_coverage(lang, p) for p in periods]
    name = translate(lang, "carrier." + carrier)
    svg = category_bars(
        [short(p) for p in periods], [_known(p) for p in periods], data["unit"],
        translate(lang, "energy.chart_periods", carrier=name, sub=translate(lang, "sub." + sub)),
        translate(lang, "energy.chart_periods_desc", n=len(periods)), lang,
        notes=[translate(lang, "energy.measured_pct", pct=x["measured"]) for x in cov],
        partial=[x["state"] != "complete" for x in cov],
    )  # fmt: skip
    rows = [
        {"label": short(p), "energy": _known(p), "coverage": x}
        for p, x in zip(periods, cov, strict=True)
    ]
    return {"carrier": carrier, "unit": data["unit"], "svg": svg, "rows": rows}


def _profile_chart(
    lang: str, qhs: list[QuarterHour], first: dt.date, last: dt.date
) -> dict[str, Any]:
    t0, t1 = cal.day_range_ms(first)[0], cal.day_range_ms(last)[1]
    bars = [(q.ts_ms, q.energy_kwh * 4) for q in qhs if q.energy_kwh is not None]
    missing = sum(1 for q in qhs if q.status == MISSING)
    title = translate(lang, "energy.profile_title")
    desc = translate(lang, "energy.profile_desc", n=len(qhs), missing=missing)
    return {
        "svg": charts.bar_chart(bars, t0, t1, cal.QUARTER_MS, "kW", title, desc, lang),
        "n": len(qhs),
        "missing_n": missing,
        "coverage": _coverage_of(
            lang,
            (len(qhs) - missing) / len(qhs) if qhs else None,
            None,
            missing_ranges(qhs),
        ),
    }


@router.get("/energy/sites/{site_id}")
def site_page(request: Request, site_id: SiteId) -> Response:
    s = c.session(request)
    cx = c.ctx(request)
    lang = lang_of(request)
    org_id = s.principal.org_id
    args = _period_args(request, cx.now_ms)
    first, last, period = args["first"], args["last"], args["period"]
    profile = _choice(request, "profile", PROFILE_SPANS, "day")
    lp_first, lp_last = _span(profile, args["day"])
    with cx.ro() as conn:
        site = c.found(queries.get_site(conn, org_id, site_id))
        total = service.site_energy(conn, site, period, first, last, cx.now_ms)
        site_co2 = service.co2_of(conn, org_id, total)
        sub = (
            service.site_energy(conn, site, SUB_PERIOD[period], first, last, cx.now_ms)
            if period in SUB_PERIOD
            else None
        )
        base = service.site_base_load(conn, org_id, site_id, first, last, cx.now_ms)
        qhs = service.quarter_hours(conn, site_id, lp_first, lp_last, cx.now_ms)
    area = site["floor_area_m2"]
    carriers = []
    for k, v in total["carriers"].items():
        p = v["periods"][0]
        row = next((r for r in site_co2["rows"] if r["carrier"] == k), None)
        kwh = _known(p)
        carriers.append({
            "carrier": k, "unit": v["unit"], "energy": kwh, "interpolated": p["interpolated"],
            "per_m2": kwh / area if kwh is not None and area and v["unit"] == "kWh" else None,
            "coverage": _coverage(lang, p), "co2": row,
        })  # fmt: skip
    meters = [
        {**m, "energy": _known(m["periods"][0]), "coverage": _coverage(lang, m["periods"][0])}
        for m in total["meters"]
    ]
    peak = base["peak_ts_ms"]
    return render(
        request,
        "energy_site.html",
        {**args, "site": site, "carriers": carriers, "meters": meters,
         "first_text": _day(lang, first), "last_text": _day(lang, last),
         "co2_total": site_co2["total_kg_by_period"].get(args["label"]),
         "bars": [_period_bars(lang, SUB_PERIOD[period], k, v)
                  for k, v in (sub or {"carriers": {}})["carriers"].items()],
         "base": base, "peak_text": None if peak is None else _when(lang, peak),
         "holidays": [{**h, "date_text": _day(lang, dt.date.fromisoformat(h["date"]))}
                      for h in base["holidays"]],
         "profile": profile, "profiles": PROFILE_SPANS, "lp_start": lp_first.isoformat(),
         "lp_end": lp_last.isoformat(), "lp_first_text": _day(lang, lp_first),
         "lp_last_text": _day(lang, lp_last),
         "chart": _profile_chart(lang, qhs, lp_first, lp_last)},
    )  # fmt: skip


@router.get("/energy/sites/{site_id}/load-profile.csv")
def load_profile_csv(request: Request, site_id: SiteId) -> Response:
    """The load profile as CSV in the API's layouts (?format=de for German spreadsheets)."""
    s = c.session(request)
    cx = c.ctx(request)
    p = request.query_params
    yesterday = _today(cx.now_ms) - dt.timedelta(days=1)
    first = _date(p.get("start"), yesterday)
    last = _date(p.get("end"), first)
    fmt = p.get("format", "rfc4180")
    carrier = p.get("carrier", "electricity")
    if (
        last < first
        or (last - first).days >= PROFILE_MAX_DAYS
        or fmt not in export.FORMATS
        or carrier not in co2.CARRIERS
    ):
        return render(
            request, "error.html",
            {"title": "energy.bad_request_title", "text": "energy.profile_request"}, 422,
        )  # fmt: skip
    with cx.ro() as conn:
        c.found(queries.get_site(conn, s.principal.org_id, site_id))
        qhs = service.quarter_hours(conn, site_id, first, last, cx.now_ms, carrier)
    name = f"load-profile-site{site_id}-{carrier}-{first.isoformat()}.csv"
    return Response(
        export.load_profile_csv(qhs, fmt),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


# --- monthly reports --------------------------------------------------------------------------


def _report_month(request: Request, now_ms: int) -> dt.date | None:
    text = request.query_params.get("month")
    if text is not None and not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", text):
        return None
    try:
        return reports.parse_month(text, now_ms)
    except service.InsightError:
        return None


def _report(request: Request, data_of: Any, pdf: bool, name: str) -> Response:
    cx = c.ctx(request)
    lang = lang_of(request)
    month = _report_month(request, cx.now_ms)
    if month is None:
        return render(
            request, "error.html",
            {"title": "energy.bad_request_title", "text": "energy.report_month"}, 422,
        )  # fmt: skip
    with cx.ro() as conn:
        data = data_of(conn, month, lang)
    filename = f"{name}-{month.year}-{month.month:02d}"
    if pdf:
        return Response(
            reports.render_pdf(data),
            media_type="application/pdf",
            headers={"Content-Disposition": f'inline; filename="{filename}.pdf"'},
        )
    html = reports.render_html(data)
    # The report is a document of its own (the one the API serves) with a <style> element:
    # allowed by its hash, so the UI's CSP stays free of 'unsafe-inline'.
    styles = re.findall(r"<style>(.*?)</style>", html, re.S)
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(x.encode()).digest()).decode()}'" for x in styles
    )
    return HTMLResponse(
        html, headers={"Content-Security-Policy": REPORT_CSP.format(style=hashes or "'none'")}
    )


@router.get("/energy/report.html")
def org_report_html(request: Request) -> Response:
    return _org_report(request, False)


@router.get("/energy/report.pdf")
def org_report_pdf(request: Request) -> Response:
    return _org_report(request, True)


def _org_report(request: Request, pdf: bool) -> Response:
    s = c.session(request)
    org_id = s.principal.org_id

    def data_of(conn: Any, month: dt.date, lang: str) -> dict[str, Any]:
        return reports.report_org(conn, org_id, month, c.ctx(request).now_ms, lang)

    return _report(request, data_of, pdf, "energy-report")


@router.get("/energy/sites/{site_id}/report.html")
def site_report_html(request: Request, site_id: SiteId) -> Response:
    return _site_report(request, site_id, False)


@router.get("/energy/sites/{site_id}/report.pdf")
def site_report_pdf(request: Request, site_id: SiteId) -> Response:
    return _site_report(request, site_id, True)


def _site_report(request: Request, site_id: int, pdf: bool) -> Response:
    s = c.session(request)
    org_id = s.principal.org_id
    with c.ctx(request).ro() as conn:
        c.found(queries.get_site(conn, org_id, site_id))  # 404 before a bad month's 422

    def data_of(conn: Any, month: dt.date, lang: str) -> dict[str, Any]:
        site = c.found(queries.get_site(conn, org_id, site_id))
        return reports.report_site(conn, org_id, site, month, c.ctx(request).now_ms, lang)

    return _report(request, data_of, pdf, f"energy-report-site{site_id}")


# --- emission factors -------------------------------------------------------------------------


def _factors_page(
    request: Request, error: str = "", form: dict[str, str] | None = None, status: int = 200
) -> Response:
    s = c.session(request)
    cx = c.ctx(request)
    year = _today(cx.now_ms).year
    with cx.ro() as conn:
        own = queries.own_factors(conn, s.principal.org_id)
        merged = service.factors(conn, s.principal.org_id)
    defaults = [
        {"carrier": k, "year": y, "kg_per_kwh": f.kg_per_kwh, "source": f.source}
        for k, years in co2.default_factors().items()
        for y, f in sorted(years.items(), reverse=True)
    ]
    current = [
        {"carrier": k, "factor": co2.factor_for(merged.get(k, {}), year)}
        for k in co2.ENERGY_CARRIERS
    ]
    done = request.query_params.get("done")
    return render(
        request,
        "energy_factors.html",
        {"own": own, "defaults": defaults, "current": current, "year": year, "error": error,
         "form": form or {"carrier": "electricity", "year": str(year), "kg_per_kwh": "",
                          "source": ""},
         "carriers": co2.ENERGY_CARRIERS, "done": done if done in DONE else None},
        status,
    )  # fmt: skip


@router.get("/energy/factors")
def factors(request: Request) -> Response:
    return _factors_page(request)


def _factor_input(lang: str, form: FormData) -> tuple[dict[str, Any] | None, str]:
    """(carrier, year, kg_per_kwh, source) of the form, or None and what is wrong."""
    carrier = c.form_str(form, "carrier", max_len=40)
    if carrier not in co2.ENERGY_CARRIERS:
        return None, translate(lang, "factors.bad_carrier")
    year = c.form_int(form, "year")
    if year is None or not cal.MIN_YEAR <= year <= cal.MAX_YEAR:
        return None, translate(lang, "factors.bad_year", lo=cal.MIN_YEAR, hi=cal.MAX_YEAR)
    text = c.form_str(form, "kg_per_kwh", max_len=40).replace(",", ".")
    try:
        kg = float(text)
    except ValueError:
        kg = math.nan
    if not (math.isfinite(kg) and 0 <= kg <= 5):
        return None, translate(lang, "factors.bad_value")
    return {"carrier": carrier, "year": year, "kg_per_kwh": kg,
            "source": c.form_str(form, "source", max_len=500)}, ""  # fmt: skip


@router.post("/energy/factors")
async def set_factor(request: Request) -> Response:
    s, form = await c.post_form(request, auth.ADMIN)
    cx = c.ctx(request)
    lang = lang_of(request)
    body, error = _factor_input(lang, form)
    if body is None:
        keep = {k: c.form_str(form, k, max_len=500) for k in ("carrier", "year", "kg_per_kwh",
                                                             "source")}  # fmt: skip
        return await run_in_threadpool(_factors_page, request, error, keep, 422)

    def save() -> None:
        with cx.tx() as conn:
            queries.put_factor(conn, s.principal.org_id, body["carrier"], body["year"],
                               body["kg_per_kwh"], body["source"], cx.now_ms)  # fmt: skip
            audit.record(conn, s.principal, "insight.factor.set",
                         f"factor:{body['carrier']}:{body['year']}", cx.now_ms,
                         {**body, "via": "ui"})  # fmt: skip

    await run_in_threadpool(save)
    return c.redirect(c.PREFIX + "/energy/factors", done="factor_set")


@router.post("/energy/factors/delete")
async def clear_factor(request: Request) -> Response:
    s, form = await c.post_form(request, auth.ADMIN)
    cx = c.ctx(request)
    carrier = c.form_str(form, "carrier", max_len=40)
    year = c.form_int(form, "year")

    def delete() -> bool:
        with cx.tx() as conn:
            if year is None or not queries.delete_factor(conn, s.principal.org_id, carrier, year):
                return False
            audit.record(conn, s.principal, "insight.factor.delete",
                         f"factor:{carrier}:{year}", cx.now_ms, {"via": "ui"})  # fmt: skip
            return True

    if not await run_in_threadpool(delete):
        raise c.UiNotFound()
    return c.redirect(c.PREFIX + "/energy/factors", done="factor_cleared")


# --- insight settings -------------------------------------------------------------------------

# form field -> message key when its value is out of the API's limits (SettingsIn)
SETTING_ERRORS = {
    "night_start_hour": "insight_settings.bad_start",
    "night_end_hour": "insight_settings.bad_end",
    "base_load_rise_pct": "insight_settings.bad_rise",
    "baseline_weeks": "insight_settings.bad_weeks",
}


def _settings_form(lang: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The form's entries for the stored settings (the alert threshold in percent)."""
    return {
        "night_start_hour": str(settings["night_start_hour"]),
        "night_end_hour": str(settings["night_end_hour"]),
        "base_load_rise_pct": fmt_num(lang, settings["base_load_rise_share"] * 100),
        "baseline_weeks": str(settings["baseline_weeks"]),
        "shares_benchmarks": bool(settings["shares_benchmarks"]),
    }


def _settings_page(
    request: Request,
    errors: dict[str, str] | None = None,
    form: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:
    s = c.session(request)
    cx = c.ctx(request)
    with cx.ro() as conn:
        settings = queries.get_settings(conn, s.principal.org_id)
    done = request.query_params.get("done")
    return render(
        request,
        "energy_settings.html",
        {"settings": settings, "rise_pct": settings["base_load_rise_share"] * 100,
         "form": form or _settings_form(lang_of(request), settings), "errors": errors or {},
         "done": done if done in DONE else None},
        status,
    )  # fmt: skip


@router.get("/energy/settings")
def insight_settings(request: Request) -> Response:
    return _settings_page(request)


def _number(text: str) -> float | None:
    try:
        value = float(text.replace(",", ".").replace("%", "").strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _settings_input(lang: str, form: FormData) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings of the form in the API's terms (checked with the API's SettingsIn, so
    the limits are the same) and the message per form field that is wrong."""
    raw = {
        "night_start_hour": c.form_int(form, "night_start_hour"),
        "night_end_hour": c.form_int(form, "night_end_hour"),
        "base_load_rise_pct": _number(c.form_str(form, "base_load_rise_pct", max_len=40)),
        "baseline_weeks": c.form_int(form, "baseline_weeks"),
    }
    errors = {k: translate(lang, SETTING_ERRORS[k]) for k, v in raw.items() if v is None}
    pct = raw.pop("base_load_rise_pct")
    values = {**raw, "base_load_rise_share": None if pct is None else pct / 100,
              "shares_benchmarks": form.get("shares_benchmarks") == "on"}  # fmt: skip
    try:
        SettingsIn.model_validate(values)
    except ValidationError as exc:
        for e in exc.errors():
            field = str(e["loc"][0]).replace("base_load_rise_share", "base_load_rise_pct")
            if field in SETTING_ERRORS:
                errors.setdefault(field, translate(lang, SETTING_ERRORS[field]))
    if "night_end_hour" not in errors and values["night_start_hour"] == values["night_end_hour"]:
        errors["night_end_hour"] = translate(lang, "insight_settings.same_hours")
    return values, errors


@router.post("/energy/settings")
async def save_insight_settings(request: Request) -> Response:
    s, form = await c.post_form(request, auth.ADMIN)
    cx = c.ctx(request)
    values, errors = _settings_input(lang_of(request), form)
    if errors:
        keep = {k: c.form_str(form, k, max_len=40) for k in SETTING_ERRORS}
        keep["shares_benchmarks"] = values["shares_benchmarks"]
        return await run_in_threadpool(_settings_page, request, errors, keep, 422)

    def save() -> None:
        with cx.tx() as conn:
            queries.put_settings(conn, s.principal.org_id, dict(values), cx.now_ms)
            audit.record(conn, s.principal, "insight.settings", "insight", cx.now_ms,
                         {**values, "via": "ui"})  # fmt: skip

    await run_in_threadpool(save)
    return c.redirect(c.PREFIX + "/energy/settings", done="settings_saved")
