"""Monthly reports per building and per municipality: the figures (report_site / report_org,
from service.py), rendered as HTML (Jinja2 template templates/report.html, charts as inline
SVG) or PDF (reportlab). German or English labels; numbers in the language's format."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from sqlalchemy import Connection

from fleet.insight import calendar as cal
from fleet.insight import charts, queries, service
from fleet.insight.energy import MEASURED, QuarterHour
from fleet.insight.profile import NightWindow, base_load

LANGS = ("de", "en")
CARRIER_NAMES = {
    "de": {"electricity": "Strom", "natural_gas": "Erdgas", "district_heating": "Fernwärme",
           "water": "Wasser"},
    "en": {"electricity": "Electricity", "natural_gas": "Natural gas",
           "district_heating": "District heating", "water": "Water"},
}  # fmt: skip
TEXT = {
    "de": {
        "site_title": "Energiebericht", "org_title": "Energiebericht der Kommune",
        "month": "Monat", "carrier": "Energieträger", "consumption": "Verbrauch",
        "prev_month": "Vormonat", "prev_year": "Vorjahresmonat", "coverage": "Datenabdeckung",
        "co2": "CO₂", "factor": "Faktor", "base_load": "Grundlast", "night": "Nacht",
        "weekend": "Wochenende", "base_share": "Grundlastanteil", "peak": "Spitzenlast",
        "holidays": "Feiertage", "daily": "Stromverbrauch je Tag", "profile":
        "Mittlerer Lastgang (Strom)", "workday": "Werktag", "offday": "Wochenende/Feiertag",
        "missing": "Fehlende Daten", "none": "keine", "site": "Gebäude", "area": "Fläche",
        "type": "Gebäudeart", "specific": "kWh/m²", "total": "Summe", "sites": "Gebäude",
        "per_site": "Verbrauch je Gebäude", "generated": "Erstellt", "interpolated":
        "davon interpoliert", "source": "Quellen der Emissionsfaktoren",
    },
    "en": {
        "site_title": "Energy report", "org_title": "Municipal energy report", "month": "Month",
        "carrier": "Carrier", "consumption": "Consumption", "prev_month": "Previous month",
        "prev_year": "Same month last year", "coverage": "Data coverage", "co2": "CO₂",
        "factor": "Factor", "base_load": "Base load", "night": "Night", "weekend": "Weekend",
        "base_share": "Base load share", "peak": "Peak demand", "holidays": "Public holidays",
        "daily": "Electricity per day", "profile": "Mean load profile (electricity)",
        "workday": "Working day", "offday": "Weekend/holiday", "missing": "Missing data",
        "none": "none", "site": "Building", "area": "Floor area", "type": "Building type",
        "specific": "kWh/m²", "total": "Total", "sites": "Buildings",
        "per_site": "Consumption per building", "generated": "Generated", "interpolated":
        "of which interpolated", "source": "Sources of the emission factors",
    },
}  # fmt: skip


def fmt_number(value: float | None, lang: str, digits: int = 0) -> str:
    if value is None:
        return "–"
    text = f"{value:,.{digits}f}"
    if lang == "de":
        text = text.replace(",", "\u202f").replace(".", ",")
    else:
        text = text.replace(",", "\u202f")
    return text


def fmt_share(value: float | None, lang: str) -> str:
    return "–" if value is None else fmt_number(value * 100, lang, 1) + " %"


def parse_month(text: str | None, now_ms: int) -> dt.date:
    """'YYYY-MM' -> its first day; None -> the last complete month before now."""
    if text is None:
        today = cal.local(now_ms).date()
        return (today.replace(day=1) - dt.timedelta(days=1)).replace(day=1)
    year, month = int(text[:4]), int(text[5:7])
    if not cal.MIN_YEAR <= year <= cal.MAX_YEAR or not 1 <= month <= 12:
        raise service.InsightError(f"month {text!r}: YYYY-MM, years {cal.MIN_YEAR}..{cal.MAX_YEAR}")
    return dt.date(year, month, 1)


def _month_span(first: dt.date, back_months: int = 0) -> tuple[dt.date, dt.date]:
    y, m = first.year, first.month - back_months
    while m < 1:
        y, m = y - 1, m + 12
    start = dt.date(y, m, 1)
    return start, cal.next_start(start, "month") - dt.timedelta(days=1)


def _month_totals(energy: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c: v["periods"][0] for c, v in energy["carriers"].items()}


def _energy_or_none(p: dict[str, Any] | None) -> float | None:
    """A period's energy, None (shown as '–') when no quarter hour of it has data."""
    if not p or not (p["measured_share"] or p["interpolated_share"]):
        return None
    return float(p["energy"])


