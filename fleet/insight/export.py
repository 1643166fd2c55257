"""CSV of a 15-minute load profile in two layouts (docs/insight.md): "rfc4180" (comma, decimal
point, ISO 8601 times with their UTC offset) and "de" for German spreadsheets (semicolon,
decimal comma, dd.mm.yyyy and hh:mm, a UTF-8 byte order mark so Excel reads the umlauts).
One row per quarter hour; a missing quarter hour has empty power and energy. Pure."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from fleet.insight.calendar import QUARTER_MS, local
from fleet.insight.energy import QuarterHour

FORMATS = ("rfc4180", "de")
HEADER = ("start", "end", "power_kw", "energy_kwh", "status")
HEADER_DE = ("Datum", "von", "bis", "UTC-Versatz", "Leistung kW", "Energie kWh", "Status")
STATUS_DE = {"measured": "gemessen", "interpolated": "interpoliert", "missing": "fehlt"}


def _num(value: float | None, decimal_comma: bool) -> str:
    if value is None:
        return ""
    text = f"{value:.3f}"
    return text.replace(".", ",") if decimal_comma else text


def load_profile_csv(qhs: Sequence[QuarterHour], fmt: str = "rfc4180") -> str:
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: use one of {', '.join(FORMATS)}")
    out = io.StringIO()
    if fmt == "rfc4180":
        w = csv.writer(out, lineterminator="\r\n")
        w.writerow(HEADER)
        for q in qhs:
            start, end = local(q.ts_ms), local(q.ts_ms + QUARTER_MS)
            w.writerow(
                (
                    start.isoformat(timespec="minutes"),
                    end.isoformat(timespec="minutes"),
                    _num(None if q.energy_kwh is None else q.energy_kwh * 4, False),
                    _num(q.energy_kwh, False),
                    q.status,
                )
            )
        return out.getvalue()
    w = csv.writer(out, delimiter=";", lineterminator="\r\n")
    w.writerow(HEADER_DE)
    for q in qhs:
        start, end = local(q.ts_ms), local(q.ts_ms + QUARTER_MS)
        offset = start.strftime("%z")
        w.writerow(
            (
                start.strftime("%d.%m.%Y"),
                start.strftime("%H:%M"),
                end.strftime("%H:%M"),
                f"{offset[:3]}:{offset[3:]}",
                _num(None if q.energy_kwh is None else q.energy_kwh * 4, True),
                _num(q.energy_kwh, True),
                STATUS_DE[q.status],
            )
        )
    return "\ufeff" + out.getvalue()
