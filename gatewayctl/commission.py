"""`gatewayctl commission`: wait for a gateway's first contact at the fleet (API polling with
progress), optionally give it its meter configuration, wait for the first reading of every
configured meter, and write the commissioning report (text, HTML, PDF) for the site records."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatewayctl.errors import GatewayctlError
from gatewayctl.fleetapi import FleetApi
from gatewayctl.label import environment, utc_text
from protocols import quantities

Progress = Callable[[str], None]


@dataclass
class Row:
    meter: str
    device: int
    profile: str
    quantity: str
    value: float | None
    unit: str
    ts_ms: int | None

    @property
    def value_text(self) -> str:
        return "no reading" if self.value is None else f"{self.value:,.3f} {self.unit}".strip()

    @property
    def at(self) -> str:
        return utc_text(self.ts_ms)


@dataclass
class Report:
    gateway_id: str
    site: str | None
    fw_version: str | None
    config_version: int | None
    first_contact_ts_ms: int | None
    rows: list[Row] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # meters without a reading
    technician: str | None = None
    written_ts_ms: int = 0

    @property
    def complete(self) -> bool:
        return not self.missing and bool(self.rows)

    @property
    def verdict(self) -> str:
        if self.complete:
            meters = len({r.device for r in self.rows})
            return f"Commissioned: all {meters} meter(s) sent readings."
        if not self.rows and not self.missing:
            return "No meters are configured for this gateway yet."
        return "Incomplete: no reading yet from " + ", ".join(self.missing) + "."

    @property
    def first_contact(self) -> str:
        return utc_text(self.first_contact_ts_ms)

    @property
    def written(self) -> str:
        return utc_text(self.written_ts_ms)

    def as_dict(self) -> dict[str, Any]:
        return {
            "gateway_id": self.gateway_id,
            "site": self.site,
            "fw_version": self.fw_version,
            "config_version": self.config_version,
            "first_contact_ts_ms": self.first_contact_ts_ms,
            "complete": self.complete,
            "missing": self.missing,
            "readings": [
                {
                    "meter": r.meter,
                    "device": r.device,
                    "quantity": r.quantity,
                    "value": r.value,
                    "unit": r.unit,
                    "ts_ms": r.ts_ms,
                }
                for r in self.rows
            ],  # fmt: skip
        }

    def text(self) -> str:
        lines = [
            f"Commissioning report: gateway {self.gateway_id}"
            + (f", site {self.site}" if self.site else ""),
            f"firmware {self.fw_version or 'unknown'}, configuration version "
            f"{self.config_version}, first contact {self.first_contact}",
            f"written {self.written}" + (f" by {self.technician}" if self.technician else ""),
            self.verdict,
            "",
            f"{'meter':<20} {'id':>4} {'quantity':<16} {'first reading':>22}  at",
        ]
        for r in self.rows:
            lines.append(
                f"{r.meter[:20]:<20} {r.device:>4} {r.quantity:<16} {r.value_text:>22}  {r.at}"
            )
        return "\n".join(lines) + "\n"


def wait_for_gateway(
    api: FleetApi, gateway_id: str | None, claim_id: int | None, timeout_s: float,
    progress: Progress, poll_s: float = 1.0,
) -> dict[str, Any]:  # fmt: skip
    """The gateway once it has contacted the fleet (online or seen); by id, or by the claim
    token it used. GatewayctlError after timeout_s."""
    start = time.monotonic()
    stage = "waiting for the gateway to claim its identity"
    while True:
        waited = time.monotonic() - start
        if gateway_id is None and claim_id is not None:
            for c in api.claim_tokens():
                if c["id"] == claim_id and c["used_by_gateway"]:
                    gateway_id = c["used_by_gateway"]
        gw = api.gateway(gateway_id) if gateway_id else None
        if gw is not None:
            if gw["status"] == "pending":
                stage = f"gateway {gateway_id} claimed; an operator must approve it"
            elif gw["online"] or gw["last_seen_ts_ms"] is not None:
                progress(f"gateway {gateway_id} is in contact with the fleet ({waited:.0f} s)")
                return gw
            else:
                stage = f"gateway {gateway_id} claimed its identity; waiting for first contact"
        progress(f"{stage} ... {waited:.0f} s")
        if waited > timeout_s:
            raise GatewayctlError(
                f"{stage}: nothing within {timeout_s:g} s. Check the gateway's power and "
                "network (link LED, Wi-Fi settings), and its log over USB (mpremote repl)"
            )
        time.sleep(poll_s)


def _meters(doc: dict[str, Any] | None) -> list[dict[str, Any]]:
    return list(((doc or {}).get("document") or {}).get("meters", []))


def commission(
    api: FleetApi,
    gateway_id: str | None,
    *,
    claim_id: int | None = None,
    config: dict[str, Any] | None = None,
    site: str | None = None,
    technician: str | None = None,
    contact_timeout_s: float = 600,
    readings_timeout_s: float = 120,
    progress: Progress = lambda _m: None,
    poll_s: float = 1.0,
) -> Report:
    gw = wait_for_gateway(api, gateway_id, claim_id, contact_timeout_s, progress, poll_s)
    gateway_id = gw["id"]
    if config is not None:
        version = api.put_config(gateway_id, config)
        progress(f"configuration version {version} given to {gateway_id}")
    desired = api.config(gateway_id)
    meters = _meters(desired)
    start = time.monotonic()
    latest: list[dict[str, Any]] = []
    while meters:
        latest = api.latest(gateway_id)
        seen = {quantities.split_channel(x["channel"])[0] for x in latest}
        waiting = [m for m in meters if m["id"] not in seen]
        waited = time.monotonic() - start
        progress(f"first readings: {len(meters) - len(waiting)} of {len(meters)} meters ... "
                 f"{waited:.0f} s")  # fmt: skip
        if not waiting or waited > readings_timeout_s:
            break
        time.sleep(poll_s)
    gw = api.gateway(gateway_id) or gw
    report = Report(
        gateway_id=gateway_id,
        site=site,
        fw_version=gw.get("fw_version"),
        config_version=(desired or {}).get("version"),
        first_contact_ts_ms=gw.get("last_seen_ts_ms"),
        technician=technician,
        written_ts_ms=int(time.time() * 1000),
    )
    by_device: dict[int, list[dict[str, Any]]] = {}
    for x in latest:
        device, _q = quantities.split_channel(x["channel"])
        by_device.setdefault(device, []).append(x)
    for m in meters:
        got = sorted(by_device.get(m["id"], []), key=lambda x: x["channel"])
        if not got:
            report.missing.append(f"{m['name']} (id {m['id']})")
        for x in got:
            q = quantities.split_channel(x["channel"])[1]
            report.rows.append(Row(m["name"], m["id"], m.get("profile", ""), q, x["value"],
                                   quantities.unit_of(q), x["ts_ms"]))  # fmt: skip
    return report


def write_report(report: Report, out: Path, pdf: bool = True) -> dict[str, Path]:
    """commissioning-<gateway>.txt, .html (and .pdf) in out; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"commissioning-{report.gateway_id}"
    paths = {"text": stem.with_suffix(".txt"), "html": stem.with_suffix(".html")}
    paths["text"].write_text(report.text())
    paths["html"].write_text(environment().get_template("report.html").render(r=report))
    if pdf:
        paths["pdf"] = stem.with_suffix(".pdf")
        _report_pdf(report, paths["pdf"])
    return paths


def _report_pdf(report: Report, path: Path) -> None:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    styles = getSampleStyleSheet()
    head = report.text().split("\n\n")[0].split("\n")
    story: list[Any] = [Paragraph(head[0], styles["Title"])]
    story += [Paragraph(line, styles["Normal"]) for line in head[1:]]
    story.append(Spacer(1, 12))
    data = [["meter", "id", "quantity", "first reading", "at (UTC)"]]
    data += [[r.meter, str(r.device), r.quantity, r.value_text, r.at] for r in report.rows]
    table = Table(data, repeatRows=1)
    table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
                               ("BACKGROUND", (0, 0), (-1, 0), colors.lightgrey),
                               ("ALIGN", (3, 1), (3, -1), "RIGHT"),
                               ("FONTSIZE", (0, 0), (-1, -1), 8)]))  # fmt: skip
    story.append(table)
    SimpleDocTemplate(str(path), pagesize=A4, title=f"Commissioning {report.gateway_id}").build(
        story
    )