def mean_day_profile(
    qhs: Sequence[QuarterHour],
) -> tuple[list[str], list[float | None], list[float | None]]:
    """Mean power (kW) per local quarter hour of the day on working days and on weekends and
    public holidays, measured quarter hours only."""
    slots = [f"{h:02d}:{m:02d}" for h in range(24) for m in (0, 15, 30, 45)]
    sums = {True: [0.0] * 96, False: [0.0] * 96}
    counts = {True: [0] * 96, False: [0] * 96}
    holidays: dict[int, dict[dt.date, str]] = {}
    for q in qhs:
        if q.status != MEASURED or q.energy_kwh is None:
            continue
        t = cal.local(q.ts_ms)
        hol = holidays.setdefault(t.year, cal.holidays_lower_saxony(t.year))
        work = t.weekday() < 5 and t.date() not in hol
        i = t.hour * 4 + t.minute // 15
        sums[work][i] += q.energy_kwh * 4
        counts[work][i] += 1
    mean = {
        k: [s / n if n else None for s, n in zip(sums[k], counts[k], strict=True)] for k in sums
    }
    return slots, mean[True], mean[False]


def _compare(
    conn: Connection, site: dict[str, Any], month: dt.date, back: int, now_ms: int
) -> dict[str, dict[str, Any]]:
    """The month `back` months earlier, for comparison (empty before the supported years)."""
    try:
        span = _month_span(month, back)
        return _month_totals(service.site_energy(conn, site, "month", *span, now_ms))
    except service.InsightError:
        return {}


def report_site(
    conn: Connection, org_id: int, site: dict[str, Any], month: dt.date, now_ms: int, lang: str
) -> dict[str, Any]:
    first, last = _month_span(month)
    energy = service.site_energy(conn, site, "month", first, last, now_ms)
    prev = _compare(conn, site, month, 1, now_ms)
    prev_year = _compare(conn, site, month, 12, now_ms)
    daily = service.site_energy(conn, site, "day", first, last, now_ms)["carriers"]
    co2 = service.co2_of(conn, org_id, energy)
    settings = queries.get_settings(conn, org_id)
    qhs = service.quarter_hours(conn, site["id"], first, last, now_ms)
    bl = base_load(qhs, NightWindow(settings["night_start_hour"], settings["night_end_hour"]))
    t, names = TEXT[lang], CARRIER_NAMES[lang]
    rows = []
    area = site.get("floor_area_m2")
    for carrier, p in _month_totals(energy).items():
        kg = next((r["kg_co2"] for r in co2["rows"] if r["carrier"] == carrier), None)
        kwh = _energy_or_none(p)
        rows.append({
            "carrier": names.get(carrier, carrier), "unit": energy["carriers"][carrier]["unit"],
            "energy": kwh, "interpolated": p["interpolated"],
            "prev": _energy_or_none(prev.get(carrier)),
            "prev_year": _energy_or_none(prev_year.get(carrier)),
            "coverage": p["measured_share"], "kg_co2": None if kwh is None else kg,
            "per_m2": kwh / area if kwh is not None and area else None,
            "missing": p["missing"],
        })  # fmt: skip
    el_days = daily.get("electricity", {}).get("periods", [])
    slots, work, off = mean_day_profile(qhs)
    charts_svg = {
        "daily": Markup(charts.bar_chart(
            t["daily"], "kWh", [p["label"][8:] for p in el_days],
            [_energy_or_none(p) for p in el_days],
        )),
        "profile": Markup(charts.line_chart(
            t["profile"], "kW", slots, {t["workday"]: work, t["offday"]: off}
        )),
    }  # fmt: skip
    sources = sorted({r["factor_source"] for r in co2["rows"] if r["factor_source"]})
    return {
        "kind": "site",
        "lang": lang,
        "t": t,
        "title": f"{t['site_title']} {site['name']}",
        "month": f"{month.year}-{month.month:02d}",
        "site": site,
        "rows": rows,
        "co2_total": sum(r["kg_co2"] or 0.0 for r in rows),
        "base_load": bl,
        "peak_time": None
        if bl.peak_ts_ms is None
        else cal.local(bl.peak_ts_ms).strftime("%d.%m.%Y %H:%M"),
        "charts": charts_svg,
        "daily_values": [_energy_or_none(p) for p in el_days],
        "sources": sources,
        "generated": cal.local(now_ms).strftime("%Y-%m-%d %H:%M"),
    }


def report_org(
    conn: Connection, org_id: int, month: dt.date, now_ms: int, lang: str
) -> dict[str, Any]:
    first, last = _month_span(month)
    org = queries.get_org(conn, org_id)
    t, names = TEXT[lang], CARRIER_NAMES[lang]
    fs = service.factors(conn, org_id)
    rows = []
    carriers_seen: set[str] = set()
    sources: set[str] = set()
    for site in queries.sites_of(conn, [org_id]):
        energy = service.site_energy(conn, site, "month", first, last, now_ms)
        co2 = service.co2_rows(energy["carriers"], fs)
        sources |= {r["factor_source"] for r in co2 if r["factor_source"]}
        totals = _month_totals(energy)
        carriers_seen |= set(totals)
        shares = [p["measured_share"] for p in totals.values() if p["measured_share"] is not None]
        rows.append({
            "site": site["name"], "type": site["building_type"], "area": site["floor_area_m2"],
            "energy": {c: p["energy"] for c, p in totals.items()},
            "kg_co2": sum(r["kg_co2"] or 0.0 for r in co2),
            "coverage": min(shares) if shares else None,
        })  # fmt: skip
    carriers = [
        c for c in ("electricity", "natural_gas", "district_heating", "water") if c in carriers_seen
    ]
    totals = {c: sum(r["energy"].get(c, 0.0) for r in rows) for c in carriers}
    chart = Markup(charts.bar_chart(
        f"{t['per_site']} ({names['electricity']})", "kWh",
        [r["site"][:14] for r in rows], [r["energy"].get("electricity") for r in rows],
    ))  # fmt: skip
    return {
        "kind": "org",
        "lang": lang,
        "t": t,
        "title": f"{t['org_title']} {org['name']}",
        "month": f"{month.year}-{month.month:02d}",
        "org": org,
        "carriers": carriers,
        "carrier_names": names,
        "rows": rows,
        "totals": totals,
        "co2_total": sum(r["kg_co2"] for r in rows),
        "charts": {"sites": chart},
        "sources": sorted(sources),
        "generated": cal.local(now_ms).strftime("%Y-%m-%d %H:%M"),
    }


_env: Environment | None = None


def _environment() -> Environment:
    global _env
    if _env is None:
        _env = Environment(
            loader=PackageLoader("fleet.insight", "templates"),
            autoescape=select_autoescape(["html"]),
        )
    return _env


def render_html(data: dict[str, Any]) -> str:
    env = _environment()
    lang = data["lang"]
    return env.get_template("report.html").render(
        **data,
        num=lambda v, d=0: fmt_number(v, lang, d),
        share=lambda v: fmt_share(v, lang),
        when=lambda ms: cal.local(ms).strftime("%d.%m.%Y %H:%M"),
    )


def render_pdf(data: dict[str, Any]) -> bytes:
    """The same figures as the HTML report, as an A4 PDF (tables and a bar chart)."""
    from reportlab.graphics.charts.barcharts import VerticalBarChart
    from reportlab.graphics.shapes import Drawing
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    lang, t = data["lang"], data["t"]

    def num(v: float | None, d: int = 0) -> str:
        return fmt_number(v, lang, d).replace("\u202f", " ")

    def share(v: float | None) -> str:
        return fmt_share(v, lang)

    styles = getSampleStyleSheet()
    story: list[Any] = [
        Paragraph(_xml(data["title"]), styles["Title"]),
        Paragraph(
            f"{t['month']}: {data['month']} · {t['generated']}: {data['generated']}",
            styles["Normal"],
        ),
        Spacer(1, 5 * mm),
    ]
    style = TableStyle([
        ("FONT", (0, 0), (-1, 0), "Helvetica-Bold"),
        ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.grey),
        ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
        ("FONTSIZE", (0, 0), (-1, -1), 8),
    ])  # fmt: skip
    bars: list[tuple[str, float]] = []
    if data["kind"] == "site":
        table = [
            [
                t["carrier"],
                t["consumption"],
                t["prev_month"],
                t["prev_year"],
                "CO2 kg",
                t["coverage"],
            ]
        ]
        for r in data["rows"]:
            table.append([
                r["carrier"], f"{num(r['energy'], 1)} {r['unit']}", num(r["prev"], 1), num(r["prev_year"], 1),
                num(r["kg_co2"], 1), share(r["coverage"]),
            ])  # fmt: skip
        story += [Table(table, style=style), Spacer(1, 5 * mm)]
        bl = data["base_load"]
        story.append(Paragraph(
            f"{t['base_load']} ({t['night']}): {num(bl.night_base_load_kw, 2)} kW · "
            f"{t['weekend']}: {num(bl.weekend_base_load_kw, 2)} kW · {t['base_share']}: "
            f"{share(bl.base_load_share)} · {t['peak']}: {num(bl.peak_kw, 2)} kW "
            f"({data['peak_time'] or '–'})", styles["Normal"],
        ))  # fmt: skip
        for h in bl.holidays:
            story.append(
                Paragraph(
                    f"{t['holidays']}: {h.date.isoformat()} {_xml(h.name)}: {num(h.energy_kwh, 1)} kWh",
                    styles["Normal"],
                )
            )
        for r in data["rows"]:
            for m in r["missing"][:10]:
                story.append(
                    Paragraph(
                        f"{t['missing']} ({_xml(r['carrier'])}): {m['from']} – {m['to']}",
                        styles["Normal"],
                    )
                )
        bars = [(str(i + 1), v or 0.0) for i, v in enumerate(data["daily_values"])]
    else:
        names = data["carrier_names"]
        header = [
            t["site"],
            *[f"{names.get(c, c)}" for c in data["carriers"]],
            "CO2 kg",
            t["coverage"],
        ]
        table = [header]
        for r in data["rows"]:
            table.append([
                _xml(r["site"]), *[num(r["energy"].get(c)) for c in data["carriers"]],
                num(r["kg_co2"], 1), share(r["coverage"]),
            ])  # fmt: skip
        table.append(
            [
                t["total"],
                *[num(data["totals"][c]) for c in data["carriers"]],
                num(data["co2_total"]),
                "",
            ]
        )
        story += [Table(table, style=style), Spacer(1, 5 * mm)]
        bars = [(r["site"][:10], r["energy"].get("electricity") or 0.0) for r in data["rows"]]
    if bars:
        d = Drawing(170 * mm, 60 * mm)
        chart = VerticalBarChart()
        chart.x, chart.y, chart.width, chart.height = 30, 20, 150 * mm, 45 * mm
        chart.data = [[v for _, v in bars]]
        chart.categoryAxis.categoryNames = [lbl for lbl, _ in bars]
        chart.categoryAxis.labels.fontSize = 6
        chart.valueAxis.valueMin = 0
        chart.bars[0].fillColor = colors.HexColor("#2f6f4f")
        d.add(chart)
        story += [
            Paragraph(t["daily"] if data["kind"] == "site" else t["per_site"], styles["Heading4"]),
            d,
        ]
    if data["sources"]:
        story.append(Paragraph(t["source"], styles["Heading4"]))
        story += [Paragraph(_xml(s), styles["Normal"]) for s in data["sources"]]
    out = io.BytesIO()
    SimpleDocTemplate(out, pagesize=A4, title=data["title"]).build(story)
    return out.getvalue()


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
